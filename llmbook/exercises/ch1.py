"""The checks of chapter 1's exercises (what we will build): the (context,
next token) pairs of a window of ids, the byte counts of a text, and the mean
negative log-likelihood of the targets."""

import random

import torch

from llmbook.exercises.harness import Case, _gen, _randn, exercise
from llmbook.train.loss import cross_entropy


def _next_token_examples(ids, block_size):
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be an int, got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    ids = list(ids)
    return [
        (ids[max(0, t - block_size) : t], ids[t]) for t in range(1, len(ids))
    ]


@exercise(
    "1.1",
    label="ex-pipeline-pairs",
    name="next_token_examples",
    params=("ids", "block_size"),
    reference=_next_token_examples,
)
def _cases_1_1():
    rng = random.Random(11)
    cases = [
        Case(([3, 1, 4, 1, 5], 3), "the chapter's kind of window"),
        Case(([7], 4), "one id: nothing to predict"),
        Case(([], 2), "no ids"),
        Case(([5, 6], 1), "block_size 1"),
    ]
    for _ in range(20):
        ids = [rng.randrange(50) for _ in range(rng.randrange(2, 14))]
        cases.append(Case((ids, rng.randrange(1, 8)), "random"))
    cases += [
        Case(([1, 2, 3], 0), "block_size 0"),
        Case(([1, 2, 3], -2), "negative block_size"),
    ]
    return cases


def _byte_counts(text):
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    counts = [0] * 256
    for b in text.encode("utf-8"):
        counts[b] += 1
    return counts


@exercise(
    "1.2",
    label="ex-pipeline-bytes",
    name="byte_counts",
    params=("text",),
    reference=_byte_counts,
)
def _cases_1_2():
    rng = random.Random(12)
    alphabet = "abc xyz,.\n" + "\u00e9\u00fc\u20ac\u4e2d\U0001f600"
    cases = [
        Case(("hello",), "ASCII"),
        Case(("",), "empty"),
        Case(("na\u00efve caf\u00e9",), "accented letters"),
        Case(("\u20ac",), "one character, three bytes"),
    ]
    for _ in range(16):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
        cases.append(Case((s,), "random"))
    cases += [Case((b"bytes",), "bytes, not str"), Case((42,), "an int")]
    return cases


def _mean_nll(probs, targets):
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2:
        raise ValueError("probs must be a (N, V) tensor")
    return cross_entropy(torch.log(probs), targets).item()


@exercise(
    "1.3",
    label="ex-pipeline-nll",
    name="mean_nll",
    params=("probs", "targets"),
    reference=_mean_nll,
)
def _cases_1_3():
    cases = [
        Case(
            (torch.full((4, 10), 0.1), torch.tensor([0, 3, 9, 3])),
            "uniform over 10 ids: ln 10",
        )
    ]
    for seed in range(12):
        n, v = 3 + seed % 5, 5 + 3 * seed
        logits = _randn(n, v, seed=seed, scale=1 + seed % 3)
        targets = torch.randint(v, (n,), generator=_gen(100 + seed))
        cases.append(Case((logits.softmax(-1), targets), f"seed {seed}"))
    p = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    cases += [
        Case((p, torch.tensor([0, 2])), "hand-made"),
        Case((p, torch.tensor([0, 1, 2])), "3 targets for 2 rows"),
    ]
    return cases
