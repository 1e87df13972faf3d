"""Automatic differentiation from scratch, the idea behind
``loss.backward()``.

Two engines, one idea: every operation records its inputs and how to pass
a gradient back to them, and ``backward`` visits the recorded graph from
the output to the inputs in reverse topological order (reverse-mode
automatic differentiation, or backpropagation).

    scalar.py   ``Value``: one node per number (as micrograd): + - * / **
                exp log tanh relu; ``topological_order``
    tensor.py   ``Tensor``: one node per NumPy array (float64): the same
                operations with broadcasting, matmul, sum/mean/max over
                axes, indexing (embeddings), reshape/transpose;
                ``unbroadcast``, ``cross_entropy``, ``numerical_gradient``

Appendix A derives the same rules by hand for a whole GPT; PyTorch's
autograd does what ``Tensor`` does, with C++ kernels and many more checks.
"""

from llmbook.autograd.scalar import Value, topological_order
from llmbook.autograd.tensor import (
    Tensor,
    cross_entropy,
    numerical_gradient,
    unbroadcast,
)

__all__ = [
    "Value",
    "topological_order",
    "Tensor",
    "unbroadcast",
    "cross_entropy",
    "numerical_gradient",
]
