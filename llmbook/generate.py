"""Generation: from logits to text, fast.

At every step the model gives one vector of logits over the vocabulary for the
next position. Generating text is a loop around that: reshape the distribution
(temperature, top-k, top-p), pick one token, append it, ask again. The
reshaping steps are small pure functions of a logits tensor ``(..., V)``, so
the chapter can plot them and the tests can check them by hand; the loop lives
in one place, :func:`stream`, and :func:`generate` collects what it yields.

Choices, stated once:

- ``temperature=0`` is greedy decoding (argmax); top-k and top-p are then
  irrelevant and ignored. Otherwise the order is temperature, then top-k, then
  top-p, the order Hugging Face ``transformers`` uses.
- ``seed`` seeds a private ``torch.Generator``: the same seed gives the same
  tokens, whatever the global RNG did before. ``seed=None`` uses the global
  RNG (so ``torch.manual_seed`` works as usual).
- A list of prompts of any lengths is a batch too: the prompts are padded on
  the left (the padding masked out, each row's positions counted from its
  own first token), every row samples with a generator of its own (``seed``,
  or ``seed[i]`` for row i), and the result is one list of ids per prompt,
  the same tokens as generating that prompt alone (to float rounding).
- A prompt longer than the context is cropped to its last ``block_size``
  tokens. An empty prompt starts from the end-of-text token: pass ``eot_id=``
  (e.g. ``tokenizer.eot_id``), or give the model's config an ``eot_id``
  attribute; without either an empty prompt is an error.
- A stop token ends generation and *is* included in the output (so the caller
  can tell a stop from running out of ``max_new_tokens``). In a batch, a row
  that has stopped repeats its stop token until every row has stopped.
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

import argparse
import codecs
import sys
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_next",
    "generate",
    "stream",
    "TextStream",
    "main",
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
# Checking and shaping the prompt


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _is_prompt_list(prompt_ids) -> bool:
    """A list of prompts (each a list of ints or a 1-D tensor), not a list of
    ints or a (B, T) tensor."""
    return (
        isinstance(prompt_ids, (list, tuple))
        and len(prompt_ids) > 0
        and all(
            isinstance(p, (list, tuple))
            or (isinstance(p, Tensor) and p.dim() == 1)
            for p in prompt_ids
        )
    )


def _as_batch(prompt_ids) -> tuple[Tensor, bool]:
    """Any prompt form -> ``(B, T)`` int64 tensor, and whether it was a
    batch."""
    if isinstance(prompt_ids, Tensor):
        idx = prompt_ids
    elif isinstance(prompt_ids, (str, bytes)):
        raise TypeError(
            "prompt_ids must be token ids, not text: encode the prompt with "
            "the model's tokenizer first (tokenizer.encode(text))"
        )
    else:
        try:
            idx = torch.tensor(list(prompt_ids), dtype=torch.long)
        except (TypeError, ValueError) as e:
            raise ValueError(
                "prompt_ids must be a list of ints, a 1-D tensor, a list of "
                f"prompts, or a (B, T) tensor of equal-length prompts ({e})"
            ) from None
    if (
        idx.dtype.is_floating_point
        or idx.dtype.is_complex
        or (idx.dtype == torch.bool)
    ):
        raise TypeError(
            f"prompt_ids must be integer token ids, got {idx.dtype}"
        )
    if idx.dim() == 1:
        return idx.long()[None, :], False
    if idx.dim() == 2:
        return idx.long(), True
    raise ValueError(
        "prompt_ids must be 1-D (one prompt) or 2-D (B, T) (a batch of "
        f"equal-length prompts), got shape {tuple(idx.shape)}"
    )


def _prepare(
    model, prompt_ids, eot_id: int | None, stop_ids: Iterable[int]
) -> tuple[Tensor, Tensor | None, bool | str, list[int]]:
    """-> (idx (B, T) cropped, padding mask (B, T) or None, batched: False,
    True or "list", stop ids)."""
    config = model.config
    vocab_size, block_size = config.vocab_size, config.block_size
    if _is_prompt_list(prompt_ids):
        rows = []
        for p in prompt_ids:
            row, nested = _as_batch(p)
            if nested:
                raise ValueError(
                    "a list of prompts holds lists of ints or "
                    "1-D tensors, one per prompt"
                )
            rows.append(_fill_empty(row, config, eot_id)[0])  # (T_i,)
        idx, mask = _left_pad([r[-block_size:] for r in rows])
        batched = "list"
    else:
        idx, batched = _as_batch(prompt_ids)
        idx, mask = _fill_empty(idx, config, eot_id)[:, -block_size:], None
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"prompt id {bad} is outside the model's vocabulary [0, "
            f"{vocab_size}); was the prompt encoded with another tokenizer?"
        )
    if isinstance(stop_ids, int):
        stop_ids = (stop_ids,)
    stops = [int(s) for s in stop_ids]
    for s in stops:
        if not 0 <= s < vocab_size:
            raise ValueError(
                f"stop id {s} is outside the model's vocabulary "
                f"[0, {vocab_size})"
            )
    return idx, mask, batched, stops


def _fill_empty(idx: Tensor, config, eot_id: int | None) -> Tensor:
    """An empty prompt (B, 0) starts from the end-of-text token: (B, 1)."""
    if idx.size(1) > 0:
        return idx
    eot = eot_id if eot_id is not None else getattr(config, "eot_id", None)
    if eot is None:
        raise ValueError(
            "the prompt is empty and no end-of-text id is known: pass "
            "eot_id= (e.g. tokenizer.eot_id) to start from the "
            "end-of-text token, or give at least one prompt token"
        )
    if not 0 <= eot < config.vocab_size:
        raise ValueError(
            f"eot_id={eot} is outside the vocabulary [0, {config.vocab_size})"
        )
    return torch.full((idx.size(0), 1), int(eot), dtype=torch.long)


def _left_pad(rows: list[Tensor]) -> tuple[Tensor, Tensor | None]:
    """Prompts of different lengths -> (B, T) ids padded on the left, and the
    (B, T) mask of real tokens (None when no row needed padding). On the
    left, so that every row's next token is in the last column."""
    t = max(len(r) for r in rows)
    idx = torch.zeros(len(rows), t, dtype=torch.long)  # 0: any valid id
    mask = torch.zeros(len(rows), t, dtype=torch.bool)
    for i, r in enumerate(rows):
        idx[i, t - len(r) :] = r
        mask[i, t - len(r) :] = True
    return idx, None if bool(mask.all()) else mask


# ---------------------------------------------------------------------------
# The loop


@torch.inference_mode()
def _steps(
    model,
    idx: Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    stops: list[int],
    generator,
    use_cache: bool,
    mask: Tensor | None = None,
) -> Iterator[Tensor]:
    """Yield the next token of every row, ``(B,)``, one step at a time.

    ``idx`` is the cropped prompt ``(B, T)`` already on the model's device;
    ``mask`` (B, T), False at left padding, or None; ``generator``: one, or
    a list of one per row. (The decorator switches autograd off around each
    step only, not in the caller's code between steps.)
    """
    if max_new_tokens == 0:
        return
    block_size = model.config.block_size
    was_training = model.training
    model.eval()  # no dropout
    cache = model.new_kv_cache(idx.size(0)) if use_cache else None

    def next_logits(ids: Tensor) -> Tensor:  # (B, T) -> (B, V), last position
        padding = {} if mask is None else {"attention_mask": mask}
        out = (
            model(ids, **padding)
            if cache is None
            else model(ids, kv_cache=cache, **padding)
        )
        return out[:, -1]

    def pick(logits: Tensor) -> Tensor:  # (B, V) -> (B,)
        if not isinstance(generator, list):
            return sample_next(logits, temperature, top_k, top_p, generator)
        return torch.cat(
            [
                sample_next(logits[i : i + 1], temperature, top_k, top_p, g)
                for i, g in enumerate(generator)
            ]
        )

    try:
        window = idx  # (B, <= block_size): the tokens the model sees
        logits = next_logits(window)  # the whole prompt (fills the cache)
        stop_t = torch.tensor(stops, dtype=torch.long, device=idx.device)
        finished = torch.zeros(
            idx.size(0), dtype=torch.bool, device=idx.device
        )
        pad = torch.zeros_like(finished, dtype=torch.long)  # a row's stop id
        for step in range(max_new_tokens):
            nxt = pick(logits)  # (B,)
            if stops:
                nxt = torch.where(finished, pad, nxt)
                newly = torch.isin(nxt, stop_t) & ~finished
                pad = torch.where(newly, nxt, pad)
                finished |= newly
            yield nxt
            if step == max_new_tokens - 1 or (stops and bool(finished.all())):
                return
            window = torch.cat([window, nxt[:, None]], dim=1)[:, -block_size:]
            if mask is not None:  # the new token is real in every row
                mask = F.pad(mask, (0, 1), value=True)[:, -block_size:]
            if cache is None:
                logits = next_logits(window)  # everything, every step
            elif cache.pos < block_size:
                logits = next_logits(nxt[:, None])  # only the new token
            else:  # cache full: re-encode the last block_size tokens
                cache.reset()
                logits = next_logits(window)
    finally:
        model.train(was_training)


def _start(
    model,
    prompt_ids,
    max_new_tokens,
    temperature,
    top_k,
    top_p,
    stop_ids,
    seed,
    use_cache,
    eot_id,
) -> tuple[Iterator[Tensor], bool]:
    """Check every argument now (not at the first ``next``), then return the
    step generator and whether the prompt was a batch."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(
            "max_new_tokens must be an int, got "
            f"{type(max_new_tokens).__name__}"
        )
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    _check_temperature(temperature)
    _check_top_k(top_k)
    _check_top_p(top_p)
    if use_cache and not hasattr(model, "new_kv_cache"):
        raise TypeError(
            f"{type(model).__name__} has no new_kv_cache(); pass "
            "use_cache=False"
        )
    idx, mask, batched, stops = _prepare(model, prompt_ids, eot_id, stop_ids)
    device = _model_device(model)
    generator = None
    if batched == "list" and seed is not None:  # a generator per row
        many = isinstance(seed, (list, tuple))
        seeds = list(seed) if many else [seed] * len(idx)
        if len(seeds) != len(idx):
            raise ValueError(
                f"seed is a list of {len(seeds)} but there are {len(idx)} "
                "prompts: give one seed per prompt, or one int"
            )
        generator = [
            torch.Generator(device=device).manual_seed(int(s)) for s in seeds
        ]
    elif seed is not None:
        if isinstance(seed, (list, tuple)):
            raise TypeError(
                "seed must be an int (a list of seeds needs a list of prompts)"
            )
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    if mask is not None:
        mask = mask.to(device)
    steps = _steps(
        model,
        idx.to(device),
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        stops,
        generator,
        use_cache,
        mask,
    )
    return steps, batched, stops


def stream(
    model,
    prompt_ids,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Iterable[int] = (),
    seed: int | list[int] | None = None,
    use_cache: bool = True,
    eot_id: int | None = None,
) -> Iterator[int] | Iterator[Tensor]:
    """Generate tokens one at a time, yielding each as soon as it exists.

    ``prompt_ids``: a list of ints or a 1-D tensor (one prompt; yields
    ``int``), or a ``(B, T)`` tensor or a list of prompts of any lengths
    (yields ``(B,)`` int64 tensors; a row that has stopped repeats its stop
    token). Arguments are checked when
    ``stream`` is called, before the first token; they mean what they mean
    in :func:`generate`.
    """
    steps, batched, stops = _start(
        model,
        prompt_ids,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        stop_ids,
        seed,
        use_cache,
        eot_id,
    )
    return steps if batched else (int(t) for t in steps)


def generate(
    model,
    prompt_ids,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Iterable[int] = (),
    seed: int | list[int] | None = None,
    use_cache: bool = True,
    eot_id: int | None = None,
) -> list[int] | list[list[int]] | Tensor:
    """Generate up to ``max_new_tokens`` tokens after ``prompt_ids``; return
    only the new ones: ``list[int]`` for one prompt (list or 1-D tensor), a
    ``(B, n)`` int64 tensor for a ``(B, T)`` batch (``n <= max_new_tokens``:
    fewer when every row has hit a stop token), and for a list of prompts
    (any lengths) a list of ``list[int]``, each what that prompt alone gives
    (each row ends at its own stop token; ``seed`` may be one per row).

    ``temperature=0`` is greedy; ``top_k``/``top_p`` filter the distribution
    (:func:`top_k_filter`, :func:`top_p_filter`); ``stop_ids`` end
    generation (the stop token is included); ``seed`` makes sampling
    reproducible; ``use_cache`` uses the model's KV cache (same greedy output,
    much faster); ``eot_id`` is where an empty prompt starts. Out-of-range
    settings or token ids raise ``ValueError``.
    """
    steps, batched, stops = _start(
        model,
        prompt_ids,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        stop_ids,
        seed,
        use_cache,
        eot_id,
    )
    rows = list(steps)  # n tensors of shape (B,)
    if not batched:
        return [int(t) for t in rows]
    if not rows:
        n_prompts = len(prompt_ids)
        out = torch.empty(n_prompts, 0, dtype=torch.long)
    else:
        out = torch.stack(rows, dim=1).cpu()  # (B, n)
    if batched == "list":
        return [_until_stop(row.tolist(), stops) for row in out]
    return out


def _until_stop(ids: list[int], stops: list[int]) -> list[int]:
    """``ids`` up to and including the first stop id."""
    for i, t in enumerate(ids):
        if t in stops:
            return ids[: i + 1]
    return ids


# ---------------------------------------------------------------------------
# Text out, as it is produced


class TextStream:
    """Turn token ids into text as they arrive, without splitting characters.

    A byte-level BPE token can end in the middle of a multi-byte UTF-8
    character (an accented letter, an emoji); decoding it alone would print a
    replacement character. With a tokenizer that has ``decode_bytes`` (ours),
    the bytes go through an incremental UTF-8 decoder, which holds back an
    unfinished character until its last byte arrives. With only ``decode``
    (e.g. tiktoken), ids wait until their text no longer ends in U+FFFD, at
    most ``max_pending`` of them (then invalid bytes are let through).
    """

    def __init__(self, tokenizer, max_pending: int = 8):
        self._bytes = getattr(tokenizer, "decode_bytes", None)
        self._decode = tokenizer.decode
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.max_pending = max_pending
        self.pending: list[int] = []

    def push(self, token_id: int) -> str:
        """Add one id; return the text that is now complete (maybe '')."""
        if self._bytes is not None:
            return self._utf8.decode(self._bytes([int(token_id)]))
        self.pending.append(int(token_id))
        text = self._decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < self.max_pending:
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        """Return whatever is still held back (at the end of generation)."""
        if self._bytes is not None:
            return self._utf8.decode(b"", final=True)
        text = self._decode(self.pending) if self.pending else ""
        self.pending = []
        return text


def _error(parser, message) -> None:
    """One line on stderr, as argparse writes its own errors."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """``python -m llmbook.generate --checkpoint PATH --prompt TEXT``: stream
    a continuation of TEXT to stdout as it is generated."""
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.generate",
        description="Continue a prompt with a trained llmbook checkpoint, "
        "printing text as it is generated.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint file")
    parser.add_argument(
        "--prompt",
        default="",
        help="text to continue (empty: start from the end-of-text token)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="0 for greedy decoding"
    )
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute the whole context at every step",
    )
    parser.add_argument(
        "--ignore-eot",
        action="store_true",
        help="do not stop at the end-of-text token",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    args = parser.parse_args(argv)

    from pathlib import Path

    from llmbook.checkpoint import load_model  # late: only the CLI needs it

    if not Path(args.checkpoint).is_file():
        _error(parser, f"no checkpoint file at {args.checkpoint}")
        return 2
    try:
        model, tokenizer = load_model(args.checkpoint)
    except ValueError as e:  # not an llmbook checkpoint, wrong format
        _error(parser, e)
        return 2
    model.to(args.device)
    eot = getattr(tokenizer, "eot_id", None)
    stops = () if args.ignore_eot or eot is None else (eot,)
    out = sys.stdout
    if hasattr(out, "reconfigure"):  # never die on a terminal's encoding
        out.reconfigure(errors="replace")
    try:
        tokens = stream(
            model,
            tokenizer.encode(args.prompt),
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            stop_ids=stops,
            seed=args.seed,
            use_cache=not args.no_cache,
            eot_id=eot,
        )
    except (ValueError, TypeError) as e:
        _error(parser, e)
        return 2
    out.write(args.prompt)
    out.flush()
    text = TextStream(tokenizer)
    for t in tokens:
        if t in stops:
            break
        out.write(text.push(t))
        out.flush()
    out.write(text.flush() + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
