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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from llmbook.attention import precompute_rope

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


# ------------------------------------------------------ block and model
# Parameters travel in dicts named as in llmbook.model: a block's keys are
# those of ``Block.state_dict()`` ("ln_1.weight", "attn.c_attn.weight",
# "mlp.c_fc.weight", ...), the model's those of ``GPT.named_parameters()``.
# A bias that the config leaves out is simply absent.


def _norm_forward(x: Tensor, p: dict, name: str, config):
    if config.norm == "rmsnorm":
        out, cache = rmsnorm_forward(x, p[f"{name}.weight"])
    else:
        w, b = p[f"{name}.weight"], p.get(f"{name}.bias")
        out, cache = layernorm_forward(x, w, b)
    return out, (config.norm, name, cache)


def _norm_backward(dout: Tensor, cache, grads: dict) -> Tensor:
    kind, name, cache = cache
    if kind == "rmsnorm":
        dx, grads[f"{name}.weight"] = rmsnorm_backward(dout, cache)
    else:
        dx, grads[f"{name}.weight"], db = layernorm_backward(dout, cache)
        if db is not None:
            grads[f"{name}.bias"] = db
    return dx


def _linear_forward(x: Tensor, p: dict, name: str):
    return linear_forward(x, p[f"{name}.weight"], p.get(f"{name}.bias"))


def _linear_backward(dout: Tensor, cache, grads: dict, name: str):
    dx, grads[f"{name}.weight"], db = linear_backward(dout, cache)
    if db is not None:
        grads[f"{name}.bias"] = db
    return dx


def mlp_forward(x: Tensor, p: dict, config):
    """The block's MLP. x (B, T, C) -> (B, T, C).

    gelu: c_proj(gelu(c_fc(x))); swiglu: c_fc makes (gate, up), each
    (B, T, F), and c_proj(silu(gate) * up).
    """
    h, c_fc = _linear_forward(x, p, "mlp.c_fc")  # (B, T, F) or (B, T, 2F)
    if config.mlp == "swiglu":
        a, c_act = swiglu_forward(*h.chunk(2, dim=-1))  # (B, T, F)
    else:
        a, c_act = gelu_forward(h)  # (B, T, F)
    out, c_proj = _linear_forward(a, p, "mlp.c_proj")
    return out, (config.mlp, c_fc, c_act, c_proj)


def mlp_backward(dout: Tensor, cache):
    """dout (B, T, C) -> dx (B, T, C), grads (dict)."""
    kind, c_fc, c_act, c_proj = cache
    grads = {}
    da = _linear_backward(dout, c_proj, grads, "mlp.c_proj")
    if kind == "swiglu":
        dh = torch.cat(swiglu_backward(da, c_act), dim=-1)  # (B, T, 2F)
    else:
        dh = gelu_backward(da, c_act)
    dx = _linear_backward(dh, c_fc, grads, "mlp.c_fc")
    return dx, grads


def block_forward(x: Tensor, p: dict, config, rope=None):
    """Pre-norm block: x + attn(ln_1(x)), then + mlp(ln_2(.)).

    x (B, T, C) -> (B, T, C). config: a GPTConfig (n_head, norm, mlp);
    rope: (cos, sin) tables, (T, D/2) each, or None.
    """
    h, c_n1 = _norm_forward(x, p, "ln_1", config)
    a, c_att = self_attention_forward(
        h,
        p["attn.c_attn.weight"],
        p.get("attn.c_attn.bias"),
        p["attn.c_proj.weight"],
        p.get("attn.c_proj.bias"),
        config.n_head,
        rope,
    )
    x, _ = residual_forward(x, a)
    h, c_n2 = _norm_forward(x, p, "ln_2", config)
    m, c_mlp = mlp_forward(h, p, config)
    out, _ = residual_forward(x, m)
    return out, (c_n1, c_att, c_n2, c_mlp)


def block_backward(dout: Tensor, cache):
    """dout (B, T, C) -> dx (B, T, C), grads (dict, the params' names)."""
    c_n1, c_att, c_n2, c_mlp = cache
    dx, dm = residual_backward(dout, None)
    dh, grads = mlp_backward(dm, c_mlp)
    dx = dx + _norm_backward(dh, c_n2, grads)  # the two paths add up
    dx, da = residual_backward(dx, None)
    dh, dw_qkv, db_qkv, dw_o, db_o = self_attention_backward(da, c_att)
    grads["attn.c_attn.weight"], grads["attn.c_proj.weight"] = dw_qkv, dw_o
    if db_qkv is not None:
        grads["attn.c_attn.bias"], grads["attn.c_proj.bias"] = db_qkv, db_o
    dx = dx + _norm_backward(dh, c_n1, grads)
    return dx, grads


def gpt_params(model) -> dict[str, Tensor]:
    """The parameters of a ``llmbook.model.GPT``, detached, by name. A
    tied LM head appears once, as "wte.weight"."""
    return {n: p.detach() for n, p in model.named_parameters()}


def gpt_forward(idx: Tensor, p: dict, config):
    """A whole GPT by hand: idx (B, T) int64 -> logits (B, T, V).

    p: as ``gpt_params(model)``; config: the model's GPTConfig. Computes
    what ``GPT.forward`` computes, without dropout (dropout must be 0).
    """
    if config.dropout != 0.0:
        raise ValueError(
            f"manual gradients assume dropout=0.0, got {config.dropout}; "
            "build the model with GPTConfig(..., dropout=0.0)"
        )
    if idx.ndim != 2 or idx.dtype != torch.int64:
        raise TypeError(
            f"idx must be (B, T) int64 token ids, got {tuple(idx.shape)} "
            f"{idx.dtype}"
        )
    t = idx.shape[1]
    if t > config.block_size:
        raise ValueError(
            f"sequence length {t} exceeds block_size {config.block_size}"
        )
    wte = p["wte.weight"]
    x = wte[idx]  # (B, T, C): an embedding is a row lookup
    rope = None
    if config.positions == "learned":
        x = x + p["wpe.weight"][:t]  # (T, C) broadcasts over B
    else:  # the same float32 tables as the model, cast to x's dtype
        cos, sin = precompute_rope(config.head_size, config.block_size)
        rope = (cos[:t].to(x.dtype), sin[:t].to(x.dtype))  # (T, D/2)
    c_blocks = []
    for i in range(config.n_layer):
        pre = f"blocks.{i}."
        pb = {k[len(pre) :]: v for k, v in p.items() if k.startswith(pre)}
        x, c = block_forward(x, pb, config, rope)
        c_blocks.append(c)
    x, c_nf = _norm_forward(x, p, "ln_f", config)
    w_head = wte if config.tie_weights else p["lm_head.weight"]
    logits, c_head = linear_forward(x, w_head)  # (B, T, V)
    return logits, (idx, wte.shape, config, c_blocks, c_nf, c_head)


def gpt_backward(dlogits: Tensor, cache) -> dict[str, Tensor]:
    """dlogits (B, T, V) -> the gradient of every parameter, by name."""
    idx, wte_shape, config, c_blocks, c_nf, c_head = cache
    grads = {}
    dx, dw_head, _ = linear_backward(dlogits, c_head)
    dx = _norm_backward(dx, c_nf, grads)  # (B, T, C)
    for i in reversed(range(config.n_layer)):
        dx, g = block_backward(dx, c_blocks[i])
        grads.update({f"blocks.{i}.{k}": v for k, v in g.items()})
    c = dx.shape[-1]
    if config.positions == "learned":
        dwpe = dx.new_zeros(config.block_size, c)
        dwpe[: idx.shape[1]] = dx.sum(0)  # every sequence used rows 0..T-1
        grads["wpe.weight"] = dwpe
    # a lookup's gradient: each row collects the dx of every use of its id
    dwte = dx.new_zeros(wte_shape)
    dwte.index_add_(0, idx.reshape(-1), dx.reshape(-1, c))
    if config.tie_weights:
        grads["wte.weight"] = dwte + dw_head  # one matrix, two uses
    else:
        grads["wte.weight"], grads["lm_head.weight"] = dwte, dw_head
    return grads


def gpt_loss_and_grads(p: dict, idx: Tensor, targets: Tensor, config):
    """Mean cross-entropy of a GPT on (idx, targets), both (B, T), and its
    gradients by hand: (loss (), grads dict)."""
    logits, cache = gpt_forward(idx, p, config)
    loss, c_loss = cross_entropy_forward(logits, targets)
    return loss, gpt_backward(cross_entropy_backward(1.0, c_loss), cache)


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
