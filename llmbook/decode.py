"""Fast decoding: a static KV cache, one-pass prefill, a compiled step.

``llmbook.generate`` is written to be read: a cache that grows, a window
that slides, every argument checked at every step. This module is the same
computation arranged for speed, and the tests check it gives the same
tokens:

- **A static cache.** ``Decoder`` allocates the keys and values of every
  layer once, for ``max_len`` slots: ``(B, n_head, max_len, head_size)`` per
  layer. Step ``j`` writes slot ``j`` in place (``index_copy_``) and attends
  over all ``max_len`` slots with a mask that hides the slots not written
  yet. Every step then has the same shapes, nothing is allocated per token,
  and ``torch.compile`` can turn the whole step into one graph compiled once.
- **Prefill, then decode.** The prompt goes through the model in one pass
  (all its tokens at once: a matrix-matrix product, compute-bound); then one
  token per step (matrix-vector products, bound by memory bandwidth).
- **Batches of different lengths.** Prompts are padded on the left, so that
  every row's newest token sits in the same slot. A row's pad slots are
  masked out of attention, and its positions (learned or RoPE) count from
  its first real token: each row computes what it would alone.

The speed limit of batch-1 decoding is memory bandwidth: every step reads
every weight once. ``measure_bandwidth`` measures it; with
``llmbook.quantize.weight_bytes`` it gives the roofline
``tokens/s <= bandwidth / weight bytes``.

Shapes: B batch, T new tokens, L = max_len slots, C channels, V vocabulary.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from llmbook.attention import causal_attention, use_fused
from llmbook.generate import sample_next
from llmbook.model import GPT

__all__ = ["Decoder", "measure_bandwidth", "pad_left"]


def _check_sampling(temperature, top_k, top_p) -> None:
    if isinstance(temperature, bool) or not isinstance(
        temperature, (int, float)
    ):
        raise TypeError(
            f"temperature must be a number, got {type(temperature).__name__}"
        )
    if temperature < 0:
        raise ValueError(
            f"temperature must be >= 0 (0 means greedy), got {temperature}"
        )
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
    ):
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool)
        or not isinstance(top_p, (int, float))
        or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def pad_left(prompts, vocab_size: int) -> tuple[Tensor, Tensor, bool]:
    """Prompts -> ``(idx (B, T) int64, pad (B,) int64, batched)``.

    ``prompts``: one prompt (a list of ints or a 1-D tensor; batched False)
    or several (a 2-D tensor, or a list of lists of any lengths). Shorter
    rows are padded on the left with id 0; ``pad[b]`` counts row b's pads.
    """
    if isinstance(prompts, Tensor):
        if prompts.dtype.is_floating_point or prompts.dtype == torch.bool:
            raise TypeError(
                f"prompts must be integer token ids, got {prompts.dtype}"
            )
        if prompts.dim() not in (1, 2):
            raise ValueError(
                "prompts must be 1-D (one prompt) or 2-D (B, T); "
                f"got shape {tuple(prompts.shape)}"
            )
        batched = prompts.dim() == 2
        rows = prompts.tolist() if batched else [prompts.tolist()]
    elif isinstance(prompts, (str, bytes)):
        raise TypeError(
            "prompts must be token ids, not text: encode them "
            "with the model's tokenizer first"
        )
    else:
        rows = list(prompts)
        batched = bool(rows) and not isinstance(rows[0], int)
        rows = [list(r) for r in rows] if batched else [rows]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token")
    for r in rows:
        for t in r:
            if isinstance(t, bool) or not isinstance(t, int):
                raise TypeError(f"token ids must be ints, got {t!r}")
            if not 0 <= t < vocab_size:
                raise ValueError(
                    f"prompt id {t} is outside the model's "
                    f"vocabulary [0, {vocab_size})"
                )
    width = max(len(r) for r in rows)
    idx = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    pad = torch.tensor([width - len(r) for r in rows])
    return idx, pad, batched


def _rope_at(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``llmbook.attention.apply_rope`` at per-row positions: x (B, nh, T,
    hs); cos, sin (B, 1, T, hs/2), the tables already indexed."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Decoder:
    """Generation with a static KV cache for a ``GPT`` (also a bfloat16 or
    int8 one from ``llmbook.quantize``).

    ``max_len``: cache slots, at most (and by default) ``block_size``; a
    prompt of T tokens and n new tokens need T + n - 1 of them (attention
    reads all the slots, so fewer is faster). ``compile=True`` compiles the
    one-token step with ``torch.compile`` (static shapes; the first step of
    each batch size compiles, and ``compile_seconds`` records how long it
    took). The model is put in eval mode.
    """

    def __init__(
        self, model: GPT, max_len: int | None = None, compile: bool = False
    ):
        if not isinstance(model, GPT):
            raise TypeError(f"Decoder needs a GPT; got {type(model).__name__}")
        block = model.config.block_size
        max_len = block if max_len is None else max_len
        if (
            isinstance(max_len, bool)
            or not isinstance(max_len, int)
            or not (1 <= max_len <= block)
        ):
            raise ValueError(
                f"max_len must be an int in [1, block_size = "
                f"{block}], got {max_len!r}"
            )
        self.model = model.eval()
        self.max_len = max_len
        self.compile = compile
        self.compile_seconds: dict[tuple, float] = {}  # (B, T) -> seconds
        self.batch_size = 0
        self.k: list[Tensor] = []  # n_layer x (B, nh, L, hs)
        self.v: list[Tensor] = []
        self._step = (
            torch.compile(self.forward, fullgraph=True, dynamic=False)
            if compile
            else self.forward
        )
        self._ref = model.blocks[0].ln_1.weight  # dtype and device

    def allocate(self, batch_size: int) -> None:
        """(Re)allocate the cache for ``batch_size`` rows (kept when equal)."""
        if batch_size == self.batch_size:
            return
        cfg, ref = self.model.config, self._ref
        shape = (batch_size, cfg.n_head, self.max_len, cfg.head_size)
        # zeros, not empty: masked slots are read (weight 0) and must be finite
        self.k = [
            torch.zeros(shape, dtype=ref.dtype, device=ref.device)
            for _ in range(cfg.n_layer)
        ]
        self.v = [torch.zeros_like(t) for t in self.k]
        self.batch_size = batch_size

    def nbytes(self) -> int:
        """Bytes of the cache as allocated now."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    # -- the forward pass over the cache -------------------------------------

    def forward(self, idx: Tensor, slots: Tensor, pad: Tensor) -> Tensor:
        """Run ``idx`` (B, T), written to cache slots ``slots`` (T,), for
        rows left-padded by ``pad`` (B,); returns logits (B, T, V).

        Query t sees the slots up to its own, minus its row's pad slots (a
        pad query sees itself, so no softmax row is empty).
        """
        m = self.model
        keys = torch.arange(self.max_len, device=idx.device)  # (L,)
        pos = (slots[None, :] - pad[:, None]).clamp_min(0)  # (B, T)
        causal = keys[None, :] <= slots[:, None]  # (T, L)
        own = keys[None, :] == slots[:, None]  # (T, L)
        real = keys[None, :] >= pad[:, None]  # (B, L): not a pad slot
        mask = causal & (real[:, None, :] | own)  # (B, T, L)
        mask = mask[:, None]  # (B, 1, T, L), broadcast over heads
        x = m.wte(idx)  # (B, T, C)
        cos = sin = None
        if m.wpe is not None:
            x = x + m.wpe(pos)  # (B, T, C)
        else:
            cos = m.rope_cos[pos][:, None]  # (B, 1, T, hs/2)
            sin = m.rope_sin[pos][:, None]
        for i, block in enumerate(m.blocks):
            h = self._attend(
                block.attn, block.ln_1(x), i, slots, mask, cos, sin
            )
            x = x + h  # (B, T, C)
            x = x + block.mlp(block.ln_2(x))  # (B, T, C)
        return m.lm_head(m.ln_f(x))  # (B, T, V)

    def _attend(self, attn, x, layer, slots, mask, cos, sin) -> Tensor:
        """``CausalSelfAttention`` over the static cache: (B, T, C)."""
        B, T, C = x.shape
        nh, hs = attn.n_head, attn.head_size
        q, k, v = attn.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        if cos is not None:
            q, k = _rope_at(q, cos, sin), _rope_at(k, cos, sin)
        self.k[layer].index_copy_(2, slots, k)  # in place: (B, nh, L, hs)
        self.v[layer].index_copy_(2, slots, v)
        if use_fused(q):
            y = F.scaled_dot_product_attention(
                q, self.k[layer], self.v[layer], attn_mask=mask
            )  # (B, nh, T, hs)
        else:  # bfloat16 where the fused CPU kernel fails (attention.py)
            y = causal_attention(
                q, self.k[layer], self.v[layer], mask=mask, causal=False
            )
        y = y.transpose(1, 2).reshape(B, T, C)
        return attn.c_proj(y)  # (B, T, C)

    def prefill(self, idx: Tensor, pad: Tensor) -> Tensor:
        """The whole (left-padded) prompt in one pass, slots 0 .. T-1;
        returns the logits of each row's next token, (B, V)."""
        self.allocate(idx.size(0))
        slots = torch.arange(idx.size(1), device=idx.device)  # (T,)
        return self.forward(idx, slots, pad)[:, -1]

    def step(self, tokens: Tensor, slot: Tensor, pad: Tensor) -> Tensor:
        """Tokens (B, T) at slots ``slot, slot+1, ...`` (``slot``: a (1,)
        tensor, or (T,) slots) through the (compiled) step: logits
        (B, T, V). Compiles on the first call for a new shape."""
        slots = (
            slot
            if slot.numel() == tokens.size(1)
            else slot + torch.arange(tokens.size(1), device=slot.device)
        )
        key = tuple(tokens.shape)  # (B, T): one compiled graph per shape
        if self.compile and key not in self.compile_seconds:
            t0 = time.perf_counter()
            out = self._step(tokens, slots, pad)
            self.compile_seconds[key] = time.perf_counter() - t0
            return out
        return self._step(tokens, slots, pad)

    def warmup(self, batch_size: int = 1, tokens: int = 1) -> float:
        """Compile (if asked) the step for this batch size and number of
        tokens now, on dummy input; returns the seconds it took."""
        self.allocate(batch_size)
        dev = self._ref.device
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.step(
                torch.zeros(batch_size, tokens, dtype=torch.long, device=dev),
                torch.zeros(1, dtype=torch.long, device=dev),
                torch.zeros(batch_size, dtype=torch.long, device=dev),
            )
        return time.perf_counter() - t0

    # -- the loop ----------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        prompts,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop_ids: Iterable[int] = (),
        seed: int | None = None,
    ) -> list[int] | Tensor:
        """Like ``llmbook.generate.generate``: the new tokens only,
        ``list[int]`` for one prompt, a ``(B, n)`` tensor for several (here
        they may differ in length). Same sampling rules, same seed, same
        stop-token convention (a stopped row repeats its stop token)."""
        if (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 0
        ):
            raise ValueError(
                f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}"
            )
        _check_sampling(temperature, top_k, top_p)
        vocab = self.model.config.vocab_size
        stops = [
            int(s)
            for s in ((stop_ids,) if isinstance(stop_ids, int) else stop_ids)
        ]
        for s in stops:
            if not 0 <= s < vocab:
                raise ValueError(
                    f"stop id {s} is outside the model's "
                    f"vocabulary [0, {vocab})"
                )
        idx, pad, batched = pad_left(prompts, vocab)
        B, T = idx.shape
        if T + max_new_tokens - 1 > self.max_len:
            raise ValueError(
                f"a {T}-token prompt and {max_new_tokens} new tokens need "
                f"{T + max_new_tokens - 1} cache slots; this Decoder has "
                f"max_len={self.max_len} (block_size "
                f"{self.model.config.block_size}). Generate fewer tokens, or "
                "use llmbook.generate.generate, which slides the window"
            )
        dev = self._ref.device
        idx, pad = idx.to(dev), pad.to(dev)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=dev).manual_seed(int(seed))
        out = torch.zeros(B, max_new_tokens, dtype=torch.long, device=dev)
        n = 0
        if max_new_tokens:
            logits = self.prefill(idx, pad)  # (B, V)
            stop_t = torch.tensor(stops, dtype=torch.long, device=dev)
            finished = torch.zeros(B, dtype=torch.bool, device=dev)
            last = torch.zeros(B, dtype=torch.long, device=dev)  # stop ids
            slot = torch.zeros(1, dtype=torch.long, device=dev)
            while True:
                nxt = sample_next(
                    logits, temperature, top_k, top_p, generator
                )  # (B,)
                if stops:
                    nxt = torch.where(finished, last, nxt)
                    newly = torch.isin(nxt, stop_t) & ~finished
                    last = torch.where(newly, nxt, last)
                    finished |= newly
                out[:, n] = nxt
                n += 1
                if n == max_new_tokens or (stops and bool(finished.all())):
                    break
                slot.fill_(T + n - 1)  # the slot of the token just made
                logits = self.step(nxt[:, None], slot, pad)[:, -1]
        out = out[:, :n].cpu()
        return out if batched else out[0].tolist()


# ---------------------------------------------------------------------------
# The roofline's denominator


def _median_seconds(f, repeats: int) -> float:
    f()  # warm up: page faults, thread pool
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_bandwidth(
    copy_mib: int = 256,
    matvec_n: int = 8192,
    repeats: int = 10,
    dtype=torch.float32,
) -> dict:
    """Memory bandwidth in GB/s (1e9 bytes), two ways, medians:

    - ``copy``: ``dst.copy_(src)`` of ``copy_mib`` MiB, counting the bytes
      read and the bytes written (what the memory system moves);
    - ``matvec``: ``F.linear(x, W)`` with a (1, n) vector and an (n, n)
      matrix in ``dtype``, counting the matrix bytes (what decoding does).

    Both are far larger than the CPU's caches at the defaults.
    """
    src = torch.ones(copy_mib * 2**20 // 4)
    dst = torch.empty_like(src)
    t_copy = _median_seconds(lambda: dst.copy_(src), repeats)
    w = torch.randn(matvec_n, matvec_n).to(dtype)
    x = torch.randn(1, matvec_n).to(dtype)
    with torch.inference_mode():
        t_mv = _median_seconds(lambda: F.linear(x, w), repeats)
    return dict(
        copy=2 * src.numel() * 4 / t_copy / 1e9,
        matvec=w.numel() * w.element_size() / t_mv / 1e9,
    )
