"""A scalar autograd engine: one ``Value`` per number, as in micrograd.

Each operation returns a new ``Value`` that remembers its inputs and a
``_backward`` closure: given the gradient of the loss with respect to the
output (``out.grad``), it adds the input's share, local derivative times
``out.grad``, to each input's ``grad``. ``Value.backward`` visits the
graph in reverse topological order, so that a node's gradient is complete
(every use of it has contributed) before it is passed on.

Gradients accumulate (``+=``) as in PyTorch: a value used twice receives
the sum of both uses, and a second ``backward`` adds to the first. Set
``p.grad = 0.0`` on the parameters between training steps.
"""

from __future__ import annotations

import math


class Value:
    """One number of a computation and ``grad``, the derivative of the
    value ``backward`` was called on with respect to it."""

    def __init__(self, data, _children=(), _op=""):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise TypeError(
                "Value holds one Python number (int or float), got "
                f"{type(data).__name__}; for arrays use "
                "llmbook.autograd.Tensor"
            )
        self.data = float(data)
        self.grad = 0.0
        self._backward = lambda: None  # a leaf passes nothing on
        self._prev = _children
        self._op = _op

    def __repr__(self):
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"

    # ----------------------------------------------------------------
    # Operations: a forward value and a backward rule each

    def __add__(self, other):
        other = _value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():  # d(a + b)/da = d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = _value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():  # each factor's gradient is the other factor
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, k):
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise TypeError(
                "the exponent must be a constant int or float, got "
                f"{type(k).__name__}; for a ** b with b a Value, write "
                "(b * a.log()).exp()"
            )
        if self.data < 0 and k != int(k):
            raise ValueError(
                f"{self.data:g} ** {k:g} is not a real number: a negative "
                "base needs an integer exponent"
            )
        out = Value(self.data**k, (self,), f"**{k}")

        def _backward():  # d(a^k)/da = k a^(k-1)
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = _backward
        return out

    def exp(self):
        out = Value(math.exp(self.data), (self,), "exp")

        def _backward():  # exp is its own derivative
            self.grad += out.data * out.grad

        out._backward = _backward
        return out

    def log(self):
        if self.data <= 0:
            raise ValueError(
                f"log of {self.data:g}: the logarithm needs a positive "
                "number (a probability that underflowed to 0? compute "
                "log-probabilities with log-sum-exp instead)"
            )
        out = Value(math.log(self.data), (self,), "log")

        def _backward():  # d(log a)/da = 1/a
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    def tanh(self):
        out = Value(math.tanh(self.data), (self,), "tanh")

        def _backward():  # tanh' = 1 - tanh^2, from the output alone
            self.grad += (1.0 - out.data**2) * out.grad

        out._backward = _backward
        return out

    def relu(self):
        out = Value(max(self.data, 0.0), (self,), "relu")

        def _backward():  # slope 1 where positive, 0 elsewhere (also at 0)
            self.grad += (out.data > 0) * out.grad

        out._backward = _backward
        return out

    # ----------------------------------------------------------------
    # The rest of arithmetic, in terms of the operations above

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-_value(other))

    def __truediv__(self, other):
        return self * _value(other) ** -1

    def __radd__(self, other):  # 2 + v, and sum() starting from 0
        return self + other

    def __rsub__(self, other):
        return _value(other) - self

    def __rmul__(self, other):
        return self * other

    def __rtruediv__(self, other):
        return _value(other) / self

    # ----------------------------------------------------------------
    # Backpropagation

    def backward(self):
        """Fill ``grad`` of every value this one depends on with the
        derivative of this value with respect to it."""
        self.grad = 1.0  # d(self)/d(self)
        for node in reversed(topological_order(self)):
            node._backward()


def _value(x) -> Value:
    """A number becomes a constant leaf; a Value is itself."""
    return x if isinstance(x, Value) else Value(x)


def topological_order(root):
    """Every node that ``root`` depends on, each after all of its inputs:
    a depth-first search that appends a node once its inputs are done.
    (An explicit stack, so that a long chain cannot exceed Python's
    recursion limit.) Works for any object with a ``_prev`` tuple."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
        elif node not in seen:
            seen.add(node)
            stack.append((node, True))  # come back after the inputs
            stack.extend((child, False) for child in node._prev)
    return order
