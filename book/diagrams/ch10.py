"""Chapter 10: concept diagrams."""

from llmbook.finetune import PLAY_TITLES, Classifier
from llmbook.model import GPTConfig

from . import diagram
from .style import GREY, SMALL, arrow, box, canvas, code, grid, key, text

# A toy batch: two passages, padded on the right to the longer one.
LENGTHS = (4, 6)
T = max(LENGTHS)
CELL = 0.17


def _row_kinds(real, last):
    """Cell kinds of a padded batch: real tokens, the last real one (if
    `last`), padding."""
    rows = []
    for n in LENGTHS:
        rows.append(
            [
                "muted"
                if t >= n
                else ("accent" if last and t == n - 1 else real)
                for t in range(T)
            ]
        )
    return rows


def _tensor(ax, xy, name, last=False, kind="tensor"):
    """A (B, T) grid of the toy batch, with its name above."""
    b = grid(ax, xy, len(LENGTHS), T, CELL, kinds=_row_kinds(kind, last))
    text(ax, (xy[0], xy[1] + b.h / 2 + 0.15), name)
    return b


@diagram
def classification_head():
    """The classifier: the GPT body as it was, a new head on the last
    real token's hidden state instead of the LM head."""
    fig, ax = canvas(6.0, 2.75)
    top, low = 2.0, 0.85
    ids = _tensor(ax, (0.65, top), "ids $(B, T)$")
    body = box(ax, (1.96, top), 1.18, 0.72, kind="weight")
    text(ax, (1.96, top + 0.13), "GPT body")
    text(ax, (1.96, top - 0.15), "wte, blocks, ln_f", size=SMALL, mono=True)
    h = _tensor(ax, (3.25, top), "$h$  $(B, T, C)$", last=True)
    arrow(ax, ids.right, body.left)
    arrow(ax, body.right, h.left)
    _unused_lm_head(ax, (4.95, top), h)
    # Each row's last real position: `last` in Classifier.forward.
    pooled = grid(ax, (3.25, low), len(LENGTHS), 4, CELL, kind="accent")
    text(ax, (3.25 - pooled.w / 2 - 0.1, low), "$(B, C)$", ha="right")
    arrow(
        ax,
        h.bottom,
        pooled.top,
        "h[arange(B), last]",
        side=0.08,
        mono=True,
        ha="left",
    )
    text(
        ax,
        (0.12, low + 0.05),
        "last[b]: the last position\nwhere attention_mask[b] is True",
        size=SMALL,
        mono=True,
        ha="left",
    )
    head = box(ax, (4.45, low), 1.06, 0.5, kind="weight")
    text(
        ax,
        (4.45, low + 0.09),
        f"{code(Classifier)}.head",
        size=SMALL,
        mono=True,
    )
    text(ax, (4.45, low - 0.11), "$(K, C)$", size=SMALL)
    k = len(PLAY_TITLES)  # one class per play
    logits = grid(ax, (5.48, low), len(LENGTHS), k, 0.1)
    text(ax, (5.48, low + logits.h / 2 + 0.13), "logits $(B, K)$")
    arrow(ax, pooled.right, head.left)
    arrow(ax, head.right, logits.left)
    key(
        ax,
        (0.12, 0.2),
        [
            ("weight", "weights"),
            ("accent", "highlighted"),
            ("muted", "masked / ignored"),
        ],
    )
    return fig


def _unused_lm_head(ax, xy, h):
    """The pretrained LM head: still in the model, but nothing reads it."""
    lm = box(ax, xy, 0.6, 0.34, kind="muted", linestyle="--")
    text(ax, (xy[0], xy[1] + 0.3), "lm_head", size=SMALL, mono=True)
    text(ax, (xy[0], xy[1] - 0.3), "$(V, C)$: not applied", size=SMALL)
    arrow(ax, h.right, lm.left, color=GREY, linestyle="--")


def _stack(ax, x, kinds, adapters=False):
    """One classifier drawn as its layers, bottom to top: the embedding,
    the blocks, the final norm, the head; `kinds` gives each one's kind."""
    names = ["wte"] + [f"block {i}" for i in range(len(kinds) - 3)]
    names += ["ln_f", "head"]
    y = 0.62
    for name, kind in zip(names, kinds):
        box(ax, (x, y), 0.78, 0.2, name, kind=kind, size=SMALL, mono=True)
        if adapters and name.startswith("block"):
            # LoRA's two thin matrices beside the frozen projections
            box(ax, (x + 0.47, y), 0.1, 0.2, kind="accent")
        y += 0.27
    return y


@diagram
def finetune_variants():
    """Which parameters train in each of the chapter's five classifiers."""
    n_layer = GPTConfig.preset("book").n_layer
    layers = n_layer + 3  # wte, the blocks, ln_f, head
    frozen, trains = "weight", "accent"
    columns = [
        ("(a) random,\nall layers", [trains] * layers, False),
        ("(b) head only", [frozen] * (layers - 1) + [trains], False),
        (
            "(c) last block\n+ head",
            [frozen] * (layers - 3) + [trains] * 3,
            False,
        ),
        ("(d) all layers", [trains] * layers, False),
        ("(e) LoRA + head", [frozen] * (layers - 1) + [trains], True),
    ]
    fig, ax = canvas(6.0, 2.95)
    for i, (title, kinds, adapters) in enumerate(columns):
        x = 0.5 + i * 1.18
        top = _stack(ax, x, kinds, adapters)
        text(ax, (x, top + 0.12), title, size=SMALL, va="bottom")
    text(ax, (0.5, 0.3), "random weights", size=SMALL, color=GREY)
    for i in range(1, 5):
        text(ax, (0.5 + i * 1.18, 0.3), "pretrained", size=SMALL, color=GREY)
    key(
        ax,
        (1.41, 0.08),
        [
            (trains, "trains"),
            (frozen, "frozen (pretrained)"),
            (trains, "LoRA's $A$, $B$", {"w": 0.07}),  # thin, as drawn
        ],
    )
    return fig
