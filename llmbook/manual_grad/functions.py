"""Appendix A, the hand-written pairs as ``torch.autograd.Function`` s, so
that ``torch.autograd.gradcheck`` can compare them with finite
differences."""

from __future__ import annotations

import torch
from torch import Tensor

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
)

# ------------------------------------------- torch.autograd.Function views
# Each class runs the hand-written pair inside autograd, so that
# torch.autograd.gradcheck can test the backward against finite
# differences. The cache is kept on ctx (not save_for_backward): fine for
# first derivatives, which is all these classes promise.


class LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b=None):
        out, ctx.cache = linear_forward(x, w, b)
        return out

    @staticmethod
    def backward(ctx, dout):
        return linear_backward(dout, ctx.cache)


class GeluFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, approximate="tanh"):
        out, ctx.cache = gelu_forward(x, approximate)
        return out

    @staticmethod
    def backward(ctx, dout):
        return gelu_backward(dout, ctx.cache), None


class SiluFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out, ctx.cache = silu_forward(x)
        return out

    @staticmethod
    def backward(ctx, dout):
        return silu_backward(dout, ctx.cache)


class SwigluFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, g):
        out, ctx.cache = swiglu_forward(a, g)
        return out

    @staticmethod
    def backward(ctx, dout):
        return swiglu_backward(dout, ctx.cache)


class SoftmaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out, ctx.cache = softmax_forward(x)
        return out

    @staticmethod
    def backward(ctx, dout):
        return softmax_backward(dout, ctx.cache)


class CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        loss, ctx.cache = cross_entropy_forward(logits, targets)
        return loss

    @staticmethod
    def backward(ctx, dloss):
        return cross_entropy_backward(dloss, ctx.cache), None


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b=None, eps=1e-5):
        out, ctx.cache = layernorm_forward(x, w, b, eps)
        return out

    @staticmethod
    def backward(ctx, dout):
        return (*layernorm_backward(dout, ctx.cache), None)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, eps=1e-5):
        out, ctx.cache = rmsnorm_forward(x, w, eps)
        return out

    @staticmethod
    def backward(ctx, dout):
        return (*rmsnorm_backward(dout, ctx.cache), None)


class AttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal=True):
        out, ctx.cache = attention_forward(q, k, v, causal)
        return out

    @staticmethod
    def backward(ctx, dout):
        return (*attention_backward(dout, ctx.cache), None)


class SelfAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_qkv, b_qkv, w_o, b_o, n_head, rope=None):
        out, ctx.cache = self_attention_forward(
            x, w_qkv, b_qkv, w_o, b_o, n_head, rope
        )
        return out

    @staticmethod
    def backward(ctx, dout):
        return (*self_attention_backward(dout, ctx.cache), None, None)


class ResidualFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fx):
        out, _ = residual_forward(x, fx)
        return out

    @staticmethod
    def backward(ctx, dout):
        return residual_backward(dout, None)


class RopeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        out, ctx.cache = rope_forward(x, cos, sin)
        return out

    @staticmethod
    def backward(ctx, dout):
        return rope_backward(dout, ctx.cache), None, None


# Blocks and models take their parameters as a dict; Function.apply takes
# tensors one by one, so these flatten the dict and rebuild it inside.


class _BlockFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, config, rope, names, *values):
        out, ctx.cache = block_forward(
            x, dict(zip(names, values)), config, rope
        )
        ctx.names = names
        return out

    @staticmethod
    def backward(ctx, dout):
        dx, grads = block_backward(dout, ctx.cache)
        return (dx, None, None, None, *[grads[n] for n in ctx.names])


def block_function(x: Tensor, p: dict, config, rope=None) -> Tensor:
    """``block_forward`` as an autograd op (for gradcheck)."""
    return _BlockFunction.apply(x, config, rope, tuple(p), *p.values())


class _GPTFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, idx, config, names, *values):
        logits, ctx.cache = gpt_forward(idx, dict(zip(names, values)), config)
        ctx.names = names
        return logits

    @staticmethod
    def backward(ctx, dlogits):
        grads = gpt_backward(dlogits, ctx.cache)
        return (None, None, None, *[grads[n] for n in ctx.names])


def gpt_function(idx: Tensor, p: dict, config) -> Tensor:
    """``gpt_forward`` as an autograd op (for gradcheck): logits."""
    return _GPTFunction.apply(idx, config, tuple(p), *p.values())
