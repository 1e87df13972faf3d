"""Appendix C: concept diagrams."""

from llmbook.finetune import merge_lora

from . import diagram
from .appendix_a import equation, term_width
from .style import GREY, SMALL, canvas, code, text

# Toy sizes that keep the three shapes apart: the rank r is much smaller
# than the layer's input and output widths.
D_IN, D_OUT, R = 6, 8, 2
CELL = 0.11  # inches per matrix cell
TRAINED = "accent"  # A and B, the only parameters LoRA trains

DIN, DOUT = "d_\\mathrm{in}", "d_\\mathrm{out}"


def _dims(a, b):
    """Dimensions `a` x `b` as mathtext."""
    return f"${a}{{\\times}}{b}$"


@diagram
def lora():
    """A LoRA layer: frozen W beside the trainable rank-r factors A, B."""
    fig, ax = canvas(6.0, 2.75)
    x = ((1, D_IN), "tensor", "$x$", _dims(1, DIN))
    top = [
        ((1, D_OUT), "tensor", "$y$", _dims(1, DOUT)),
        "=",
        x,
        ((D_IN, D_OUT), "weight", "$W^\\top$", _dims(DIN, DOUT), "frozen"),
        "+",
        ((1, D_OUT), "weight", "$b$", _dims(1, DOUT), "frozen"),
    ]
    bottom = [
        "+",
        "$\\dfrac{\\alpha}{r}$",
        x,
        ((D_IN, R), TRAINED, "$A^\\top$", _dims(DIN, "r"), "random"),
        ((R, D_OUT), TRAINED, "$B^\\top$", _dims("r", DOUT), "zero at start"),
    ]
    left = 0.45
    equation(ax, left, 1.95, top, CELL)
    # the second line starts under the "=": it continues the sum
    equation(ax, left + term_width(top[0], CELL), 0.72, bottom, CELL)
    # what the code computes: two thin products, through r numbers
    text(
        ax,
        (4.05, 0.72),
        "$xA^\\top$ is only $r$ numbers:\nthe $"
        + DOUT
        + "{\\times}"
        + DIN
        + "$ matrix $BA$\nis never formed",
        size=SMALL,
        color=GREY,
        ha="left",
        linespacing=1.5,
    )
    return fig


@diagram
def lora_merge():
    """Merging: B A, scaled, has W's shape and is added into W once."""
    fig, ax = canvas(6.0, 1.95)
    terms = [
        ((D_OUT, D_IN), "weight", "$W'$", _dims(DOUT, DIN)),
        "=",
        ((D_OUT, D_IN), "weight", "$W$", _dims(DOUT, DIN), "frozen"),
        "+",
        "$\\dfrac{\\alpha}{r}$",
        ((D_OUT, R), TRAINED, "$B$", _dims(DOUT, "r"), "trained"),
        ((R, D_IN), TRAINED, "$A$", _dims("r", DIN), "trained"),
    ]
    left = 0.45
    equation(ax, left, 1.02, terms, CELL)
    # the package's function that merges, and why merging is free
    x = left + sum(term_width(t, CELL) for t in terms) + 0.3
    text(ax, (x, 1.32), code(merge_lora), size=SMALL, mono=True, ha="left")
    text(
        ax,
        (x, 0.95),
        "once, after training;\n$W'$ has the shape of $W$:\n"
        "no extra cost per token",
        size=SMALL,
        color=GREY,
        ha="left",
        linespacing=1.5,
    )
    return fig
