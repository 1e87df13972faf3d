"""Chapter 2: tokenization, byte-level BPE."""

from collections import Counter

import regex

import llmbook.tokenizer as tk

from . import diagram
from .style import SMALL, arrow, box, canvas, code, ink, text

WORD = "café"  # the chapter's example of a non-ASCII word
TOY = "aaabdaaabac"  # the chapter's toy string for the merge loop
SAMPLE = "I'll pay 1,000  ducats... IT'S WELL met!"  # the regex section's
SPACE = "\u2423"  # a visible space, "␣"


def _visible(s):
    """Text with its spaces made visible."""
    return s.replace(" ", SPACE)


def _show(token: bytes) -> str:
    """A token's bytes as text, spaces made visible."""
    return _visible(token.decode("utf-8"))


@diagram
def utf8_bytes():
    """Characters to code points to UTF-8 bytes, for a word with é."""
    fig, ax = canvas(4.3, 1.95)
    u, x0 = 0.56, 1.3  # width of one byte's column; where bytes start
    rows = {"character": 1.68, "code point": 1.13, "UTF-8 bytes": 0.58}
    for name, y in rows.items():
        text(ax, (0.1, y), name, ha="left")
    # Python computes the bytes; the figure shows what it returns.
    text(
        ax,
        (0.1, rows["UTF-8 bytes"] - 0.2),
        ".encode('utf-8')",
        size=SMALL,
        mono=True,
        ha="left",
    )
    x = x0
    for ch in WORD:
        data = ch.encode("utf-8")
        w = u * len(data)
        kind = "accent" if len(data) > 1 else "tensor"
        mid = x + w / 2
        c = box(ax, (mid, rows["character"]), w - 0.08, 0.32, ch, "tensor")
        p = box(
            ax,
            (mid, rows["code point"]),
            w - 0.08,
            0.32,
            f"U+{ord(ch):04X}",
            "tensor",
            size=SMALL,
            mono=True,
        )
        arrow(ax, c.bottom, p.top)
        for i, b in enumerate(data):
            bx = x + (i + 0.5) * u
            box(ax, (bx, rows["UTF-8 bytes"]), u, 0.32, str(b), kind=kind)
            arrow(ax, p.bottom, (bx, rows["UTF-8 bytes"] + 0.16))
        x += w
    # The byte values are the first 256 token ids: no string is unknown.
    text(
        ax,
        ((x0 + x) / 2, rows["UTF-8 bytes"] - 0.4),
        "a byte is one of 256 values: the first 256 token ids",
        size=SMALL,
    )
    return fig


def _merge_steps(text_, n_merges):
    """The ids of `text_` before and after each merge that the package's
    `train_bpe` learns on it: [(ids, merged pair, new id, pair count)]."""
    vocab, merges = tk.train_bpe(text_, 256 + n_merges)
    id_of = {token: i for i, token in vocab.items()}
    ids = list(text_.encode("utf-8"))
    steps = [(ids, None, None, 0)]
    for a, b in merges:
        pair = (id_of[a], id_of[b])
        count = Counter(zip(ids, ids[1:]))[pair]
        ids = tk.merge(ids, pair, id_of[a + b])
        steps.append((ids, pair, id_of[a + b], count))
    return vocab, steps


def _token_row(ax, x, y, ids, vocab, new, u=0.3, h=0.42):
    """One row of tokens, each as wide as its bytes; new tokens accented."""
    for i in ids:
        w = u * len(vocab[i])
        kind = "accent" if i == new else "tensor"
        box(ax, (x + w / 2, y), w, h, kind=kind)
        text(ax, (x + w / 2, y + 0.07), _show(vocab[i]), color=ink(kind))
        text(ax, (x + w / 2, y - 0.11), str(i), SMALL, True, ink(kind))
        x += w
    return x


@diagram
def bpe_merges():
    """BPE on the toy string: each step merges the most frequent pair."""
    vocab, steps = _merge_steps(TOY, 3)
    fig, ax = canvas(5.7, 0.6 * len(steps) + 0.15)
    x0 = 0.65
    for n, (ids, pair, new, count) in enumerate(steps):
        y = 0.6 * (len(steps) - n) - 0.2
        text(ax, (0.05, y), f"step {n}" if n else "start", ha="left")
        end = _token_row(ax, x0, y, ids, vocab, new)
        note = f"{len(ids)} tokens"
        if pair:
            a, b = (_show(vocab[i]) for i in pair)
            note = f"{a} + {b} → {new}, seen {count}×\n" + note
        text(ax, (end + 0.15, y), note, SMALL, ha="left")
    return fig


@diagram
def regex_split():
    """GPT-2's regex cuts text into pre-tokens before any merge."""
    chunks = regex.findall(tk.GPT2_PATTERN, SAMPLE)
    width, mid = 5.8, 2.9
    fig, ax = canvas(width, 1.55)
    cw, pad, gap = 0.075, 0.08, 0.05  # a mono character's width, margins
    row = sum(len(c) * cw + pad + gap for c in chunks) - gap
    x, y = mid - row / 2, 0.55
    size = (len(SAMPLE) * cw + 0.3, 0.3)
    top = box(ax, (mid, 1.3), *size, _visible(SAMPLE), "tensor", mono=True)
    for c in chunks:
        w = len(c) * cw + pad
        box(ax, (x + w / 2, y), w, 0.3, _visible(c), "tensor", mono=True)
        x += w + gap
    arrow(
        ax,
        top.bottom,
        (mid, y + 0.17),
        f"regex.{code(regex.findall)}(GPT2_PATTERN, text)",
        side=0.08,
        ha="left",
        mono=True,
    )
    text(ax, (mid, y - 0.33), "merges happen only inside a pre-token", SMALL)
    return fig
