"""Appendix A, a block and a whole GPT by hand, composed of the layers'
forward and backward functions."""

from __future__ import annotations

import torch
from torch import Tensor

from llmbook.attention import precompute_rope
from llmbook.manual_grad.layers import (
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
    self_attention_backward,
    self_attention_forward,
    swiglu_backward,
    swiglu_forward,
)

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
