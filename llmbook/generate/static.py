"""Fast generation: a static KV cache, one-pass prefill, a compiled step.

The reference engine (``llmbook.generate.reference``) is written to be read:
a cache that grows, a window that slides. This engine is the same
computation arranged for speed, and the tests check it gives the same
tokens:

- **A static cache.** ``StaticCacheEngine`` allocates the keys and values
  of every layer once, for ``max_len`` slots: ``(B, n_head, max_len,
  head_size)`` per layer. Step ``j`` writes slot ``j`` in place
  (``index_copy_``) and attends over all ``max_len`` slots with a mask that
  hides the slots not written yet. Every step then has the same shapes,
  nothing is allocated per token, and ``torch.compile`` can turn the whole
  step into one graph compiled once.
- **Prefill, then decode.** The prompt goes through the model in one pass
  (all its tokens at once: a matrix-matrix product, compute-bound); then one
  token per step (matrix-vector products, bound by memory bandwidth).
- **Batches of different lengths.** Prompts are padded on the left, so that
  every row's newest token sits in the same slot. A row's pad slots are
  masked out of attention, and its positions (learned or RoPE) count from
  its first real token: each row computes what it would alone.

The speed limit of batch-1 decoding is memory bandwidth: every step reads
every weight once. ``measure_bandwidth`` measures it; with
``llmbook.generate.quantize.weight_bytes`` it gives the roofline
``tokens/s <= bandwidth / weight bytes``.

Shapes: B batch, T new tokens, L = max_len slots, C channels, V vocabulary.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor

from llmbook.attention import causal_attention, use_fused
from llmbook.checks import check_int
from llmbook.generate.engine import Engine
from llmbook.generate.prompts import Prompts
from llmbook.generate.sampling import SamplingParams
from llmbook.model import GPT
from llmbook.timing import median_seconds

__all__ = ["StaticCacheEngine", "measure_bandwidth"]


def _rope_at(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``llmbook.attention.apply_rope`` at per-row positions: x (B, nh, T,
    hs); cos, sin (B, 1, T, hs/2), the tables already indexed."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class StaticCacheEngine(Engine):
    """Generation with a static KV cache for a ``GPT`` (also a bfloat16 or
    int8 one from ``llmbook.generate.quantize``).

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
            raise TypeError(
                f"StaticCacheEngine needs a GPT; got {type(model).__name__}"
            )
        block = model.config.block_size
        max_len = block if max_len is None else max_len
        if check_int("max_len", max_len, low=1) > block:
            raise ValueError(
                f"max_len must be at most block_size = {block}, got {max_len}"
            )
        super().__init__(model.eval())
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

    def forward(
        self, idx: Tensor, slots: Tensor, pad: Tensor, rows=None
    ) -> Tensor:
        """Run ``idx`` (B, T), written to cache slots ``slots`` ((T,) for
        every row, or (B, T), each row its own), for rows left-padded by
        ``pad`` (B,); returns logits (B, T, V). ``rows`` (a slice): which
        rows of the cache the B rows are (default: all).

        Query t sees the slots up to its own, minus its row's pad slots (a
        pad query sees itself, so no softmax row is empty).
        """
        m = self.model
        slots = slots.expand(idx.size(0), -1)  # (B, T)
        keys = torch.arange(self.max_len, device=idx.device)  # (L,)
        pos = (slots - pad[:, None]).clamp_min(0)  # (B, T)
        causal = keys <= slots[..., None]  # (B, T, L)
        own = keys == slots[..., None]  # (B, T, L)
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
            kv = (self.k[i], self.v[i])
            kv = kv if rows is None else (kv[0][rows], kv[1][rows])  # views
            h = self._attend(
                block.attn, block.ln_1(x), kv, slots, mask, cos, sin
            )
            x = x + h  # (B, T, C)
            x = x + block.mlp(block.ln_2(x))  # (B, T, C)
        return m.lm_head(m.ln_f(x))  # (B, T, V)

    def _attend(self, attn, x, kv, slots, mask, cos, sin) -> Tensor:
        """``CausalSelfAttention`` over the static cache ``kv`` (two
        (B, nh, L, hs) tensors, written in place): (B, T, C)."""
        B, T, C = x.shape
        nh, hs = attn.n_head, attn.head_size
        q, k, v = attn.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        if cos is not None:
            q, k = _rope_at(q, cos, sin), _rope_at(k, cos, sin)
        at = slots[:, None, :, None].expand(B, nh, T, hs)  # row b: its slots
        cache_k, cache_v = kv
        cache_k.scatter_(2, at, k)  # in place: (B, nh, L, hs)
        cache_v.scatter_(2, at, v)
        if use_fused(q):
            y = F.scaled_dot_product_attention(
                q, cache_k, cache_v, attn_mask=mask
            )  # (B, nh, T, hs)
        else:  # bfloat16 where the fused CPU kernel fails (attention.py)
            y = causal_attention(q, cache_k, cache_v, mask=mask, causal=False)
        y = y.transpose(1, 2).reshape(B, T, C)
        return attn.c_proj(y)  # (B, T, C)

    def prefill(self, idx: Tensor, pad: Tensor) -> Tensor:
        """The whole (left-padded) prompt in one pass, slots 0 .. T-1;
        returns the logits of each row's next token, (B, V)."""
        self.allocate(idx.size(0))
        slots = torch.arange(idx.size(1), device=idx.device)  # (T,)
        self._pad = pad
        self._slot = slots[-1:].clone()  # (1,): the last slot written
        return self.forward(idx, slots, pad)[:, -1]

    def step(self, tokens: Tensor, slot: Tensor, pad: Tensor) -> Tensor:
        """Tokens (B, T) at slots ``slot, slot+1, ...`` (``slot``: a (1,)
        tensor, or (T,) slots, or (B, T): each row its own) through the
        (compiled) step: logits (B, T, V). Compiles on the first call for a
        new shape."""
        slots = (
            slot + torch.arange(tokens.size(1), device=slot.device)
            if slot.dim() == 1 and slot.numel() != tokens.size(1)
            else slot  # (T,) slots, or (B, T): each row its own
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

    # -- the engine's two calls ----------------------------------------------

    def prepare(self, prompts: Prompts, params: SamplingParams):
        idx, pad = prompts.left_padded()
        need = idx.size(1) + params.max_new_tokens - 1
        if need > self.max_len:
            raise ValueError(
                f"a {idx.size(1)}-token prompt and {params.max_new_tokens} "
                f"new tokens need {need} cache slots; this engine has "
                f"max_len={self.max_len} (block_size "
                f"{self.model.config.block_size}). Generate fewer tokens, or "
                "use llmbook.generate.generate, which slides the window"
            )
        return idx.to(self.device), pad.to(self.device)

    def decode(self, tokens: Tensor) -> Tensor:
        """One new token per row (B,) at the next slot: logits (B, V)."""
        self._slot += 1  # in place: a compiled step sees the same tensor
        return self.step(tokens[:, None], self._slot, self._pad)[:, -1]

    # -- rows that come and go: continuous batching ---------------------------

    def prefill_row(self, row: int, ids) -> Tensor:
        """Start a sequence in row ``row`` of the allocated cache while the
        other rows keep theirs: the prompt ``ids`` (T,) goes to slots
        0 .. T-1 of that row alone. Returns its next-token logits (V,). A
        server adds a request this way between two ``decode_rows`` steps."""
        check_int("row", row, 0, self.batch_size - 1)
        idx = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if idx.dim() != 1 or not 1 <= idx.numel() <= self.max_len:
            raise ValueError(
                f"a prompt is 1 to max_len = {self.max_len} token ids, got "
                f"shape {tuple(idx.shape)}"
            )
        slots = torch.arange(idx.numel(), device=idx.device)  # (T,)
        pad = torch.zeros(1, dtype=torch.long, device=idx.device)
        rows = slice(row, row + 1)
        return self.forward(idx[None], slots, pad, rows)[0, -1]

    def decode_rows(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """One token per row, ``tokens`` (B,), each at its own slot
        ``positions`` (B,): the length of its sequence so far. Returns the
        logits (B, V). A row without a sequence can carry any token at
        position 0: a sequence started there later overwrites it."""
        if int(positions.max()) >= self.max_len:
            raise ValueError(
                f"a row reached position {int(positions.max())}; the cache "
                f"has max_len = {self.max_len} slots"
            )
        pad = torch.zeros_like(positions)
        return self.step(tokens[:, None], positions[:, None], pad)[:, -1]


# ---------------------------------------------------------------------------
# The roofline's denominator


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
    t_copy = median_seconds(lambda: dst.copy_(src), repeats)
    w = torch.randn(matvec_n, matvec_n).to(dtype)
    x = torch.randn(1, matvec_n).to(dtype)
    with torch.inference_mode():
        t_mv = median_seconds(lambda: F.linear(x, w), repeats)
    return dict(
        copy=2 * src.numel() * 4 / t_copy / 1e9,
        matvec=w.numel() * w.element_size() / t_mv / 1e9,
    )
