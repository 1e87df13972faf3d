"""Chapter 14: concept diagrams."""

from llmbook.align import dpo_loss, group_advantages, grpo_loss

from . import diagram
from .style import SMALL, arrow, box, canvas, code, key, text

ANSWER_W, ANSWER_H = 1.35, 0.3


@diagram
def dpo_pair():
    """One preference pair: a right and a wrong answer to one question,
    each scored by the policy and the frozen reference; the loss pushes
    the policy's log-ratio of the chosen above the rejected's."""
    fig, ax = canvas(6.0, 2.55)
    q = box(ax, (0.75, 1.35), 1.2, 0.62, "question\n(prompt $x$)")
    ys = {"chosen": 1.95, "rejected": 0.75}
    answers = {
        "chosen": ("chosen $y_w$: right", "accent"),
        "rejected": ("rejected $y_l$: wrong", "tensor"),
    }
    for name, y in ys.items():
        label, kind = answers[name]
        a = box(ax, (2.3, y), ANSWER_W, ANSWER_H, label, kind=kind, size=SMALL)
        arrow(ax, q.right, a.left)
        s = "w" if name == "chosen" else "l"
        r = box(
            ax,
            (3.95, y),
            1.55,
            0.5,
            rf"$\beta\,\log\frac{{\pi_\theta(y_{s}\mid x)}}"
            rf"{{\pi_\mathrm{{ref}}(y_{s}\mid x)}}$",
            kind="op",
            size=SMALL,
        )
        arrow(ax, a.right, r.left)
        text(ax, (3.95, y + 0.38), f"implicit reward $r_{s}$", size=SMALL)
    loss = box(
        ax,
        (5.3, 1.35),
        1.25,
        0.55,
        r"$-\log\sigma(r_w - r_l)$",
        kind="weight",
        size=SMALL,
    )
    arrow(ax, (4.73, ys["chosen"]), loss.top)
    arrow(ax, (4.73, ys["rejected"]), loss.bottom)
    text(ax, (5.3, 0.5), "lower when $r_w > r_l$", size=SMALL)
    text(ax, (0.75, 0.72), "both sampled from\nthe starting model", size=SMALL)
    text(ax, (0.1, 0.15), code(dpo_loss), mono=True, size=SMALL, ha="left")
    key(
        ax,
        (1.1, 0.15),
        [("accent", "reward 1"), ("tensor", "reward 0"), ("weight", "loss")],
    )
    return fig


@diagram
def grpo_group():
    """A group of answers sampled for one question, scored by code; each
    answer's advantage is its reward against the group's mean and
    standard deviation; a group whose answers all score the same has
    advantages of zero and teaches nothing."""
    import torch

    fig, ax = canvas(6.0, 3.0)
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    adv = group_advantages(torch.tensor(rewards), len(rewards)).tolist()
    q = box(ax, (0.7, 1.75), 1.1, 0.62, "question\n+ policy")
    top, step = 2.6, 0.34
    for i, (r, a) in enumerate(zip(rewards, adv)):
        y = top - i * step
        ans = box(
            ax,
            (2.15, y),
            1.05,
            0.26,
            f"answer {i + 1}",
            kind="accent" if r else "tensor",
            size=SMALL,
        )
        arrow(ax, q.right, ans.left, linewidth=0.6)
        text(ax, (3.0, y), f"$r$ = {r:.0f}", size=SMALL)
        text(ax, (3.95, y), f"$A$ = {a:+.2f}", size=SMALL)
    text(ax, (2.15, top + 0.3), "sampled answers", size=SMALL)
    text(ax, (3.0, top + 0.3), "reward", size=SMALL)
    text(
        ax,
        (3.95, top + 0.3),
        r"$A = \frac{r - \mathrm{mean}}"
        r"{\mathrm{std} + 10^{-4}}$",
        size=SMALL,
    )
    loss = box(
        ax,
        (5.35, 1.75),
        1.2,
        0.9,
        "clipped ratio\n"
        r"$\times A$ per token"
        "\n"
        r"$+\ \beta\,$KL to $\pi_\mathrm{ref}$",
        kind="weight",
        size=SMALL,
    )
    # the whole group's advantages go into one loss
    bottom = top - (len(rewards) - 1) * step
    ax.plot(
        [4.5, 4.5], [bottom - 0.1, top + 0.1], color="#1a1a1a", linewidth=0.9
    )
    arrow(ax, (4.5, 1.75), loss.left)
    # a group that agrees
    y = 0.5
    for i in range(6):
        box(ax, (1.55 + i * 0.42, y), 0.36, 0.22, kind="accent")
    text(ax, (0.7, y), "all right:", size=SMALL)
    text(ax, (4.35, y), "every $A$ = 0: no gradient", size=SMALL, ha="left")
    text(ax, (0.1, 0.12), code(grpo_loss), mono=True, size=SMALL, ha="left")
    key(
        ax,
        (1.1, 0.12),
        [
            ("accent", "right (reward 1)"),
            ("tensor", "wrong (reward 0)"),
            ("weight", "loss"),
        ],
    )
    return fig
