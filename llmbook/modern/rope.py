"""RoPE as today's checkpoints use it: a settable base, Llama 3's scaling
of the slow frequencies for long contexts, and both channel pairings.

Chapter 6's ``llmbook.attention.precompute_rope`` makes the angles
m * theta_i, theta_i = base^(-2i / hs). Two things change here:

- ``rope_frequencies`` can stretch the slow rotations (Llama 3.1): a
  frequency whose wavelength is longer than the training context divided
  by ``low_freq_factor`` is divided by ``factor``; one shorter than the
  context divided by ``high_freq_factor`` is kept; the ones between are
  blended. Fast rotations, which encode nearby order, are left alone; slow
  ones, which a model saw only over the original context, are slowed so
  that positions up to ``factor`` times further still look familiar.
- ``apply_rope`` pairs channel i with i + hs/2 ("half", Hugging Face) or
  channel 2i with 2i + 1 ("interleaved", Meta's original code). The two
  are the same model up to a permutation of the rows of W_Q and W_K
  (``interleave_rows`` converts one into the other).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "apply_rope",
    "interleave_rows",
    "rope_frequencies",
    "rope_tables",
]


def rope_frequencies(
    head_size: int, base: float = 10000.0, scaling: dict | None = None
) -> torch.Tensor:
    """theta_i for i = 0 .. hs/2 - 1: (hs/2,), in radians per position.

    ``scaling`` (Llama 3): ``factor``, ``low_freq_factor``,
    ``high_freq_factor``, ``original_block_size``.
    """
    i = torch.arange(0, head_size, 2, dtype=torch.int64).float()  # 2i
    theta = 1.0 / base ** (i / head_size)  # (hs/2,): fast ... slow
    if scaling is None:
        return theta
    factor = scaling["factor"]
    lo, hi = scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_block_size"]
    wavelen = 2 * math.pi / theta  # positions per full turn
    slow = theta / factor
    # 0 at wavelength context/lo (slowed fully) .. 1 at context/hi (kept)
    blend = (context / wavelen - lo) / (hi - lo)
    mixed = (1 - blend) * slow + blend * theta
    out = torch.where(wavelen > context / lo, slow, theta)
    between = (wavelen >= context / hi) & (wavelen <= context / lo)
    return torch.where(between, mixed, out)


def rope_tables(
    theta: torch.Tensor, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of m * theta_i: two (block_size, hs/2) tables."""
    pos = torch.arange(block_size, dtype=torch.float32)  # (block_size,)
    angles = torch.outer(pos, theta)  # (block_size, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pairing: str = "half",
) -> torch.Tensor:
    """Rotate x (..., T, hs) by the angles of its T positions.

    cos, sin: (T, hs/2) rows for x's positions (or broadcastable to
    (..., T, hs/2)). Each pair (a, b) becomes (a cos - b sin, b cos + a sin).
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if pairing == "half":
        a, b = x.chunk(2, dim=-1)  # (..., T, hs/2): channels i, i + hs/2
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    if pairing == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]  # channels 2i, 2i + 1
        out = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1)
        return out.flatten(-2)  # (..., T, hs): pairs back side by side
    raise ValueError(
        f"pairing must be 'half' or 'interleaved'; got {pairing!r}"
    )


def interleave_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder a q or k projection (n_head * hs, C) stored for "half"
    pairing so that "interleaved" pairing computes the same scores.

    Within each head, the output channels (0, hs/2, 1, hs/2 + 1, ...) are
    placed side by side: "half"'s pair (i, i + hs/2) becomes "interleaved"'s
    pair (2i, 2i + 1). (Hugging Face's conversion script of Meta's Llama
    checkpoints does the inverse.)
    """
    rows, cols = w.shape
    if rows % n_head or (rows // n_head) % 2:
        raise ValueError(
            f"a weight of {rows} rows does not split into {n_head} heads of "
            "an even size"
        )
    hs = rows // n_head
    w = w.reshape(n_head, 2, hs // 2, cols)  # (heads, half, i, C)
    return w.transpose(1, 2).reshape(rows, cols)  # (heads, i, half, C)
