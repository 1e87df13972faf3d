"""Causal self-attention, rotary position embeddings (RoPE) and the KV cache.

The chapter builds attention in three steps, and this module keeps them apart:

1. ``causal_attention``: the formula, written out one line per step,
   softmax(Q K^T / sqrt(d) + causal mask) V, for tensors that already have
   a head dimension; an optional boolean mask (padding, any pattern) is
   combined with causality. ``F.scaled_dot_product_attention`` computes the
   same thing in one fused kernel; the tests check that both agree.
2. ``precompute_rope`` / ``apply_rope``: rotary position embeddings, which
   rotate queries and keys by an angle proportional to their position, so
   that a query-key score depends only on the distance between them.
3. ``CausalSelfAttention``: the module the model uses. It projects the input
   to queries, keys and values, splits them into heads, applies RoPE if asked,
   attends (written-out or fused path, ``fast``), merges the heads and
   projects back. With a ``KVCache`` it attends over the keys and values of
   earlier positions too, which is what makes generation fast.

Shapes: B batch, T sequence length, C = n_embd channels, nh = n_head heads,
hs = head_size = C // nh. Queries may be fewer than keys (T_q <= T_k) when a
cache holds earlier positions: query i then sits at position T_k - T_q + i.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# 1. The attention formula, written out
# ---------------------------------------------------------------------------


def causal_mask(t_q: int, t_k: int, device=None) -> torch.Tensor:
    """Boolean (T_q, T_k) mask, True where query i may look at key j.

    The queries are the last ``t_q`` of ``t_k`` positions (the usual case
    ``t_q == t_k`` is the lower triangle), so query i, at absolute position
    ``t_k - t_q + i``, sees keys ``j <= t_k - t_q + i``: never the future.
    """
    ones = torch.ones(t_q, t_k, dtype=torch.bool, device=device)
    return ones.tril(diagonal=t_k - t_q)  # (T_q, T_k)


def combine_masks(
    t_q: int, t_k: int, mask: torch.Tensor | None, causal: bool, device=None
) -> torch.Tensor | None:
    """The keys each query may attend to: ``causal_mask`` AND ``mask``.

    ``mask`` is boolean, True = may attend, and broadcasts to
    (..., T_q, T_k), usually (B, nh, T_q, T_k): a padding mask over keys is
    (B, 1, 1, T_k), one pattern for every row and head (T_q, T_k). Returns
    None when nothing is masked (no mask, ``causal=False``).
    """
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(
                f"mask must be boolean (True = may attend), got {mask.dtype}; "
                "an additive float mask is not supported: use mask > -inf"
            )
        try:
            torch.broadcast_shapes(mask.shape[-2:], (t_q, t_k))
        except RuntimeError:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to "
                f"(..., T_q, T_k) = (..., {t_q}, {t_k})"
            ) from None
    if not causal:
        return mask
    if t_q > t_k:
        raise ValueError(
            f"causal attention got {t_q} queries but only {t_k} keys; queries "
            "must be the last positions of the keys (T_q <= T_k)"
        )
    allowed = causal_mask(t_q, t_k, device=device)  # (T_q, T_k)
    return allowed if mask is None else allowed & mask


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    training: bool = False,
    mask: torch.Tensor | None = None,
    causal: bool = True,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs), masked) v, one step per line.

    q: (B, nh, T_q, hs); k, v: (B, nh, T_k, hs) with T_q <= T_k (the queries
    are the last T_q positions); any leading dimensions work. Returns
    (B, nh, T_q, hs). ``mask`` (boolean, True = may attend, broadcastable to
    (B, nh, T_q, T_k)) is combined with causality unless ``causal=False``.
    A query that may attend to no key (a padding position) gets zeros, where
    the softmax would be 0/0. Equal (to float rounding) to
    ``F.scaled_dot_product_attention`` with the same mask.
    """
    t_q, t_k = q.size(-2), k.size(-2)
    allowed = combine_masks(t_q, t_k, mask, causal, q.device)  # (.., T_q, T_k)
    scale = 1.0 / math.sqrt(q.size(-1))  # keeps score variance ~1 (chapter)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T_q, T_k)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))  # same shape
    weights = torch.softmax(scores, dim=-1)  # (B, nh, T_q, T_k), rows sum to 1
    if mask is not None:  # rows with no allowed key are NaN: make them zero
        weights = weights.masked_fill(~allowed.any(-1, keepdim=True), 0.0)
    weights = F.dropout(weights, p=dropout_p, training=training)  # same shape
    # (B, nh, T_q, T_k) @ (B, nh, T_k, hs) -> (B, nh, T_q, hs)
    return weights @ v


def _cpu_bf16_flash_works() -> bool:
    """Whether PyTorch's fused CPU attention runs in bfloat16 here. It does
    on real CPUs. It does not where a CPU has AMX tiles but PyTorch's
    AVX-512 kernels are switched off (``ATEN_CPU_CAPABILITY=avx2``, which
    the book's tests use to simulate another processor): torch 2.13 then
    raises "pack_vnni2 is only supported when avx512 is supported"."""
    q = torch.zeros(1, 1, 128, 64, dtype=torch.bfloat16)  # a failing shape
    try:
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
    except RuntimeError:
        return False
    return True


# Decided once, at import: a constant, which torch.compile can specialise on.
CPU_BF16_FLASH = _cpu_bf16_flash_works()


def use_fused(q: torch.Tensor) -> bool:
    """False only for bfloat16 on a CPU whose fused kernel fails (above):
    the written-out attention computes the same there."""
    return CPU_BF16_FLASH or not (
        q.dtype == torch.bfloat16 and q.device.type == "cpu"
    )


def fused_causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    training: bool = False,
    mask: torch.Tensor | None = None,
    causal: bool = True,
) -> torch.Tensor:
    """The same as ``causal_attention`` through PyTorch's fused kernel.

    ``is_causal=True`` aligns the mask to the top left, which is right only
    when T_q == T_k; a single new query (T_q == 1) may see every key, and a
    chunk of new queries after cached ones needs the explicit mask.
    """
    if not use_fused(q):
        return causal_attention(q, k, v, dropout_p, training, mask, causal)
    t_q, t_k = q.size(-2), k.size(-2)
    p = dropout_p if training else 0.0
    if mask is None and not causal:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    if mask is None and t_q == t_k:
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=p, is_causal=True
        )
    if mask is None and t_q == 1:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    allowed = combine_masks(t_q, t_k, mask, causal, q.device)  # True = attend
    if mask is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=p
        )
    # A row with no allowed key: let it see every key (finite everywhere,
    # on every backend, in backward too), then zero it, as the written-out
    # path does.
    empty = ~allowed.any(-1, keepdim=True)  # (.., T_q, 1)
    y = F.scaled_dot_product_attention(
        q, k, v, attn_mask=allowed | empty, dropout_p=p
    )
    return y.masked_fill(empty, 0.0)  # (B, nh, T_q, hs)


# ---------------------------------------------------------------------------
# 2. Rotary position embeddings (Su et al., RoFormer)
# ---------------------------------------------------------------------------
#
# Pairing convention: "rotate half" (GPT-NeoX, Hugging Face LLaMA). Channel i
# of a head is paired with channel i + hs/2, and the pair (x_i, x_{i+hs/2})
# is rotated by the angle  position * theta_i,  theta_i = base^(-2i / hs),
# i = 0 .. hs/2 - 1. The RoFormer paper (and Meta's LLaMA code) pairs
# neighbouring channels (2i, 2i+1) instead; the two differ only by a fixed
# permutation of the channels of W_Q and W_K, so they learn the same models.


def precompute_rope(
    head_size: int, block_size: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every rotation angle: two (block_size, head_size // 2)
    tensors; row m holds the angles m * theta_i of position m."""
    if head_size <= 0 or head_size % 2:
        raise ValueError(
            f"RoPE rotates channels in pairs, so head_size must be a positive "
            f"even number; got {head_size} (choose n_embd / n_head even)"
        )
    i = torch.arange(0, head_size // 2, dtype=torch.float32)  # (hs/2,)
    theta = base ** (-2.0 * i / head_size)  # (hs/2,): fast ... slow rotations
    pos = torch.arange(block_size, dtype=torch.float32)  # (block_size,)
    angles = torch.outer(pos, theta)  # (block_size, hs/2): m * theta_i
    return angles.cos(), angles.sin()


def apply_rope(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    offset: int = 0,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate x: (..., T, hs), whose rows sit at positions offset .. +T-1.

    cos, sin: (>= offset + T, hs/2) from ``precompute_rope``. ``positions``
    (T,) or (B, T) integer positions, for x (B, nh, T, hs), replaces
    ``offset`` when rows sit at different positions (left-padded prompts).
    Returns a tensor of x's shape. Each pair (x1, x2) = (x_i, x_{i+hs/2})
    becomes (x1 cos - x2 sin, x2 cos + x1 sin): a 2-D rotation, so lengths
    are kept.
    """
    t = x.size(-2)
    if x.size(-1) != 2 * cos.size(-1):
        raise ValueError(
            f"x has head size {x.size(-1)} but the RoPE tables are for head "
            f"size {2 * cos.size(-1)}; precompute them for this head size"
        )
    if positions is not None:
        if positions.dim() == 2 and (
            x.dim() != 4 or x.size(0) != positions.size(0)
        ):
            raise ValueError(
                f"positions of shape {tuple(positions.shape)} (B, T) need x "
                f"of shape (B, nh, T, hs) with the same B; got "
                f"{tuple(x.shape)}"
            )
        cos, sin = _rope_at(cos, sin, positions, t)  # (B, 1, T, hs/2)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    else:
        if offset + t > cos.size(0):
            raise ValueError(
                f"RoPE tables cover {cos.size(0)} positions but positions "
                f"{offset}..{offset + t - 1} were asked for; precompute "
                "longer tables"
            )
        # (T, hs/2) each, broadcast over heads
        cos = cos[offset : offset + t].to(x.dtype)
        sin = sin[offset : offset + t].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, hs/2) each: the halves of pairs
    rotated = (x1 * cos - x2 * sin, x2 * cos + x1 * sin)
    return torch.cat(rotated, dim=-1)  # (..., T, hs)


def _rope_at(cos, sin, positions: torch.Tensor, t: int):
    """The table rows of ``positions`` (T,) or (B, T): (T, hs/2) or
    (B, 1, T, hs/2), the 1 broadcasting over heads."""
    if positions.shape[-1] != t or positions.dim() not in (1, 2):
        raise ValueError(
            f"positions must be (T,) or (B, T) with T = {t}; got "
            f"{tuple(positions.shape)}"
        )
    if positions.numel() and not 0 <= int(positions.min()) <= int(
        positions.max()
    ) < cos.size(0):
        raise ValueError(
            f"RoPE tables cover positions 0..{cos.size(0) - 1}; got positions "
            f"{int(positions.min())}..{int(positions.max())}"
        )
    cos, sin = cos[positions], sin[positions]  # (..., T, hs/2)
    if positions.dim() == 2:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, hs/2)
    return cos, sin


# ---------------------------------------------------------------------------
# 3. The KV cache
# ---------------------------------------------------------------------------


class KVCache:
    """Keys and values of every layer for the positions processed so far.

    Preallocated: per layer, ``k[layer]`` and ``v[layer]`` are
    (B, nh, block_size, hs) tensors, of which positions ``0 .. pos-1`` are
    filled. A forward pass with the cache writes its T new positions at
    ``pos .. pos+T-1`` in every layer and then advances ``pos`` by T (the
    model does that, once, after the last layer). Made for inference: use it
    under ``torch.no_grad()``.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        block_size: int,
        head_size: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive; got {batch_size}")
        shape = (batch_size, n_head, block_size, head_size)

        def buffers():
            # empty, not zeros: positions at or past .pos are never read
            return [
                torch.empty(shape, dtype=dtype, device=device)
                for _ in range(n_layer)
            ]

        self.k = buffers()  # n_layer x (B, nh, block_size, hs)
        self.v = buffers()  # n_layer x (B, nh, block_size, hs)
        self.batch_size = batch_size
        self.block_size = block_size
        self.pos = 0  # how many positions are filled

    def reset(self) -> None:
        """Forget every position (the buffers are reused, not zeroed)."""
        self.pos = 0

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer ``layer``'s new k, v: (B, nh, T, hs) at positions
        pos .. pos+T-1; return all keys and values so far, (B, nh, pos+T, hs)
        each (views into the buffers, no copy)."""
        end = self.pos + k.size(-2)
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, t: int) -> None:
        """Mark t more positions as filled (once every layer stored them)."""
        self.pos += t

    def __repr__(self) -> str:
        b, nh, s, hs = (
            self.k[0].shape if self.k else (self.batch_size, 0, 0, 0)
        )
        return (
            f"KVCache(n_layer={len(self.k)}, batch_size={b}, n_head={nh}, "
            f"block_size={s}, head_size={hs}, pos={self.pos})"
        )


# ---------------------------------------------------------------------------
# 4. The module
# ---------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: (B, T, C) -> (B, T, C).

    One fused Linear computes Q, K and V together (one matmul instead of
    three). ``fast`` chooses the path: True (default) uses
    ``F.scaled_dot_product_attention``, False the written-out
    ``causal_attention``; both compute the same function. ``layer_idx`` says
    which slot of a ``KVCache`` this layer uses.
    """

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        self.n_head = config.n_head
        self.head_size = config.n_embd // config.n_head
        self.layer_idx = layer_idx
        # RoPE tables come from the model; a layer used on its own makes
        # them from its own config, so it cannot rotate with another base
        self.rope_base = (
            config.rope_base if config.positions == "rope" else None
        )
        self.block_size = config.block_size
        self.dropout = config.dropout
        self.fast = True
        self.c_attn = nn.Linear(
            config.n_embd, 3 * config.n_embd, bias=config.bias
        )
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C); rope: the model's (cos, sin) tables (None: learned
        positions, or a RoPE layer used alone, which makes its own);
        with ``kv_cache``, x holds the T new positions ``kv_cache.pos ...``.
        ``mask``: boolean, True = may attend, broadcastable to
        (B, nh, T, T_k), combined with causality; ``positions`` (B, T): the
        RoPE position of each row's tokens, when rows are padded
        differently."""
        B, T, C = x.shape
        nh, hs = self.n_head, self.head_size
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs): heads apart
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        offset = kv_cache.pos if kv_cache is not None else 0
        if rope is None and self.rope_base is not None:  # used on its own
            rope = precompute_rope(hs, self.block_size, self.rope_base)
            rope = tuple(t.to(x.device) for t in rope)
        if rope is not None:
            q = apply_rope(q, *rope, offset=offset, positions=positions)
            k = apply_rope(k, *rope, offset=offset, positions=positions)
        if kv_cache is not None:  # k, v: (B, nh, offset + T, hs)
            k, v = kv_cache.update(self.layer_idx, k, v)
        attend = fused_causal_attention if self.fast else causal_attention
        y = attend(q, k, v, self.dropout, self.training, mask)  # like q
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, nh, hs) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)
