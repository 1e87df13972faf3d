"""Chapter 6: the GPT model."""

import functools
import math

import torch.nn as nn
from matplotlib.backends.backend_agg import RendererAgg

from llmbook.attention import CausalSelfAttention
from llmbook.model import GPT, MLP, Block, GPTConfig, RMSNorm

from . import diagram
from .style import (
    FILL,
    GREY,
    SMALL,
    arrow,
    box,
    canvas,
    code,
    grid,
    ink,
    text,
)

BOOK = GPTConfig.preset("book")


@functools.cache
def _parts():
    """The attribute names of a GPT's parts and of a block's parts (a
    GPT-2-style model has them all, `wpe` included)."""
    model = GPT(GPTConfig.preset("tiny"))
    block = model.blocks[0]
    return set(dict(model.named_children())) | set(
        dict(block.named_children())
    )


def part(name):
    """`name` as the package calls that part of the model, so that a
    renamed attribute breaks the build instead of leaving a stale label."""
    if name not in _parts():
        raise ValueError(f"GPT and Block have no part called {name!r}")
    return name


def module(ax, xy, w, h, what, name, kind, **kw):
    """A part of the model: what it is, and its name in code below."""
    b = box(ax, xy, w, h, kind=kind, **kw)
    text(ax, (xy[0], xy[1] + 0.07), what, color=ink(kind))
    text(
        ax, (xy[0], xy[1] - 0.09), name, size=SMALL, mono=True, color=ink(kind)
    )
    return b


def note(ax, xy, name, words):
    """A side note: a code setting (monospace), then words below it."""
    text(ax, xy, name, size=SMALL, mono=True, ha="left", va="top")
    text(
        ax,
        (xy[0], xy[1] - 0.15),
        words,
        size=SMALL,
        ha="left",
        va="top",
    )


def end_of(t):
    """The x (inches) where the left-aligned text `t` ends. Measured at
    1000 dpi: at screen resolution hinting narrows the glyphs, and the
    PDF and SVG have the true widths."""
    ext = t.get_window_extent(RendererAgg(100, 100, 1000))
    return t.get_position()[0] + ext.width / 1000


def plus(ax, xy, kind="op"):
    """The small '+' where a vector is added to the residual stream."""
    return box(ax, xy, 0.22, 0.22, "+", kind=kind)


# -- the whole model --------------------------------------------------------


def _block_stack(ax, xy, w, h):
    """n_layer blocks: two shadows behind the front block say 'repeated'."""
    x, y = xy
    for d in (0.1, 0.05):
        box(ax, (x + d, y + d), w, h, kind="accent")
    b = box(ax, xy, w, h, kind="accent")
    # "n_layer x Block": words in the sans font, the class name in mono
    top, white = y + 0.08, ink("accent")
    text(ax, (x, top), "$n_\\mathrm{layer} \\times$", color=white, ha="right")
    text(ax, (x + 0.05, top), code(Block), color=white, mono=True, ha="left")
    text(
        ax,
        (x, y - 0.12),
        "attention and MLP, each added to $x$",
        size=SMALL,
        color=ink("accent"),
    )
    return b


@diagram
def gpt_architecture():
    """Token ids to logits through the parts of `GPT`, with shapes."""
    fig, ax = canvas(6.0, 3.55)
    x, w, h = 2.85, 2.1, 0.34
    ids = box(ax, (x, 3.4), w, 0.26, "token ids  $(B, T)$", kind="tensor")
    wte = module(ax, (x, 2.96), w, h, "token embedding", part("wte"), "weight")
    add = plus(ax, (x, 2.44))
    wpe = module(
        ax,
        (4.75, add.y),
        1.6,
        h,
        "position embedding",
        part("wpe"),
        "weight",
        linestyle="--",
    )
    blocks = _block_stack(ax, (x, 1.86), w, 0.5)
    ln_f = module(ax, (x, 1.18), w, h, "final norm", part("ln_f"), "op")
    head = module(ax, (x, 0.58), w, h, "LM head", part("lm_head"), "weight")
    logits = box(ax, (x, 0.18), w, 0.26, "logits  $(B, T, V)$", kind="tensor")
    # the flow, with the shape of what travels along each arrow (the
    # residual stream keeps (B, T, C) from the embedding to the head)
    steps = [
        (ids.bottom, wte.top, ""),
        (wte.bottom, add.top, "$(B, T, C)$"),
        (add.bottom, blocks.top, ""),
        (blocks.bottom, ln_f.top, "$(B, T, C)$"),
        (ln_f.bottom, head.top, "$(B, T, C)$"),
        (head.bottom, logits.top, ""),
    ]
    for start, end, shape in steps:
        arrow(ax, start, end)
        if shape:
            mid = (start[1] + end[1]) / 2
            text(ax, (x + 0.08, mid), shape, size=SMALL, ha="left")
    arrow(ax, wpe.left, add.right, "$(T, C)$", side=0.1)
    note(
        ax,
        (blocks.x + blocks.w / 2 + 0.2, wpe.y - 0.3),
        'positions="learned" only',
        "(GPT-2). The book's model\nrotates $q$ and $k$ inside\n"
        "attention instead (RoPE)",
    )
    _tie(ax, wte, head)
    return fig


def _tie(ax, wte, head):
    """Weight tying: the LM head is the token-embedding matrix."""
    arrow(
        ax,
        wte.left,
        head.left,
        curve=0.3,
        style="<|-|>",
        color=GREY,
        linestyle="--",
    )
    note(
        ax,
        (0.2, (wte.y + head.y) / 2 + 0.15),
        "tie_weights=True",
        "the same matrix $E$,\nshape $(V, C)$",
    )


# -- one block ----------------------------------------------------------------


def _branch(ax, x0, tap, y, names, line):
    """One residual branch: from the stream at height `tap` through the
    norm and the layer (`names`: attribute and class of each), back to a
    '+' on the stream at height `y`; `line` is the code it runs."""
    shapes = []
    for (attr, cls), (x, w, kind) in zip(
        names, [(2.0, 1.0, "op"), (3.45, 1.5, "weight")]
    ):
        shapes.append(box(ax, (x, tap), w, 0.42, kind=kind))
        text(ax, (x, tap + 0.08), attr, mono=True)
        text(ax, (x, tap - 0.1), cls, size=SMALL, mono=True)
    n, f = shapes
    arrow(ax, (x0, tap), n.left)
    arrow(ax, n.right, f.left)
    add = plus(ax, (x0, y))
    arrow(ax, f.bottom, add.right, "$(B, T, C)$", curve=-0.25, side=-0.12)
    text(
        ax, (f.x + f.w / 2 + 0.15, tap), line, size=SMALL, mono=True, ha="left"
    )
    return add


def _stream(ax, x0, pieces):
    """The residual stream, thick and in the accent colour, in pieces
    (the '+' boxes sit in the gaps); the last piece leaves the block."""
    for i, (y0, y1) in enumerate(pieces):
        last = i == len(pieces) - 1
        arrow(
            ax,
            (x0, y0),
            (x0, y1),
            style="-|>" if last else "-",
            color=FILL["accent"],
            linewidth=2.2,
        )


@diagram
def transformer_block():
    """The pre-norm block on the residual stream, as `Block.forward`."""
    fig, ax = canvas(6.0, 3.1)
    x0 = 0.75
    norm = code(RMSNorm) if BOOK.norm == "rmsnorm" else code(nn.LayerNorm)
    add1 = _branch(
        ax,
        x0,
        2.45,
        1.78,
        [(part("ln_1"), norm), (part("attn"), code(CausalSelfAttention))],
        "x = x + attn(ln_1(x))",
    )
    add2 = _branch(
        ax,
        x0,
        1.2,
        0.53,
        [(part("ln_2"), norm), (part("mlp"), code(MLP))],
        "x = x + mlp(ln_2(x))",
    )
    r = 0.11  # half the size of a '+'
    _stream(
        ax,
        x0,
        [(2.86, add1.y + r), (add1.y - r, add2.y + r), (add2.y - r, 0.06)],
    )
    text(ax, (x0, 2.98), "$x$  $(B, T, C)$", size=SMALL)
    text(ax, (x0 - 0.2, 1.2), "residual stream", size=SMALL, rotation=90)
    text(ax, (x0 + 0.12, 0.1), "to the next block", size=SMALL, ha="left")
    text(
        ax,
        (4.35, 0.6),
        "The book's model: RMSNorm,\nSwiGLU, RoPE inside attention.\n"
        "GPT-2: LayerNorm, GELU, and\nlearned positions instead.",
        size=SMALL,
        ha="left",
    )
    return fig


# -- positions ----------------------------------------------------------------


def _learned(ax, x, cell):
    """GPT-2: the vector of position t is added to the token's vector."""
    text(ax, (1.45, 2.15), "learned positions (GPT-2)")
    rows = [
        (1.62, "tensor", "$E_{i_t}$", "row $i_t$ of", part("wte")),
        (1.08, "weight", "$P_t$", "row $t$ of", part("wpe")),
        (0.54, "tensor", "$x_t$", "into the first block", ""),
    ]
    for y, kind, name, where, attr in rows:
        g = grid(ax, (x, y), 1, 6, cell=cell, kind=kind)
        right = g.x + g.w / 2 + 0.1
        text(ax, (g.x - g.w / 2 - 0.1, y), name, ha="right")
        t = text(ax, (right, y), where, size=SMALL, ha="left")
        if attr:  # the table's name in code, after the words
            text(
                ax,
                (end_of(t) + 0.04, y),
                attr,
                size=SMALL,
                mono=True,
                ha="left",
            )
    text(ax, (x, 1.35), "+")
    text(ax, (x, 0.81), "=")
    text(
        ax,
        (1.45, 0.16),
        "one learned vector per position,\nadded once, before the blocks",
        size=SMALL,
    )


def _pair(ax, x, y, cell, d):
    """A query of one head, D channels; pair i is (q_i, q_{i + D/2})."""
    i = 1
    kinds = [
        ["accent" if j in (i, i + d // 2) else "tensor" for j in range(d)]
    ]
    g = grid(ax, (x, y), 1, d, cell=cell, kinds=kinds)
    left = g.x - g.w / 2
    text(ax, (left - 0.1, y), "$q$", ha="right")
    a = (left + (i + 0.5) * cell, y - cell / 2)
    b = (left + (i + d // 2 + 0.5) * cell, y - cell / 2)
    arrow(ax, a, b, style="<|-|>", curve=0.5)
    text(ax, (g.x, y - 0.42), "pair $i$: $(q_i,\\ q_{i + D/2})$", size=SMALL)
    text(ax, (g.x, y + 0.22), "one head, $D$ channels", size=SMALL)


def _rotation(ax, o, r, start, turn):
    """The pair as a 2-D vector, turned by the angle m theta_i."""
    arrow(ax, o, (o[0] + 1.0, o[1]), color=GREY)
    arrow(ax, o, (o[0], o[1] + 1.15), color=GREY)
    text(ax, (o[0] + 1.0, o[1] - 0.12), "$q_i$", size=SMALL, ha="right")
    text(ax, (o[0] + 0.07, o[1] + 1.12), "$q_{i+D/2}$", size=SMALL, ha="left")

    def at(angle, length):
        return (
            o[0] + length * math.cos(angle),
            o[1] + length * math.sin(angle),
        )

    arrow(ax, o, at(start, r), color=GREY, linewidth=1.4)
    arrow(ax, o, at(start + turn, r), color=FILL["accent"], linewidth=1.6)
    x, y = at(start, r)
    text(ax, (x, y - 0.14), "$m = 0$", size=SMALL)
    x, y = at(start + turn, r)
    text(ax, (x + 0.05, y + 0.1), "position $m$", size=SMALL, ha="left")
    # arc3 bulges by curve * chord / 2: tan(angle / 4) follows the circle
    arrow(
        ax,
        at(start, 0.42),
        at(start + turn, 0.42),
        curve=math.tan(turn / 4),
        label="$m\\theta_i$",
        side=0.12,
    )


@diagram
def rope():
    """Learned positions add a vector; RoPE rotates pairs of channels."""
    fig, ax = canvas(6.0, 2.35)
    _learned(ax, 0.95, 0.17)
    arrow(ax, (3.0, 0.1), (3.0, 2.25), style="-", color=GREY, linewidth=0.5)
    text(ax, (4.5, 2.15), "RoPE (the book's model)")
    _pair(ax, 3.95, 1.55, 0.17, 8)
    _rotation(ax, (4.95, 0.35), 0.78, math.radians(15), math.radians(55))
    text(
        ax,
        (3.95, 0.6),
        "every pair of $q$ and $k$,\nin every layer; $q_m \\cdot k_n$\n"
        "depends on $m - n$ only",
        size=SMALL,
    )
    return fig
