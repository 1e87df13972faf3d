"""One visual style for every concept diagram of the book.

Shapes mean the same thing in every figure:

- tensor: numbers that flow (activations, ids, logits): light fill, square
  corners; drawn as a grid of cells when its shape matters;
- weight: learned parameters: darker fill, square corners, a thicker edge;
- op: an operation: white, rounded corners;
- accent: the one thing the figure is about: dark fill, white text;
- muted: masked, padding, ignored: light grey, hatched.

The fills differ in lightness, so a figure reads in greyscale. Coordinates
are inches with the origin at the bottom left, and a diagram is drawn at
the size it is printed (at most WIDTH wide), so text has the same size in
every figure. Labels use the book's notation ($B$, $T$, $C$, ...) and the
package's names in monospace.
"""

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import (  # noqa: E402
    FancyArrowPatch,
    FancyBboxPatch,
    Rectangle,
)

WIDTH = 6.0  # inches; the PDF's text block is 6.3 inches wide
SIZE = 9  # points: labels
SMALL = 7.5  # points: shapes, notes, code names

INK = "#1a1a1a"
GREY = "#7f7f7f"
FILL = {
    "tensor": "#cfe0f1",
    "weight": "#e39a4c",
    "op": "#ffffff",
    "accent": "#2b5d8a",
    "muted": "#e8e8e8",
    "none": "none",
}
TEXT = {"accent": "#ffffff"}
EDGE_WIDTH = {"weight": 1.4}
HATCH = {"muted": "////"}
SWATCH = (0.18, 0.12)  # inches: a legend's swatch, wide x high
KEY_GAP = 0.3  # inches: between a legend's label and the next swatch

RC = {
    "font.family": "DejaVu Sans",
    "mathtext.fontset": "dejavusans",
    "font.size": SIZE,
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
    "hatch.color": "#a6a6a6",
    "hatch.linewidth": 0.6,
    "lines.linewidth": 1.0,
}


@dataclass(frozen=True)
class Box:
    """Where a drawn shape is, for arrows between shapes."""

    x: float  # centre
    y: float
    w: float
    h: float

    @property
    def left(self):
        return (self.x - self.w / 2, self.y)

    @property
    def right(self):
        return (self.x + self.w / 2, self.y)

    @property
    def top(self):
        return (self.x, self.y + self.h / 2)

    @property
    def bottom(self):
        return (self.x, self.y - self.h / 2)


def canvas(width, height):
    """A blank figure `width` x `height` inches; data units are inches."""
    if width > WIDTH + 1e-9:
        raise ValueError(
            f"a diagram is at most {WIDTH} inches wide (the PDF's text "
            f"block), got {width}; draw it smaller or in two rows"
        )
    with plt.rc_context(RC):
        fig = plt.figure(figsize=(width, height))
        ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def code(obj) -> str:
    """The package's name for `obj` (a module, class or function), so that
    a renamed name breaks the build instead of leaving a stale label."""
    return getattr(obj, "__qualname__", None) or obj.__name__


def ink(kind):
    """The colour of text on a shape of this kind."""
    return TEXT.get(kind, INK)


def text(ax, xy, s, size=SIZE, mono=False, color=INK, **kw):
    kw.setdefault("ha", "center")
    kw.setdefault("va", "center")
    family = "DejaVu Sans Mono" if mono else "DejaVu Sans"
    return ax.text(*xy, s, size=size, color=color, family=family, **kw)


def box(ax, xy, w, h, label="", kind="op", size=SIZE, mono=False, **kw):
    """A shape of one of the five kinds, centred at `xy`, with a label."""
    x, y = xy
    rounded = kind == "op"
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.06"
            if rounded
            else "square,pad=0",
            facecolor=FILL[kind],
            edgecolor=kw.pop("edgecolor", INK),
            linewidth=EDGE_WIDTH.get(kind, 0.9),
            hatch=HATCH.get(kind),
            linestyle=kw.pop("linestyle", "-"),
        )
    )
    if label:
        text(ax, xy, label, size=size, mono=mono, color=ink(kind), **kw)
    return Box(x, y, w, h)


def grid(
    ax,
    xy,
    rows,
    cols,
    cell=0.16,
    kind="tensor",
    kinds=None,
    labels=None,
    size=SMALL,
):
    """A tensor as a `rows` x `cols` grid of cells centred at `xy`.

    `kinds[i][j]` overrides the kind of one cell (a mask, a highlighted
    row); `labels[i][j]` writes into a cell."""
    x0 = xy[0] - cols * cell / 2
    y0 = xy[1] + rows * cell / 2
    for i in range(rows):
        for j in range(cols):
            k = kinds[i][j] if kinds is not None else kind
            ax.add_patch(
                Rectangle(
                    (x0 + j * cell, y0 - (i + 1) * cell),
                    cell,
                    cell,
                    facecolor=FILL[k],
                    edgecolor=INK,
                    linewidth=0.5,
                    hatch=HATCH.get(k),
                )
            )
            if labels is not None and labels[i][j] != "":
                text(
                    ax,
                    (x0 + (j + 0.5) * cell, y0 - (i + 0.5) * cell),
                    str(labels[i][j]),
                    size=size,
                    color=ink(k),
                )
    return Box(xy[0], xy[1], cols * cell, rows * cell)


def arrow(
    ax,
    start,
    end,
    label=None,
    size=SMALL,
    curve=0.0,
    side=0.1,
    style="-|>",
    color=INK,
    **kw,
):
    """An arrow from point `start` to point `end`, with an optional label
    beside its middle (`side` inches to the left of its direction)."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=9,
            connectionstyle=f"arc3,rad={curve}",
            color=color,
            linewidth=kw.pop("linewidth", 1.0),
            linestyle=kw.pop("linestyle", "-"),
            shrinkA=1.5,
            shrinkB=1.5,
        )
    )
    if label:
        (x0, y0), (x1, y1) = start, end
        dx, dy = x1 - x0, y1 - y0
        length = max((dx**2 + dy**2) ** 0.5, 1e-9)
        # The middle of the drawn curve (arc3 bulges to the right of the
        # direction by curve * length / 2), then `side` to the left.
        bulge = curve * length / 2
        nx, ny = -dy / length, dx / length
        text(
            ax,
            (
                (x0 + x1) / 2 + (side - bulge) * nx,
                (y0 + y1) / 2 + (side - bulge) * ny,
            ),
            label,
            size=size,
            **kw,
        )


def key(ax, xy, entries, size=SMALL):
    """A one-line legend from `xy` (its left end, at mid-height): a
    swatch and a label for each `(kind, label)` of `entries`, where `kind`
    is any kind `box` draws ("none": an empty cell). A third element, a
    dict, styles one swatch: `box`'s options (`linestyle`, `edgecolor`)
    and `w`, a width other than the usual. Each entry starts KEY_GAP after
    the label before it ends, as drawn. Returns the x of the last label's
    right end."""
    x, y = xy
    end = x
    renderer = ax.figure.canvas.get_renderer()
    to_data = ax.transData.inverted()
    for kind, label, *style in entries:
        opts = dict(*style)
        w = opts.pop("w", SWATCH[0])
        box(ax, (x + w / 2, y), w, SWATCH[1], kind=kind, **opts)
        t = text(ax, (x + w + 0.06, y), label, size=size, ha="left")
        right = t.get_window_extent(renderer).x1
        end = to_data.transform((right, 0))[0]
        x = end + KEY_GAP
    return end


def save(fig, stem):
    """Write `stem`.svg (website) and `stem`.pdf (PDF); the caller makes
    these writes atomic. No dates, so equal drawings give equal files."""
    with plt.rc_context(RC):
        fig.savefig(f"{stem}.svg", format="svg", metadata={"Date": None})
        fig.savefig(
            f"{stem}.pdf",
            format="pdf",
            metadata={"CreationDate": None, "ModDate": None},
        )
    plt.close(fig)
