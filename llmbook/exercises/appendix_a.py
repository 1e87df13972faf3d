"""The checks of appendix A's exercises (backpropagation by hand): the
backward passes of softmax, layer norm and a linear layer.

The inputs are float64 and the tolerances tight (rtol 1e-7): a correct
formula agrees with the package's to many digits, and a subtly wrong one
(a missing term) must not pass for rounding."""

import torch

from llmbook import manual_grad as mg
from llmbook.exercises.harness import Case, _randn, exercise


def _softmax_backward(dout, p):
    return mg.softmax_backward(dout, p)


@exercise(
    "A.1",
    label="ex-bp-softmax",
    name="my_softmax_backward",
    params=("dout", "p"),
    reference=_softmax_backward,
    rtol=1e-7,
    atol=1e-9,
)
def _cases_a_1():
    cases = []
    for seed, shape in enumerate([(5,), (3, 4), (2, 3, 6), (1, 1), (4, 10)]):
        p = _randn(*shape, seed=seed, scale=2.0, dtype=torch.float64)
        p = p.softmax(-1)
        dout = _randn(*shape, seed=30 + seed, dtype=torch.float64)
        cases.append(Case((dout, p), "random"))
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    cases.append(
        Case(
            (torch.tensor([[1.0, -2.0, 3.0, 4.0]], dtype=torch.float64), p),
            "masked entries (p = 0)",
        )
    )
    return cases


def _layernorm_backward(dout, x, w, b, eps):
    _, cache = mg.layernorm_forward(x, w, b, eps)
    return mg.layernorm_backward(dout, cache)


@exercise(
    "A.2",
    label="ex-bp-layernorm",
    name="my_layernorm_backward",
    params=("dout", "x", "w", "b", "eps"),
    reference=_layernorm_backward,
    rtol=1e-7,
    atol=1e-9,
)
def _cases_a_2():
    cases = []
    for seed, (shape, bias) in enumerate(
        [
            ((4, 6), True),
            ((2, 3, 8), True),
            ((5, 4), False),
            ((1, 1, 3), True),
            ((2, 2, 2, 5), False),
        ]
    ):
        c = shape[-1]
        x = _randn(*shape, seed=seed, scale=3.0, dtype=torch.float64) + seed
        w = 1 + _randn(c, seed=20 + seed, scale=0.5, dtype=torch.float64)
        b = _randn(c, seed=40 + seed, dtype=torch.float64) if bias else None
        dout = _randn(*shape, seed=60 + seed, dtype=torch.float64)
        cases.append(
            Case(
                (dout, x, w, b, 1e-5),
                "with bias" if bias else "no bias (b is None)",
            )
        )
    return cases


def _linear_backward(dout, x, w):
    if x.shape[-1] != w.shape[1] or dout.shape[-1] != w.shape[0]:
        raise ValueError("shapes do not fit y = x @ w.T")
    _, cache = mg.linear_forward(x, w)
    dx, dw, _ = mg.linear_backward(dout, cache)
    return dx, dw


@exercise(
    "A.3",
    label="ex-bp-linear",
    name="my_linear_backward",
    params=("dout", "x", "w"),
    reference=_linear_backward,
    rtol=1e-7,
    atol=1e-9,
)
def _cases_a_3():
    cases = []
    for seed, (lead, n_in, n_out) in enumerate(
        [
            ((4,), 3, 5),
            ((2, 3), 4, 4),
            ((1,), 1, 1),
            ((2, 5), 6, 2),
            ((2, 2, 3), 3, 7),
        ]
    ):
        x = _randn(*lead, n_in, seed=seed, dtype=torch.float64)
        w = _randn(n_out, n_in, seed=20 + seed, dtype=torch.float64)
        dout = _randn(*lead, n_out, seed=40 + seed, dtype=torch.float64)
        cases.append(
            Case((dout, x, w), f"x {tuple(x.shape)}, w {tuple(w.shape)}")
        )
    cases.append(
        Case(
            (
                _randn(2, 3, seed=1, dtype=torch.float64),
                _randn(2, 4, seed=2, dtype=torch.float64),
                _randn(5, 4, seed=3, dtype=torch.float64),
            ),
            "dout has 3 features but w has 5 outputs",
        )
    )
    return cases
