"""Backpropagation by hand: every derivative of a GPT, without autograd.

Each layer is a pair of pure functions::

    out, cache = f_forward(inputs...)
    grads = f_backward(dout, cache)

``dout`` is dL/d(out) for a scalar loss L and has the shape of ``out``.
The backward returns dL/d(input) for every tensor input, in the order the
forward takes them (a bare tensor when there is one; ``None`` for an
input that was ``None``). The cache holds what the backward needs from
the forward pass.

Shapes: B batch, T time, C channels (``n_embd``), H heads, D = C // H head
size, F hidden width of the MLP, V vocabulary.

    linear          x (..., I), w (O, I), b (O,) | None    -> (..., O)
    gelu, silu      x (...)                                -> (...)
    swiglu          a (...), g (...)                       -> silu(a) * g
    softmax         x (..., N), over the last dim          -> (..., N)
    cross_entropy   logits (..., V), targets (...) int64   -> () mean
    layernorm       x (..., C), w (C,), b (C,) | None      -> (..., C)
    rmsnorm         x (..., C), w (C,)                     -> (..., C)
    attention       q, k, v (B, H, T, D), causal mask      -> (B, H, T, D)
    rope            x (..., T, D), cos, sin (T, D/2)       -> (..., T, D)
    self_attention  x (B, T, C), w_qkv (3C, C), w_o (C, C) -> (B, T, C)
    residual        x, fx (same shape)                     -> x + fx
    mlp             x (B, T, C), params dict               -> (B, T, C)
    block           x (B, T, C), params dict               -> (B, T, C)
    gpt             idx (B, T) int64, params dict          -> (B, T, V)

Parameters of a block or a model travel in dicts named as in
``llmbook.model`` (``Block.state_dict()``, ``GPT.named_parameters()``), so
``gpt_forward``/``gpt_backward`` compute, by hand, the gradients of any
``llmbook.model.GPT`` without dropout: learned positions or RoPE,
LayerNorm or RMSNorm, GELU or SwiGLU, with or without biases and tying.

The ``*Function`` classes (and ``block_function``, ``gpt_function``) wrap
the pairs as ``torch.autograd.Function``, so that
``torch.autograd.gradcheck`` can compare them with finite differences.

The modules: ``layers`` (the pairs of every layer), ``model`` (a block
and a GPT composed of them), ``functions`` (the autograd views).
"""

from llmbook.manual_grad.functions import (
    AttentionFunction,
    CrossEntropyFunction,
    GeluFunction,
    LayerNormFunction,
    LinearFunction,
    ResidualFunction,
    RMSNormFunction,
    RopeFunction,
    SelfAttentionFunction,
    SiluFunction,
    SoftmaxFunction,
    SwigluFunction,
    block_function,
    gpt_function,
)
from llmbook.manual_grad.layers import (
    attention_backward,
    attention_forward,
    cross_entropy_backward,
    cross_entropy_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    residual_backward,
    residual_forward,
    rmsnorm_backward,
    rmsnorm_forward,
    rope_backward,
    rope_forward,
    self_attention_backward,
    self_attention_forward,
    silu_backward,
    silu_forward,
    softmax_backward,
    softmax_forward,
    swiglu_backward,
    swiglu_forward,
)
from llmbook.manual_grad.model import (
    block_backward,
    block_forward,
    gpt_backward,
    gpt_forward,
    gpt_loss_and_grads,
    gpt_params,
    mlp_backward,
    mlp_forward,
)

__all__ = [
    "linear_forward",
    "linear_backward",
    "gelu_forward",
    "gelu_backward",
    "silu_forward",
    "silu_backward",
    "swiglu_forward",
    "swiglu_backward",
    "softmax_forward",
    "softmax_backward",
    "cross_entropy_forward",
    "cross_entropy_backward",
    "layernorm_forward",
    "layernorm_backward",
    "rmsnorm_forward",
    "rmsnorm_backward",
    "attention_forward",
    "attention_backward",
    "self_attention_forward",
    "self_attention_backward",
    "rope_forward",
    "rope_backward",
    "residual_forward",
    "residual_backward",
    "mlp_forward",
    "mlp_backward",
    "block_forward",
    "block_backward",
    "gpt_params",
    "gpt_forward",
    "gpt_backward",
    "gpt_loss_and_grads",
    "LinearFunction",
    "GeluFunction",
    "SiluFunction",
    "SwigluFunction",
    "SoftmaxFunction",
    "CrossEntropyFunction",
    "LayerNormFunction",
    "RMSNormFunction",
    "AttentionFunction",
    "SelfAttentionFunction",
    "ResidualFunction",
    "RopeFunction",
    "block_function",
    "gpt_function",
]
