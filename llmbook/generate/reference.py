"""The reference engine: the model's own forward pass, a cache that grows.

This is generation written to be read; the faster engines are checked
against it. Choices, stated once:

- A prompt longer than the context is cropped to its last ``block_size``
  tokens.
- Prompts of different lengths are padded on the left; the padding is
  masked out and each row's positions count from its own first token
  (``GPT.forward``'s ``attention_mask``), so every row generates what it
  would alone (to float rounding).
- The KV cache holds ``block_size`` positions. While it has room, each step
  feeds only the newest token. When it is full, the next step starts a fresh
  cache by re-encoding the last ``block_size`` tokens (the ``block_size - 1``
  newest ones it held plus the new token): exactly the window that generation
  without a cache would see, so greedy output is the same with and without
  the cache at every length. Past the window every step therefore costs one
  full-window forward, as without a cache: with learned absolute positions a
  sliding window moves every token to a new position, so no cached key can be
  reused. Re-encoding only half a window would be cheaper but would give the
  model a shorter context right after each refill, and different text.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from llmbook.generate.engine import Engine
from llmbook.generate.prompts import Prompts
from llmbook.generate.sampling import SamplingParams

__all__ = ["Reference", "generate", "stream"]


class Reference(Engine):
    """Generation with ``model``'s forward pass; ``use_cache``: its KV
    cache (the same greedy tokens, much faster) or none."""

    def __init__(self, model: torch.nn.Module, use_cache: bool = True):
        if use_cache and not hasattr(model, "new_kv_cache"):
            raise TypeError(
                f"{type(model).__name__} has no new_kv_cache(); pass "
                "use_cache=False"
            )
        super().__init__(model)
        self.use_cache = use_cache

    def prepare(self, prompts: Prompts, params: SamplingParams):
        idx, pad = prompts.left_padded(last=self.model.config.block_size)
        return idx.to(self.device), pad.to(self.device)

    def prefill(self, idx: Tensor, pad: Tensor) -> Tensor:
        t = idx.size(1)
        real = torch.arange(t, device=idx.device)[None, :] >= pad[:, None]
        self.mask = None if bool(real.all()) else real  # (B, T)
        self.window = idx  # (B, <= block_size): the tokens the model sees
        self.cache = (
            self.model.new_kv_cache(idx.size(0)) if self.use_cache else None
        )
        return self._logits(idx)  # the whole prompt (fills the cache)

    def decode(self, tokens: Tensor) -> Tensor:
        block_size = self.model.config.block_size
        self.window = torch.cat([self.window, tokens[:, None]], dim=1)
        self.window = self.window[:, -block_size:]
        if self.mask is not None:  # the new token is real in every row
            self.mask = F.pad(self.mask, (0, 1), value=True)[:, -block_size:]
        if self.cache is None:
            return self._logits(self.window)  # everything, every step
        if self.cache.pos < block_size:
            return self._logits(tokens[:, None])  # only the new token
        self.cache.reset()  # full: re-encode the last block_size tokens
        return self._logits(self.window)

    def _logits(self, ids: Tensor) -> Tensor:  # (B, T) -> (B, V), last one
        extra = {} if self.mask is None else {"attention_mask": self.mask}
        if self.cache is not None:
            extra["kv_cache"] = self.cache
        return self.model(ids, **extra)[:, -1]


def generate(
    model, prompts, max_new_tokens, *, use_cache: bool = True, **settings
) -> list[int] | list[list[int]]:
    """``Reference(model, use_cache).generate(prompts, max_new_tokens,
    **settings)``: up to ``max_new_tokens`` new tokens after each prompt
    (``list[int]`` for one prompt, a list of them for several). Settings:
    ``temperature`` (0: greedy), ``top_k``, ``top_p``, ``seed``,
    ``stop_ids`` (included in the output), ``eot_id`` (where an empty
    prompt starts). Bad settings or token ids raise at once."""
    return Reference(model, use_cache).generate(
        prompts, max_new_tokens, **settings
    )


def stream(
    model, prompts, max_new_tokens, *, use_cache: bool = True, **settings
) -> Iterator[int] | Iterator[Tensor]:
    """:func:`generate`, yielding each token as soon as it exists (``int``
    for one prompt, ``(B,)`` tensors for several). Arguments are checked
    when ``stream`` is called, before the first token."""
    return Reference(model, use_cache).stream(
        prompts, max_new_tokens, **settings
    )
