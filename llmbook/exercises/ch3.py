"""The checks of the counting chapter's exercises: add-k probabilities from
a table of bigram counts, bits per byte from log-probabilities, and the
share of a text's n-grams never seen in training.

The references are the package's formulas: ``addk_probs`` is what
``ngram.NgramModel(..., smoothing="add-k")`` computes for a table of counts
(tests/test_ngram.py checks the two agree on a real text), and
``bits_per_byte`` calls ``ngram.bits_per_byte``; ``unseen_share`` is the
definition, on the windows of the text alone (the package's
``ngram.unseen_share`` also counts the grams that reach into the padding
before the text)."""

import math

import numpy as np
import torch

from llmbook import ngram
from llmbook.exercises.harness import Case, _gen, exercise


def addk_probs(counts, k):
    """(R, V) counts c(h w), one row per context h -> (R, V) float64
    probabilities (c(h w) + k) / (c(h .) + k V)."""
    if not isinstance(counts, torch.Tensor) or counts.ndim != 2:
        raise ValueError("counts must be a 2-D tensor, one row per context")
    if counts.is_floating_point() or counts.dtype == torch.bool:
        raise TypeError(f"counts must hold integers, got {counts.dtype}")
    if bool((counts < 0).any()):
        raise ValueError("counts must be >= 0")
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k <= 0:
        raise ValueError(f"k must be a number > 0, got {k!r}")
    c = counts.to(torch.float64)
    return (c + k) / (c.sum(1, keepdim=True) + k * c.shape[1])


def bigram_counts(text: bytes, vocab_size: int = 256) -> torch.Tensor:
    """The (V, V) table of the bigram counts of ``text``'s bytes."""
    x = torch.tensor(list(text), dtype=torch.long)
    flat = torch.bincount(x[:-1] * vocab_size + x[1:], minlength=vocab_size**2)
    return flat.view(vocab_size, vocab_size)


@exercise(
    "3.1",
    label="ex-ngram-addk",
    name="my_addk_probs",
    params=("counts", "k"),
    reference=addk_probs,
    rtol=1e-9,
    atol=1e-12,
)
def _cases_3_1():
    cases = [
        Case((torch.tensor([[3, 0, 1], [0, 0, 0]]), 1.0), "hand-made"),
        Case((torch.tensor([[2, 2]]), 0.5), "one context"),
        Case((torch.zeros(2, 5, dtype=torch.long), 0.01), "no counts"),
        Case(
            (bigram_counts(b"to be, or not to be", 128), 0.01),
            "bigrams of a line",
        ),
    ]
    for seed in range(10):
        rows, cols = 1 + seed % 4, 2 + 3 * seed
        counts = torch.randint(
            0, 1 + 4 * seed, (rows, cols), generator=_gen(seed)
        )
        cases.append(Case((counts, [1.0, 0.1, 2, 0.003][seed % 4]), "random"))
    cases += [
        Case((torch.tensor([[1, 2]]), 0), "k = 0"),
        Case((torch.tensor([[1, 2]]), -0.5), "a negative k"),
        Case((torch.tensor([1, 2, 3]), 1.0), "a 1-D tensor"),
        Case((torch.tensor([[1, -2]]), 1.0), "a negative count"),
    ]
    return cases


def bits_per_byte(logprobs, n_bytes):
    """Natural log-probabilities of a text's tokens -> bits per byte."""
    if not isinstance(logprobs, torch.Tensor):
        raise TypeError("logprobs must be a torch.Tensor")
    return ngram.bits_per_byte(logprobs.numpy(), n_bytes)


@exercise(
    "3.2",
    label="ex-ngram-bpb",
    name="my_bits_per_byte",
    params=("logprobs", "n_bytes"),
    reference=bits_per_byte,
    rtol=1e-9,
    atol=1e-12,
)
def _cases_3_2():
    half = math.log(0.5)
    cases = [
        Case((torch.tensor([half] * 8, dtype=torch.float64), 8), "1 bit each"),
        Case((torch.tensor([half] * 8, dtype=torch.float64), 2), "4 bytes"),
        Case((torch.tensor([0.0, 0.0], dtype=torch.float64), 5), "certain"),
        Case((torch.zeros(0, dtype=torch.float64), 3), "no tokens"),
    ]
    rng = np.random.default_rng(32)
    for _ in range(10):
        n = int(rng.integers(1, 40))
        p = rng.uniform(0.001, 1.0, n)
        n_bytes = int(n * rng.uniform(1.0, 4.0)) + 1
        cases.append(Case((torch.tensor(np.log(p)), n_bytes), "random"))
    cases += [
        Case((torch.tensor([half], dtype=torch.float64), 0), "zero bytes"),
        Case(
            (torch.tensor([0.5, 0.25], dtype=torch.float64), 2),
            "probabilities, not log-probabilities",
        ),
    ]
    return cases


def unseen_share(train, val, n):
    """The share of the n-grams of ``val`` (its len(val) - n + 1 windows)
    that occur nowhere in ``train``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if len(val) < n:
        raise ValueError(
            f"val has {len(val)} ids, fewer than n = {n}: it has no n-gram"
        )
    seen = {tuple(train[i : i + n]) for i in range(len(train) - n + 1)}
    grams = [tuple(val[i : i + n]) for i in range(len(val) - n + 1)]
    return sum(g not in seen for g in grams) / len(grams)


@exercise(
    "3.3",
    label="ex-ngram-unseen",
    name="my_unseen_share",
    params=("train", "val", "n"),
    reference=unseen_share,
    rtol=1e-12,
    atol=1e-12,
)
def _cases_3_3():
    line = list(b"to be, or not to be, that is the question")
    cases = [
        Case(([1, 2, 3, 1, 2, 4], [1, 2, 4, 2], 2), "hand-made"),
        Case((line, line, 3), "the training text itself"),
        Case((line, list(b"to see, or not to see"), 1), "unigrams"),
        Case((line, list(b"to see, or not to see"), 4), "4-grams"),
        Case(([5, 6], [5, 6, 5], 3), "a training text shorter than n"),
    ]
    rng = np.random.default_rng(33)
    for _ in range(10):
        v = int(rng.integers(2, 6))
        train = rng.integers(0, v, int(rng.integers(1, 60))).tolist()
        val = rng.integers(0, v, int(rng.integers(4, 30))).tolist()
        cases.append(Case((train, val, int(rng.integers(1, 5))), "random"))
    cases += [
        Case(([1, 2, 3], [1, 2], 3), "val shorter than n"),
        Case(([1, 2, 3], [1, 2, 3], 0), "n = 0"),
    ]
    return cases
