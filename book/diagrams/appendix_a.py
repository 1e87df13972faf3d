"""Appendix A: concept diagrams."""

import torch

from llmbook.model import Block, GPTConfig

from . import diagram
from .style import (
    FILL,
    GREY,
    INK,
    SIZE,
    SMALL,
    arrow,
    box,
    canvas,
    grid,
    ink,
    text,
)

CELL = 0.14  # inches per matrix cell in the shape drawings
GRAD = "accent"  # gradients are drawn dark: the backward pass's tensors


def matrix(ax, left, y, shape, kind, name, dims, note="", cell=CELL):
    """A `shape` (rows, cols) grid whose left edge is at `left`, centred
    at height `y`, its name above, its dimensions and a note below."""
    rows, cols = shape
    g = grid(ax, (left + cols * cell / 2, y), rows, cols, cell, kind)
    text(ax, (g.x, y + g.h / 2 + 0.13), name)
    text(ax, (g.x, y - g.h / 2 - 0.11), dims, size=SMALL)
    if note:
        text(ax, (g.x, y - g.h / 2 - 0.27), note, size=SMALL, color=GREY)
    return left + g.w


def term_width(term, cell=CELL):
    """How wide a term of `equation` is drawn, the gap after it included."""
    if isinstance(term, str):  # a symbol; a sum or a fraction needs room
        return 0.17 + 0.08 * (len(term) > 1)
    return term[0][1] * cell + 0.07


def equation(ax, left, y, terms, cell=CELL):
    """Lay out `terms` left to right from `left`: a str is a symbol (=, +,
    a sum), a tuple the arguments of `matrix` after `left` and `y`."""
    x = left
    for term in terms:
        if isinstance(term, str):
            text(ax, (x + term_width(term) / 2, y), term)
        else:
            matrix(ax, x, y, *term, cell=cell)
        x += term_width(term, cell)


def centred(ax, centre, y, terms, cell=CELL):
    """`equation`, centred at `centre`."""
    width = sum(term_width(t, cell) for t in terms) - 0.07
    equation(ax, centre - width / 2, y, terms, cell)


@diagram
def linear_backward():
    """The linear layer's forward and backward, with matching shapes."""
    m, i, o = 5, 3, 2  # toy sizes: M rows, I inputs, O outputs
    mi, oi, mo = "$M{\\times}I$", "$O{\\times}I$", "$M{\\times}O$"
    fig, ax = canvas(6.0, 2.8)
    top, bottom = 2.0, 0.68
    forward = [
        ((m, o), "tensor", "$Y$", mo),
        "=",
        ((m, i), "tensor", "$X$", mi),
        ((i, o), "weight", "$W^\\top$", "$I{\\times}O$"),
        "+",
        ((1, o), "weight", "$b$", "$O$"),
    ]
    backward = [
        [
            ((m, i), GRAD, "$\\bar X$", mi),
            "=",
            ((m, o), GRAD, "$\\bar Y$", mo),
            ((o, i), "weight", "$W$", oi),
        ],
        [
            ((o, i), GRAD, "$\\bar W$", oi),
            "=",
            ((o, m), GRAD, "$\\bar Y^\\top$", "$O{\\times}M$"),
            ((m, i), "tensor", "$X$", mi),
        ],
        [
            ((1, o), GRAD, "$\\bar b$", "$O$"),
            "=",
            "$\\sum_m$",
            ((m, o), GRAD, "$\\bar Y$", mo),
        ],
    ]
    centred(ax, 3.15, top, forward)
    for centre, terms in zip([1.25, 3.3, 5.15], backward):
        centred(ax, centre, bottom, terms)
    # the two rows, named at the left edge
    for y, what in [(top, "forward"), (bottom, "backward")]:
        text(ax, (0.1, y), what, size=SMALL, rotation=90, color=GREY)
    return fig


# The block is drawn in eleven slots, left to right. The backward row puts
# under each forward tensor its gradient and under each layer the product
# with its transposed Jacobian. So a forward "+" sits over a place where
# the backward only passes its gradient on (to both operands), and a
# tensor used twice (x, h) sits over a backward sum.
SLOTS = "t+LL+t+LL+t"  # t: a tensor, L: a layer, +: a sum (or nothing)
SLOT_W = {"t": 0.36, "L": 0.62, "+": 0.24}
SLOT_H = {"t": 0.34, "L": 0.5, "+": 0.24}
BACK = FILL["accent"]  # the colour of the backward pass's arrows


def _slot_centres(left, right):
    """The x of each slot's centre, the slots spread over left..right."""
    widths = [SLOT_W[k] for k in SLOTS]
    gap = (right - left - sum(widths)) / (len(SLOTS) - 1)
    return [
        left + sum(widths[:i]) + i * gap + w / 2 for i, w in enumerate(widths)
    ]


def _block_row(ax, xs, y, items):
    """Boxes for `items` (slot, label, kind, code name) at height `y`,
    keyed by slot; a layer's code name is written under its label."""
    boxes = {}
    for slot, label, kind, name in items:
        k = SLOTS[slot]
        boxes[slot] = b = box(
            ax, (xs[slot], y), SLOT_W[k], SLOT_H[k], kind=kind
        )
        if name:
            text(ax, (b.x, y + 0.09), label)
            text(ax, (b.x, y - 0.12), name, size=SMALL, mono=True)
        else:
            text(ax, (b.x, y), label, color=ink(kind))
    return boxes


def _chain(ax, boxes, order, color=INK):
    """Arrows between consecutive boxes of `order`, in that order."""
    for a, b in zip(order, order[1:]):
        a, b = boxes[a], boxes[b]
        start, end = (a.right, b.left) if a.x < b.x else (a.left, b.right)
        arrow(ax, start, end, color=color)


LAYERS = [  # as the appendix's equations name them
    "\\mathrm{Norm}_1",
    "\\mathrm{Attn}",
    "\\mathrm{Norm}_2",
    "\\mathrm{MLP}",
]
LAYER_SLOTS = [2, 3, 7, 8]


def _forward_row(ax, xs, y):
    """x -> Norm_1 -> Attn -> + -> h -> Norm_2 -> MLP -> + -> y, and the
    two skip paths; each layer with its name in the model's `Block`."""
    with torch.device("meta"):  # the block's layers, in the code's order
        block = Block(GPTConfig.preset("tiny"))
    code_names = [n for n, _ in block.named_children()]
    layers = zip(LAYER_SLOTS, LAYERS, code_names)
    boxes = _block_row(
        ax,
        xs,
        y,
        [(0, "$x$", "tensor", ""), (4, "+", "op", "")]
        + [(5, "$h$", "tensor", ""), (9, "+", "op", "")]
        + [(10, "$y$", "tensor", "")]
        + [(s, f"${n}$", "op", c) for s, n, c in layers],
    )
    _chain(ax, boxes, [0, 2, 3, 4, 5, 7, 8, 9, 10])
    for a, b in [(0, 4), (5, 9)]:  # x and h, each used twice
        arrow(ax, boxes[a].top, boxes[b].top, curve=-0.35)


def _backward_row(ax, xs, y):
    """The same block backwards: each layer's J^T, and the gradient of
    each skip path added to its branch's where the forward forked."""
    jacobians = [f"$J_{{{n}}}^\\top$" for n in LAYERS]
    boxes = _block_row(
        ax,
        xs,
        y,
        [(0, "$\\bar x$", "tensor", ""), (1, "+", "accent", "")]
        + [(5, "$\\bar h$", "tensor", ""), (6, "+", "accent", "")]
        + [(10, "$\\bar y$", "tensor", "")]
        + [(s, j, "op", "") for s, j in zip(LAYER_SLOTS, jacobians)],
    )
    _chain(ax, boxes, [10, 8, 7, 6, 5, 3, 2, 1, 0], color=BACK)
    # the skip paths carry the gradient unchanged to the sums
    for a, b, g in [(10, 6, "$\\bar y$"), (5, 1, "$\\bar h$")]:
        start, end = boxes[a].bottom, boxes[b].bottom
        arrow(ax, start, end, g, SIZE, curve=-0.35, side=0.12, color=BACK)


@diagram
def backprop_block():
    """A pre-norm block forward, and backward with its residual sums."""
    fig, ax = canvas(6.0, 2.95)
    xs = _slot_centres(0.3, 5.9)
    top, bottom = 2.05, 0.95
    _forward_row(ax, xs, top)
    _backward_row(ax, xs, bottom)
    text(
        ax,
        (3.1, (top + bottom) / 2),
        "every arrow carries an $M \\times C$ tensor, $M = BT$",
        size=SMALL,
        color=GREY,
    )
    for y, what in [(top, "forward"), (bottom, "backward")]:
        text(ax, (0.1, y), what, size=SMALL, rotation=90, color=GREY)
    return fig
