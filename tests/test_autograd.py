"""llmbook.autograd against its references: the scalar engine against
micrograd's ``Value`` and torch.autograd, the tensor engine against
torch.autograd on random shapes (hypothesis), in float64, to rounding; a
training run of a small MLP language model step for step against the same
model in PyTorch; bad input; the chapter's exercise checks."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from micrograd.engine import Value as MicroValue

from llmbook.autograd import (
    Tensor,
    Value,
    cross_entropy,
    numerical_gradient,
    topological_order,
    unbroadcast,
)

TOL = dict(rtol=1e-12, atol=1e-12)  # float64: rounding, not mistakes
FAST = settings(max_examples=40, deadline=None)

# ---------------------------------------------------------------------------
# The scalar engine

# Expressions of three inputs using only what micrograd has (+ - * / **
# relu), so that all three engines can run them.
MICRO_EXPRESSIONS = {
    "a*b + c": lambda a, b, c: a * b + c,
    "(a + b) * (a - c)": lambda a, b, c: (a + b) * (a - c),
    "a used thrice": lambda a, b, c: a * a * a + a,
    "a / b - c / a": lambda a, b, c: a / b - c / a,
    "(a*b).relu() * c": lambda a, b, c: (a * b).relu() * c,
    "2 - a**3 / 4": lambda a, b, c: 2 - a**3 / 4,
    "deep": lambda a, b, c: ((a * b + c) ** 2 * (b - a)).relu() + (c * a),
}


def scalar_grads(make, f, xs):
    """(f(xs).data, [grad of each input]) in the engine ``make``."""
    leaves = [make(x) for x in xs]
    out = f(*leaves)
    out.backward()
    return out.data, [v.grad for v in leaves]


def torch_scalar_grads(f, xs):
    """The same for torch: 0-d float64 tensors have the same methods."""
    leaves = [
        torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs
    ]
    out = f(*leaves)
    out.backward()
    unused = torch.zeros((), dtype=torch.float64)  # torch leaves None
    return out.item(), [(t.grad or unused).item() for t in leaves]


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


finite = st.floats(-3, 3, allow_nan=False).filter(lambda v: abs(v) > 0.1)


@pytest.mark.parametrize("name", MICRO_EXPRESSIONS)
@FAST
@given(a=finite, b=finite, c=finite)
def test_scalar_engine_equals_micrograd_and_torch(name, a, b, c):
    f = MICRO_EXPRESSIONS[name]
    ours, ours_g = scalar_grads(Value, f, [a, b, c])
    micro, micro_g = scalar_grads(MicroValue, f, [a, b, c])
    ref, ref_g = torch_scalar_grads(f, [a, b, c])
    assert close(ours, micro) and close(ours, ref)
    for g, mg, tg in zip(ours_g, micro_g, ref_g):
        assert close(g, mg) and close(g, tg), (name, g, mg, tg)


# exp, log and tanh, which micrograd does not have: against torch only
TORCH_EXPRESSIONS = {
    "exp": lambda a, b: (a * b).exp() + a,
    "log": lambda a, b: (a * a + 1).log() * b,
    "tanh": lambda a, b: (a - b).tanh() * a,
    "softplus": lambda a, b: (1 + (a * b).exp()).log(),
    "log-sum-exp": lambda a, b: (a.exp() + b.exp()).log() - a,
}


@pytest.mark.parametrize("name", TORCH_EXPRESSIONS)
@FAST
@given(a=finite, b=finite)
def test_exp_log_tanh_equal_torch(name, a, b):
    f = TORCH_EXPRESSIONS[name]
    ours, ours_g = scalar_grads(Value, f, [a, b])
    ref, ref_g = torch_scalar_grads(f, [a, b])
    assert close(ours, ref)
    assert all(close(g, t) for g, t in zip(ours_g, ref_g))


def test_a_value_used_twice_gets_the_sum_of_both_gradients():
    a = Value(3.0)
    b = a * a  # db/da = 2a, from both uses
    b.backward()
    assert a.grad == 6.0
    x, y = Value(2.0), Value(-1.0)
    z = x * y + x  # dz/dx = y + 1
    z.backward()
    assert (x.grad, y.grad) == (0.0, 2.0)


def test_relu_at_zero_has_slope_zero_like_torch():
    v = Value(0.0)
    v.relu().backward()
    t = torch.tensor(0.0, requires_grad=True)
    t.relu().backward()
    assert v.grad == t.grad.item() == 0.0


def test_topological_order_puts_every_node_after_its_inputs():
    a, b = Value(1.0), Value(2.0)
    c = a * b
    d = c + a
    e = d * c
    order = topological_order(e)
    assert len(order) == len(set(order)) == 5
    place = {node: i for i, node in enumerate(order)}
    for node in order:
        assert all(place[child] < place[node] for child in node._prev)
    assert order[-1] is e


def test_a_long_chain_does_not_hit_the_recursion_limit():
    x = Value(0.5)
    y = x
    for _ in range(5000):
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad == 1.0


def test_repr():
    assert repr(Value(1.5)) == "Value(data=1.5, grad=0)"


def test_bad_scalar_input():
    with pytest.raises(TypeError, match="one Python number.*got str"):
        Value("1")
    with pytest.raises(TypeError, match="got bool"):
        Value(True)
    with pytest.raises(TypeError, match="constant int or float.*exp"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(ValueError, match="log of -1: .*positive"):
        Value(-1.0).log()
    with pytest.raises(ValueError, match="negative base needs an integer"):
        Value(-8.0) ** 0.5


# ---------------------------------------------------------------------------
# The tensor engine against torch.autograd


def engine_and_torch(f, arrays, seed=0):
    """Run ``f`` on Tensors and on torch float64 tensors; backpropagate the
    same random ``dout`` through both; return (out, grads) of each."""
    ours = [Tensor(a) for a in arrays]
    out = f(*ours)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(dout)
    leaves = [
        torch.tensor(a, dtype=torch.float64, requires_grad=True)
        for a in arrays
    ]
    ref = f(*leaves)
    ref.backward(torch.from_numpy(dout))
    return (out.data, [t.grad for t in ours]), (
        ref.detach().numpy(),
        [t.grad.numpy() for t in leaves],
    )


def assert_same(f, arrays, seed=0):
    (out, grads), (ref, ref_grads) = engine_and_torch(f, arrays, seed)
    np.testing.assert_allclose(out, ref, **TOL)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, **TOL)


def arrays_of(shape, draw, low=-2.0, high=2.0):
    return draw(
        hnp.arrays(
            np.float64,
            shape,
            elements=st.floats(low, high, allow_nan=False, width=64),
        )
    )


BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}


@pytest.mark.parametrize("op", BINARY)
@FAST
@given(data=st.data())
def test_broadcasting_ops_equal_torch(op, data):
    shapes = data.draw(
        hnp.mutually_broadcastable_shapes(
            num_shapes=2, min_dims=0, max_dims=4, max_side=4
        )
    )
    a = arrays_of(shapes.input_shapes[0], data.draw)
    b = arrays_of(shapes.input_shapes[1], data.draw, 0.5, 2.0)  # b != 0
    assert_same(BINARY[op], [a, b])


UNARY = {
    "exp": lambda a: a.exp(),
    "log": lambda a: (a * a + 0.5).log(),
    "tanh": lambda a: a.tanh(),
    "relu": lambda a: a.relu(),
    "**3": lambda a: a**3,
    "**-1": lambda a: (a * a + 1) ** -1,
    "**0.5": lambda a: (a * a) ** 0.5 + a,
    "neg": lambda a: -a,
    "2 - a / 3": lambda a: 2 - a / 3,
    "1 / a, as 3 / (a*a + 1)": lambda a: 3 / (a * a + 1),
}


@pytest.mark.parametrize("op", UNARY)
@FAST
@given(data=st.data())
def test_elementwise_ops_equal_torch(op, data):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=5))
    a = arrays_of(shape, data.draw)
    if op == "**0.5":  # sqrt(a*a) has no derivative at 0
        a = np.where(np.abs(a) < 0.1, 0.5, a)
    assert_same(UNARY[op], [a])


@FAST
@given(data=st.data())
def test_matmul_equals_torch(data):
    n, k, m = (data.draw(st.integers(1, 5)) for _ in range(3))
    batch = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2)
    )
    a = arrays_of((*batch.input_shapes[0], n, k), data.draw)
    b = arrays_of((*batch.input_shapes[1], k, m), data.draw)
    assert_same(lambda a, b: a @ b, [a, b])


def axis_for(draw, ndim):
    """None, one axis (maybe negative) or a tuple of distinct axes."""
    if ndim == 0:
        return None
    return draw(
        st.one_of(
            st.none(),
            st.integers(-ndim, ndim - 1),
            st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim).map(
                lambda axes: tuple(sorted(set(axes)))
            ),
        )
    )


def torch_dims(axis, ndim):
    return tuple(range(ndim)) if axis is None else axis


@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
@FAST
@given(data=st.data(), keepdims=st.booleans())
def test_reductions_equal_torch(reduction, data, keepdims):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=4))
    a = arrays_of(shape, data.draw)
    if reduction == "max" and data.draw(st.booleans()):
        a = np.round(a)  # ties: the gradient is shared, as torch.amax
    axis = axis_for(data.draw, a.ndim)

    def f(t):
        if isinstance(t, Tensor):
            return getattr(t, reduction)(axis=axis, keepdims=keepdims)
        dims = torch_dims(axis, t.ndim)
        if reduction == "max":
            return t.amax(dim=dims, keepdim=keepdims)
        return getattr(t, reduction)(dim=dims, keepdim=keepdims)

    assert_same(f, [a])


@FAST
@given(data=st.data())
def test_embedding_lookup_scatter_adds_like_torch(data):
    v, c = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    ids_shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2))
    ids = data.draw(
        hnp.arrays(np.int64, ids_shape, elements=st.integers(0, v - 1))
    )
    table = arrays_of((v, c), data.draw)
    assert_same(lambda w: w[ids], [table])  # repeated ids: sums


def test_other_indexing_equals_torch():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 4))
    rows, cols = np.arange(5), np.array([0, 3, 3, 1, 0])
    assert_same(lambda t: t[rows, cols], [z])  # one entry per row
    assert_same(lambda t: t[1:4, ::2], [z])  # slices
    assert_same(lambda t: t[2], [z])  # one row
    assert_same(lambda t: t[[0, 0, 2]], [z])  # a list: row 0 twice


@FAST
@given(data=st.data())
def test_reshape_and_transpose_equal_torch(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=4))
    a = arrays_of(shape, data.draw)
    perm = data.draw(st.permutations(range(a.ndim)))
    assert_same(lambda t: t.reshape(-1, 1) * 2, [a])
    assert_same(lambda t: t.reshape(a.size), [a])

    def permuted(t):
        if isinstance(t, Tensor):
            return t.transpose(*perm)
        return t.permute(*perm)

    def reversed_axes(t):  # .T; torch's .T is deprecated beyond 2 axes
        if isinstance(t, Tensor):
            return t.T
        return t.permute(*reversed(range(t.ndim)))

    assert_same(permuted, [a])
    assert_same(reversed_axes, [a])


def test_a_tensor_used_twice_and_a_layer_equal_torch():
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s) for s in [(6, 4), (4, 3), (3,)])
    assert_same(lambda x, w, b: (x @ w + b).tanh() * (x @ w), [x, w, b])


@FAST
@given(data=st.data())
def test_cross_entropy_equals_torch(data):
    n, v = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 7))
    logits = arrays_of((n, v), data.draw, -30.0, 30.0)
    targets = data.draw(
        hnp.arrays(np.int64, (n,), elements=st.integers(0, v - 1))
    )
    z = Tensor(logits)
    loss = cross_entropy(z, targets)
    loss.backward()
    zt = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(zt, torch.from_numpy(targets))
    ref.backward()
    np.testing.assert_allclose(loss.data, ref.item(), **TOL)
    np.testing.assert_allclose(z.grad, zt.grad.numpy(), **TOL)


def test_cross_entropy_does_not_overflow():
    z = Tensor(np.array([[1000.0, 0.0], [0.0, -1000.0]]))
    loss = cross_entropy(z, np.array([1, 1]))
    loss.backward()
    assert math.isclose(float(loss.data), 1000.0, rel_tol=1e-12)
    assert np.isfinite(z.grad).all()


# ---------------------------------------------------------------------------
# Helpers


def test_unbroadcast_sums_over_the_broadcast_axes():
    g = np.arange(24, dtype=float).reshape(2, 3, 4)
    np.testing.assert_array_equal(unbroadcast(g, (4,)), g.sum((0, 1)))
    np.testing.assert_array_equal(
        unbroadcast(g, (3, 1)), g.sum(0).sum(1, keepdims=True)
    )
    np.testing.assert_array_equal(unbroadcast(g, (2, 3, 4)), g)
    assert unbroadcast(g, ()).shape == () and unbroadcast(g, ()) == g.sum()
    assert isinstance(unbroadcast(g, ()), np.ndarray)


def test_unbroadcast_refuses_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"\(2, 3\) is not the result of "):
        unbroadcast(np.zeros((2, 3)), (4,))
    with pytest.raises(ValueError, match="aligned from the right"):
        unbroadcast(np.zeros(3), (2, 3))


def test_numerical_gradient_matches_the_engine():
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((3, 4))
    targets = np.array([0, 3, 1])

    def loss_of(x):
        return float(cross_entropy(Tensor(x), targets).data)

    z = Tensor(x0)
    cross_entropy(z, targets).backward()
    np.testing.assert_allclose(
        numerical_gradient(loss_of, x0), z.grad, rtol=1e-6, atol=1e-9
    )
    assert (x0 == Tensor(x0).data).all()  # x itself is left unchanged
    with pytest.raises(ValueError, match="eps must be a positive number"):
        numerical_gradient(loss_of, x0, eps=0)


def test_backward_without_a_gradient_needs_one_number():
    t = Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"got shape \(2, 3\); reduce it"):
        (t * 2).backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\)"):
        (t * 2).backward(np.ones(3))
    (t * 2).sum().backward()
    np.testing.assert_array_equal(t.grad, np.full((2, 3), 2.0))


def test_a_branch_that_does_not_reach_the_output_has_no_gradient():
    a, b = Tensor(np.ones(2)), Tensor(np.ones(2))
    _unused = b.exp()
    (a * 3).sum().backward()
    assert b.grad is None and _unused.grad is None


def test_gradients_accumulate_until_reset():
    w = Tensor(np.array([1.0, 2.0]))
    for _ in range(2):
        (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad, [4.0, 8.0])  # 2 * 2w


def test_a_leaf_copies_its_array():
    a = np.zeros(3)
    t = Tensor(a)
    t.data -= 1.0  # an in-place update of the parameter
    assert (a == 0).all()
    assert Tensor([1, 2]).data.dtype == np.float64


def test_bad_tensor_input():
    with pytest.raises(TypeError, match="dtype <U1"):
        Tensor(np.array(["a"]))
    with pytest.raises(TypeError, match="dtype bool"):
        Tensor(np.array([True]))
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4,)))
    with pytest.raises(ValueError, match=r"\(2, 3\) \+ \(4,\) do not broad"):
        a + b
    with pytest.raises(ValueError, match=r"\(2, 3\) \* \(4,\) do not broad"):
        a * b
    with pytest.raises(ValueError, match="inner sizes differ"):
        a @ Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least 2 axes"):
        a @ Tensor(np.ones(3))
    with pytest.raises(ValueError, match="batch axes"):
        Tensor(np.ones((2, 1, 2))) @ Tensor(np.ones((3, 2, 2)))
    with pytest.raises(ValueError, match="same product"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="a permutation of its 2 axes"):
        a.transpose(0, 1, 2)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        a.sum(axis=2)
    with pytest.raises(ValueError, match="names an axis twice"):
        a.sum(axis=(0, -2))
    with pytest.raises(TypeError, match="an axis must be an int"):
        a.mean(axis=1.0)
    with pytest.raises(TypeError, match="not a Tensor"):
        a[Tensor(np.array([0]))]
    with pytest.raises(ValueError, match="log of 1 entries <= 0"):
        Tensor(np.array([1.0, 0.0])).log()
    with pytest.raises(TypeError, match="constant int or float"):
        a ** Tensor(2.0)
    with pytest.raises(ValueError, match="fractional exponent"):
        Tensor(np.array([-1.0])) ** 0.5
    with pytest.raises(ValueError, match="empty"):
        Tensor(np.ones((0,))).max()


def test_bad_cross_entropy_input():
    z = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"shape \(N, V\).*reshape\(-1, V"):
        cross_entropy(Tensor(np.zeros((2, 3, 4))), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"3 integer ids"):
        cross_entropy(z, np.zeros(3))
    with pytest.raises(ValueError, match=r"ids in \[0, 4\)"):
        cross_entropy(z, np.array([0, 4, 1]))


# ---------------------------------------------------------------------------
# Training: the engine and PyTorch, step for step


def mlp_step_losses(steps, engine):
    """A character MLP language model (embedding, tanh layer, logits)
    trained by SGD from one initialisation, in ``engine``."""
    rng = np.random.default_rng(0)
    V, C, T, H, B = 11, 4, 3, 16, 8
    init = {
        "emb": rng.standard_normal((V, C)),
        "w1": rng.standard_normal((T * C, H)) / np.sqrt(T * C),
        "b1": np.zeros(H),
        "w2": rng.standard_normal((H, V)) / np.sqrt(H),
        "b2": np.zeros(V),
    }
    # the next id is (3 * previous) mod V, 90% of the time: learnable
    noise = rng.integers(0, V, 400)
    text = np.where(rng.random(400) < 0.9, 3 * np.arange(400) % V, noise)
    if engine == "ours":
        p = {k: Tensor(v) for k, v in init.items()}
    else:
        p = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    losses = []
    for _ in range(steps):
        starts = rng.integers(0, len(text) - T, B)
        x = np.stack([text[s : s + T] for s in starts])  # (B, T)
        y = text[starts + T]  # (B,)
        if engine == "torch":
            x, y = torch.from_numpy(x), torch.from_numpy(y)
        h = (p["emb"][x].reshape(B, T * C) @ p["w1"] + p["b1"]).tanh()
        logits = h @ p["w2"] + p["b2"]  # (B, V)
        if engine == "ours":
            loss = cross_entropy(logits, y)
            loss.backward()
            for t in p.values():
                t.data -= 0.5 * t.grad
                t.grad = None
            losses.append(float(loss.data))
        else:
            loss = F.cross_entropy(logits, y)
            loss.backward()
            with torch.no_grad():
                for t in p.values():
                    t -= 0.5 * t.grad
                    t.grad = None
            losses.append(loss.item())
    return losses


def test_training_follows_pytorch_step_for_step():
    ours, ref = mlp_step_losses(40, "ours"), mlp_step_losses(40, "torch")
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    assert ours[-1] < ours[0]


# ---------------------------------------------------------------------------
# The chapter's exercise checks: a right answer passes, planted wrong ones
# fail (tests/test_exercises.py runs the solutions of appendix B)


@pytest.fixture(scope="module")
def run_check():
    """The harness, with this chapter's checks registered (importing
    llmbook.exercises registers them; imported here, not at the top, so
    that a problem there fails only these tests)."""
    import llmbook.exercises.ch4  # noqa: F401
    from llmbook.exercises import run_check

    return run_check


def _unbroadcast_right(grad, shape):
    return unbroadcast(grad, shape)


def _unbroadcast_no_keepdims(grad, shape):  # (4, 3) -> (4,), not (4, 1)
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra)))
    return grad.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1))


def _unbroadcast_leading_only(grad, shape):  # forgets stretched 1s
    if grad.ndim < len(shape):
        raise ValueError("more axes than the gradient")
    return grad.sum(axis=tuple(range(grad.ndim - len(shape))))


def _unbroadcast_no_check(grad, shape):  # sums anything into anything
    grad = grad.sum(axis=tuple(range(max(grad.ndim - len(shape), 0))))
    ones = tuple(i for i, n in enumerate(shape) if n == 1 and i < grad.ndim)
    return grad.sum(axis=ones, keepdims=True)


def _numgrad(f, x, eps, central=True, check=True):
    if check and not eps > 0:
        raise ValueError("eps must be positive")
    x = np.array(x, dtype=float)
    g = np.zeros_like(x)
    f0 = f(x)
    for j in np.ndindex(x.shape):
        old = x[j]
        x[j] = old + eps
        up = f(x)
        x[j] = old - eps if central else old
        down = f(x)
        x[j] = old
        g[j] = (up - down) / (2 * eps if central else eps)
    assert f0 == f(x)
    return g


def _embedding(ids, grad_out, vocab_size, add_at=True, check=True):
    ids = np.asarray(ids)
    if check and grad_out.shape[:-1] != ids.shape:
        raise ValueError("shapes")
    if check and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError("ids out of range")
    g = np.zeros((vocab_size, grad_out.shape[-1]))
    if add_at:
        np.add.at(g, ids, grad_out)
    else:
        g[ids] += grad_out  # a row read twice keeps only the last
    return g


RIGHT = {
    "4.1": _unbroadcast_right,
    "4.2": _numgrad,
    "4.3": _embedding,
}

WRONG = [
    ("4.1", "sums without keepdims", _unbroadcast_no_keepdims),
    ("4.1", "only the added leading axes", _unbroadcast_leading_only),
    ("4.1", "incompatible shapes not refused", _unbroadcast_no_check),
    (
        "4.2",
        "one-sided differences",
        lambda f, x, eps: _numgrad(f, x, eps, central=False),
    ),
    (
        "4.2",
        "eps <= 0 accepted",
        lambda f, x, eps: _numgrad(f, x, eps, check=False),
    ),
    (
        "4.3",
        "g[ids] += grad_out loses repeated ids",
        lambda i, g, v: _embedding(i, g, v, add_at=False),
    ),
    (
        "4.3",
        "bad ids not refused",
        lambda i, g, v: _embedding(i, g, v, check=False),
    ),
]


@pytest.mark.parametrize("exercise_id", RIGHT)
def test_exercise_check_passes_a_right_answer(run_check, exercise_id):
    result = run_check(exercise_id, RIGHT[exercise_id])
    assert result.passed, result.message


@pytest.mark.parametrize(
    "exercise_id, what, fn", WRONG, ids=[f"{i}: {w}" for i, w, _ in WRONG]
)
def test_exercise_check_rejects_a_wrong_answer(
    run_check, exercise_id, what, fn
):
    result = run_check(exercise_id, fn)
    assert not result.passed and result.attempted, result.message
    assert "\n  expected: " in result.message
    assert (
        "\n"
        not in result.message.split("input:")[1].split("  expected")[0][:-1]
    )  # the inputs fit on one line: no NumPy printout
    assert result.message.isascii()
