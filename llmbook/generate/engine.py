"""The generation engine: one loop, one contract, several ways to run a model.

Every engine turns prompts into new tokens the same way (``Prompts`` in,
``SamplingParams`` checked once, the same stop-token rule, the same return
contract); what differs is how the model is asked for the next logits:

- ``Reference`` (``llmbook.generate.reference``): the model's own forward
  pass with a KV cache that grows, or none; written to be read.
- ``StaticCacheEngine`` (``llmbook.generate.static``): a cache allocated
  once, one-pass prefill, a step that can be compiled; written for speed.
- ``SpeculativeEngine`` (``llmbook.generate.speculative``): a draft model
  proposes, the target verifies several tokens per pass.

An engine implements ``prefill(idx, pad) -> logits (B, V)`` (the prompts,
left-padded: ``pad[b]`` pad positions in row b) and ``decode(tokens (B,)) ->
logits (B, V)`` (one new token per row); :meth:`Engine.steps` is the loop
around them. A server can drive ``steps`` itself, one token of every row at
a time. In a batch, a row that has stopped repeats its stop token until
every row has stopped (the results cut it off).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from llmbook.generate.prompts import Prompts
from llmbook.generate.sampling import SamplingParams

__all__ = ["Engine", "sampling_params"]


def sampling_params(max_new_tokens, settings: dict) -> SamplingParams:
    """``SamplingParams`` from either form an engine accepts: a
    ``SamplingParams``, or ``max_new_tokens`` and keyword settings."""
    if isinstance(max_new_tokens, SamplingParams):
        if settings:
            raise TypeError(
                "pass either SamplingParams or keyword settings, not both "
                f"(got {sorted(settings)} too)"
            )
        return max_new_tokens
    return SamplingParams(max_new_tokens, **settings)


class Engine:
    """Prompts in, new tokens out; subclasses say how to get logits."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    # -- what a subclass provides ------------------------------------------

    def prepare(self, prompts: Prompts, params: SamplingParams):
        """-> ``(idx (B, T), pad (B,))`` on the model's device."""
        idx, pad = prompts.left_padded()
        return idx.to(self.device), pad.to(self.device)

    def prefill(self, idx: Tensor, pad: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, tokens: Tensor) -> Tensor:
        raise NotImplementedError

    # -- the loop ----------------------------------------------------------

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def parse(self, prompts, params: SamplingParams, eot_id=None) -> Prompts:
        config = self.model.config
        if eot_id is None:
            eot_id = getattr(config, "eot_id", None)
        params.check_vocab(config.vocab_size)
        return Prompts.parse(prompts, config.vocab_size, eot_id)

    def steps(self, prompts: Prompts, params: SamplingParams) -> Iterator:
        """Yield the next token of every row, ``(B,)``, one step at a time.
        Everything is checked before the first ``next``."""
        idx, pad = self.prepare(prompts, params)
        generators = params.generators(len(prompts), self.device)
        return self._loop(idx, pad, params, generators)

    @torch.inference_mode()
    def _loop(self, idx, pad, params, generators) -> Iterator[Tensor]:
        # (inference mode around each step, not the caller's code between)
        n = params.max_new_tokens
        if n == 0:
            return
        was_training = self.model.training
        self.model.eval()  # no dropout
        try:
            logits = self.prefill(idx, pad)  # (B, V)
            stop = torch.tensor(params.stop_ids, device=idx.device).long()
            done = torch.zeros(len(idx), dtype=torch.bool, device=idx.device)
            last = torch.zeros_like(done, dtype=torch.long)  # a row's stop
            for step in range(n):
                nxt = params.pick(logits, generators)  # (B,)
                if params.stop_ids:
                    nxt = torch.where(done, last, nxt)
                    newly = torch.isin(nxt, stop) & ~done
                    last = torch.where(newly, nxt, last)
                    done |= newly
                yield nxt
                if step == n - 1 or (params.stop_ids and bool(done.all())):
                    return
                logits = self.decode(nxt)
        finally:
            self.model.train(was_training)

    # -- the two ways to call it -------------------------------------------

    def generate(
        self, prompts, max_new_tokens, *, eot_id=None, **settings
    ) -> list[int] | list[list[int]]:
        """The new tokens after ``prompts``: ``list[int]`` for one prompt,
        ``list[list[int]]`` for several (any lengths), each row what its
        prompt alone gives. ``max_new_tokens`` and ``settings`` are the
        fields of :class:`SamplingParams` (or pass one instead);
        ``eot_id``: where an empty prompt starts."""
        params = sampling_params(max_new_tokens, settings)
        batch = self.parse(prompts, params, eot_id)
        return batch.result(self._tokens(batch, params), params.stop_ids)

    def stream(
        self, prompts, max_new_tokens, *, eot_id=None, **settings
    ) -> Iterator[int] | Iterator[Tensor]:
        """The same tokens as :meth:`generate`, each yielded as soon as it
        exists: ``int`` for one prompt, ``(B,)`` tensors for several (a row
        that has stopped repeats its stop token)."""
        params = sampling_params(max_new_tokens, settings)
        batch = self.parse(prompts, params, eot_id)
        steps = self.steps(batch, params)
        return (int(t) for t in steps) if batch.one else steps

    def _tokens(self, prompts: Prompts, params: SamplingParams) -> Tensor:
        rows = list(self.steps(prompts, params))  # n tensors (B,)
        if not rows:
            return torch.empty(len(prompts), 0, dtype=torch.long)
        return torch.stack(rows, dim=1).cpu()  # (B, n)
