"""Appendix D: concept diagrams."""

import torch

from . import diagram
from .style import GREY, SMALL, arrow, box, canvas, grid, text

CELL = 0.22  # inches per element
SMALL_CELL = 0.17  # in the broadcasting figure, which has six grids


def _memory(ax, y, values, left):
    """The numbers of a tensor's memory block, in order, as one row."""
    n = len(values)
    return grid(ax, (left + n * CELL / 2, y), 1, n, CELL, labels=[values])


def _hops(ax, mem, y, positions, down, step):
    """Arcs over (or, `down`, under) the memory row from element to
    element of `positions`, each labelled with the step `step`."""
    left = mem.x - mem.w / 2
    sign = -1 if down else 1
    for a, b in zip(positions, positions[1:]):
        xa, xb = (left + (p + 0.5) * CELL for p in (a, b))
        start, end = (xa, y + sign * CELL / 2), (xb, y + sign * CELL / 2)
        # bulge away from the row: up over it, down under it
        arrow(ax, start, end, f"+{step}", curve=-0.6 * sign, side=0.09 * sign)


def _tensor_view(ax, xy, t, name):
    """The first sequence of `t` as a grid, its first row highlighted,
    with the code that makes it above and its shape and strides beside."""
    rows, cols = t.shape[1:]
    kinds = [["accent" if i == 0 else "tensor"] * cols for i in range(rows)]
    g = grid(ax, xy, rows, cols, CELL, kinds=kinds, labels=t[0].tolist())
    text(ax, (g.x, g.y + g.h / 2 + 0.14), name, size=SMALL, mono=True)
    text(
        ax,
        (g.x + g.w / 2 + 0.15, g.y),
        f"shape      {tuple(t.shape)}\nstride     {t.stride()}\n"
        f"contiguous {t.is_contiguous()}",
        size=SMALL,
        mono=True,
        ha="left",
        linespacing=1.5,
    )
    return g


@diagram
def strides():
    """A tensor and its transpose: one memory block, two sets of strides."""
    x = torch.arange(24).reshape(2, 3, 4)  # (B, T, C), as in the appendix
    xt = x.transpose(1, 2)  # (B, C, T): the same memory
    fig, ax = canvas(6.0, 2.55)
    _tensor_view(ax, (0.75, 1.85), x, "x[0]")
    _tensor_view(ax, (3.6, 1.85), xt, "x.transpose(1, 2)[0]")
    y = 0.72
    mem = _memory(ax, y, x.flatten().tolist(), 0.36)
    # one step along the last dimension of each: 1 element for x, 4 for
    # the transpose (its rows are the highlighted first rows above)
    _hops(ax, mem, y, [j * x.stride(-1) for j in range(4)], False, 1)
    _hops(ax, mem, y, [j * xt.stride(-1) for j in range(3)], True, 4)
    text(
        ax,
        (mem.x + mem.w / 2, y - 0.3),
        "memory: the 24 numbers, in order",
        size=SMALL,
        color=GREY,
        ha="right",
    )
    return fig


def _operand(ax, left, y, values, shape, size):
    """A grid of `values` (a list of rows) from `left`, in the top left
    corner of a dashed outline of `size` (rows, cols): the shape that
    broadcasting stretches it to, its repeats in grey (read, not
    copied); `shape` under it all."""
    rows, cols = len(values), len(values[0])
    c = SMALL_CELL
    top = y + size[0] * c / 2
    grid(
        ax,
        (left + cols * c / 2, top - rows * c / 2),
        rows,
        cols,
        c,
        labels=values,
    )
    if (rows, cols) != tuple(size):
        w, h = size[1] * c, size[0] * c
        box(ax, (left + w / 2, y), w, h, kind="none", linestyle="--")
        for i in range(size[0]):
            for j in range(size[1]):
                if i >= rows or j >= cols:  # a repeat of a size-1 axis
                    xy = (left + (j + 0.5) * c, top - (i + 0.5) * c)
                    v = values[i % rows][j % cols]
                    text(ax, xy, v, size=SMALL, color=GREY)
    text(
        ax,
        (left + size[1] * c / 2, top - size[0] * c - 0.13),
        str(shape),
        size=SMALL,
        mono=True,
    )
    return left + size[1] * c


def _broadcast(ax, left, y, terms, code_text):
    """Operands and symbols of one broadcast, left to right from `left`;
    the code that computes it under them."""
    x = left
    for term in terms:
        if isinstance(term, str):
            text(ax, (x + 0.14, y), term)
            x += 0.28
        else:
            x = _operand(ax, x, y, *term)
    text(ax, ((left + x) / 2, y - 0.62), code_text, size=SMALL, mono=True)


@diagram
def broadcasting():
    """A (C,) row and a (B, T, 1) column, stretched to (B, T, C)."""
    x = torch.arange(24).reshape(2, 3, 4)  # (B, T, C)
    bias = torch.tensor([1, 2, 3, 4])  # (C,)
    m = x.max(dim=-1, keepdim=True).values  # (B, T, 1)
    size = x.shape[1:]  # what one sequence of every result looks like
    fig, ax = canvas(6.0, 1.5)
    y = 0.92

    def term(t, whole):
        return (t.tolist(), tuple(whole.shape), size)

    _broadcast(
        ax,
        0.2,
        y,
        [
            term(x[0], x),
            "+",
            term(bias[None], bias),
            "=",
            term((x + bias)[0], x + bias),
        ],
        "x + bias",
    )
    _broadcast(
        ax,
        3.2,
        y,
        [term(x[0], x), "\u2212", term(m[0], m), "=", term((x - m)[0], x - m)],
        "x - m",
    )
    return fig
