"""Appendix A, the layers: each a forward and a backward function written
by hand (linear, GELU, SiLU, SwiGLU, softmax, cross-entropy, LayerNorm,
RMSNorm, attention, RoPE, the residual); the conventions are in the
package's docstring."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# ---------------------------------------------------------------- linear


def linear_forward(x: Tensor, w: Tensor, b: Tensor | None = None):
    """y = x w^T + b.  x (..., I), w (O, I), b (O,) -> y (..., O)."""
    out = x @ w.T
    if b is not None:
        out = out + b
    return out, (x, w, b is not None)


def linear_backward(dout: Tensor, cache):
    """dout (..., O) -> dx (..., I), dw (O, I), db (O,) or None."""
    x, w, has_bias = cache
    dx = dout @ w  # (..., I)
    d2 = dout.reshape(-1, dout.shape[-1])  # (N, O): all leading dims
    dw = d2.T @ x.reshape(-1, x.shape[-1])  # sum over N of outer products
    db = d2.sum(0) if has_bias else None
    return dx, dw, db


# ----------------------------------------------------------- activations

GELU_C = 0.044715
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_forward(x: Tensor, approximate: str = "tanh"):
    """GELU, elementwise; "tanh" is GPT-2's approximation, "none" exact."""
    if approximate == "tanh":
        t = torch.tanh(SQRT_2_OVER_PI * (x + GELU_C * x**3))
        return 0.5 * x * (1 + t), (x, t, approximate)
    if approximate == "none":
        cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2.0)))  # Phi(x)
        return x * cdf, (x, cdf, approximate)
    raise ValueError(
        f"approximate must be 'tanh' or 'none', got {approximate!r}"
    )


def gelu_backward(dout: Tensor, cache) -> Tensor:
    """dout (...) -> dx (...)."""
    x, t_or_cdf, approximate = cache
    if approximate == "tanh":
        t = t_or_cdf
        du = SQRT_2_OVER_PI * (1 + 3 * GELU_C * x**2)  # du/dx
        return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # phi(x)
    return dout * (t_or_cdf + x * pdf)


def silu_forward(x: Tensor):
    """SiLU (swish): x * sigmoid(x), elementwise."""
    s = torch.sigmoid(x)
    return x * s, (x, s)


def silu_backward(dout: Tensor, cache) -> Tensor:
    """dout (...) -> dx (...)."""
    x, s = cache
    return dout * s * (1 + x * (1 - s))  # d/dx x s(x), s' = s (1 - s)


def swiglu_forward(a: Tensor, g: Tensor):
    """SwiGLU's gate: silu(a) * g, elementwise; a, g (..., F)."""
    sa, cache = silu_forward(a)
    return sa * g, (sa, g, cache)


def swiglu_backward(dout: Tensor, cache):
    """dout (..., F) -> da, dg (..., F)."""
    sa, g, silu_cache = cache
    return silu_backward(dout * g, silu_cache), dout * sa


# --------------------------------------------------------------- softmax


def softmax_forward(x: Tensor):
    """Softmax over the last dim. x (..., N) -> p (..., N).

    Entries of -inf (masked) get probability 0; each row needs at least
    one finite entry.
    """
    # exp of anything <= 0 cannot overflow; the shift cancels in the ratio
    e = torch.exp(x - x.amax(-1, keepdim=True))
    p = e / e.sum(-1, keepdim=True)
    return p, p


def softmax_backward(dout: Tensor, cache) -> Tensor:
    """dx_i = p_i (dout_i - sum_j dout_j p_j): the Jacobian, never built."""
    p = cache
    return p * (dout - (dout * p).sum(-1, keepdim=True))


def cross_entropy_forward(logits: Tensor, targets: Tensor):
    """Mean cross-entropy of softmax(logits) against target ids.

    logits (..., V) float, targets (...) int64 -> loss (), the mean over
    all positions. Computed with log-sum-exp, so it never takes log(0).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} need targets of shape "
            f"{tuple(logits.shape[:-1])}, got {tuple(targets.shape)}"
        )
    if targets.dtype != torch.int64:
        raise TypeError(
            f"targets must be int64 token ids, got {targets.dtype}"
        )
    z = logits.reshape(-1, logits.shape[-1])  # (N, V)
    y = targets.reshape(-1)  # (N,)
    m = z.amax(-1, keepdim=True)
    lse = m + torch.log(torch.exp(z - m).sum(-1, keepdim=True))  # (N, 1)
    loss = (lse - z.gather(1, y[:, None])).mean()
    p = torch.exp(z - lse)  # softmax, reusing the log-sum-exp
    return loss, (p, y, logits.shape)


def cross_entropy_backward(dloss, cache) -> Tensor:
    """dloss () -> dlogits (..., V) = dloss (p - onehot(y)) / N."""
    p, y, shape = cache
    n = y.shape[0]
    dz = p.clone()
    dz[torch.arange(n, device=y.device), y] -= 1
    return (dz * (dloss / n)).reshape(shape)


# ---------------------------------------------------------- normalisation


def layernorm_forward(
    x: Tensor, w: Tensor, b: Tensor | None = None, eps: float = 1e-5
):
    """LayerNorm over the last dim. x (..., C), w (C,), b (C,) | None."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased, as torch
    rstd = torch.rsqrt(var + eps)  # (..., 1)
    xhat = (x - mu) * rstd
    out = xhat * w if b is None else xhat * w + b
    return out, (xhat, rstd, w, b is not None)


def layernorm_backward(dout: Tensor, cache):
    """dout (..., C) -> dx (..., C), dw (C,), db (C,) or None."""
    xhat, rstd, w, has_bias = cache
    dxhat = dout * w
    dx = rstd * (
        dxhat
        - dxhat.mean(-1, keepdim=True)  # through the mean
        - xhat * (dxhat * xhat).mean(-1, keepdim=True)  # through the var
    )
    c = dout.shape[-1]
    dw = (dout * xhat).reshape(-1, c).sum(0)
    db = dout.reshape(-1, c).sum(0) if has_bias else None
    return dx, dw, db


def rmsnorm_forward(x: Tensor, w: Tensor, eps: float = 1e-5):
    """RMSNorm over the last dim: x / rms(x) * w. x (..., C), w (C,)."""
    rstd = torch.rsqrt((x * x).mean(-1, keepdim=True) + eps)  # (..., 1)
    xhat = x * rstd
    return xhat * w, (xhat, rstd, w)


def rmsnorm_backward(dout: Tensor, cache):
    """dout (..., C) -> dx (..., C), dw (C,)."""
    xhat, rstd, w = cache
    dxhat = dout * w
    dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    dw = (dout * xhat).reshape(-1, dout.shape[-1]).sum(0)
    return dx, dw


# -------------------------------------------------------------- attention


def attention_forward(q: Tensor, k: Tensor, v: Tensor, causal: bool = True):
    """softmax(q k^T / sqrt(D) + mask) v.  q, k, v (B, H, T, D)."""
    t, d = q.shape[-2:]
    scale = 1.0 / math.sqrt(d)
    s = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, T)
    if causal:  # position i may not look at j > i
        future = torch.ones(t, t, dtype=torch.bool, device=q.device)
        s = s.masked_fill(future.triu(1), float("-inf"))
    p, _ = softmax_forward(s)  # (B, H, T, T), zero above the diagonal
    return p @ v, (q, k, v, p, scale)


def attention_backward(dout: Tensor, cache):
    """dout (B, H, T, D) -> dq, dk, dv (B, H, T, D)."""
    q, k, v, p, scale = cache
    dp = dout @ v.transpose(-2, -1)  # (B, H, T, T)
    dv = p.transpose(-2, -1) @ dout  # (B, H, T, D)
    ds = softmax_backward(dp, p) * scale  # masked: p = 0, so ds = 0
    dq = ds @ k  # (B, H, T, D)
    dk = ds.transpose(-2, -1) @ q  # (B, H, T, D)
    return dq, dk, dv


def self_attention_forward(
    x: Tensor,
    w_qkv: Tensor,
    b_qkv: Tensor | None,
    w_o: Tensor,
    b_o: Tensor | None,
    n_head: int,
    rope: tuple[Tensor, Tensor] | None = None,
):
    """Multi-head causal self-attention. x (B, T, C) -> (B, T, C).

    w_qkv (3C, C) stacks the query, key and value projections (as the
    model's ``c_attn``); w_o (C, C) is the output projection (``c_proj``).
    rope: (cos, sin), each (T, D/2), rotates queries and keys; None for
    learned positions.
    """
    bsz, t, c = x.shape
    if c % n_head:
        raise ValueError(f"n_embd={c} is not divisible by n_head={n_head}")
    qkv, c_qkv = linear_forward(x, w_qkv, b_qkv)  # (B, T, 3C)

    def heads(z):  # (B, T, C) -> (B, H, T, D)
        return z.view(bsz, t, n_head, c // n_head).transpose(1, 2)

    q, k, v = (heads(z) for z in qkv.split(c, dim=-1))
    if rope is not None:
        q, c_rope = rope_forward(q, *rope)
        k, _ = rope_forward(k, *rope)
    y, c_att = attention_forward(q, k, v)  # (B, H, T, D)
    y = y.transpose(1, 2).reshape(bsz, t, c)  # heads side by side
    out, c_o = linear_forward(y, w_o, b_o)
    c_rope = c_rope if rope is not None else None
    return out, (c_qkv, c_att, c_o, n_head, c_rope)


def self_attention_backward(dout: Tensor, cache):
    """dout (B, T, C) -> dx, dw_qkv, db_qkv, dw_o, db_o."""
    c_qkv, c_att, c_o, n_head, c_rope = cache
    bsz, t, c = dout.shape
    dy, dw_o, db_o = linear_backward(dout, c_o)  # (B, T, C)
    dy = dy.view(bsz, t, n_head, c // n_head).transpose(1, 2)
    dq, dk, dv = attention_backward(dy, c_att)  # (B, H, T, D) each
    if c_rope is not None:
        dq, dk = rope_backward(dq, c_rope), rope_backward(dk, c_rope)

    def merge(z):  # (B, H, T, D) -> (B, T, C)
        return z.transpose(1, 2).reshape(bsz, t, c)

    dqkv = torch.cat([merge(dq), merge(dk), merge(dv)], dim=-1)
    dx, dw_qkv, db_qkv = linear_backward(dqkv, c_qkv)
    return dx, dw_qkv, db_qkv, dw_o, db_o


def rope_forward(x: Tensor, cos: Tensor, sin: Tensor):
    """Rotary embedding, "rotate half" pairs (i, i + D/2), as
    ``llmbook.attention.apply_rope``. x (..., T, D), cos, sin (T, D/2)."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, D/2) each
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out, (cos, sin)


def rope_backward(dout: Tensor, cache) -> Tensor:
    """A rotation's transpose is the rotation back: angle -m theta."""
    cos, sin = cache
    d1, d2 = dout.chunk(2, dim=-1)
    return torch.cat((d1 * cos + d2 * sin, d2 * cos - d1 * sin), dim=-1)


# --------------------------------------------------------------- residual


def residual_forward(x: Tensor, fx: Tensor):
    """x + f(x): the gradient reaches x along two paths."""
    return x + fx, None


def residual_backward(dout: Tensor, cache):
    """dout -> dx, dfx: both are dout, unchanged."""
    return dout, dout
