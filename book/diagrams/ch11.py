"""Chapter 11: concept diagrams."""

import re

from llmbook.finetune import (
    IGNORE,
    RESPONSE,
    format_instruction,
    instruction_batch,
)

from . import diagram
from .style import INK, SMALL, arrow, box, canvas, code, grid, key, text

X0 = 0.62  # where the strip of parts starts; row names to its left
H = 0.3  # row height
MONO = 0.0625  # inches per character of SMALL monospace text
WHITE = dict(facecolor="white", edgecolor="none", pad=1.0)
# How wide each part is drawn (inches); the parts and their order come
# from format_instruction.
WIDTH = {"instruction": 0.78, "input": 0.55, "response": 0.7, "\n": 0.3}


def _parts():
    """[(text, drawn text, is it literal, part)] of one padded example,
    in the order format_instruction writes them."""
    s = format_instruction("instruction", "input", "response")
    pieces = [p for p in re.split(r"(<\|\w+\|>|\n)", s) if p]
    out, part = [], "prompt"
    for p in pieces:
        literal = p not in ("instruction", "input", "response")
        out.append((p, p.replace("\n", "\\n"), literal, part))
        if p == RESPONSE:  # the prompt ends with <|response|>
            part = "answer"
    return out + [("pad", "pad", False, "pad")]


PARTS = _parts()


def _spans():
    """The left and right x of every part."""
    x, out = X0, []
    for p, *_ in PARTS:
        w = WIDTH.get(p, MONO * len(p) + 0.16)
        out.append((x, x + w))
        x += w
    return out


def _row(ax, y, name, kinds, texts):
    """One tensor row over the parts: a box per part, its name at left."""
    text(ax, (X0 - 0.08, y), name, mono=True, ha="right")
    boxes = []
    for (a, b), (_, _, mono, _), k, s in zip(_spans(), PARTS, kinds, texts):
        boxes.append(box(ax, ((a + b) / 2, y), b - a, H, kind=k))
        if s:
            text(
                ax,
                ((a + b) / 2, y),
                s,
                size=SMALL,
                mono=mono or s == str(IGNORE),
                color="white" if k == "accent" else INK,
                bbox=WHITE if k == "muted" else None,
            )
    return boxes


def _labels(ax, y, loss_on, note):
    """The labels row of `instruction_batch(..., loss_on)`: the targets
    that the loss counts (accent) and those it ignores (muted)."""
    kinds, texts = [], []
    for i, (_, shown, _, part) in enumerate(PARTS):
        if part == "pad" or (part == "prompt" and loss_on == "response"):
            kinds.append("muted")
            texts.append("")
        elif i == 0:  # a label, but no position before it predicts it
            kinds.append("tensor")
            texts.append(shown)
        else:
            kinds.append("accent")
            texts.append(shown)
    boxes = _row(ax, y, "labels", kinds, texts)
    # One IGNORE over the whole ignored prompt, one on the padding.
    prompt = [b for b, k in zip(boxes, kinds) if k == "muted"][:-1]
    if prompt:
        mid = (prompt[0].left[0] + prompt[-1].right[0]) / 2
        text(ax, (mid, y), str(IGNORE), size=SMALL, mono=True, bbox=WHITE)
    text(
        ax,
        boxes[-1].top[:1] + (y,),
        str(IGNORE),
        size=SMALL,
        mono=True,
        bbox=WHITE,
    )
    head = f'loss_on="{loss_on}"'
    top = y + H / 2 + 0.13
    text(ax, (X0, top), head, size=SMALL, mono=True, ha="left")
    text(ax, (X0 + MONO * len(head), top), note, size=SMALL, ha="left")
    return boxes


@diagram
def instruction_format():
    """The instruction format's parts, and which labels the loss counts:
    the answer and <|end|> only, or every token."""
    fig, ax = canvas(6.0, 3.05)
    ids = _row(
        ax,
        2.25,
        "ids",
        ["muted" if p == "pad" else "tensor" for *_, p in PARTS],
        [s for _, s, _, _ in PARTS],
    )
    _brackets(ax, 2.25 + H / 2 + 0.12)
    resp = _labels(ax, 1.4, "response", " (default): the answer and its end")
    _labels(ax, 0.65, "all", ": every real token")
    # Position t's logits are scored against the label at t + 1.
    start = ids[4].bottom
    end = (resp[5].left[0] + 0.12, resp[5].top[1])
    arrow(ax, start, end)
    text(
        ax,
        (end[0] + 0.12, 1.88),
        "logits at $t$,\nlabel at $t+1$",
        size=SMALL,
        ha="left",
    )
    text(
        ax,
        (X0, 0.15),
        code(instruction_batch),
        mono=True,
        size=SMALL,
        ha="left",
    )
    key(
        ax,
        (2.0, 0.15),
        [
            ("tensor", "tensor"),
            ("accent", "highlighted"),
            ("muted", "masked / ignored"),
        ],
    )
    return fig


def _brackets(ax, y):
    """The prompt (what generation continues) and the answer."""
    spans = _spans()
    n = sum(p == "prompt" for *_, p in PARTS)
    gap = 0.03
    arrow(
        ax,
        (spans[0][0], y),
        (spans[n - 1][1] - gap, y),
        "prompt: $n_\\mathrm{prompt}$ tokens",
        style="|-|",
        side=0.12,
    )
    arrow(
        ax,
        (spans[n][0] + gap, y),
        (spans[-2][1], y),
        "answer",
        style="|-|",
        side=0.12,
    )


# Three examples of different lengths, for padding and for packing.
EXAMPLES = {"a": 5, "b": 3, "c": 4}
CELL = 0.13


def _mask_kinds(real, n):
    """An n x n attention mask, queries as rows and keys as columns:
    attended (tensor), masked by the mask (muted), or in the future,
    which causality hides in any case (blank)."""
    return [
        [
            "none" if j > i else "tensor" if real(i, j) else "muted"
            for j in range(n)
        ]
        for i in range(n)
    ]


def _mask(ax, top, x, kinds):
    """A mask grid hanging from `top`, with its axes named."""
    n = len(kinds)
    m = grid(ax, (x, top - n * CELL / 2), n, n, CELL, kinds=kinds)
    text(ax, (x, m.bottom[1] - 0.12), "keys", size=SMALL)
    text(ax, (m.left[0] - 0.1, m.y), "queries", size=SMALL, rotation=90)
    return m


def _padded(ax, x, top):
    """The batch padded on the right, and one short row's mask."""
    t = max(EXAMPLES.values())
    labels = [
        [k if j < n else "" for j in range(t)] for k, n in EXAMPLES.items()
    ]
    kinds = [
        ["tensor" if j < n else "muted" for j in range(t)]
        for n in EXAMPLES.values()
    ]
    y = top - len(EXAMPLES) * CELL / 2
    b = grid(ax, (x, y), len(EXAMPLES), t, CELL, kinds=kinds, labels=labels)
    text(ax, (x, top + 0.2), "padding: an example a row")
    text(ax, (b.left[0] - 0.08, b.y), "ids", size=SMALL, ha="right")
    n = EXAMPLES["b"]  # a key is attended if it is a real token
    arrow(ax, b.bottom, (x, top - 0.72))
    text(ax, (x, top - 0.82), "mask of row b", size=SMALL)
    _mask(ax, top - 0.95, x, _mask_kinds(lambda i, j: j < n, t))


def _packed(ax, x, top):
    """All examples in one row, with a block-diagonal causal mask."""
    owner = [k for k, n in EXAMPLES.items() for _ in range(n)]
    start = [owner.index(k) for k in owner]  # where each example begins
    n = len(owner)
    row = grid(ax, (x, top - CELL / 2), 1, n, CELL, labels=[owner])
    text(ax, (x, top + 0.2), "packing: examples end to end")
    text(ax, (row.left[0] - 0.08, row.y), "ids", size=SMALL, ha="right")
    y = top - CELL - 0.13
    text(ax, (row.left[0] - 0.08, y), "positions", size=SMALL, ha="right")
    for j in range(n):  # positions restart at every example
        text(
            ax,
            (row.left[0] + (j + 0.5) * CELL, y),
            str(j - start[j]),
            size=SMALL,
        )
    m = _mask(
        ax, top - 0.55, x, _mask_kinds(lambda i, j: owner[i] == owner[j], n)
    )
    return m, owner


@diagram
def padding_packing():
    """Padding (what llmbook.finetune does) against packing: rows, pads,
    and the attention masks that keep examples apart."""
    fig, ax = canvas(6.0, 2.9)
    top = 2.62
    _padded(ax, 1.0, top)
    m, owner = _packed(ax, 3.3, top)
    # Below the diagonal but across examples: a plain causal mask would
    # let an example attend to the one before it.
    i, j = len(owner) - 2, EXAMPLES["a"] + 1
    cell = (m.left[0] + (j + 0.5) * CELL, m.top[1] - (i + 0.5) * CELL)
    arrow(ax, (m.right[0] + 0.25, cell[1] + 0.25), cell, curve=0.25)
    text(
        ax,
        (m.right[0] + 0.2, cell[1] + 0.42),
        "c may not see a or b:\na plain causal mask\nwould let it",
        size=SMALL,
        ha="left",
        va="bottom",
    )
    key(  # what a mask cell means
        ax,
        (0.2, 0.15),
        [
            ("tensor", "attends"),
            ("muted", "masked"),
            ("none", "future: causal"),
        ],
    )
    return fig
