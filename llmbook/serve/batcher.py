"""Continuous batching: requests join a running batch and leave it when done.

One thread owns the model (a ``StaticCacheEngine`` with ``max_batch`` rows)
and runs the loop that every request shares:

1. **admit**: while a row is free and a request waits, prefill the request's
   prompt into that row alone (``prefill_row``);
2. **pick**: for every busy row, its next token from its logits, with that
   request's own sampling settings and random generator;
3. **hand out**: each token goes to its request's queue at once (streaming);
   a request that hit a stop token, its ``max_new_tokens`` or the end of
   the cache, or whose client went away, frees its row;
4. **decode**: one step of every row at its own position (``decode_rows``).

The step always runs all ``max_batch`` rows, busy or not: the shapes never
change, so a request computes exactly what it computes alone (the same
kernels on the same shapes), and greedy answers do not depend on the load.
Requests beyond the free rows wait in a queue of at most ``max_waiting``;
beyond that, ``submit`` refuses them (the server answers 503: backpressure).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

import torch

from llmbook.generate import SamplingParams, StaticCacheEngine

__all__ = ["Batcher", "Busy", "Request"]


class Busy(RuntimeError):
    """Every row is busy and the waiting queue is full."""


@dataclass(eq=False)
class Request:
    """One generation: ``ids`` (the prompt) and ``params``; its tokens are
    handed to ``on_token(token)`` as they come, then ``on_done(reason)``
    (``"stop"``, ``"length"``, ``"cancelled"`` or an error's message).
    Both are called on the batcher's thread."""

    ids: list[int]
    params: SamplingParams
    on_token: object = None
    on_done: object = None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop generating (a client that went away); frees the row."""
        self.cancelled.set()


class Batcher:
    """Continuous batching of ``engine``'s model over ``max_batch`` rows.
    ``start()`` starts the loop on a thread of its own; ``close()`` stops
    it."""

    def __init__(
        self,
        engine: StaticCacheEngine,
        max_batch: int = 8,
        max_waiting: int = 64,
    ):
        self.engine, self.max_batch = engine, max_batch
        self.max_waiting = max_waiting
        self.max_len = engine.max_len
        self.rows: list[Request | None] = [None] * max_batch
        self.generators: list = [None] * max_batch
        self.waiting: collections.deque[Request] = collections.deque()
        self.lock = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.steps = 0  # decoding steps run, for the curious

    # -- the outside: submit, start, close ----------------------------------

    def submit(self, request: Request) -> Request:
        """Queue ``request``; it joins the batch at the next free row.
        Raises ``ValueError`` if its prompt and tokens cannot fit the cache,
        ``Busy`` if the waiting queue is full."""
        n, new = len(request.ids), request.params.max_new_tokens
        if not 1 <= n <= self.max_len - 1:
            raise ValueError(
                f"the prompt is {n} tokens; this model takes 1 to "
                f"{self.max_len - 1} (its context is {self.max_len})"
            )
        request.params.check_vocab(self.engine.model.config.vocab_size)
        if n + new > self.max_len:
            raise ValueError(
                f"a {n}-token prompt and max_tokens={new} need {n + new} "
                f"positions; the context holds {self.max_len}: ask for at "
                f"most {self.max_len - n} tokens"
            )
        with self.lock:
            if self.closed:
                raise RuntimeError("the batcher is closed")
            free = sum(r is None for r in self.rows)
            if len(self.waiting) >= free + self.max_waiting:
                raise Busy(
                    f"all {self.max_batch} rows are busy and "
                    f"{len(self.waiting)} requests wait; try again later"
                )
            self.waiting.append(request)
            self.lock.notify()
        return request

    def start(self) -> Batcher:
        self.thread.start()
        return self

    def close(self) -> None:
        """Stop the loop; requests still waiting or running end
        ``"cancelled"``."""
        with self.lock:
            self.closed = True
            self.lock.notify()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        else:  # never started: nobody else will tell the waiting requests
            while self.waiting:
                self._finish(None, self.waiting.popleft(), "cancelled")

    def load(self) -> dict:
        with self.lock:
            busy = sum(r is not None for r in self.rows)
            return dict(active=busy, waiting=len(self.waiting))

    # -- the loop -----------------------------------------------------------

    @torch.inference_mode()
    def _loop(self) -> None:
        engine, B = self.engine, self.max_batch
        engine.allocate(B)
        V = engine.model.config.vocab_size
        dev = engine.device
        logits = torch.zeros(B, V, device=dev)
        pos = torch.zeros(B, dtype=torch.long, device=dev)
        while True:
            with self.lock:
                while (
                    not self.closed and not self.waiting and not any(self.rows)
                ):
                    self.lock.wait()
                if self.closed:
                    break
                admitted = self._admit()
            for row, req in admitted:  # 1. admit: prefill each alone
                ids = torch.tensor(req.ids, device=dev)
                logits[row] = engine.prefill_row(row, ids)
                pos[row] = len(req.ids)
            tokens = torch.zeros(B, dtype=torch.long, device=dev)
            for row, req in enumerate(self.rows):  # 2. and 3.
                if req is not None:
                    tokens[row] = self._hand_out(row, req, logits, pos)
            if any(self.rows):  # 4. decode: every row, busy or not
                logits = engine.decode_rows(tokens, pos)
                busy = [r is not None for r in self.rows]
                pos += torch.tensor(busy, device=dev)
                self.steps += 1
        for req in [*self.waiting, *filter(None, self.rows)]:
            self._finish(
                self.rows.index(req) if req in self.rows else None,
                req,
                "cancelled",
            )

    def _admit(self) -> list[tuple[int, Request]]:
        """Free rows take waiting requests (under the lock)."""
        admitted = []
        for row in range(self.max_batch):
            while self.rows[row] is None and self.waiting:
                req = self.waiting.popleft()
                if req.cancelled.is_set():
                    self._finish(None, req, "cancelled")
                    continue
                self.rows[row] = req
                gens = req.params.generators(1, self.engine.device)
                self.generators[row] = gens
                admitted.append((row, req))
        return admitted

    def _hand_out(self, row, req, logits, pos) -> int:
        """Pick row's next token, give it to its request, free the row if
        the request is done. Returns the token (fed to the next step)."""
        if req.cancelled.is_set():
            self._finish(row, req, "cancelled")
            return 0
        p = req.params
        token = int(p.pick(logits[row : row + 1], self.generators[row]))
        req.tokens.append(token)
        try:
            if req.on_token is not None:
                req.on_token(token)
        except Exception:  # noqa: BLE001 - a consumer's bug ends its request
            self._finish(row, req, "cancelled")
            return 0
        if token in p.stop_ids:
            self._finish(row, req, "stop")
        elif len(req.tokens) >= p.max_new_tokens:
            self._finish(row, req, "length")
        elif int(pos[row]) >= self.max_len - 1:  # the cache is full
            self._finish(row, req, "length")
        return token

    def _finish(self, row, req: Request, reason: str) -> None:
        if row is not None:
            with self.lock:
                self.rows[row] = None
                self.generators[row] = None
        req.finish_reason = reason
        if req.on_done is not None:
            req.on_done(reason)
