"""The checks of chapter 9's exercises (making generation fast): int8
quantization per output channel, the greedy acceptance of a draft's tokens,
and the expected number of tokens a round of speculative decoding yields."""

import torch

from llmbook.exercises.harness import Case, _gen, _randn, exercise
from llmbook.generate import (
    expected_tokens_per_round,
    greedy_accept,
    quantize_per_channel,
)


def _quantize(w):
    return quantize_per_channel(w)


@exercise(
    "9.1",
    label="ex-fast-quant",
    name="my_quantize_per_channel",
    params=("w",),
    reference=_quantize,
    rtol=0.0,
    atol=0.0,
)
def _cases_7_1():
    cases = []
    for seed, shape in enumerate([(4, 8), (1, 16), (6, 3), (3, 32)]):
        w = _randn(*shape, seed=seed, scale=0.05)
        cases.append(Case((w,), f"a random {shape[0]}x{shape[1]} matrix"))
    outlier = _randn(2, 10, seed=7, scale=0.01)
    outlier[0, 3] = 1.0
    cases += [
        Case((outlier,), "one large weight sets its row's scale"),
        Case((torch.tensor([[0.0, 0.0], [0.5, -1.0]]),), "a row of zeros"),
        Case((torch.tensor([[-2.0, -0.5, -1.0]]),), "a negative row"),
        Case(
            (torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5]]),),
            "halves round to even, like torch.round",
        ),
        Case((_randn(5, seed=3),), "a vector, not a matrix"),
        Case((torch.ones(2, 3, dtype=torch.long),), "integer weights"),
        Case((torch.tensor([[1.0, float("nan")]]),), "a NaN weight"),
    ]
    return cases


def _greedy_accept(draft_tokens, target_logits):
    return greedy_accept(draft_tokens, target_logits)


def _one_hot_logits(best, vocab=6):
    """Target logits (B, k + 1, V) whose argmax is ``best`` (B, k + 1)."""
    best = torch.tensor(best)
    logits = _randn(*best.shape, vocab, seed=int(best.sum()), scale=0.1)
    return logits.scatter(-1, best[..., None], 5.0)


@exercise(
    "9.2",
    label="ex-fast-greedy",
    name="my_greedy_accept",
    params=("draft_tokens", "target_logits"),
    reference=_greedy_accept,
)
def _cases_7_2():
    cases = [
        Case(
            (torch.tensor([[1, 2, 3]]), _one_hot_logits([[1, 2, 3, 4]])),
            "every draft token kept, then the target's bonus token",
        ),
        Case(
            (torch.tensor([[1, 2, 3]]), _one_hot_logits([[5, 2, 3, 4]])),
            "the first draft token rejected",
        ),
        Case(
            (torch.tensor([[1, 2, 3]]), _one_hot_logits([[1, 2, 0, 4]])),
            "two kept, the third replaced",
        ),
        Case(
            (torch.tensor([[1, 5, 3]]), _one_hot_logits([[1, 2, 3, 4]])),
            "a later match after a mismatch does not count",
        ),
        Case(
            (
                torch.tensor([[0, 1], [2, 2], [4, 0]]),
                _one_hot_logits([[0, 1, 3], [2, 1, 0], [5, 0, 1]]),
            ),
            "a batch: each row keeps its own number",
        ),
        Case(
            (torch.tensor([[3]]), _one_hot_logits([[3, 1]])),
            "k = 1",
        ),
    ]
    g = _gen(11)
    logits = torch.randn(2, 5, 9, generator=g)
    draft = logits[:, :4].argmax(-1)
    draft[1, 2] = (draft[1, 2] + 1) % 9
    cases.append(Case((draft, logits), "random logits, B = 2, k = 4"))
    cases += [
        Case(
            (torch.tensor([[1, 2]]), _one_hot_logits([[1, 2]])),
            "target logits for k positions, not k + 1",
        ),
        Case(
            (torch.tensor([1, 2]), _one_hot_logits([[1, 2, 3]])), "1-D draft"
        ),
    ]
    return cases


def _tokens_per_round(alpha, k):
    return expected_tokens_per_round(alpha, k)


@exercise(
    "9.3",
    label="ex-fast-round",
    name="my_tokens_per_round",
    params=("alpha", "k"),
    reference=_tokens_per_round,
    rtol=1e-9,
    atol=1e-12,
)
def _cases_7_3():
    cases = [
        Case((a, k), f"alpha {a}, k {k}")
        for a, k in [(0.5, 3), (0.8, 1), (0.9, 6), (0.25, 4), (0.6, 10)]
    ]
    cases += [
        Case((0.0, 4), "alpha 0: only the target's token"),
        Case((1.0, 5), "alpha 1: all k and the bonus token"),
        Case((1, 2), "alpha given as the int 1"),
        Case((1.5, 3), "alpha above 1"),
        Case((-0.1, 3), "negative alpha"),
        Case((0.5, 0), "k = 0"),
        Case((0.5, 2.0), "a float k"),
    ]
    return cases
