"""The checks of appendix D's exercises (a PyTorch primer): a linear
layer, the shape two shapes broadcast to, softmax, and one step of SGD."""

import torch

from llmbook.exercises.harness import Case, _randn, exercise


def _linear(x, weight, bias):
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[-1]} features in its last dimension; the "
            f"weight of shape {tuple(weight.shape)} expects {weight.shape[1]}"
        )
    return torch.nn.functional.linear(x, weight, bias)


@exercise(
    "D.1",
    label="ex-pt-linear",
    name="my_linear",
    params=("x", "weight", "bias"),
    reference=_linear,
)
def _cases_d_1():
    cases = []
    for seed, (lead, d_in, d_out) in enumerate(
        [((3,), 4, 2), ((2, 5), 3, 3), ((2, 3, 4), 6, 5), ((), 4, 4)]
    ):
        x = _randn(*lead, d_in, seed=seed)
        w = _randn(d_out, d_in, seed=10 + seed)
        b = _randn(d_out, seed=20 + seed)
        cases.append(Case((x, w, b), f"x {tuple(x.shape)}, W {(d_out, d_in)}"))
    cases.append(
        Case(
            (_randn(2, 3, seed=30), _randn(3, 3, seed=31), None),
            "no bias, square weight",
        )
    )
    cases.append(
        Case(
            (_randn(2, 5, seed=32), _randn(5, 3, seed=33), _randn(5, seed=34)),
            "x's features do not match the weight's inputs",
        )
    )
    return cases


def _broadcast_shape(a, b):
    try:
        return tuple(torch.broadcast_shapes(tuple(a), tuple(b)))
    except RuntimeError as e:
        raise ValueError(f"shapes {a} and {b} do not broadcast") from e


@exercise(
    "D.2",
    label="ex-pt-broadcast",
    name="my_broadcast_shape",
    params=("a", "b"),
    reference=_broadcast_shape,
)
def _cases_d_2():
    pairs = [
        ((2, 3, 4), (4,)),
        ((5, 1), (1, 6)),
        ((3,), (2, 1, 3)),
        ((8, 1, 6, 1), (7, 1, 5)),
        ((1,), (1,)),
        ((4, 4), (4, 4)),
        ((), (2, 3)),
        ((2, 1), (3,)),
        ((3,), (4,)),
        ((2, 3), (3, 2)),
        ((5, 4, 3), (4, 1, 3)),
    ]
    return [Case(p, f"{p[0]} with {p[1]}") for p in pairs]


def _softmax(x, dim):
    return torch.softmax(x, dim=dim)


@exercise(
    "D.3",
    label="ex-pt-softmax",
    name="my_softmax",
    params=("x", "dim"),
    reference=_softmax,
)
def _cases_d_3():
    return [
        Case((_randn(3, 5, seed=1), -1), "(3, 5), last dim"),
        Case((_randn(3, 5, seed=2), 0), "(3, 5), dim 0"),
        Case((_randn(2, 3, 4, seed=3, scale=5.0), 1), "(2, 3, 4), dim 1"),
        Case((_randn(4, 6, seed=4) + 1000.0, -1), "logits near 1000"),
        Case((torch.tensor([[1000.0, 0.0, -1000.0]]), -1), "a spread of 2000"),
        Case((torch.zeros(2, 3), -1), "all equal"),
    ]


def _sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)


def _observe_sgd(fn, args):
    """Run the step, then compare the parameters it left (and their
    gradients, which a step must not change)."""
    params = args[0]
    returned = fn(*args)
    return {
        "returned": returned,
        "parameters after the step": [p.detach().clone() for p in params],
        "their .grad after the step": [
            None if p.grad is None else p.grad.clone() for p in params
        ],
    }


@exercise(
    "D.4",
    label="ex-pt-sgd",
    name="my_sgd_step",
    params=("params", "lr"),
    reference=_sgd_step,
    observe=_observe_sgd,
)
def _cases_d_4():
    def params(shapes, seed, no_grad=()):
        out = []
        for i, shape in enumerate(shapes):
            p = _randn(*shape, seed=seed + i).requires_grad_(True)
            if i not in no_grad:
                p.grad = _randn(*shape, seed=seed + 50 + i)
            out.append(p)
        return out

    return [
        Case((params([(3,), (2, 2)], 0), 0.1), "two tensors, lr 0.1"),
        Case((params([(4, 3)], 10), 1.0), "lr 1"),
        Case(
            (params([(2,), (3,), (1, 2)], 20, no_grad=(1,)), 0.5),
            "the middle tensor has no gradient",
        ),
        Case((params([(5,)], 30), 0.0), "lr 0: nothing moves"),
    ]
