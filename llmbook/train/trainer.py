"""The training loop every trainer shares: pretraining, finetuning, and the
preference or RL trainers to come.

A run is a sequence of optimizer steps, each made of the same named parts,
in this order (``Trainer.run``):

1. ``set_lr(step)``: the schedule, linear warmup then cosine decay;
2. ``gradients(step)``: forward and backward of the step's batch (a
   subclass gives ``batch(step)`` and ``loss(batch)``, or replaces the
   whole part, as pretraining does for micro-batches and several
   processes); returns the step's mean loss;
3. ``check_finite(loss)``: a NaN or infinite loss stops the run, naming the
   last good checkpoint;
4. ``update()``: clip the gradients (their norm is returned and logged),
   take the optimizer step, zero the gradients;
5. ``after_step(row)``: what a subclass records (metrics, evaluations,
   samples); then ``save()`` when a checkpoint is due.

``resume()`` continues from the checkpoint in ``path`` when there is one
(settings that would change the run are refused by ``check_same_run``):
weights, optimizer state, step and random states, so that a run killed at
any moment and started again ends with the same weights, bit for bit, as a
run never stopped. Checkpoints are written atomically
(``llmbook.checkpoint.save_checkpoint``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmbook.checkpoint import load_checkpoint, save_checkpoint
from llmbook.train.optim import clip_grad_norm, lr_at

__all__ = ["Schedule", "Trainer", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Schedule:
    """Linear warmup to ``lr`` over ``warmup`` steps, then cosine decay to
    ``min_lr`` at ``max_steps`` (``llmbook.train.optim.lr_at``)."""

    lr: float
    min_lr: float
    warmup: int
    max_steps: int

    def __call__(self, step: int) -> float:
        return lr_at(
            step,
            lr=self.lr,
            min_lr=self.min_lr,
            warmup=self.warmup,
            max_steps=self.max_steps,
        )


class Trainer:
    """The loop around ``model`` and ``optimizer`` for ``schedule.max_steps``
    steps. ``cfg`` (a dataclass) and ``tokenizer`` are saved with every
    checkpoint, at ``path`` (None: none) every ``checkpoint_interval``
    steps (0: only at the end)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        *,
        grad_clip: float = 1.0,
        cfg=None,
        tokenizer=None,
        path: Path | None = None,
        checkpoint_interval: int = 0,
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.grad_clip = grad_clip
        self.cfg, self.tokenizer = cfg, tokenizer
        self.path = Path(path) if path is not None else None
        self.checkpoint_interval = checkpoint_interval
        self.scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
        self.step, self.elapsed = 0, 0.0
        self.last_good: Path | None = None  # the newest checkpoint written
        self.history: list[dict] = []

    @property
    def max_steps(self) -> int:
        return self.schedule.max_steps

    # -- 1 to 4: one optimizer step ----------------------------------------

    def set_lr(self, step: int) -> float:
        lr = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def batch(self, step: int):
        raise NotImplementedError

    def loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def gradients(self, step: int) -> float:
        loss = self.loss(self.batch(step))
        self.scaler.scale(loss).backward()
        return loss.item()

    def check_finite(self, loss: float) -> None:
        if math.isfinite(loss):
            return
        where = (
            f"the last good checkpoint is {self.last_good} (resume with "
            "--resume, perhaps with a lower lr)"
            if self.last_good
            else "no checkpoint was written before it"
        )
        raise TrainingDiverged(
            f"the loss became {loss} at step {self.step}; {where}"
        )

    def update(self) -> float:
        self.scaler.unscale_(self.optimizer)
        norm = clip_grad_norm(
            self.model.parameters(), self.grad_clip or float("inf")
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return norm.item()

    # -- 5: what happens between steps -------------------------------------

    def after_step(self, row: dict) -> None:
        """Record the step: ``row`` has step, loss, lr, grad_norm and the
        step's seconds. Subclasses evaluate, sample, log."""
        self.history.append(row)

    def checkpoint_due(self) -> bool:
        every = self.checkpoint_interval
        return self.path is not None and (
            self.step == self.max_steps or (every and self.step % every == 0)
        )

    def checkpoint_extra(self) -> dict:
        """More for ``save_checkpoint`` (the batch sampler's generator, the
        data's description)."""
        return {}

    def save(self) -> None:
        save_checkpoint(
            self.path,
            self.model,
            self.optimizer,
            self.cfg,
            self.tokenizer,
            step=self.step,
            elapsed=self.elapsed,
            **self.checkpoint_extra(),
        )
        self.last_good = self.path

    # -- resuming, and the loop --------------------------------------------

    def check_same_run(self, saved: dict) -> None:
        """Refuse a checkpoint written with settings that change the run
        (``saved``: its ``train_config``)."""

    def resume(self) -> dict | None:
        """Continue from the checkpoint at ``path``, if there is one;
        returns its state (None: starting afresh)."""
        if self.path is None or not self.path.exists():
            return None
        saved = load_checkpoint(self.path, restore_rng=False)
        self.check_same_run(saved.get("train_config", {}))
        del saved
        state = load_checkpoint(self.path, self.model, self.optimizer)
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.last_good = self.path
        return state

    def run(self) -> list[dict]:
        """Steps from ``self.step`` to ``max_steps``; returns the history.
        The seconds of a step leave out what ``after_step`` and ``save``
        do (evaluation, samples, checkpoints)."""
        self.model.train()
        t_last = time.perf_counter()
        while self.step < self.max_steps:
            lr = self.set_lr(self.step)
            loss = self.gradients(self.step)
            self.check_finite(loss)
            norm = self.update()
            self.step += 1
            seconds = time.perf_counter() - t_last
            self.elapsed += seconds
            self.after_step(
                dict(
                    step=self.step,
                    loss=loss,
                    lr=lr,
                    grad_norm=norm,
                    seconds=seconds,
                )
            )
            if self.checkpoint_due():
                self.save()
            t_last = time.perf_counter()
        return self.history
