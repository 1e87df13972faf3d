"""The checks of chapter 8's exercises (generation): temperature, top-k and
top-p filtering of the logits, and filling the KV cache."""

import torch

from llmbook.attention import KVCache
from llmbook.exercises.harness import Case, _randn, exercise
from llmbook.generate import apply_temperature, top_k_filter, top_p_filter


def _temperature(logits, temperature):
    return apply_temperature(logits, temperature)


@exercise(
    "8.1",
    label="ex-gen-temp",
    name="my_temperature",
    params=("logits", "temperature"),
    reference=_temperature,
)
def _cases_6_1():
    cases = []
    for seed, t in enumerate([1.0, 0.5, 2.0, 0.1, 1.7]):
        cases.append(
            Case((_randn(2, 10, seed=seed, scale=3.0), t), f"temperature {t}")
        )
    cases.append(Case((_randn(5, seed=9), 3), "an int temperature"))
    cases += [
        Case(
            (_randn(5, seed=1), 0.0),
            "temperature 0 (greedy is a separate path)",
        ),
        Case((_randn(5, seed=1), -1.0), "negative temperature"),
        Case((_randn(5, seed=1), "hot"), "not a number"),
    ]
    return cases


def _top_k(logits, k):
    return top_k_filter(logits, k)


@exercise(
    "8.2",
    label="ex-gen-topk",
    name="my_top_k",
    params=("logits", "k"),
    reference=_top_k,
)
def _cases_6_2():
    cases = []
    for seed, (shape, k) in enumerate(
        [((10,), 3), ((2, 8), 1), ((3, 20), 5), ((1, 6), 6), ((2, 5), 9)]
    ):
        cases.append(Case((_randn(*shape, seed=seed, scale=2.0), k), f"k={k}"))
    tied = torch.tensor([[3.0, 1.0, 3.0, 2.0, 2.0, 0.0]])
    cases.append(Case((tied, 3), "ties with the k-th largest are kept"))
    cases.append(Case((tied, 1), "two tied maxima"))
    cases += [Case((tied, 0), "k = 0"), Case((tied, 2.5), "a float k")]
    return cases


def _top_p(logits, p):
    return top_p_filter(logits, p)


@exercise(
    "8.3",
    label="ex-gen-topp",
    name="my_top_p",
    params=("logits", "p"),
    reference=_top_p,
)
def _cases_6_3():
    cases = []
    for seed, (shape, p) in enumerate(
        [
            ((10,), 0.9),
            ((2, 8), 0.5),
            ((3, 20), 0.95),
            ((1, 6), 0.3),
            ((2, 30), 0.75),
        ]
    ):
        cases.append(Case((_randn(*shape, seed=seed, scale=2.0), p), f"p={p}"))
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.1]])
    cases += [
        Case((probs.log(), 0.5), "the top token alone reaches p"),
        Case((probs.log(), 0.6), "p crossed by the second token"),
        Case((probs.log(), 1.0), "p = 1 keeps everything"),
        Case(
            (torch.tensor([[9.0, 0.0, 0.0]]), 0.2),
            "one very likely token, p below it",
        ),
    ]
    cases += [
        Case((probs.log(), 0.0), "p = 0"),
        Case((probs.log(), 1.5), "p > 1"),
    ]
    return cases


def _kv_update(cache, layer, k, v):
    if cache.pos + k.size(-2) > cache.block_size:
        raise ValueError(
            f"the cache holds {cache.block_size} positions; {cache.pos} are "
            f"filled and {k.size(-2)} more do not fit"
        )
    return cache.update(layer, k, v)


def _observe_kv(fn, args):
    """Run the update, then look at what it returned and left in the cache:
    the filled positions of every layer, and ``pos``."""
    cache = args[0]
    end = cache.pos + args[2].size(-2)
    keys, values = fn(*args)
    filled = [
        (cache.k[i][:, :, :end].clone(), cache.v[i][:, :, :end].clone())
        for i in range(len(cache.k))
    ]
    return {
        "returned keys": keys,
        "returned values": values,
        "cache contents (layer, k/v)": filled,
        "cache.pos": cache.pos,
    }


@exercise(
    "8.4",
    label="ex-model-kv",
    name="my_kv_update",
    params=("cache", "layer", "k", "v"),
    reference=_kv_update,
    observe=_observe_kv,
)
def _cases_6_4():
    def cache(n_layer, b, nh, block, hs, filled, seed):
        c = KVCache(n_layer, b, nh, block, hs)
        for i in range(n_layer):  # deterministic contents, even unused ones
            c.k[i].copy_(_randn(b, nh, block, hs, seed=seed + i))
            c.v[i].copy_(_randn(b, nh, block, hs, seed=seed + 10 + i))
        c.pos = filled
        return c

    cases = []
    for seed, (nl, b, nh, block, hs, pos, layer, t) in enumerate(
        [
            (1, 1, 1, 8, 4, 0, 0, 3),
            (2, 2, 2, 8, 4, 3, 1, 1),
            (3, 1, 2, 16, 8, 5, 2, 4),
            (2, 1, 1, 6, 2, 5, 0, 1),
            (2, 2, 3, 10, 4, 0, 1, 10),
        ]
    ):
        c = cache(nl, b, nh, block, hs, pos, 100 * seed)
        k = _randn(b, nh, t, hs, seed=7 + seed)
        v = _randn(b, nh, t, hs, seed=17 + seed)
        cases.append(
            Case((c, layer, k, v), f"{pos} filled, {t} new, layer {layer}")
        )
    c = cache(1, 1, 1, 4, 2, 3, 900)
    cases.append(
        Case(
            (c, 0, _randn(1, 1, 2, 2, seed=1), _randn(1, 1, 2, 2, seed=2)),
            "past block_size",
        )
    )
    return cases
