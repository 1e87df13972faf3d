"""Chapter 9: concept diagrams."""

import torch

from llmbook.generate import Prompts, StaticCacheEngine

from . import diagram
from .style import GREY, INK, SMALL, arrow, box, canvas, code, grid, key, text

WORDS = ["To", " be", ",", " or", " not", " to", " be"]  # as in chapter 1


def quoted(word):
    return f"'{word}'"


def lines(ax, xy, rows, step=0.16, **kw):
    """Several lines of small left-aligned text from `xy` downwards; a
    row is a string or (string, options for `text`)."""
    x, y = xy
    for i, row in enumerate(rows):
        s, opts = row if isinstance(row, tuple) else (row, {})
        text(
            ax,
            (x, y - i * step),
            s,
            **{"size": SMALL, "ha": "left", **kw, **opts},
        )


# ---------------------------------------------------------------------------
# static-cache

SLOTS = 10  # T_max = max_len slots, drawn
SLOT = 0.24  # inches per slot


def _buffer(ax, x0, y, written, new):
    """One layer's K buffer, (B, H, T_max, D): D rows by T_max slots, with
    B x H more behind it. Slots < written: written before; in `new`:
    written now; the rest: not written yet, masked."""
    d = 2
    cx = x0 + SLOTS * SLOT / 2
    kinds = [
        [
            "accent" if j in new else "tensor" if j < written else "muted"
            for j in range(SLOTS)
        ]
    ] * d
    # every (batch row, head) pair has its own D x T_max slice, written
    # at the same slots: two drawn behind the front one
    for k in (2, 1, 0):
        grid(
            ax, (cx + 0.06 * k, y + 0.06 * k), d, SLOTS, cell=SLOT, kinds=kinds
        )
    return x0 + SLOTS * SLOT + 0.12


def _slot_axis(ax, x0, y):
    for j in range(SLOTS):
        text(ax, (x0 + (j + 0.5) * SLOT, y), str(j), size=SMALL, color=GREY)


def _pass(ax, y, words, x0, what, method):
    """The tokens of one forward pass, and an arrow to the buffer at x0
    saying what the pass is and which engine method runs it."""
    cell = 0.38
    labels = [[quoted(w) for w in words]]
    cx = 1.74 - len(words) * cell / 2  # every row ends at one x
    grid(ax, (cx, y), 1, len(words), cell=cell, kind="none", labels=labels)
    arrow(ax, (1.74, y), (x0 - 0.08, y), what, side=0.12)
    name = code(method).split(".")[-1]  # StaticCacheEngine.<name>
    text(ax, (2.09, y - 0.14), name, size=SMALL, mono=True)


@diagram
def static_cache():
    """A static cache: one (B, H, T_max, D) buffer per layer, written by a
    one-pass prefill, then one slot per decode step."""
    fig, ax = canvas(6.0, 2.6)
    x0, t = 2.5, 4  # the buffer's left edge; the prompt's length
    # prefill: the whole prompt, one forward pass, slots 0 .. T-1
    y = 1.85
    _pass(ax, y, WORDS[:t], x0, "one pass", StaticCacheEngine.prefill)
    right = _buffer(ax, x0, y, 0, set(range(t)))
    _slot_axis(ax, x0, y + 0.5)
    text(ax, (x0 - 0.15, y + 0.5), "slot", size=SMALL, color=GREY, ha="right")
    # decode: one token, one slot per step
    y = 0.9
    _pass(ax, y, WORDS[t : t + 1], x0, "one token", StaticCacheEngine.decode)
    _buffer(ax, x0, y, t, {t})
    text(ax, (x0 + (t + 0.5) * SLOT, y - 0.38), "slot $j$", size=SMALL)
    # the buffer's shape, once
    shape = [
        "$(B, H, T_\\mathrm{max}, D)$",
        "per layer, for",
        "$K$ and $V$:",
        "allocated once",
        "",
        "$T_\\mathrm{max}$ =",
    ]
    for i, s in enumerate(shape):
        text(ax, (right + 0.13, 2.1 - 0.17 * i), s, size=SMALL, ha="left")
    text(ax, (right + 0.13, 1.09), "max_len", size=SMALL, mono=True, ha="left")
    key(
        ax,
        (0.15, 0.2),
        [
            ("accent", "written in this pass"),
            ("tensor", "written before"),
            ("muted", "not written yet: masked"),
        ],
    )
    return fig


# ---------------------------------------------------------------------------
# left-padding

# Three prompts of different lengths, as token ids into PROMPT_WORDS (id 0
# is the pad id of `Prompts.left_padded`).
PROMPT_WORDS = ["", "To", " be", ",", " or", "I", " am", "My", " lord"]
PROMPT_IDS = [[1, 2, 3, 4], [5, 6], [7, 8, 3]]


def _padded():
    """idx (B, T), pad (B,), positions (B, T) and the attention mask
    (B, T, T) of the prefill, as `StaticCacheEngine.forward` makes them."""
    idx, pad = Prompts(PROMPT_IDS, False).left_padded()
    slots = torch.arange(idx.size(1)).expand(idx.size(0), -1)  # (B, T)
    pos = (slots - pad[:, None]).clamp_min(0)
    keys = torch.arange(idx.size(1))
    causal = keys <= slots[..., None]
    own = keys == slots[..., None]
    real = keys[None, :] >= pad[:, None]
    mask = causal & (real[:, None, :] | own)  # (B, T, T)
    return idx, pad, pos, mask


def _batch(ax, idx, pad, kinds, y):
    """The left-padded ids (B, T), each row's label, and `pad` (B,)."""
    words = [
        [quoted(PROMPT_WORDS[int(i)]) if int(i) else "" for i in row]
        for row in idx
    ]
    g = grid(ax, (1.35, y), *idx.shape, cell=0.4, kinds=kinds, labels=words)
    text(ax, (g.x, g.top[1] + 0.16), "idx", mono=True)
    for b in range(len(idx)):
        yb = g.top[1] - (b + 0.5) * 0.4
        text(
            ax,
            (g.left[0] - 0.12, yb),
            f"row {b}",
            size=SMALL,
            color=GREY,
            ha="right",
        )
    column = [[str(int(p))] for p in pad]
    pg = grid(
        ax, (g.right[0] + 0.32, y), len(pad), 1, cell=0.26, labels=column
    )
    text(ax, (pg.x, g.top[1] + 0.16), "pad", mono=True)
    return g


def _mask(ax, mask, xy):
    """One row's attention mask: query (row) may see key (column)."""
    seen = [["tensor" if m else "muted" for m in row] for row in mask]
    mg = grid(ax, xy, *mask.shape, cell=0.26, kinds=seen)
    text(ax, (mg.x, mg.bottom[1] - 0.12), "keys", size=SMALL, color=GREY)
    text(
        ax,
        (mg.left[0] - 0.12, mg.y),
        "queries",
        size=SMALL,
        color=GREY,
        rotation=90,
    )
    return mg


@diagram
def left_padding():
    """Prompts of different lengths, padded on the left: pad slots
    masked, positions counted from each row's first real token."""
    idx, pad, pos, mask = _padded()
    fig, ax = canvas(6.0, 2.3)
    y = 1.3
    is_pad = [[j < int(p) for j in range(idx.size(1))] for p in pad]
    kinds = [["muted" if p else "tensor" for p in row] for row in is_pad]
    g = _batch(ax, idx, pad, kinds, y)
    top = g.top[1] + 0.16
    # every row's newest token is in the last column: one column of logits
    last = g.right[0] - 0.2
    arrow(ax, (last, g.bottom[1]), (last, g.bottom[1] - 0.3))
    lines(
        ax,
        (last + 0.1, g.bottom[1] - 0.18),
        ["next-token logits,", "every row"],
    )
    # positions: each row counts from its own first real token (the pad
    # slots' positions are clamped to 0 and never matter: left blank)
    numbers = [
        [str(int(p)) if not q else "" for p, q in zip(r, qs)]
        for r, qs in zip(pos, is_pad)
    ]
    qg = grid(ax, (3.4, y), *idx.shape, cell=0.26, kinds=kinds, labels=numbers)
    text(ax, (qg.x, top), "positions")
    b = 1  # a padded row
    mg = _mask(ax, mask[b], (5.05, y))
    text(ax, (mg.x, top), f"mask of row {b}")
    key(
        ax,
        (2.6, 0.22),
        [
            ("muted", "pad (id 0), or masked"),
            ("tensor", "real token, or seen"),
        ],
    )
    return fig


# ---------------------------------------------------------------------------
# roofline


def _axes(ax, x0, y0, x1, y1):
    """Two log-scale axes from the corner (x0, y0)."""
    arrow(ax, (x0, y0), (x1, y0))
    arrow(ax, (x0, y0), (x0, y1))
    text(
        ax,
        ((x0 + x1) / 2, y0 - 0.2),
        "arithmetic intensity: FLOP per byte read (log scale)",
        size=SMALL,
    )
    text(
        ax,
        (x0 - 0.18, (y0 + y1) / 2),
        "attainable FLOP/s (log scale)",
        size=SMALL,
        rotation=90,
    )


@diagram
def roofline():
    """Attainable FLOP/s against arithmetic intensity: a memory-bound
    slope, a compute-bound roof, and batch-1 decoding far down the slope."""
    fig, ax = canvas(5.2, 2.6)
    x0, y0, x1 = 0.45, 0.4, 5.0
    _axes(ax, x0, y0, x1, 2.45)
    # on log-log axes both bounds are straight lines: FLOP/s <= beta x
    # intensity (a slope) and FLOP/s <= peak (flat); they meet at the ridge
    sx, sy, k, roof = x0 + 0.1, y0 + 0.1, 0.75, 2.1

    def on_slope(x):
        return (x, sy + k * (x - sx))

    ridge = sx + (roof - sy) / k
    ax.plot([sx, ridge, x1 - 0.15], [sy, roof, roof], color=INK, lw=2.0)
    ax.plot([ridge, ridge], [y0, roof], color=GREY, lw=0.8, ls="--")
    text(ax, (ridge, roof + 0.14), "ridge", size=SMALL, color=GREY)
    x, y = on_slope(2.0)
    text(
        ax,
        (x - 0.09, y + 0.13),
        "$\\beta \\times$ intensity",
        size=SMALL,
        rotation=36.9,
    )  # the slope's angle, atan(k)
    text(ax, ((ridge + x1) / 2 + 0.3, roof + 0.14), "peak FLOP/s", size=SMALL)
    text(ax, ((x0 + ridge) / 2 + 0.15, 0.56), "memory-bound")
    text(ax, ((ridge + x1) / 2, 0.56), "compute-bound")
    # where generation's matrix products sit: 2 FLOP per weight, and a
    # weight of b bytes serves 1 vector (decoding), B rows, or T tokens
    points = [
        (on_slope(0.95), "accent", "decode, batch 1: $\\approx 2/b$", 0.12),
        (on_slope(1.65), "tensor", "batch $B$: $\\approx 2B/b$", 0.12),
        ((3.6, roof), "tensor", "prefill, $T$ tokens: $\\approx 2T/b$", 0.0),
    ]
    for xy, kind, label, dx in points:
        box(ax, xy, 0.11, 0.11, kind=kind)
        dy = -0.06 if dx else -0.2  # beside the slope, under the roof
        text(
            ax,
            (xy[0] + dx, xy[1] + dy),
            label,
            size=SMALL,
            ha="left" if dx else "center",
        )
    return fig


# ---------------------------------------------------------------------------
# speculative

SPEC_X0, SPEC_W = 1.75, 0.6  # column 0 (the current token), column pitch
# One round, greedy, k = 4: the current token, the draft's four guesses,
# and the target's own next token after each input position.
CURRENT = " not"
DRAFTED = [" to", " be", ":", " that"]
TARGET = [" to", " be", ","]  # the target's tokens up to the first miss


def _col(c):
    return SPEC_X0 + c * SPEC_W


def _spec_label(ax, y, first, second):
    text(ax, (0.1, y + 0.08), first, ha="left")
    text(ax, (0.1, y - 0.1), second, size=SMALL, ha="left", color=GREY)


def _tok(ax, c, y, word, kind="tensor"):
    return box(
        ax,
        (_col(c), y),
        SPEC_W - 0.08,
        0.28,
        quoted(word) if word else "",
        kind=kind,
        size=SMALL,
    )


def _draft_and_target(ax, y1, y2):
    """The draft's k steps from the current token, and the target's one
    pass over all of them. Returns the target's box."""
    k = len(DRAFTED)
    _spec_label(ax, y1, "draft proposes", f"$k = {k}$ steps, one each")
    row = [_tok(ax, c, y1, w) for c, w in enumerate([CURRENT] + DRAFTED)]
    for a, b in zip(row, row[1:]):  # each guess is the next step's input
        arrow(ax, a.top, b.top, curve=-0.6)
    tgt = box(
        ax,
        ((_col(0) + _col(k)) / 2, y2),
        k * SPEC_W + 0.52,
        0.34,
        "target: one forward pass",
        kind="weight",
    )
    for b in row:
        arrow(ax, b.bottom, (b.x, tgt.top[1]))
    return tgt


@diagram
def speculative():
    """One round of speculative decoding: the draft proposes k tokens,
    the target scores them in one pass, keeps the agreeing prefix and
    replaces the first miss with its own token."""
    k = len(DRAFTED)
    fig, ax = canvas(6.0, 3.2)
    y1, y2, y3, y4, y5 = 2.8, 2.12, 1.4, 0.95, 0.4
    tgt = _draft_and_target(ax, y1, y2)
    # position c predicts the token after it: the target's token for
    # column c + 1, compared with the draft's there (greedy_accept)
    _spec_label(ax, y3, "target's tokens", "greedy: its argmax")
    _spec_label(
        ax, y4, "agrees with draft?", "sampling: kept w.p. $\\min(1, p/q)$"
    )
    n_ok = next(i for i, (d, t) in enumerate(zip(DRAFTED, TARGET)) if d != t)
    for c in range(k + 1):
        used = c <= n_ok  # after the first miss, the rest is discarded
        out = _tok(
            ax,
            c + 1,
            y3,
            TARGET[c] if used else "",
            "tensor" if used else "muted",
        )
        arrow(ax, (_col(c) + 0.1, tgt.bottom[1]), out.top)
        if c < k:
            mark = "✓" if c < n_ok else "✗" if c == n_ok else "–"
            text(ax, (_col(c + 1), y4), mark, color=INK if used else GREY)
    lines(
        ax,
        (_col(k + 1) + 0.38, y3 + 0.16),
        ["bonus", "if all", "kept"],
        color=GREY,
    )
    # emitted: the agreeing prefix, then the target's token at the miss
    _spec_label(ax, y5, "emitted", f"{n_ok + 1} tokens, one target pass")
    for c in range(n_ok + 1):
        _tok(ax, c + 1, y5, TARGET[c], "accent" if c == n_ok else "tensor")
    lines(
        ax,
        (_col(n_ok + 2) - 0.22, y5 + 0.15),
        [
            "the miss: the target's token",
            ("sampling: drawn from", {"color": GREY}),
            ("$\\max(0, p - q)$, renormalised", {"color": GREY}),
        ],
    )
    return fig
