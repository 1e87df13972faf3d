"""Chapter 1: what we build."""

import llmbook.data
import llmbook.generate
import llmbook.model
import llmbook.tokenizer
import llmbook.train

from . import diagram
from .style import GREY, SMALL, arrow, box, canvas, code, ink, text


@diagram
def pipeline():
    """Text to tokens to batches to model to loss, and back to text."""
    steps = [
        ("text", llmbook.data, "tensor"),
        ("token ids", llmbook.tokenizer, "tensor"),
        ("batches\n$(B, T)$", llmbook.data, "tensor"),
        ("GPT", llmbook.model, "weight"),
        ("loss $\\mathcal{L}$", llmbook.train, "accent"),
        ("new text", llmbook.generate, "tensor"),
    ]
    fig, ax = canvas(6.0, 1.9)
    w, gap, y = 0.82, 0.2, 0.95
    boxes = []
    for i, (what, module, kind) in enumerate(steps):
        x = 0.45 + i * (w + gap)
        boxes.append(box(ax, (x, y), w, 0.62, kind=kind))
        text(ax, (x, y + 0.08), what, color=ink(kind))
        text(
            ax,
            (x, y - 0.2),
            code(module).removeprefix("llmbook."),
            size=SMALL,
            mono=True,
            color=ink(kind),
        )
    for a, b in zip(boxes[:4], boxes[1:5]):
        arrow(ax, a.right, b.left)
    # Training updates the weights from the loss; generation samples from
    # the trained model, one token at a time.
    arrow(
        ax,
        boxes[4].top,
        boxes[3].top,
        "update the weights",
        curve=0.8,
        side=0.1,
    )
    arrow(
        ax,
        boxes[3].bottom,
        boxes[5].bottom,
        "sample, one token at a time",
        curve=0.3,
        side=-0.1,
    )
    return fig


@diagram
def next_token():
    """A window of T + 1 ids gives T inputs and T targets, shifted by one."""
    words = ["To", " be", ",", " or", " not", " to", " be"]
    fig, ax = canvas(5.6, 2.35)
    cell, x0 = 0.56, 1.35
    shown = [repr(w)[1:-1] for w in words]

    def row(y, first, n, kind):
        xs = [x0 + (first + j + 0.5) * cell for j in range(n)]
        for x, w in zip(xs, shown[first : first + n]):
            box(ax, (x, y), cell, 0.3, f"'{w}'", kind=kind, size=SMALL)
        return xs

    row(2.0, 0, 7, "tensor")
    text(ax, (0.05, 2.0), "window", ha="left")
    text(ax, (0.05, 1.84), "$T + 1$ tokens", size=SMALL, ha="left")
    xs = row(1.25, 0, 6, "tensor")
    text(ax, (0.05, 1.25), "inputs", ha="left")
    text(ax, (0.05, 1.09), "window[:-1]", size=SMALL, mono=True, ha="left")
    # The target under each input is the id that came next.
    for j, x in enumerate(xs):
        box(
            ax,
            (x, 0.45),
            cell,
            0.3,
            f"'{shown[j + 1]}'",
            kind="accent",
            size=SMALL,
        )
        arrow(ax, (x, 1.09), (x, 0.61))
    text(ax, (0.05, 0.45), "targets", ha="left")
    text(ax, (0.05, 0.29), "window[1:]", size=SMALL, mono=True, ha="left")
    text(
        ax,
        (x0 + 6.5 * cell + 0.08, 0.85),
        "predict\nthe next",
        size=SMALL,
        ha="left",
    )
    # The guess at position t may read the inputs up to t, no further.
    ax.plot(
        [xs[0] - cell / 2, xs[3] + cell / 2], [1.47, 1.47], color=GREY, lw=1.2
    )
    text(
        ax,
        ((xs[0] + xs[3]) / 2, 1.57),
        "what position 4 may read",
        size=SMALL,
        color=GREY,
    )
    return fig
