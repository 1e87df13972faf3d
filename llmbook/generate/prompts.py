"""Prompts in, tokens out: the one contract of every generation engine.

In: one prompt (a list of ints or a 1-D tensor of token ids) or several (a
list of such prompts, of any lengths, or a ``(B, T)`` tensor). Out: the new
tokens only, ``list[int]`` for one prompt and ``list[list[int]]`` for
several, each row ending at its own stop token (included) or after
``max_new_tokens``; each row is what that prompt alone gives.

Prompts of different lengths share a batch padded on the *left*, so that
every row's newest token sits in the last column; ``pad[b]`` counts row b's
pad positions, which the engines mask out of attention and skip when they
count positions. An empty prompt starts from the end-of-text token.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Prompts", "until_stop"]


@dataclass
class Prompts:
    """Checked prompts: ``rows`` of token ids, and whether the caller gave
    ``one`` prompt (then results are one ``list[int]``)."""

    rows: list[list[int]]
    one: bool

    @classmethod
    def parse(cls, prompts, vocab_size: int, eot_id: int | None = None):
        """Any accepted form of ``prompts`` -> ``Prompts``; an empty prompt
        becomes ``[eot_id]`` (an error without ``eot_id``)."""
        rows, one = _rows(prompts)
        for r in rows:
            for t in r:
                if not 0 <= t < vocab_size:
                    raise ValueError(
                        f"prompt id {t} is outside the model's vocabulary "
                        f"[0, {vocab_size}); was the prompt encoded with "
                        "another tokenizer?"
                    )
        if any(not r for r in rows):
            if eot_id is None:
                raise ValueError(
                    "the prompt is empty and no end-of-text id is known: "
                    "pass eot_id= (e.g. tokenizer.eot_id) to start from the "
                    "end-of-text token, or give at least one prompt token"
                )
            if not 0 <= eot_id < vocab_size:
                raise ValueError(
                    f"eot_id={eot_id} is outside the vocabulary "
                    f"[0, {vocab_size})"
                )
            rows = [r or [int(eot_id)] for r in rows]
        return cls(rows, one)

    def __len__(self) -> int:
        return len(self.rows)

    def left_padded(self, last: int | None = None) -> tuple[Tensor, Tensor]:
        """``(idx (B, T) int64, pad (B,) int64)``: the rows (each cropped to
        its ``last`` tokens if given) padded on the left with id 0."""
        rows = [r[-last:] if last else r for r in self.rows]
        width = max(len(r) for r in rows)
        idx = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        pad = torch.tensor([width - len(r) for r in rows])
        return idx.long(), pad.long()

    def result(self, out: Tensor, stop_ids) -> list[int] | list[list[int]]:
        """New tokens ``(B, n)`` -> the contract: each row up to its first
        stop id (included); one list for one prompt."""
        rows = [until_stop(r, stop_ids) for r in out.tolist()]
        return rows[0] if self.one else rows


def _rows(prompts) -> tuple[list[list[int]], bool]:
    if isinstance(prompts, (str, bytes)):
        raise TypeError(
            "prompts must be token ids, not text: encode the prompt with "
            "the model's tokenizer first (tokenizer.encode(text))"
        )
    if isinstance(prompts, Tensor):
        if prompts.dtype.is_floating_point or prompts.dtype in (
            torch.bool,
            torch.complex64,
            torch.complex128,
        ):
            raise TypeError(
                f"prompts must be integer token ids, got {prompts.dtype}"
            )
        if prompts.dim() == 1:
            return [prompts.tolist()], True
        if prompts.dim() == 2:
            return prompts.tolist(), False
        raise ValueError(
            "prompts must be 1-D (one prompt) or 2-D (B, T) (a batch of "
            f"equal-length prompts), got shape {tuple(prompts.shape)}"
        )
    try:
        items = list(prompts)
    except TypeError:
        raise TypeError(
            "prompts must be a list of ints, a 1-D tensor, a list of "
            f"prompts, or a (B, T) tensor, got {type(prompts).__name__}"
        ) from None
    many = bool(items) and all(
        isinstance(p, (list, tuple)) or isinstance(p, Tensor) for p in items
    )
    rows = [_ids(p) for p in items] if many else [_ids(items)]
    return rows, not many


def _ids(prompt) -> list[int]:
    if isinstance(prompt, Tensor):
        if prompt.dim() != 1 or prompt.dtype.is_floating_point:
            raise ValueError(
                "a list of prompts holds lists of ints or 1-D integer "
                f"tensors, one per prompt; got a {prompt.dtype} tensor of "
                f"shape {tuple(prompt.shape)}"
            )
        return prompt.tolist()
    ids = list(prompt)
    if any(isinstance(t, (list, tuple, Tensor)) for t in ids):
        raise ValueError(
            "a list of prompts holds lists of ints or 1-D tensors, one per "
            "prompt (not lists of lists)"
        )
    for i, t in enumerate(ids):
        if isinstance(t, bool) or not hasattr(t, "__index__"):
            raise TypeError(
                f"token ids must be ints, got {type(t).__name__} {t!r}"
            )
        ids[i] = operator.index(t)  # numpy's ints too
    return ids


def until_stop(ids: list[int], stop_ids) -> list[int]:
    """``ids`` up to and including the first stop id."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[: i + 1]
    return ids
