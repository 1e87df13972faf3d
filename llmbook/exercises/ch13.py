"""The checks of chapter 13's exercises (today's open models): repeating
the key/value heads of grouped-query attention, the sliding-window mask,
and the top-k routing of a mixture of experts.

The routing check compares weights and ids with ``route(logits, k)``:
softmax over all E experts, the k best, their weights renormalised to sum
to 1. Taking the softmax of the k largest *logits* instead (Mixtral's
order) is the same function, since the softmax's denominator over all E
cancels in the renormalisation: exp(l_i) / sum over the k of exp(l_j)
either way. The check accepts it (tests/test_exercises.py proves so); the
mistake it names is the missing renormalisation. Its logits are random
normals, so no two experts tie and the ids are unambiguous.
"""

import torch

from llmbook.exercises.harness import Case, _randn, exercise
from llmbook.modern import route, window_mask


def _repeat_kv(k, n_group):
    return k.repeat_interleave(n_group, dim=1)


@exercise(
    "13.1",
    label="ex-open-repeat-kv",
    name="my_repeat_kv",
    params=("k", "n_group"),
    reference=_repeat_kv,
    rtol=0.0,
    atol=0.0,
)
def _cases_13_1():
    cases = [
        Case(
            (_randn(2, 4, 5, 8, seed=0), 1),
            "n_group 1: multi-head attention, nothing to repeat",
        ),
        Case(
            (_randn(1, 1, 3, 4, seed=1), 4),
            "one key/value head for all 4 query heads (multi-query)",
        ),
        Case(
            (torch.arange(4.0).reshape(1, 2, 1, 2), 2),
            "query heads 0, 1 read key/value head 0 and heads 2, 3 read "
            "head 1 (h // n_group), not head h % n_kv_head as tiling the "
            "heads (k.repeat) makes them",
        ),
    ]
    for seed, (b, nkv, t, hs, g) in enumerate(
        [
            (2, 2, 3, 4, 2),
            (1, 4, 6, 8, 3),
            (3, 2, 1, 2, 4),
            (1, 8, 2, 16, 4),
            (2, 3, 4, 2, 2),
        ],
        start=10,
    ):
        cases.append(
            Case(
                (_randn(b, nkv, t, hs, seed=seed), g),
                f"{nkv} key/value heads, {nkv * g} query heads, T = {t}",
            )
        )
    cases.append(
        Case(
            (_randn(2, 1, 5, 8, seed=20), 8),
            "multi-query: 8 query heads share one key/value head",
        )
    )
    return cases


def _window_mask(t, window):
    pos = torch.arange(t)
    return window_mask(pos, pos, window)


@exercise(
    "13.2",
    label="ex-open-window",
    name="my_window_mask",
    params=("t", "window"),
    reference=_window_mask,
)
def _cases_13_2():
    return [
        Case((5, None), "window None: plain causal"),
        Case((1, None), "one position"),
        Case((4, 4), "window == t: plain causal"),
        Case((3, 10), "window > t: plain causal"),
        Case(
            (6, 3),
            "window 3: a query sees itself and the 2 keys before it "
            "(j > i - window; j >= i - window lets in one key too many)",
        ),
        Case((5, 1), "window 1: each query sees only itself"),
        Case((8, 2), "window 2"),
        Case((7, 5), "window 5"),
        Case((12, 4), "window 4, 12 positions"),
        Case((2, 1), "window 1, 2 positions"),
    ]


def _route(logits, k):
    return route(logits, k)


@exercise(
    "13.3",
    label="ex-open-route",
    name="my_route",
    params=("logits", "k"),
    reference=_route,
)
def _cases_13_3():
    cases = [
        Case((_randn(3, 4, seed=8), 4), "k = E: every expert, best first"),
        Case(
            (torch.tensor([[2.0, 0.5, 1.0, -1.0]]), 2),
            "the k weights renormalised to sum to 1, not the softmax "
            "probabilities over all E experts",
        ),
    ]
    for seed, (n, e, k) in enumerate(
        [(8, 6, 2), (5, 16, 4), (3, 128, 8), (4, 8, 3), (1, 10, 2)],
        start=1,
    ):
        cases.append(
            Case(
                (_randn(n, e, seed=seed, scale=2.0), k),
                f"{n} token(s), {e} experts, top-{k}",
            )
        )
    cases += [
        Case((_randn(6, 5, seed=7), 1), "k = 1: one expert, weight 1"),
        Case(
            (100.0 + _randn(4, 8, seed=9, scale=3.0), 2),
            "logits near 100: exp of them overflows float32",
        ),
    ]
    return cases
