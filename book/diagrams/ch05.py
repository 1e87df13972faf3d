"""Chapter 5: attention."""

import torch

import llmbook.attention as attn
from llmbook.model import GPTConfig

from . import diagram
from .style import GREY, SMALL, arrow, box, canvas, grid, text

# The chapter's soft lookup: three keys (cheese, bread, apple), their
# prices as values, and a query "something like cheese".
ITEMS = ["cheese", "bread", "apple"]
KEYS = [[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0]]
PRICES = [3.0, 1.0, 2.0]
QUERY = [1.5, 0.5]

# The chapter's toy sentence and sizes: T = 5 tokens, C = 8, D = 4, H = 2.
WORDS = ["The", "mouse", "ate", "the", "cheese"]
C, D, H = 8, 4, 2


def _fmt(x, digits=1):
    return f"{x:.{digits}f}".replace("-", "−")


def _cells(ax, xy, values, kind="tensor", cell=0.3, digits=1):
    """A row vector of numbers as a 1 x n grid."""
    labels = [[_fmt(v, digits) for v in values]]
    kinds = [[kind] * len(values)]
    return grid(ax, xy, 1, len(values), cell, kinds=kinds, labels=labels)


@diagram
def attention_lookup():
    """One query scored against every key; softmax weights mix values."""
    keys, query = torch.tensor(KEYS), torch.tensor(QUERY)
    scores = keys @ query  # q . k_j for every key
    alpha = torch.softmax(scores, dim=0)
    out = alpha @ torch.tensor(PRICES)
    fig, ax = canvas(5.9, 2.2)
    ys = [1.45, 0.95, 0.45]  # one row per key
    heads = {
        1.55: "key $k_j$",
        2.45: "score\n$q \\cdot k_j$",
        3.85: "weight\n$\\alpha_j$",
        4.55: "value\n$v_j$",
        5.6: "output\n$\\Sigma_j\\, \\alpha_j v_j$",
    }
    for x, s in heads.items():
        text(ax, (x, 1.95), s, SMALL, va="center")
    q = _cells(ax, (0.4, ys[1]), QUERY, cell=0.28)
    text(ax, (0.4, ys[1] + 0.3), "query $q$", SMALL)
    for y, item, k, s, a, v in zip(ys, ITEMS, KEYS, scores, alpha, PRICES):
        kb = _cells(ax, (1.55, y), k, cell=0.28)
        text(ax, (1.55, y - 0.23), item, SMALL)
        arrow(ax, q.right, kb.left)
        sb = _cells(ax, (2.45, y), [s], cell=0.42)
        arrow(ax, kb.right, sb.left)
        _cells(ax, (3.85, y), [a], "accent", cell=0.42, digits=3)
        text(ax, (4.2, y), "×")  # weight times value
        vb = _cells(ax, (4.55, y), [v], cell=0.4)
        arrow(ax, vb.right, (4.97, y))
    # Softmax and the sum run over all keys at once: one tall box each.
    soft = box(ax, (3.15, ys[1]), 0.6, 1.35, "softmax", size=SMALL)
    for y in ys:
        arrow(ax, (2.66, y), (soft.x - 0.3, y))
        arrow(ax, (soft.x + 0.3, y), (3.64, y))
    total = box(ax, (5.1, ys[1]), 0.26, 1.35, "$\\Sigma$", size=SMALL)
    ob = _cells(ax, (5.62, ys[1]), [out], cell=0.42, digits=2)
    arrow(ax, total.right, ob.left)
    return fig


def _rows_kinds(rows, cols, row, kind="tensor"):
    """Cell kinds of a grid with one row accented."""
    return [["accent" if i == row else kind] * cols for i in range(rows)]


DASHED = dict(linestyle=(0, (2, 2)), color=GREY)  # guides, not data flow


@diagram
def qkv_projections():
    """Q, K and V: the input X times three weight matrices."""
    T, cell, t = len(WORDS), 0.13, WORDS.index("ate")
    fig, ax = canvas(5.2, 2.75)
    xs, y_res = [2.55, 3.6, 4.65], 0.75  # Q, K, V sit in line with X
    x_box = grid(ax, (1.25, y_res), T, C, cell, kinds=_rows_kinds(T, C, t))
    for i, w in enumerate(WORDS):
        y = y_res + x_box.h / 2 - (i + 0.5) * cell
        text(ax, (x_box.x - x_box.w / 2 - 0.08, y), w, SMALL, ha="right")
    text(ax, (x_box.x, y_res + 0.5), "$X$  $(T, C)$", SMALL)
    # As in a matrix product: each result is in the rows of X and under
    # the columns of its weight matrix.
    y_w = y_res + x_box.h / 2 + 0.3 + C * cell / 2
    left = x_box.right[0]
    y_t = y_res + x_box.h / 2 - (t + 0.5) * cell
    for x, name in zip(xs, "QKV"):
        w = grid(ax, (x, y_w), C, D, cell, kind="weight")
        text(ax, (x, w.y + w.h / 2 + 0.15), f"$W_{name}$  $(C, D)$", SMALL)
        r = grid(ax, (x, y_res), T, D, cell, kinds=_rows_kinds(T, D, t))
        arrow(ax, w.bottom, r.top, **DASHED)
        arrow(ax, (left, y_t), (r.left[0], y_t), style="-", **DASHED)
        left = r.right[0]
        text(ax, (x, y_res - 0.5), f"${name} = XW_{name}$", SMALL)
        text(ax, (x, y_res - 0.68), "$(T, D)$", SMALL)
    return fig


def _mask_grid(ax, xy, allowed, cell, row=None):
    """A T x T matrix, the masked cells muted and row `row` accented."""
    T = len(allowed)
    kinds = [
        [
            ("accent" if i == row else "tensor") if allowed[i][j] else "muted"
            for j in range(T)
        ]
        for i in range(T)
    ]
    return grid(ax, xy, T, T, cell, kinds=kinds)


def _axis_words(ax, g, cell, left=True, top=True):
    """The words beside the rows (queries) and over the columns (keys)."""
    x0, y0 = g.x - g.w / 2, g.y + g.h / 2
    for i, w in enumerate(WORDS):
        if left:
            text(ax, (x0 - 0.06, y0 - (i + 0.5) * cell), w, SMALL, ha="right")
        if top:
            xy = (x0 + (i + 0.5) * cell, y0 + 0.05)
            text(ax, xy, w, SMALL, ha="left", va="bottom", rotation=45)


@diagram
def causal_mask():
    """The causal mask on the T x T scores, and the weights it leaves."""
    T, cell = len(WORDS), 0.27
    allowed = attn.causal_mask(T, T).tolist()  # True: key j <= query i
    fig, ax = canvas(5.3, 2.75)
    y = 1.3
    s = _mask_grid(ax, (1.6, y), allowed, cell)
    a = _mask_grid(ax, (4.05, y), allowed, cell, row=WORDS.index("ate"))
    _axis_words(ax, s, cell)
    _axis_words(ax, a, cell, left=False)
    below = y - s.h / 2 - 0.2
    text(ax, (s.x, below), "scores $S + M$  $(T, T)$", SMALL)
    text(ax, (s.x, below - 0.2), "$-\\infty$ where $j > i$", SMALL)
    text(ax, (a.x, below), "weights $A$  $(T, T)$", SMALL)
    text(ax, (a.x, below - 0.2), "$0$ where $j > i$", SMALL)
    text(ax, (0.2, y), "query $i$", SMALL, rotation=90)
    text(ax, (s.x + 0.2, y + s.h / 2 + 0.55), "key $j$", SMALL)
    arrow(ax, s.right, a.left, "softmax,\nrow by row", side=0.25)
    for i in range(T):  # every row of A is a distribution over its keys
        yi = y + a.h / 2 - (i + 0.5) * cell
        text(ax, (a.x + a.w / 2 + 0.08, yi), "sum 1", SMALL, ha="left")
    return fig


def _head_kinds(rows, cols, d):
    """Columns of head 0 accented, the other heads' columns light."""
    row = ["accent" if j < d else "tensor" for j in range(cols)]
    return [row] * rows


def _heads(ax, xy, n_head, rows, d, cell, step=0.16):
    """(H, T, D) as a stack of T x D grids, head 0 in front."""
    x, y = xy
    for h in reversed(range(n_head)):
        kind = "accent" if h == 0 else "tensor"
        g = grid(ax, (x + h * step, y + h * step), rows, d, cell, kind)
    return g


def _child(module, name):
    """`name`, checked to be a submodule of `module` (a rename breaks the
    build instead of leaving a stale label)."""
    getattr(module, name)
    return name


def _weight(ax, xy, name, shape, attr):
    """A weight matrix as a box: its symbol, shape and attribute name."""
    b = box(ax, xy, 0.72, 0.62, kind="weight")
    text(ax, (xy[0], xy[1] + 0.15), f"${name}$")
    text(ax, (xy[0], xy[1] - 0.02), f"${shape}$", SMALL)
    text(ax, (xy[0], xy[1] - 0.18), attr, SMALL, mono=True)
    return b


@diagram
def multi_head():
    """Heads split from (B, T, C), attend apart, merge, then project."""
    layer = attn.CausalSelfAttention(GPTConfig(n_embd=C, n_head=H))
    T, d, cell = len(WORDS), layer.head_size, 0.1
    fig, ax = canvas(5.9, 2.95)
    top, low, xs = 2.05, 0.6, [0.5, 1.55, 2.65, 3.75, 4.95]
    kinds = _head_kinds(T, C, d)
    x = grid(ax, (xs[0], top), T, C, cell)
    w_qkv = _weight(
        ax, (xs[1], top), "W_{QKV}", "(C, 3C)", _child(layer, "c_attn")
    )
    q = grid(ax, (xs[2], top), T, C, cell, kinds=kinds)
    split = box(
        ax, (xs[3], top), 0.75, 0.42, "view,\ntranspose", size=SMALL, mono=True
    )
    qh = _heads(ax, (xs[4], top), H, T, d, cell)
    zh = _heads(ax, (xs[4], low), H, T, d, cell)
    merge = box(
        ax, (xs[3], low), 0.75, 0.42, "transpose,\nview", size=SMALL, mono=True
    )
    z = grid(ax, (xs[2], low), T, C, cell, kinds=kinds)
    w_o = _weight(ax, (xs[1], low), "W_O", "(C, C)", _child(layer, "c_proj"))
    y = grid(ax, (xs[0], low), T, C, cell)
    for a, b in [(x, w_qkv), (w_qkv, q), (q, split), (split, qh)]:
        arrow(ax, a.right, b.left)
    for a, b in [(zh, merge), (merge, z), (z, w_o), (w_o, y)]:
        arrow(ax, a.left, b.right)
    att = box(ax, (xs[4] - 0.05, (top + low) / 2), 1.65, 0.46)
    text(ax, (att.x, att.y + 0.1), "attention, each head apart", SMALL)
    formula = "$\\mathrm{softmax}(QK^\\top\\!/\\sqrt{D} + M)\\,V$"
    text(ax, (att.x, att.y - 0.1), formula, SMALL)
    # Down the front (head 0) grids, clear of the heads behind them.
    xa = xs[4] - 0.1
    arrow(
        ax,
        (xa, top - 0.25),
        (xa, att.y + 0.23),
        "$Q, K, V$",
        side=-0.06,
        ha="right",
    )
    arrow(ax, (xa, att.y - 0.23), (xa, low + 0.25))
    _shape_labels(ax, xs, top, low)
    return fig


def _shape_labels(ax, xs, top, low):
    """Each tensor's shape, above the top row and below the bottom row."""
    above = ["$x$  $(B, T, C)$", "$Q$  $(B, T, C)$", "$(B, H, T, D)$"]
    below = ["output $(B, T, C)$", "$Z$  $(B, T, C)$", "$Z$  $(B, H, T, D)$"]
    for x, a, b in zip([xs[0], xs[2], xs[4]], above, below):
        text(ax, (x, top + (0.55 if x == xs[4] else 0.42)), a, SMALL)
        text(ax, (x, low - 0.4), b, SMALL)
    text(ax, (xs[2], top - 0.38), "($K$, $V$ alike)", SMALL)
    text(ax, (xs[4], top + 0.73), "$H$ heads, head 0 in front", SMALL)
