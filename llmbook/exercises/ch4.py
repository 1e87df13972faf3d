"""The checks of the autograd chapter's exercises: summing a broadcast
gradient back to its operand's shape, a gradient by finite differences,
and the backward rule of an embedding lookup.

The reader works on NumPy arrays, as the chapter's engine does; each
answer is turned into a float64 torch tensor before the comparison (the
harness compares tensors). Inputs are shown in messages by their shape
and a few values, never as NumPy's multi-line printout."""

import numpy as np
import torch

from llmbook.autograd import Tensor, numerical_gradient, unbroadcast
from llmbook.exercises.harness import Case, exercise


class _Array(np.ndarray):
    """A NumPy array that describes itself on one line in messages."""

    def _exercise_repr(self):
        a = np.asarray(self)
        if a.size <= 8:
            values = np.round(a, 4).tolist()
            return f"array({values}, shape={a.shape})"
        return f"array of shape {a.shape}, dtype={a.dtype}"


def _array(values, dtype=np.float64) -> _Array:
    return np.asarray(values, dtype=dtype).view(_Array)


def _randn(*shape, seed: int, scale: float = 1.0) -> _Array:
    rng = np.random.default_rng(seed)
    return _array(scale * rng.standard_normal(shape))


def _as_tensor(x):
    """An answer as a float64 tensor; one with no axes as a float."""
    if isinstance(x, (np.ndarray, np.generic)):
        x = np.asarray(x, dtype=np.float64)
        return float(x) if x.ndim == 0 else torch.from_numpy(x.copy())
    return x


def _observe(fn, args):
    return _as_tensor(fn(*args))


# ------------------------------------------------------------------ 4.1


def _unbroadcast(grad, shape):
    return unbroadcast(np.asarray(grad), shape)


@exercise(
    "4.1",
    label="ex-autograd-unbroadcast",
    name="my_unbroadcast",
    params=("grad", "shape"),
    reference=_unbroadcast,
    observe=_observe,
    rtol=1e-12,
    atol=1e-12,
)
def _cases_4_1():
    shapes = [
        ((4, 3), (3,), "(B, C) + (C,): a bias"),
        ((4, 3), (4, 1), "a column stretched across C"),
        ((4, 3), (1, 3), "a row stretched across B"),
        ((4, 3), (4, 3), "no broadcasting: unchanged"),
        ((4, 3), (), "a scalar added to everything"),
        ((2, 5, 3), (3,), "(B, T, C) + (C,): two added axes"),
        ((2, 5, 3), (5, 1), "an added axis and a stretched one"),
        ((2, 5, 3), (2, 1, 3), "a stretched middle axis"),
        ((2, 1, 3), (1, 1, 1), "size-1 axes of the gradient too"),
        ((6,), (1,), "a vector summed to one number, as (1,)"),
    ]
    cases = [
        Case((_randn(*g, seed=i), s), what)
        for i, (g, s, what) in enumerate(shapes)
    ]
    cases += [
        Case((_randn(4, 3, seed=20), (5,)), "sizes 3 and 5 do not match"),
        Case((_randn(3, seed=21), (2, 3)), "more axes than the gradient"),
    ]
    return cases


# ------------------------------------------------------------------ 4.2


class _Function:
    """A function of an array to one number, named in messages."""

    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def __call__(self, x):
        return self.fn(x)

    def _exercise_repr(self):
        return f"<f(x) = {self.name}>"


def _log_sum_exp(x):
    m = np.max(x)
    return float(m + np.log(np.exp(x - m).sum()))


_FUNCTIONS = [
    _Function("sum(sin(x))", lambda x: float(np.sin(x).sum())),
    _Function("sum(x**3) / 3", lambda x: float((x**3).sum() / 3)),
    _Function("log(sum(exp(x)))", _log_sum_exp),
    _Function("prod(x)", lambda x: float(np.prod(x))),
    _Function("sum(tanh(x) * x)", lambda x: float((np.tanh(x) * x).sum())),
]


def _numerical_grad(f, x, eps):
    return numerical_gradient(f, np.asarray(x), eps)


@exercise(
    "4.2",
    label="ex-autograd-numgrad",
    name="numerical_grad",
    params=("f", "x", "eps"),
    reference=_numerical_grad,
    observe=_observe,
    # central differences agree with the package's to rounding (about
    # 1e-12 here); one-sided ones are off by about eps, 1e-4
    rtol=1e-7,
    atol=1e-8,
)
def _cases_4_2():
    cases = []
    for i, shape in enumerate([(3,), (2, 3), (4,), (1,), (2, 2), ()]):
        f = _FUNCTIONS[i % len(_FUNCTIONS)]
        cases.append(Case((f, _randn(*shape, seed=40 + i), 1e-4), f.name))
    cases.append(Case((_FUNCTIONS[0], _randn(3, seed=50), 1e-6), "eps 1e-6"))
    cases += [
        Case((_FUNCTIONS[0], _randn(3, seed=51), 0.0), "eps = 0"),
        Case((_FUNCTIONS[0], _randn(3, seed=52), -1e-4), "a negative eps"),
    ]
    return cases


# ------------------------------------------------------------------ 4.3


def _embedding_backward(ids, grad_out, vocab_size):
    ids = np.asarray(ids)
    grad_out = np.asarray(grad_out)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
    if grad_out.shape[:-1] != ids.shape:
        raise ValueError(
            f"grad_out {grad_out.shape} must be ids' shape {ids.shape} "
            "plus one axis of size C"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"ids must be in [0, {vocab_size})")
    table = Tensor(np.zeros((vocab_size, grad_out.shape[-1])))  # (V, C)
    table[ids].backward(grad_out)  # the lookup's own backward
    return table.grad


@exercise(
    "4.3",
    label="ex-autograd-embedding",
    name="embedding_backward",
    params=("ids", "grad_out", "vocab_size"),
    reference=_embedding_backward,
    observe=_observe,
    rtol=1e-12,
    atol=1e-12,
)
def _cases_4_3():
    cases = [
        Case(
            (_array([[1, 2, 1]], np.int64), _randn(1, 3, 2, seed=60), 4),
            "id 1 read twice: both gradients add up",
        ),
        Case(
            (_array([0, 0, 0, 0], np.int64), _randn(4, 3, seed=61), 2),
            "one row read four times; row 1 never",
        ),
    ]
    rng = np.random.default_rng(62)
    for i, (b, t, c, v) in enumerate(
        [(2, 5, 3, 6), (3, 4, 2, 3), (1, 1, 4, 5)]
    ):
        ids = _array(rng.integers(0, v, size=(b, t)), np.int64)
        cases.append(
            Case((ids, _randn(b, t, c, seed=63 + i), v), "random (B, T)")
        )
    cases += [
        Case(
            (_array([[0, 5]], np.int64), _randn(1, 2, 3, seed=70), 5),
            "id 5 is outside a vocabulary of 5",
        ),
        Case(
            (_array([[0, 1]], np.int64), _randn(1, 3, 3, seed=71), 4),
            "grad_out's shape does not fit ids",
        ),
    ]
    return cases
