"""Grouped-query attention with optional QK normalisation and a sliding
window, and the KV cache that grouping and windows make smaller.

Shapes: B batch, T new positions, C = n_embd, nh query heads, nkv key/value
heads, g = nh // nkv query heads per key/value head, hs = head_size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmbook.attention import causal_attention
from llmbook.model import RMSNorm
from llmbook.modern.config import ModernConfig
from llmbook.modern.rope import apply_rope

__all__ = [
    "GroupedQueryAttention",
    "ModernCache",
    "kv_cache_bytes",
    "window_mask",
]


def window_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None
) -> torch.Tensor:
    """(T_q, T_k) boolean, True where the query at position q_pos[i] may see
    the key at k_pos[j]: causal (k <= q) and, with a window, one of the
    ``window`` latest positions (q - window < k), the query's own included."""
    q, k = q_pos[:, None], k_pos[None, :]  # (T_q, 1), (1, T_k)
    allowed = k <= q
    if window is not None:
        allowed = allowed & (k > q - window)
    return allowed


def kv_cache_bytes(
    config: ModernConfig,
    t: int,
    batch_size: int = 1,
    bytes_per_value: int = 2,
) -> int:
    """Bytes a KV cache holds after t positions: a key and a value of
    head_size numbers per layer, per key/value head and per position. A
    sliding layer keeps only the ``window - 1`` latest positions, all the
    next query can see besides itself. Two bytes per value: bfloat16, as
    models are served."""
    per_position = 2 * config.n_kv_head * config.head_size * bytes_per_value
    total = 0
    for kind in config.layer_types:
        kept = t if kind == "full" else min(t, config.window - 1)
        total += batch_size * kept * per_position
    return total


class ModernCache:
    """Per layer, the keys and values a later query can still see, with
    their slots (positions 0, 1, ... in the order tokens came in).

    A full layer writes into buffers of ``block_size`` positions, allocated
    at its first update (as chapter 8's ``KVCache``: no copy per token).
    A sliding layer keeps only the ``window - 1`` latest positions, which
    the next query needs, so its memory stops growing. ``pos`` and
    ``reset`` are what ``llmbook.generate``'s engine uses.
    """

    def __init__(self, config: ModernConfig):
        self.windows = [
            config.window if kind == "sliding" else None
            for kind in config.layer_types
        ]
        self.block_size = config.block_size
        self.reset()

    def reset(self) -> None:
        """Forget every position (buffers are allocated again)."""
        n = len(self.windows)
        self.k: list[torch.Tensor | None] = [None] * n  # (B, nkv, *, hs)
        self.v: list[torch.Tensor | None] = [None] * n
        self.slots: list[torch.Tensor | None] = [None] * n  # (*,)
        self.filled = [0] * n  # positions stored, per layer
        self.length = 0  # positions seen so far

    @property
    def pos(self) -> int:
        """Positions seen so far."""
        return self.length

    def update(self, layer: int, k, v, k_pos):
        """Store k, v (B, nkv, T, hs) at slots k_pos (T,); return every
        stored key, value and slot, the new ones included."""
        if self.windows[layer] is not None:
            return self._slide(layer, k, v, k_pos)
        if self.k[layer] is None:
            b, nkv, _, hs = k.shape
            shape = (b, nkv, self.block_size, hs)
            self.k[layer] = k.new_empty(shape)
            self.v[layer] = v.new_empty(shape)
            self.slots[layer] = k_pos.new_empty(self.block_size)
        start, end = self.filled[layer], self.filled[layer] + k.size(2)
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        self.slots[layer][start:end] = k_pos
        self.filled[layer] = end
        return (
            self.k[layer][:, :, :end],
            self.v[layer][:, :, :end],
            self.slots[layer][:end],
        )

    def _slide(self, layer: int, k, v, k_pos):
        if self.k[layer] is not None:
            k = torch.cat((self.k[layer], k), dim=2)
            v = torch.cat((self.v[layer], v), dim=2)
            k_pos = torch.cat((self.slots[layer], k_pos))
        # the next query, at k_pos[-1] + 1, sees window - 1 of these
        keep = k_pos > k_pos[-1] + 1 - self.windows[layer]
        self.k[layer], self.v[layer] = k[:, :, keep], v[:, :, keep]
        self.slots[layer] = k_pos[keep]
        self.filled[layer] = int(keep.sum())
        return k, v, k_pos

    def nbytes(self) -> int:
        """Bytes of the keys and values stored now (a full layer's buffer
        holds block_size positions, of which these are filled)."""
        total = 0
        for k, n in zip(self.k, self.filled):
            if k is not None:
                total += 2 * n * k[:, :, :1].numel() * k.element_size()
        return total


class GroupedQueryAttention(nn.Module):
    """Causal self-attention with n_kv_head key/value heads shared by
    groups of query heads: (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ModernConfig, layer_idx: int = 0):
        super().__init__()
        nh, nkv, hs = config.n_head, config.n_kv_head, config.head_size
        self.n_head, self.n_kv_head, self.head_size = nh, nkv, hs
        self.layer_idx = layer_idx
        self.pairing = config.rope_pairing
        kind = config.layer_types[layer_idx]
        self.window = config.window if kind == "sliding" else None
        bias = config.attn_bias
        self.q_proj = nn.Linear(config.n_embd, nh * hs, bias=bias)
        self.k_proj = nn.Linear(config.n_embd, nkv * hs, bias=bias)
        self.v_proj = nn.Linear(config.n_embd, nkv * hs, bias=bias)
        self.o_proj = nn.Linear(nh * hs, config.n_embd, bias=False)
        if config.qk_norm:  # one scale per channel of a head, shared by heads
            self.q_norm = RMSNorm(hs, eps=config.norm_eps)
            self.k_norm = RMSNorm(hs, eps=config.norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.fast = True

    def forward(self, x, cos, sin, pos, cache=None, real=None):
        """x: (B, T, C) at slots ``pos`` (T,); cos, sin: their RoPE rows,
        (T, hs/2), or (B, 1, T, hs/2) when rows are padded differently;
        ``real`` (B, T_k), for left-padded rows: True at real tokens, over
        every slot so far."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_size)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_size)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_size)
        if self.q_norm is not None:  # over hs, per head and position
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(
            q.transpose(1, 2), cos, sin, self.pairing
        )  # (B,nh,T,hs)
        k = apply_rope(
            k.transpose(1, 2), cos, sin, self.pairing
        )  # (B,nkv,T,hs)
        v = v.transpose(1, 2)  # (B, nkv, T, hs)
        k_pos = pos
        if cache is not None:  # k, v: (B, nkv, T_k, hs), every visible key
            k, v, k_pos = cache.update(self.layer_idx, k, v, pos)
        allowed = window_mask(pos, k_pos, self.window)  # (T, T_k)
        if real is not None:  # no padding key; a padding query sees itself
            allowed = allowed & real[:, None, k_pos]  # (B, T, T_k)
            allowed = allowed | (pos[:, None] == k_pos[None, :])
            allowed = allowed[:, None]  # (B, 1, T, T_k): every head
        y = self.attend(q, k, v, allowed)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_size)
        return self.o_proj(y)  # (B, T, C)

    def attend(self, q, k, v, allowed):
        """Each group of g query heads attends to one key/value head.

        Written out (``fast=False``): copy each key/value head g times, then
        attend as multi-head attention. Fast: stack a group's g query heads
        as g * T rows of one head, so that each key/value head is read once
        for its whole group, with no copy (what GQA kernels do)."""
        B, nh, T, hs = q.shape
        g = nh // self.n_kv_head
        if not self.fast or q.dtype == torch.bfloat16:
            k = k.repeat_interleave(g, dim=1)  # (B, nh, T_k, hs): h uses h//g
            v = v.repeat_interleave(g, dim=1)
            return causal_attention(q, k, v, mask=allowed, causal=False)
        rows = q.reshape(B, self.n_kv_head, g * T, hs)  # (B, nkv, g*T, hs)
        lead = [1] * (allowed.dim() - 2)  # (B, 1) when rows are padded
        y = F.scaled_dot_product_attention(
            rows,
            k,
            v,
            attn_mask=allowed.repeat(*lead, g, 1),  # (.., g*T, T_k)
        )
        return y.view(B, nh, T, hs)
