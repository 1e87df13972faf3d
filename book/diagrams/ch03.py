"""Language models by counting: concept diagrams."""

from collections import Counter

import numpy as np

from llmbook import ngram

from . import diagram
from .style import SMALL, arrow, box, canvas, grid, ink, text

TOY = "the cat sat on the mat; that cat ate the rat"  # the chapter's toy
CONTEXT = "at"  # the context h the figures follow (n = 3)
DISCOUNT = 0.75  # the chapter's Kneser-Ney discount
SPACE = "\u2423"  # a visible space


def _shown(ch: str) -> str:
    return SPACE if ch == " " else ch


def _text_strip(ax, y, cell):
    """The toy text as cells; each occurrence of the context accented and
    the character after it light. Returns the x of each cell's centre."""
    x0 = 2.9 - len(TOY) * cell / 2
    xs = [x0 + (i + 0.5) * cell for i in range(len(TOY))]
    starts = [i for i in range(len(TOY) - 2) if TOY[i : i + 2] == CONTEXT]
    kinds = ["none"] * len(TOY)
    for i in starts:
        kinds[i] = kinds[i + 1] = "accent"
        kinds[i + 2] = "tensor"
    for x, ch, kind in zip(xs, TOY, kinds):
        box(ax, (x, y), cell, 0.24, _shown(ch), kind, size=SMALL, mono=True)
    return xs, starts


@diagram
def ngram_counting():
    """A window of n - 1 = 2 characters and the next one; the counts of
    what follows the context; the next character's distribution."""
    fig, ax = canvas(5.8, 2.2)
    cell = 0.125
    xs, starts = _text_strip(ax, 1.98, cell)
    follow = Counter(TOY[i + 2] for i in starts)
    total = sum(follow.values())
    text(
        ax,
        (2.9, 1.7),
        f"every place the context $h$ = '{CONTEXT}' occurs "
        "(dark), and the character $w$ after it (light)",
        size=SMALL,
    )
    # the count table: one column per character seen after h
    symbols = [w for w, _ in follow.most_common()]
    labels = [
        [f"'{_shown(w)}'" for w in symbols],
        [follow[w] for w in symbols],
    ]
    table = grid(ax, (2.0, 0.75), 2, len(symbols), cell=0.4, labels=labels)
    text(ax, (1.3, 0.85), "$w$", ha="right")
    text(ax, (1.3, 0.65), "$c(h\\,w)$", ha="right")
    arrow(ax, (table.x, 1.55), table.top, "count", side=-0.3)
    # the distribution: bars of height p(w | h) = c(h w) / c(h .)
    x0, width, base, scale = 3.7, 0.42, 0.35, 0.9
    for j, w in enumerate(symbols):
        p = follow[w] / total
        x = x0 + j * (width + 0.12)
        box(ax, (x, base + p * scale / 2), width, p * scale, kind="tensor")
        text(ax, (x, base + p * scale + 0.1), f"{p:.2f}", size=SMALL)
        text(ax, (x, base - 0.12), f"'{_shown(w)}'", size=SMALL, mono=True)
    right = x0 + (len(symbols) - 1) * (width + 0.12) + width / 2
    ax.plot(
        [x0 - width / 2 - 0.05, right + 0.05],
        [base, base],
        color=ink("op"),
        lw=0.8,
    )
    arrow(
        ax,
        table.right,
        (x0 - width / 2 - 0.1, 0.75),
        f"$\\div\\, c(h\\,\\cdot) = {total}$",
        side=0.14,
    )
    text(ax, (right + 0.15, base + 0.2), "$p(w \\mid h)$", ha="left")
    return fig


def _gammas():
    """Kneser-Ney's gamma at each level for the context, from the package's
    counts of the toy text: [(level, the share handed down)], n = 3 to 1."""
    ids = np.frombuffer(TOY.encode(), np.uint8).astype(np.int64)
    c = ngram.count_ngrams(ids, 3, 256)
    g = ngram.gram_ids(c, np.frombuffer(CONTEXT.encode(), np.uint8))
    h2, h1 = int(g[2, 1]), int(g[1, 1])  # the grams 'at' and 't'
    d = DISCOUNT
    return [
        (3, d * c.followers[3][h2] / c.totals[3][h2]),
        (2, d * c.followers[2][h1] / c.continuation_totals[2][h1]),
        (1, d * c.followers[1][0] / c.continuation_totals[1][0]),
    ]


@diagram
def kneser_ney():
    """Each level keeps its discounted counts and hands the discount's mass
    gamma down to the level below, which is mixed in with that weight."""
    rows = [
        ("order 3: counts", f"$c(h\\,w)$, $h$ = '{CONTEXT}'"),
        (
            "order 2: continuations",
            f"$N_{{1+}}(\\bullet\\;{CONTEXT[1:]}\\;w)$",
        ),
        ("order 1: continuations", "$N_{1+}(\\bullet\\;w)$"),
        ("uniform", "$1/V$"),
    ]
    gammas = _gammas() + [(0, 0.0)]
    fig, ax = canvas(5.8, 2.75)
    x0, width, h = 2.05, 2.6, 0.3
    ys = [2.4, 1.7, 1.0, 0.3]
    for (name, what), (_, gamma), y in zip(rows, gammas, ys):
        text(ax, (0.05, y + 0.08), name, ha="left")
        text(ax, (0.05, y - 0.12), what, size=SMALL, ha="left")
        kept = width * (1 - gamma)
        label = "max$(a - d, 0)\\,/\\,t$" if gamma else "every $w$ alike"
        box(ax, (x0 + kept / 2, y), kept, h, label, "tensor", size=SMALL)
        if gamma:
            box(
                ax,
                (x0 + kept + width * gamma / 2, y),
                width * gamma,
                h,
                "$\\gamma$",
                "accent",
                size=SMALL,
            )
            text(
                ax,
                (x0 + width + 0.1, y),
                f"$\\gamma$ = {gamma:.2f}",
                size=SMALL,
                ha="left",
            )
    # the discount's mass goes to the level below, scaled by gamma
    for (_, gamma), y, below in zip(gammas, ys, ys[1:]):
        xg = x0 + width * (1 - gamma / 2)
        arrow(
            ax,
            (xg, y - h / 2),
            (xg - 0.25, below + h / 2),
            "$\\times\\,\\gamma$",
            side=-0.2,
        )
    text(
        ax,
        (x0 + width / 2, 2.75 - 0.1),
        "$p(w \\mid h)$ = discounted counts"
        " + $\\gamma$ $\\times$ the level below",
        size=SMALL,
    )
    return fig
