"""Chapter 8: concept diagrams."""

import torch

from llmbook.attention import KVCache
from llmbook.generate import (
    apply_temperature,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from llmbook.model import GPT

from . import diagram
from .style import GREY, INK, SMALL, arrow, box, canvas, code, ink, key, text

WORDS = ["To", " be", ",", " or", " not"]  # Hamlet, as in chapter 1


def quoted(word):
    return f"'{word}'"


# ---------------------------------------------------------------------------
# autoregressive


def _generation_step(ax, y, n, cell):
    """One step: n tokens -> GPT -> logits (n, V) -> sample -> a token.
    Returns the sampled token's box and the logits' centre x."""
    x0 = 0.78
    for j in range(n):
        # the token sampled in the step before is the newest one
        kind = "accent" if n > 2 and j == n - 1 else "tensor"
        box(
            ax,
            (x0 + (j + 0.5) * cell, y),
            cell,
            0.3,
            quoted(WORDS[j]),
            kind=kind,
            size=SMALL,
        )
    end = x0 + 4 * cell + 0.12  # every row's arrow starts at one x
    arrow(ax, (x0 + n * cell, y), (end + 0.12, y))
    gpt = box(
        ax,
        (end + 0.42, y),
        0.56,
        0.36,
        code(GPT),
        kind="weight",
        mono=True,
        size=SMALL,
    )
    # logits: one row per position, the last one (the only one used) dark
    rows, v, c = n, 6, 0.075
    gx = gpt.right[0] + 0.35 + v * c / 2
    arrow(ax, gpt.right, (gx - v * c / 2, y))
    top = y + rows * c / 2
    for i in range(rows):
        for j in range(v):
            box(
                ax,
                (gx - v * c / 2 + (j + 0.5) * c, top - (i + 0.5) * c),
                c,
                c,
                kind="accent" if i == rows - 1 else "tensor",
            )
    last = top - (rows - 0.5) * c
    op = box(
        ax, (gx + 0.85, y), 0.9, 0.36, code(sample_next), mono=True, size=SMALL
    )
    arrow(ax, (gx + v * c / 2, last), op.left)
    out = box(
        ax,
        (op.right[0] + 0.42, y),
        cell,
        0.3,
        quoted(WORDS[n]),
        kind="accent",
        size=SMALL,
    )
    arrow(ax, op.right, out.left)
    return out, gx


@diagram
def autoregressive():
    """Each step reads the whole sequence, samples from the last
    position's logits, and appends the token."""
    fig, ax = canvas(6.0, 2.6)
    cell, gap = 0.42, 0.78
    ys = [2.13 - i * gap for i in range(3)]
    prev = None
    for i, y in enumerate(ys):
        n = 2 + i
        text(ax, (0.05, y + 0.07), f"step {i + 1}", ha="left")
        text(
            ax,
            (0.05, y - 0.1),
            f"$T = {n}$",
            size=SMALL,
            ha="left",
            color=GREY,
        )
        out, gx = _generation_step(ax, y, n, cell)
        if prev is not None:  # the sampled token becomes the newest input
            arrow(
                ax,
                prev.bottom,
                (0.78 + (n - 0.5) * cell, y + 0.15),
                curve=-0.08,
                color=GREY,
            )
        prev = out
    text(ax, (gx, ys[0] + 0.36), "logits $(T, V)$", size=SMALL)
    text(ax, (gx, ys[-1] - 0.36), "last row used", size=SMALL, color=GREY)
    text(ax, (prev.x, ys[0] + 0.3), "next token", size=SMALL)
    text(
        ax,
        (prev.x - 0.2, ys[-1] - 0.36),
        "append, repeat",
        size=SMALL,
        color=GREY,
    )
    return fig


# ---------------------------------------------------------------------------
# sampling-steps

# Toy logits over a vocabulary of 8, and settings under which every step
# changes something: the package's own functions compute each stage.
LOGITS = torch.tensor([2.4, 2.0, 1.7, 1.2, 0.9, 0.6, 0.4, 0.2])
TAU, TOP_K, TOP_P = 0.5, 5, 0.9


def _bars(ax, x, y, values, scale, kinds, label):
    """A bar chart from (x, y), its bottom left: one box per value, a
    hatched stub for a removed (-inf) token."""
    w = 0.1
    for j, (v, k) in enumerate(zip(values, kinds)):
        h = 0.06 if k == "muted" else max(float(v) * scale, 0.02)
        box(ax, (x + (j + 0.5) * w, y + h / 2), w, h, kind=k)
    ax.plot([x - 0.03, x + len(values) * w + 0.03], [y, y], color=INK, lw=0.8)
    text(ax, (x + len(values) * w / 2, y - 0.15), label, size=SMALL)
    return x + len(values) * w


def _stage_op(ax, x, y, what, fn, w):
    """An operation box `w` wide: what it does, the package's function."""
    box(ax, (x + w / 2, y), w, 0.42)
    text(ax, (x + w / 2, y + 0.08), what)
    text(ax, (x + w / 2, y - 0.1), fn, size=SMALL, mono=True)
    return x + w


def _stages():
    """Each step's output, computed by the package's own functions, and
    the token a seeded draw picks."""
    z = apply_temperature(LOGITS, TAU)
    after_k = top_k_filter(z, TOP_K)
    after_p = top_p_filter(after_k, TOP_P)
    probs = torch.softmax(after_p, dim=-1)
    seeded = torch.Generator().manual_seed(0)
    token = int(sample_next(LOGITS[None], TAU, TOP_K, TOP_P, seeded))
    return z, after_k, after_p, probs, token


def _kinds(logits):
    return ["tensor" if torch.isfinite(v) else "muted" for v in logits]


@diagram
def sampling_steps():
    """Logits to a token: temperature, top-k, top-p, softmax, sample, in
    the package's order, with the distribution after each step."""
    z, after_k, after_p, probs, token = _stages()
    fig, ax = canvas(6.0, 2.5)
    scale = 0.55 / float(z.max())  # logits: one scale for all charts
    gap, y1, y0 = 0.14, 1.75, 0.62

    def step(x, y, op, out, label, scale=scale, kinds=None):
        """An arrow, an operation box, an arrow, the chart it gives (no
        first arrow at the start of a row: x is None there)."""
        if x is None:
            x = 0.2 - gap
        else:
            arrow(ax, (x + 0.04, y + 0.2), (x + gap, y + 0.2))
        x = _stage_op(ax, x + gap, y + 0.2, *op)
        arrow(ax, (x, y + 0.2), (x + gap - 0.04, y + 0.2))
        return _bars(ax, x + gap, y, out, scale, kinds or _kinds(out), label)

    x = _bars(ax, 0.3, y1, LOGITS, scale, _kinds(LOGITS), "$z$")
    tau = f"$\\div\\ \\tau$, $\\tau = {TAU}$"
    x = step(x, y1, (tau, code(apply_temperature), 1.25), z, "$z / \\tau$")
    op = (f"top-k, $k = {TOP_K}$", code(top_k_filter), 0.95)
    x = step(x, y1, op, after_k, "the $k$ largest")
    # the second row goes on from the first row's last chart
    arrow(ax, (x - 0.4, y1 - 0.26), (0.62, y0 + 0.42), curve=-0.04)
    op = (f"top-p, $p = {TOP_P}$", code(top_p_filter), 1.05)
    x = step(None, y0, op, after_p, "the nucleus")
    picked = _kinds(after_p)
    picked[token] = "accent"  # the token this draw picked
    op = ("softmax", "F.softmax", 0.72)  # as in sample_next
    x = step(
        x,
        y0,
        op,
        probs,
        "probabilities $p$",
        0.55 / float(probs.max()),
        picked,
    )
    arrow(ax, (x + 0.04, y0 + 0.2), (x + gap, y0 + 0.2))
    x = _stage_op(ax, x + gap, y0 + 0.2, "sample", "torch.multinomial", 1.25)
    out = box(
        ax,
        (x - 0.62, 0.16),
        0.9,
        0.24,
        "next token",
        kind="accent",
        size=SMALL,
    )
    arrow(ax, (out.x, y0 - 0.01), out.top)
    key(
        ax,
        (0.3, 0.16),
        [
            ("tensor", "kept"),
            ("muted", "set to $-\\infty$"),
            ("accent", "the token drawn"),
        ],
    )
    return fig


# ---------------------------------------------------------------------------
# kv-cache

KV_CELL = 0.46  # width of one position's cell
KV_X0 = 1.3  # left edge of position 0
KV_SLOTS = 7  # slots drawn: five used, two still free


def _kv_x(j):
    return KV_X0 + (j + 0.5) * KV_CELL


def _kv_layer(ax, y, name, t):
    """One layer's cache at step t: K and V of positions 0 .. t-1 read
    back, the new token's q, k, v computed. Returns the frame."""
    right = KV_X0 + KV_SLOTS * KV_CELL + 0.12
    frame = box(
        ax,
        (right / 2 + 0.03, y),
        right - 0.06,
        0.98,
        kind="none",
        edgecolor=GREY,
    )
    text(ax, (0.15, y + 0.27), name, ha="left")
    for row, (sym, dy) in enumerate([("q", 0.27), ("k", 0.0), ("v", -0.27)]):
        text(ax, (KV_X0 - 0.12, y + dy), f"${sym.upper()}$", size=SMALL)
        for j in range(KV_SLOTS):
            if row == 0 and j != t:
                continue  # past queries are used once, never stored
            xy = (_kv_x(j), y + dy)
            if j > t:  # room up to block_size, not written yet
                box(
                    ax,
                    xy,
                    KV_CELL,
                    0.22,
                    kind="none",
                    linestyle=":",
                    edgecolor=GREY,
                )
            else:
                kind = "accent" if j == t else "tensor"
                box(
                    ax,
                    xy,
                    KV_CELL,
                    0.22,
                    f"${sym}_{j}$",
                    kind=kind,
                    size=SMALL,
                )
    return frame


@diagram
def kv_cache():
    """The KV cache: every layer keeps the keys and values of past
    positions; a step computes only the new token's q, k, v."""
    t = 4  # the new token's position
    fig, ax = canvas(6.0, 3.3)
    for j in range(t + 1):  # the tokens: only the newest is fed
        new = j == t
        box(
            ax,
            (_kv_x(j), 0.25),
            KV_CELL,
            0.26,
            kind="accent" if new else "none",
            edgecolor=INK if new else GREY,
        )
        text(
            ax,
            (_kv_x(j), 0.25),
            quoted(WORDS[j]),
            size=SMALL,
            color=ink("accent") if new else GREY,
        )
    text(ax, (0.15, 0.25), "tokens", ha="left")
    low = _kv_layer(ax, 1.12, "layer 1", t)
    text(ax, (0.5, 1.86), "$\\vdots$")
    high = _kv_layer(ax, 2.56, "layer $n_\\mathrm{layer}$", t)
    x = _kv_x(t)
    arrow(ax, (x, 0.39), (x, low.bottom[1]))
    arrow(ax, (x, low.top[1]), (x, high.bottom[1]))
    key(  # what the cells mean: cached, new, free
        ax,
        (0.15, 3.17),
        [
            ("tensor", "from earlier steps, read back"),
            ("accent", "computed in this step"),
            ("none", "free", {"linestyle": ":"}),
        ],
    )
    # what happens in every layer, told once, beside the first
    nx = KV_X0 + KV_SLOTS * KV_CELL + 0.22
    text(
        ax,
        (nx, 1.39),
        "$q_4$ attends over\n$k_0 \\ldots k_4$, $v_0 \\ldots v_4$",
        size=SMALL,
        ha="left",
    )
    text(ax, (nx, 0.96), "$k_4, v_4$ written at", size=SMALL, ha="left")
    text(
        ax, (nx, 0.8), code(KVCache) + ".pos", size=SMALL, mono=True, ha="left"
    )
    text(
        ax,
        (x + 0.36, 0.25),
        "only the newest token is fed",
        size=SMALL,
        ha="left",
        color=GREY,
    )
    return fig
