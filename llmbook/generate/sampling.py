"""Sampling: from the next-token logits to a token, and the settings of it.

At every step the model gives one vector of logits over the vocabulary for the
next position. Generating text is a loop around that: reshape the distribution
(temperature, top-k, top-p), pick one token, append it, ask again. The
reshaping steps are small pure functions of a logits tensor ``(..., V)``, so
the chapter can plot them and the tests can check them by hand.

:class:`SamplingParams` holds every setting of a generation run (how many
tokens, temperature, top-k, top-p, seed, stop ids) and checks them, once, for
every engine (``llmbook.generate.engine``). Choices, stated once:

- ``temperature=0`` is greedy decoding (argmax); top-k and top-p are then
  irrelevant and ignored. Otherwise the order is temperature, then top-k, then
  top-p, the order Hugging Face ``transformers`` uses.
- ``seed`` seeds private ``torch.Generator`` s, one per prompt (``seed`` for
  every row, or ``seed[i]`` for row i): the same seed gives the same tokens,
  whatever the global RNG did before and whatever else is in the batch.
  ``seed=None`` uses the global RNG (so ``torch.manual_seed`` works as usual).
- A stop token ends generation and *is* included in the output (so the caller
  can tell a stop from running out of ``max_new_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llmbook.checks import check_int

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_next",
    "SamplingParams",
]


# ---------------------------------------------------------------------------
# Reshaping the next-token distribution: pure functions of logits (..., V)


def _check_temperature(temperature: float, allow_zero: bool = True) -> None:
    if isinstance(temperature, bool) or not isinstance(
        temperature, (int, float)
    ):
        raise TypeError(
            f"temperature must be a number, got {type(temperature).__name__}"
        )
    if not (temperature > 0 or (allow_zero and temperature == 0)):
        low = ">= 0 (0 means greedy)" if allow_zero else "> 0"
        raise ValueError(f"temperature must be {low}, got {temperature}")


def _check_top_k(k: int | None) -> None:
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(
            f"top_k must be an int or None, got {type(k).__name__}"
        )
    if k < 1:
        raise ValueError(f"top_k must be >= 1 (None switches it off), got {k}")


def _check_top_p(p: float | None) -> None:
    if p is None:
        return
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(
            f"top_p must be a number or None, got {type(p).__name__}"
        )
    if not 0 < p <= 1:
        raise ValueError(
            f"top_p must be in (0, 1] (1 or None switches it off), got {p}"
        )


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Divide logits ``(..., V)`` by ``temperature > 0``.

    Below 1 the softmax sharpens towards the argmax (0 is its limit: greedy,
    handled by :func:`sample_next`); above 1 it flattens towards uniform.
    """
    _check_temperature(temperature, allow_zero=False)
    return logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row ``(..., V)``; set the rest to
    ``-inf`` so that softmax gives them probability 0. Logits tied with the
    k-th largest are kept too; ``k >= V`` keeps everything."""
    _check_top_k(k)
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep, in each row ``(..., V)``, the smallest set of
    most likely tokens whose probabilities sum to at least ``p``; set the rest
    to ``-inf``. The most likely token is always kept; ``p = 1`` keeps all."""
    _check_top_p(p)
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.float().softmax(dim=-1)  # (..., V), descending
    # A token is dropped when the tokens ranked above it already reach p.
    mass_above = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_above >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocab order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick the next token of each row from logits ``(B, V)``; returns ``(B,)``
    int64. ``temperature=0`` is greedy (argmax, no randomness)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = F.softmax(logits.float(), dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------
# The settings of a run, checked once


@dataclass(frozen=True)
class SamplingParams:
    """How to generate: ``max_new_tokens`` at most, sampled with
    ``temperature`` (0: greedy), ``top_k`` and ``top_p`` (None: off), from
    ``seed`` (an int, one per prompt, or None: the global RNG), ending a row
    at any of ``stop_ids`` (included in its output). Checked when made."""

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | tuple[int, ...] | None = None
    stop_ids: tuple[int, ...] = ()

    def __post_init__(self):
        check_int("max_new_tokens", self.max_new_tokens, low=0)
        _check_temperature(self.temperature)
        _check_top_k(self.top_k)
        _check_top_p(self.top_p)
        stops = self.stop_ids
        stops = (stops,) if isinstance(stops, int) else tuple(stops)
        for s in stops:
            check_int("a stop id", s, low=0)
        object.__setattr__(self, "stop_ids", stops)
        if isinstance(self.seed, (list, tuple)):
            for s in self.seed:
                check_int("a seed", s)
            object.__setattr__(self, "seed", tuple(self.seed))
        elif self.seed is not None:
            check_int("seed", self.seed)

    def check_vocab(self, vocab_size: int) -> None:
        """Every stop id must be a token of the model's vocabulary."""
        for s in self.stop_ids:
            if s >= vocab_size:
                raise ValueError(
                    f"stop id {s} is outside the model's vocabulary "
                    f"[0, {vocab_size})"
                )

    def generators(self, n_rows: int, device) -> list | None:
        """One seeded generator per row, or None (the global RNG)."""
        if self.seed is None:
            return None
        seeds = self.seed if isinstance(self.seed, tuple) else None
        if seeds is not None and len(seeds) != n_rows:
            raise ValueError(
                f"seed is a list of {len(seeds)} but there are {n_rows} "
                "prompts: give one seed per prompt, or one int"
            )
        seeds = seeds or (self.seed,) * n_rows
        return [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def pick(self, logits: Tensor, generators: list | None) -> Tensor:
        """The next token of every row: logits ``(B, V)`` -> ``(B,)``; row
        i draws from ``generators[i]``, so it samples what it would alone."""
        t, k, p = self.temperature, self.top_k, self.top_p
        if generators is None or t == 0:
            return sample_next(logits, t, k, p)
        return torch.cat(
            [
                sample_next(logits[i : i + 1], t, k, p, g)
                for i, g in enumerate(generators)
            ]
        )
