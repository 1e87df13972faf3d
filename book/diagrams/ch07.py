"""Chapter 7: training."""

import math

import torch
from matplotlib.backends.backend_agg import RendererAgg

from llmbook.train import TrainConfig, Trainer, clip_grad_norm, lr_at
from llmbook.train.pretrain import estimate_loss

from . import diagram
from .style import (
    FILL,
    GREY,
    INK,
    SMALL,
    arrow,
    box,
    canvas,
    code,
    ink,
    text,
)

BOOK = TrainConfig.preset("book")


def method(fn):
    """A method's name without its class: `Trainer.update` -> `update`."""
    return code(fn).rsplit(".", 1)[-1]


def step_box(ax, xy, name, note, kind="op", w=0.98):
    """One part of a step: its name in code, and what it does below."""
    b = box(ax, xy, w, 0.52, kind=kind)
    text(
        ax, (xy[0], xy[1] + 0.1), name, size=SMALL, mono=True, color=ink(kind)
    )
    text(ax, (xy[0], xy[1] - 0.1), note, size=SMALL, color=ink(kind))
    return b


def pieces(ax, xy, parts, ha="center"):
    """One line centred at `xy` (ha="left": starting there) from (words,
    monospace?) pieces, so that code names inside a sentence are in
    monospace. Pieces are joined by a space, except at punctuation."""
    drawn, widths = [], []
    for words, mono in parts:
        t = text(ax, (0, xy[1]), words, size=SMALL, mono=mono, ha="left")
        # at 1000 dpi: at screen resolution hinting narrows the glyphs
        ext = t.get_window_extent(RendererAgg(100, 100, 1000))
        drawn.append(t)
        widths.append(ext.width / 1000)
    space = 0.035  # inches: a space at SMALL
    gaps = [0.0] + [
        0.0 if words[0] in ",;:.)" or prev[-1] == "(" else space
        for (prev, _), (words, _) in zip(parts, parts[1:])
    ]
    x = xy[0] - (sum(widths) + sum(gaps)) / 2 if ha == "center" else xy[0]
    for t, w, gap in zip(drawn, widths, gaps):
        x += gap
        t.set_x(x)
        x += w


def bracket(ax, x0, x1, y, label, below, mono=True):
    """A bar over (or under) the boxes that one method of `Trainer` runs."""
    arrow(ax, (x0, y), (x1, y), style="|-|", color=GREY, linewidth=0.8)
    dy = -0.13 if below else 0.13
    text(ax, ((x0 + x1) / 2, y + dy), label, size=SMALL, mono=mono)


# -- the loop -----------------------------------------------------------------


@diagram
def training_loop():
    """One optimizer step, in the order of `Trainer.run`."""
    fig, ax = canvas(6.0, 2.8)
    xs = [0.6 + 1.18 * i for i in range(5)]
    top, bottom = 2.1, 0.8
    first = [
        step_box(
            ax, (xs[0], top), f"{method(Trainer.set_lr)}(step)", "sets $\\eta$"
        ),
        step_box(
            ax, (xs[1], top), "batch $x, y$", "$(B, T)$ each", kind="tensor"
        ),
        step_box(ax, (xs[2], top), "forward", "loss $\\mathcal{L}$"),
        step_box(ax, (xs[3], top), "backward", "gradients"),
        step_box(
            ax, (xs[4], top), method(Trainer.check_finite), "NaN, inf: stop"
        ),
    ]
    second = [
        step_box(
            ax,
            (xs[4], bottom),
            code(clip_grad_norm),
            f"norm $\\leq$ {BOOK.grad_clip}",
        ),
        step_box(
            ax,
            (xs[3], bottom),
            "optimizer.step",
            "AdamW moves $\\theta$",
            kind="accent",
        ),
        step_box(ax, (xs[2], bottom), "zero_grad", "clear gradients"),
        step_box(
            ax, (xs[1], bottom), method(Trainer.after_step), "log; evaluate"
        ),
        step_box(ax, (xs[0], bottom), method(Trainer.save), "if due"),
    ]
    for row in (first, second):
        for a, b in zip(row, row[1:]):
            forward = a.x < b.x
            arrow(
                ax,
                a.right if forward else a.left,
                b.left if forward else b.right,
            )
    arrow(ax, first[-1].bottom, second[0].top)
    arrow(ax, second[-1].top, first[0].bottom)
    text(
        ax,
        ((xs[1] + xs[2]) / 2, bottom + 0.38),
        "step += 1",
        size=SMALL,
        mono=True,
    )
    _loop_notes(ax, xs, top, bottom)
    return fig


def _loop_notes(ax, xs, top, bottom):
    """Which method runs which boxes, and what happens every few steps."""
    half = 0.49
    bracket(
        ax,
        xs[1] - half,
        xs[3] + half,
        top + 0.43,
        f"{method(Trainer.gradients)}(step)",
        below=False,
    )
    bracket(
        ax,
        xs[2] - half,
        xs[4] + half,
        bottom - 0.43,
        f"{method(Trainer.update)}()",
        below=True,
    )
    mid, y = (xs[0] + xs[4]) / 2, (top + bottom) / 2
    pieces(
        ax,
        (mid, y + 0.17),
        [
            ("until step =", False),
            ("max_steps", True),
            (f"({BOOK.max_steps} in the book's run); every", False),
            ("eval_interval", True),
            (f"({BOOK.eval_interval}) steps,", False),
        ],
    )
    pieces(
        ax,
        (mid, y - 0.01),
        [
            (method(Trainer.after_step), True),
            ("also measures the validation loss (", False),
            (code(estimate_loss), True),
            (")", False),
        ],
    )


# -- the schedule -------------------------------------------------------------


def line(ax, xs, ys, color=INK, width=1.0, style="-"):
    """A polyline through (xs, ys) in inches: a curve the shapes of the
    style cannot draw (a schedule, a circle)."""
    ax.plot(
        xs,
        ys,
        color=color,
        linewidth=width,
        linestyle=style,
        solid_capstyle="round",
    )


def rate(cfg, step):
    """The package's learning rate at `step` for the run `cfg`."""
    return lr_at(
        step,
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        warmup=cfg.warmup,
        max_steps=cfg.max_steps,
    )


def _schedule_axes(ax, sx, sy, cfg, end):
    """Axes, the phase boundaries on the step axis and the two rates."""
    x0, y0 = sx(0), sy(0)
    arrow(ax, (x0, y0), (sx(end) + 0.15, y0))
    arrow(ax, (x0, y0), (x0, sy(cfg.lr) + 0.25))
    text(ax, (sx(end) + 0.15, y0 - 0.13), "step $s$", size=SMALL, ha="right")
    text(ax, (x0 - 0.08, sy(cfg.lr) + 0.22), "$\\eta$", ha="right")
    for step, sym, name in [
        (cfg.warmup, "$s_w$", "warmup"),
        (cfg.max_steps, "$S$", "max_steps"),
    ]:
        line(ax, [sx(step)] * 2, [y0, sy(rate(cfg, step))], GREY, 0.6, "--")
        text(ax, (sx(step), y0 - 0.13), f"{sym} = {step}", size=SMALL)
        text(ax, (sx(step), y0 - 0.28), name, size=SMALL, mono=True)
    for eta, sym, name in [
        (cfg.lr, "$\\eta_{\\max}$", "lr"),
        (cfg.min_lr, "$\\eta_{\\min}$", "min_lr"),
    ]:
        line(ax, [x0, sx(end)], [sy(eta)] * 2, GREY, 0.6, ":")
        text(
            ax,
            (x0 - 0.08, sy(eta) + 0.07),
            f"{sym} = {eta:g}",
            size=SMALL,
            ha="right",
        )
        text(
            ax,
            (x0 - 0.08, sy(eta) - 0.08),
            name,
            size=SMALL,
            mono=True,
            ha="right",
        )


@diagram
def lr_schedule():
    """Warmup, cosine decay and the floor of `lr_at`, for the book's run."""
    fig, ax = canvas(6.0, 2.65)
    cfg = BOOK
    end = cfg.max_steps + cfg.max_steps // 8  # a little past the last step

    def sx(step):
        return 1.25 + 4.2 * step / end

    def sy(eta):
        return 0.5 + 1.35 * eta / cfg.lr

    _schedule_axes(ax, sx, sy, cfg, end)
    steps = range(end)
    lrs = [rate(cfg, s) for s in steps]
    run = cfg.max_steps  # the run's steps are 0 ... max_steps - 1
    line(
        ax,
        [sx(s) for s in steps[:run]],
        [sy(r) for r in lrs[:run]],
        FILL["accent"],
        1.8,
    )
    line(
        ax,
        [sx(s) for s in steps[run - 1 :]],
        [sy(r) for r in lrs[run - 1 :]],
        FILL["accent"],
        1.8,
        (0, (2, 1.5)),
    )
    top = sy(cfg.lr) + 0.5
    gap = 0.03
    for a, b, name, what in [
        (0, cfg.warmup, "warmup", "linear"),
        (cfg.warmup, cfg.max_steps, "cosine decay", "half a cosine"),
        (cfg.max_steps, end, "floor", "after the run"),
    ]:
        bracket(
            ax, sx(a) + gap, sx(b) - gap, top, name, below=False, mono=False
        )
        text(
            ax, ((sx(a) + sx(b)) / 2, top - 0.2), what, size=SMALL, color=GREY
        )
    return fig


# -- clipping -----------------------------------------------------------------


def _clip(g):
    """`g` (a list of numbers) after the package's `clip_grad_norm` at the
    book's `grad_clip`, and the norm before clipping."""
    p = torch.nn.Parameter(torch.zeros(len(g)))
    p.grad = torch.tensor(g)
    norm = clip_grad_norm([p], BOOK.grad_clip)
    return p.grad.tolist(), norm.item()


@diagram
def grad_clipping():
    """A long gradient scaled back onto the circle of radius max_norm."""
    fig, ax = canvas(6.0, 2.2)
    o, unit = (1.0, 1.0), 0.75  # the origin; inches per unit of norm
    c = BOOK.grad_clip

    def at(v):
        return (o[0] + unit * v[0], o[1] + unit * v[1])

    circle = [
        at((c * math.cos(a), c * math.sin(a)))
        for a in (2 * math.pi * k / 120 for k in range(121))
    ]
    line(ax, *zip(*circle), GREY, 0.8)
    big, small = [2.3, 0.7], [0.3, -0.5]
    clipped, norm = _clip(big)
    kept, _ = _clip(small)
    arrow(ax, o, at(big), color=GREY, linestyle="--", linewidth=1.2)
    arrow(ax, o, at(clipped), color=FILL["accent"], linewidth=2.0)
    arrow(ax, o, at(kept), linewidth=1.2)
    arrow(
        ax,
        o,
        at((-c * 0.6, -c * 0.8)),
        style="-",
        color=GREY,
        label="$c$",
        side=0.1,
        linewidth=0.6,
    )
    x, y = at(big)
    text(
        ax,
        (x + 0.08, y),
        f"$g$, $\\Vert g \\Vert = {norm:.1f}$",
        size=SMALL,
        ha="left",
    )
    x, y = at(clipped)
    text(
        ax,
        (x + 0.08, y - 0.15),
        "$g \\cdot c / \\Vert g \\Vert$, length $c$",
        size=SMALL,
        ha="left",
    )
    x, y = at(kept)
    text(
        ax,
        (x + 0.08, y - 0.05),
        "shorter than $c$: kept",
        size=SMALL,
        ha="left",
    )
    _clip_notes(ax, c)
    return fig


def _clip_notes(ax, c):
    """The rule, and what the vector is."""
    x = 3.7
    text(
        ax,
        (x, 1.85),
        "$g \\leftarrow g \\cdot \\min(1,\\ c\\, /\\, \\Vert g \\Vert)$",
        ha="left",
    )
    pieces(
        ax,
        (x, 1.55),
        [
            ("$c$ =", False),
            ("grad_clip", True),
            (f"= {c} in the book", False),
        ],
        ha="left",
    )
    text(
        ax,
        (x, 1.33),
        "$g$: the gradients of all parameters\nas one vector; its direction "
        "is kept.\nThe norm before clipping is returned\nand logged.",
        size=SMALL,
        ha="left",
        va="top",
    )
