"""The checks of chapter 6's exercises (the GPT model): rotary position
embeddings, RMSNorm, and counting a configuration's parameters."""

import torch

from llmbook.attention import apply_rope, precompute_rope
from llmbook.exercises.harness import Case, _randn, exercise
from llmbook.model import GPT, GPTConfig, RMSNorm


def _rope(x, cos, sin, offset):
    return apply_rope(x, cos, sin, offset)


@exercise(
    "6.1",
    label="ex-model-rope",
    name="my_rope",
    params=("x", "cos", "sin", "offset"),
    reference=_rope,
)
def _cases_4_1():
    cases = []
    for seed, (shape, block, off) in enumerate(
        [
            ((1, 1, 4, 8), 8, 0),
            ((2, 3, 5, 4), 8, 0),
            ((1, 2, 3, 16), 16, 5),
            ((1, 1, 1, 8), 32, 31),
            ((2, 2, 6, 2), 6, 0),
            ((4, 8), 10, 2),
        ]
    ):
        cos, sin = precompute_rope(shape[-1], block)
        what = f"offset {off}" + (", (T, hs) only" if len(shape) == 2 else "")
        cases.append(Case((_randn(*shape, seed=seed), cos, sin, off), what))
    cos, sin = precompute_rope(8, 4)
    cases.append(
        Case(
            (_randn(1, 1, 3, 8, seed=9), cos, sin, 2),
            "positions past the end of the tables",
        )
    )
    return cases


def _rmsnorm(x, weight, eps):
    norm = RMSNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


@exercise(
    "6.2",
    label="ex-model-rmsnorm",
    name="my_rmsnorm",
    params=("x", "weight", "eps"),
    reference=_rmsnorm,
)
def _cases_4_2():
    cases = []
    for seed, (shape, eps, scale) in enumerate(
        [
            ((2, 3, 8), 1e-5, 1.0),
            ((4, 16), 1e-5, 3.0),
            ((1, 1, 5), 1e-6, 1.0),
            ((2, 2, 2, 6), 1e-5, 0.5),
            ((3, 32), 0.1, 1.0),
        ]
    ):
        x = _randn(*shape, seed=seed, scale=scale) + 0.5 * seed
        w = 1 + _randn(shape[-1], seed=40 + seed, scale=0.3)
        cases.append(Case((x, w, eps), f"eps={eps}"))
    x = torch.full((2, 4), 1e-3)
    cases.append(Case((x, torch.ones(4), 1e-5), "tiny inputs: eps matters"))
    cases.append(Case((torch.zeros(1, 3), torch.ones(3), 1e-5), "all zeros"))
    return cases


def _count_parameters(config):
    with torch.device("meta"):  # shapes only: GPT-2 costs no memory
        return GPT(config).num_parameters()


@exercise(
    "6.3",
    label="ex-model-count",
    name="count_parameters",
    params=("config",),
    reference=_count_parameters,
)
def _cases_4_3():
    tiny = dict(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=8)
    cases = [
        Case((GPTConfig.preset("tiny"),), "tiny preset (GPT-2 style)"),
        Case((GPTConfig.preset("book"),), "book preset (LLaMA style)"),
        Case((GPTConfig.preset("gpt2"),), "GPT-2 small"),
    ]
    variants = [
        dict(tie_weights=False),
        dict(bias=False),
        dict(positions="rope"),
        dict(norm="rmsnorm"),
        dict(mlp="swiglu"),
        dict(mlp="swiglu", n_embd=96, n_head=4),
        dict(
            positions="rope",
            norm="rmsnorm",
            mlp="swiglu",
            bias=False,
            tie_weights=False,
        ),
    ]
    for v in variants:
        desc = ", ".join(f"{k}={val!r}" for k, val in v.items())
        cases.append(Case((GPTConfig(**{**tiny, **v}),), desc))
    cases.append(
        Case(
            (GPTConfig.preset("book", tie_weights=False),),
            "book preset, untied",
        )
    )
    return cases
