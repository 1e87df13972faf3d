"""Autograd from scratch: concept diagrams."""

import numpy as np

from llmbook.autograd import Value, topological_order, unbroadcast

from . import diagram
from .style import GREY, SMALL, arrow, box, canvas, code, grid, ink, text

# ---------------------------------------------------------------------------
# computation-graph: the chapter's example, a = 2, b = -3,
# e = a * b, d = e + a, L = d ** 2, run by the package's engine


def _example():
    """The example's values by name, forward and backward done."""
    a, b = Value(2.0), Value(-3.0)
    e = a * b
    d = e + a
    L = d**2
    L.backward()
    return {"a": a, "b": b, "e": e, "d": d, "L": L}


def _value_box(ax, xy, name, v, kind="tensor"):
    """A value: its name and number on top, its gradient below."""
    b = box(ax, xy, 0.7, 0.56, kind=kind)
    kw = {"color": ink(kind)}
    text(ax, (xy[0], xy[1] + 0.11), f"${name} = {v.data:g}$", **kw)
    text(
        ax,
        (xy[0], xy[1] - 0.13),
        f"$\\bar{{{name}}} = {v.grad:g}$",
        size=SMALL,
        **kw,
    )
    return b


def _chain(ax, v, y):
    """e = a * b, d = e + a, L = d ** 2, left to right on one line."""
    a = _value_box(ax, (0.45, y + 0.75), "a", v["a"], kind="accent")
    b = _value_box(ax, (0.45, y - 0.75), "b", v["b"])
    mul = box(ax, (1.3, y), 0.4, 0.36, "$\\times$")
    e = _value_box(ax, (2.1, y), "e", v["e"])
    add = box(ax, (2.9, y), 0.4, 0.36, "$+$")
    d = _value_box(ax, (3.7, y), "d", v["d"])
    sq = box(ax, (4.5, y), 0.5, 0.36, "$(\\cdot)^2$")
    L = _value_box(ax, (5.35, y), "L", v["L"])
    for left, right in [(mul, e), (e, add), (add, d), (d, sq), (sq, L)]:
        arrow(ax, left.right, right.left)
    arrow(ax, b.right, (mul.x - 0.1, mul.bottom[1]))
    return a, mul, add


@diagram
def computation_graph():
    """Forward values and backward gradients of e = ab, d = e + a, L = d^2."""
    v = _example()
    fig, ax = canvas(6.0, 2.75)
    a, mul, add = _chain(ax, v, 1.3)
    # a is used twice: each use sends back its own share, and a sums them
    through_mul = v["e"].grad * v["b"].data
    arrow(
        ax,
        (a.right[0], a.y - 0.1),
        (mul.x - 0.1, mul.top[1]),
        f"$\\bar e \\, b = {through_mul:g}$",
        side=0.3,
    )
    arrow(
        ax,
        (a.right[0], a.y + 0.1),
        add.top,
        f"$\\bar d = {v['d'].grad:g}$",
        curve=-0.25,
        side=0.1,
    )
    text(
        ax,
        (0.08, 1.3),
        f"two uses:\n$\\bar a = {through_mul:g} {v['d'].grad:+g}$",
        size=SMALL,
        ha="left",
    )
    names = {id(n): k for k, n in v.items()}
    order = reversed(topological_order(v["L"]))
    text(
        ax,
        (1.05, 0.15),
        "backward visits "
        + ", ".join(names[id(n)] for n in order)
        + " (reverse topological order)",
        size=SMALL,
        ha="left",
        color=GREY,
    )
    return fig


# ---------------------------------------------------------------------------
# broadcast-gradient: (B, C) + (C,), and the (C,) operand's gradient

_Y_BAR = np.array([[1, 2, 0, 1], [0, 1, 1, 2], [2, 0, 1, 1]])  # (B, C)


def _labelled(ax, xy, values, kind="tensor", cell=0.26):
    rows = [[f"{x:g}" for x in row] for row in np.atleast_2d(values)]
    return grid(ax, xy, len(rows), len(rows[0]), cell, kind, labels=rows)


@diagram
def broadcast_gradient():
    """A (B, C) + (C,) add, and b's gradient summed over the B axis."""
    fig, ax = canvas(6.0, 3.0)
    n_b, n_c = _Y_BAR.shape
    cell = 0.26
    # forward, top row: X (B, C) + b (C,) = Y (B, C)
    top = 2.2
    grid(ax, (0.75, top), n_b, n_c, cell)
    text(ax, (0.75, top + 0.55), "$X$  $(B, C)$")
    text(ax, (1.43, top), "$+$")
    bb = grid(ax, (2.1, top + cell), 1, n_c, cell, kind="weight")
    text(ax, (2.1, top + 0.55), "$b$  $(C,)$")
    for i in range(1, n_b):  # the copies broadcasting reads, never stores
        for j in range(n_c):
            box(
                ax,
                (bb.x - bb.w / 2 + (j + 0.5) * cell, top + cell - i * cell),
                cell,
                cell,
                kind="none",
                linestyle=":",
            )
    text(ax, (2.1, top - 0.55), "copied along $B$", size=SMALL, color=GREY)
    text(ax, (2.78, top), "$=$")
    grid(ax, (3.45, top), n_b, n_c, cell)
    text(ax, (3.45, top + 0.55), "$Y$  $(B, C)$")
    text(
        ax,
        (4.1, top),
        "forward:\n$Y_{ij} = X_{ij} + b_j$",
        size=SMALL,
        ha="left",
    )
    # backward, bottom row: Y-bar, then X-bar = Y-bar and b-bar summed
    low = 0.75
    ybar = _labelled(ax, (0.75, low), _Y_BAR)
    text(ax, (0.75, low + 0.55), "$\\bar Y$  $(B, C)$")
    bbar = _labelled(ax, (3.45, low), unbroadcast(_Y_BAR, (n_c,)), "accent")
    text(ax, (3.45, low + 0.36), "$\\bar b$  $(C,)$")
    arrow(
        ax,
        ybar.right,
        bbar.left,
        f"{code(unbroadcast)}: sum over $B$",
        side=0.14,
    )
    text(
        ax,
        (4.1, low),
        "backward:\n$\\bar X = \\bar Y$\n$\\bar b_j = \\sum_i \\bar Y_{ij}$",
        size=SMALL,
        ha="left",
    )
    return fig
