"""A tensor autograd engine on NumPy: the scalar engine's idea, one node per
array instead of one per number.

``Tensor`` holds a float64 NumPy array (``data``) and, after ``backward``,
``grad``, an array of the same shape. Each operation records its inputs
and a ``_backward`` closure that turns ``out.grad`` into the inputs'
gradients (vector-Jacobian products, never a Jacobian): elementwise
functions multiply by their derivative; broadcasting sums the gradient
back over the broadcast axes (``unbroadcast``); ``A @ B`` sends
``G @ B^T`` and ``A^T @ G``; ``sum``/``mean``/``max`` spread the gradient
back over the reduced axes; indexing (an embedding lookup) scatter-adds
it into the rows it read. Shapes: ``(B, C)`` style, as in the book.

Gradients accumulate as in PyTorch and the scalar engine; set
``p.grad = None`` on the parameters between training steps.
"""

from __future__ import annotations

import numpy as np

from llmbook.autograd.scalar import topological_order


class Tensor:
    """An array of a computation and ``grad``, the gradient of the value
    ``backward`` was called on with respect to it (``None`` until then)."""

    def __init__(self, data, _children=(), _op=""):
        array = np.asarray(data)
        if array.dtype.kind not in "iuf":
            raise TypeError(
                "Tensor holds numbers (ints or floats, stored as float64), "
                f"got an array of dtype {array.dtype}"
            )
        # A leaf copies its array, so that training it in place does not
        # change the caller's array; an operation's result is new anyway.
        if _children:
            self.data = np.asarray(array, dtype=np.float64)
        else:
            self.data = np.array(array, dtype=np.float64)
        self.grad = None
        self._backward = lambda: None
        self._prev = _children
        self._op = _op

    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    def __repr__(self):
        return f"Tensor(shape={self.shape}, op={self._op!r})"

    # ----------------------------------------------------------------
    # Elementwise operations, with broadcasting

    def __add__(self, other):
        other = _tensor(other)
        _broadcast_shape("+", self, other)
        out = Tensor(self.data + other.data, (self, other), "+")

        def _backward():
            _accumulate(self, unbroadcast(out.grad, self.shape))
            _accumulate(other, unbroadcast(out.grad, other.shape))

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = _tensor(other)
        _broadcast_shape("*", self, other)
        out = Tensor(self.data * other.data, (self, other), "*")

        def _backward():
            g = out.grad
            _accumulate(self, unbroadcast(g * other.data, self.shape))
            _accumulate(other, unbroadcast(g * self.data, other.shape))

        out._backward = _backward
        return out

    def __pow__(self, k):
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise TypeError(
                "the exponent must be a constant int or float, got "
                f"{type(k).__name__}"
            )
        if k != int(k) and (self.data < 0).any():
            raise ValueError(
                f"x ** {k:g} with negative entries in x is not real: a "
                "fractional exponent needs x >= 0"
            )
        out = Tensor(self.data**k, (self,), f"**{k}")

        def _backward():
            _accumulate(self, k * self.data ** (k - 1) * out.grad)

        out._backward = _backward
        return out

    def exp(self):
        out = Tensor(np.exp(self.data), (self,), "exp")

        def _backward():
            _accumulate(self, out.data * out.grad)

        out._backward = _backward
        return out

    def log(self):
        bad = int((self.data <= 0).sum())
        if bad:
            raise ValueError(
                f"log of {bad} entries <= 0: the logarithm needs positive "
                "numbers (compute log-probabilities with log-sum-exp, as "
                "cross_entropy does)"
            )
        out = Tensor(np.log(self.data), (self,), "log")

        def _backward():
            _accumulate(self, out.grad / self.data)

        out._backward = _backward
        return out

    def tanh(self):
        out = Tensor(np.tanh(self.data), (self,), "tanh")

        def _backward():
            _accumulate(self, (1.0 - out.data**2) * out.grad)

        out._backward = _backward
        return out

    def relu(self):
        out = Tensor(np.maximum(self.data, 0.0), (self,), "relu")

        def _backward():
            _accumulate(self, (out.data > 0) * out.grad)

        out._backward = _backward
        return out

    # ----------------------------------------------------------------
    # Matrix product

    def __matmul__(self, other):
        """(..., n, k) @ (..., k, m) -> (..., m); batch axes broadcast."""
        other = _tensor(other)
        _check_matmul(self.shape, other.shape)
        out = Tensor(self.data @ other.data, (self, other), "@")

        def _backward():
            g = out.grad  # (..., n, m)
            ga = g @ np.swapaxes(other.data, -1, -2)  # (..., n, k)
            gb = np.swapaxes(self.data, -1, -2) @ g  # (..., k, m)
            _accumulate(self, unbroadcast(ga, self.shape))
            _accumulate(other, unbroadcast(gb, other.shape))

        out._backward = _backward
        return out

    # ----------------------------------------------------------------
    # Reductions

    def sum(self, axis=None, keepdims=False):
        axes = _axes(axis, self.ndim)
        out = Tensor(
            self.data.sum(axis=axes, keepdims=keepdims), (self,), "sum"
        )

        def _backward():  # every summed entry gets the sum's gradient
            g = out.grad if keepdims else np.expand_dims(out.grad, axes)
            _accumulate(self, np.broadcast_to(g, self.shape))

        out._backward = _backward
        return out

    def mean(self, axis=None, keepdims=False):
        axes = _axes(axis, self.ndim)
        n = int(np.prod([self.shape[a] for a in axes]))
        return self.sum(axes, keepdims) * (1.0 / n)

    def max(self, axis=None, keepdims=False):
        """The maximum over ``axis``; its gradient goes to the entries that
        equal it, shared equally between ties (as ``torch.amax``)."""
        axes = _axes(axis, self.ndim)
        if self.data.size == 0:
            raise ValueError("max of an empty tensor has no value")
        top = self.data.max(axis=axes, keepdims=True)
        value = top if keepdims else np.squeeze(top, axes)
        out = Tensor(value, (self,), "max")

        def _backward():
            g = out.grad if keepdims else np.expand_dims(out.grad, axes)
            hit = self.data == top  # where the maximum came from
            share = hit / hit.sum(axis=axes, keepdims=True)
            _accumulate(self, share * g)

        out._backward = _backward
        return out

    # ----------------------------------------------------------------
    # Indexing and shapes

    def __getitem__(self, index):
        """NumPy indexing: ``W[ids]`` looks up rows (an embedding),
        ``z[np.arange(N), targets]`` picks one entry per row."""
        if isinstance(index, Tensor) or (
            isinstance(index, tuple)
            and any(isinstance(i, Tensor) for i in index)
        ):
            raise TypeError(
                "index with ints, slices or NumPy integer arrays, not a "
                "Tensor (indices have no gradient): use ids.data.astype(int)"
            )
        out = Tensor(self.data[index], (self,), "index")

        def _backward():
            g = np.zeros_like(self.data)
            # add.at, not g[index] += ...: a row read twice gets both
            np.add.at(g, index, out.grad)
            _accumulate(self, g)

        out._backward = _backward
        return out

    def reshape(self, *shape):
        """The same numbers in a new shape (one axis may be -1)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        try:
            data = self.data.reshape(shape)
        except ValueError:
            raise ValueError(
                f"cannot reshape a tensor of shape {self.shape} "
                f"({self.data.size} numbers) into shape {shape}: the "
                "sizes must have the same product"
            ) from None
        out = Tensor(data, (self,), "reshape")

        def _backward():
            _accumulate(self, out.grad.reshape(self.shape))

        out._backward = _backward
        return out

    def transpose(self, *axes):
        """Permute the axes (all reversed when none are given)."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        axes = axes or tuple(reversed(range(self.ndim)))
        if len(axes) != self.ndim or sorted(_axes(axes, self.ndim)) != list(
            range(self.ndim)
        ):
            raise ValueError(
                f"transpose of shape {self.shape} needs a permutation of "
                f"its {self.ndim} axes, got {axes}"
            )
        axes = tuple(int(a) % self.ndim for a in axes)
        out = Tensor(self.data.transpose(axes), (self,), "transpose")

        def _backward():  # the inverse permutation puts the axes back
            _accumulate(self, out.grad.transpose(np.argsort(axes)))

        out._backward = _backward
        return out

    @property
    def T(self):
        return self.transpose()

    # ----------------------------------------------------------------
    # The rest of arithmetic, in terms of the operations above

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-_tensor(other))

    def __truediv__(self, other):
        return self * _tensor(other) ** -1

    def __radd__(self, other):
        return self + other

    def __rsub__(self, other):
        return _tensor(other) - self

    def __rmul__(self, other):
        return self * other

    def __rtruediv__(self, other):
        return _tensor(other) / self

    # ----------------------------------------------------------------
    # Backpropagation

    def backward(self, grad=None):
        """Fill ``grad`` of every tensor this one depends on. Without
        ``grad``, this tensor must hold one number (a loss)."""
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    "backward() without a gradient needs a tensor of one "
                    f"number (a loss), got shape {self.shape}; reduce it "
                    "(out.sum().backward()) or pass grad, an array of "
                    "its shape"
                )
            grad = np.ones_like(self.data)
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != self.shape:
            raise ValueError(
                f"grad has shape {grad.shape}, this tensor {self.shape}: "
                "they must be equal"
            )
        self.grad = grad
        for node in reversed(topological_order(self)):
            if node.grad is not None:  # None: no path from self to it
                node._backward()


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _accumulate(t: Tensor, g) -> None:
    # a new array, never +=: g may be a view of another node's gradient
    t.grad = g if t.grad is None else t.grad + g


def unbroadcast(grad, shape):
    """Sum ``grad``, the gradient of a broadcast result, back to ``shape``,
    the operand's: over the leading axes that broadcasting added, and over
    the axes where the operand had size 1. (B, C) -> (C,) sums over B."""
    shape = tuple(shape)
    extra = grad.ndim - len(shape)
    if extra < 0 or not all(
        n in (1, m) for n, m in zip(shape, grad.shape[extra:])
    ):
        raise ValueError(
            f"a gradient of shape {grad.shape} is not the result of "
            f"broadcasting shape {shape}: sizes must match or be 1, "
            "aligned from the right"
        )
    grad = grad.sum(axis=tuple(range(extra)))  # the added leading axes
    ones = tuple(i for i, n in enumerate(shape) if n == 1)
    # the stretched size-1 axes (asarray: a sum to () gives a NumPy scalar)
    return np.asarray(grad.sum(axis=ones, keepdims=True))


def _broadcast_shape(op, a, b):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"shapes {a.shape} {op} {b.shape} do not broadcast: aligned "
            "from the right, each pair of sizes must be equal or contain "
            "a 1; reshape one operand (e.g. x.reshape(-1, 1))"
        ) from None


def _check_matmul(a, b):
    if len(a) < 2 or len(b) < 2:
        raise ValueError(
            f"matmul needs operands of at least 2 axes, got {a} @ {b}; "
            "make a vector a row (1, k) or a column (k, 1) with reshape"
        )
    if a[-1] != b[-2]:
        raise ValueError(
            f"matmul of {a} @ {b}: the inner sizes differ ({a[-1]} and "
            f"{b[-2]}); (..., n, k) @ (..., k, m) needs the same k"
        )
    try:
        np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        raise ValueError(
            f"matmul of {a} @ {b}: the batch axes {a[:-2]} and {b[:-2]} "
            "do not broadcast"
        ) from None


def _axes(axis, ndim) -> tuple[int, ...]:
    """``axis`` (None, an int or a tuple of ints) as a tuple of axes in
    ``[0, ndim)``; None means all of them."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        raise TypeError(f"an axis must be an int, got {axis!r}")
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"an axis must be an int, got {a!r}")
        if not -ndim <= a < ndim:
            raise ValueError(
                f"axis {a} is out of range for a tensor of {ndim} axes "
                f"(use -{ndim} .. {ndim - 1})"
            )
    axes = tuple(sorted(int(a) % ndim for a in axes))
    if len(set(axes)) != len(axes):
        raise ValueError(f"axis {axis} names an axis twice")
    return axes


# --------------------------------------------------------------------
# Built from the operations above


def cross_entropy(logits: Tensor, targets) -> Tensor:
    """The mean of -log softmax(logits)[target] over the N rows.

    logits (N, V), targets (N,) ints in [0, V) -> a tensor of shape ().
    log p_y = z_y - m - log sum_k exp(z_k - m), with m the row maximum, so
    that no exp overflows; the loss does not depend on m, and the
    gradients through m cancel."""
    targets = np.asarray(targets)
    if logits.ndim != 2:
        raise ValueError(
            f"logits must have shape (N, V), got {logits.shape}; flatten "
            "(B, T, V) with logits.reshape(-1, V)"
        )
    n, vocab = logits.shape
    if targets.shape != (n,) or targets.dtype.kind not in "iu":
        raise ValueError(
            f"targets must be {n} integer ids (shape ({n},)), got shape "
            f"{targets.shape} and dtype {targets.dtype}"
        )
    if n and not (0 <= targets.min() and targets.max() < vocab):
        raise ValueError(f"targets must be ids in [0, {vocab})")
    m = logits.max(axis=1, keepdims=True)  # (N, 1)
    shifted = logits - m  # (N, V), every entry <= 0
    log_norm = shifted.exp().sum(axis=1).log()  # (N,)
    picked = shifted[np.arange(n), targets]  # (N,) the targets' logits
    return (log_norm - picked).mean()


def numerical_gradient(f, x, eps=1e-6):
    """Central differences: the gradient of ``f``, a function of an array
    returning one number, at ``x``: entry j is
    (f(x + eps e_j) - f(x - eps e_j)) / (2 eps). Costs 2 x.size calls."""
    x = np.array(x, dtype=np.float64)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    grad = np.zeros_like(x)
    for j in np.ndindex(x.shape):
        old = x[j]
        x[j] = old + eps
        up = float(f(x))
        x[j] = old - eps
        down = float(f(x))
        x[j] = old
        grad[j] = (up - down) / (2 * eps)
    return grad
