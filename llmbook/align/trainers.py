"""DPO and GRPO as runs of the one training loop (``llmbook.train.Trainer``):
each replaces the batch and the loss of a step, nothing else.

- ``DPOTrainer``: each step a batch of preference pairs; the reference's
  log-probabilities of every pair are computed once, before the first
  step (the reference never changes), and the reference is not kept.
- ``GRPOTrainer``: each step samples a group of answers to each of
  ``questions`` questions from the policy, scores them with the reward,
  and takes a step on ``grpo_loss``; every ``reuse`` steps it samples
  afresh (1: GRPO's usual on-policy step, where the ratio is 1 and the
  clipping never acts).

Both start from a copy of the model they are given: the model itself
stays the frozen reference. Sampling is seeded by (seed, step), so a run
is a function of its settings.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass

import torch

from llmbook.align.objectives import (
    dpo_loss,
    group_advantages,
    grpo_loss,
    kl_penalty,
    sequence_logprobs,
    token_logprobs,
)
from llmbook.align.rollouts import (
    answer_batch,
    exact_reward,
    prompt_ids,
    sample_groups,
)
from llmbook.finetune.finetuner import _batch
from llmbook.finetune.instruct import IGNORE
from llmbook.train.optim import AdamW, param_groups
from llmbook.train.trainer import Schedule, Trainer

__all__ = ["DPOConfig", "DPOTrainer", "GRPOConfig", "GRPOTrainer"]


def _check_positive(cfg, *names):
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ValueError(
                f"{name} must be positive, got {getattr(cfg, name)}"
            )


@dataclass
class DPOConfig:
    steps: int = 60
    batch_size: int = 16  # pairs per step
    lr: float = 1e-5
    warmup: int = 5
    beta: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        _check_positive(self, "steps", "batch_size", "lr", "beta")


def _frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class DPOTrainer(Trainer):
    """DPO on ``pairs`` of (prompt, chosen, rejected) token lists
    (``preference_pairs``): the policy, a copy of ``model``, is trained;
    ``model`` is the reference."""

    def __init__(self, cfg: DPOConfig, model, pairs, device="cpu"):
        if not pairs:
            raise ValueError(
                "no preference pairs: sample more answers per question, or "
                "more questions, until some have a right and a wrong one"
            )
        policy = copy.deepcopy(model).to(device)
        super().__init__(
            policy,
            AdamW(param_groups(policy, 0.0), lr=cfg.lr, weight_decay=0.0),
            Schedule(cfg.lr, cfg.lr / 10, cfg.warmup, cfg.steps),
            grad_clip=cfg.grad_clip,
            cfg=cfg,
        )
        self.pairs, self.device = pairs, device
        # before any step the policy is the reference: score the pairs with
        # it once, in eval mode, instead of keeping a second copy
        policy.eval()
        with torch.no_grad():
            ref = [
                self.logps(policy, pairs[i : i + 64])
                for i in range(0, len(pairs), 64)
            ]
        self.ref_chosen = torch.cat([c for c, _ in ref])
        self.ref_rejected = torch.cat([r for _, r in ref])

    def logps(self, net, pairs):
        """(chosen, rejected) sequence log-probabilities (B,) of pairs
        under ``net``, in one forward pass over 2B rows."""
        prompts = [p for p, _, _ in pairs] * 2
        answers = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
        ids, mask, labels = answer_batch(prompts, answers)
        logits = net(ids.to(self.device), attention_mask=mask.to(self.device))
        lp = sequence_logprobs(logits, labels.to(self.device))  # (2B,)
        return lp[: len(pairs)], lp[len(pairs) :]

    def batch(self, step: int) -> list[int]:
        cfg = self.cfg
        return _batch(len(self.pairs), cfg.batch_size, step, cfg.seed)

    def loss(self, batch) -> torch.Tensor:
        chosen, rejected = self.logps(
            self.model, [self.pairs[i] for i in batch]
        )
        out = dpo_loss(
            chosen,
            rejected,
            self.ref_chosen[batch],
            self.ref_rejected[batch],
            self.cfg.beta,
        )
        margin = (out.chosen_rewards - out.rejected_rewards).detach()
        self._stats = dict(
            margin=margin.mean().item(),
            pair_accuracy=(margin > 0).float().mean().item(),
            chosen_reward=out.chosen_rewards.mean().item(),
            rejected_reward=out.rejected_rewards.mean().item(),
        )
        return out.loss

    def after_step(self, row: dict) -> None:
        self.history.append({**row, **self._stats})


@dataclass
class GRPOConfig:
    steps: int = 40
    questions: int = 16  # per step
    group_size: int = 8  # answers sampled per question
    lr: float = 2e-5
    warmup: int = 0
    beta: float = 0.04  # weight of the KL term; 0: none
    clip_eps: float = 0.2
    temperature: float = 1.0
    max_new_tokens: int = 32
    reuse: int = 1  # steps on each batch of answers (TRL: num_iterations)
    per: str = "sequence"  # mean per answer, or over all answer tokens
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        _check_positive(
            self,
            "steps",
            "questions",
            "lr",
            "temperature",
            "reuse",
            "max_new_tokens",
        )
        if self.group_size < 2:
            raise ValueError(
                "group_size must be at least 2: an answer is scored against "
                f"the others of its group, got {self.group_size}"
            )
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


class GRPOTrainer(Trainer):
    """GRPO on the questions ``examples`` (dicts with instruction, input,
    output), rewarded by ``reward(text, example)``: the policy, a copy of
    ``model``, is trained; ``model`` is the reference of the KL term.
    ``callback(step, policy)``, after each step, may return a dict of
    more numbers for the step's row of the history."""

    def __init__(
        self,
        cfg: GRPOConfig,
        model,
        tokenizer,
        examples,
        reward=exact_reward,
        device="cpu",
        callback=None,
    ):
        if len(examples) < cfg.questions:
            raise ValueError(
                f"{len(examples)} questions, fewer than questions="
                f"{cfg.questions} per step"
            )
        policy = copy.deepcopy(model).to(device)
        super().__init__(
            policy,
            AdamW(param_groups(policy, 0.0), lr=cfg.lr, weight_decay=0.0),
            Schedule(cfg.lr, cfg.lr, cfg.warmup, cfg.steps),
            grad_clip=cfg.grad_clip,
            cfg=cfg,
            tokenizer=tokenizer,
        )
        self.reference = _frozen_copy(model).to(device) if cfg.beta else None
        self.examples, self.reward = examples, reward
        self.device, self.callback = device, callback
        self.rollouts = None

    def sample(self, step: int) -> dict:
        """The step's questions, a group of answers to each, their rewards
        and advantages, and the batch that scores them."""
        cfg = self.cfg
        rng = random.Random(cfg.seed * 100_003 + step)
        questions = rng.sample(self.examples, cfg.questions)
        t0 = time.perf_counter()
        groups = sample_groups(
            self.model,
            self.tokenizer,
            questions,
            cfg.group_size,
            temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed * 100_003 + step,
            reward=self.reward,
        )
        sampling = time.perf_counter() - t0
        answers = [a for g in groups for a in g]
        prompts = [  # each question's prompt, once for each of its answers
            p
            for p in (prompt_ids(self.tokenizer, q) for q in questions)
            for _ in range(cfg.group_size)
        ]
        ids, mask, labels = answer_batch(prompts, [a.ids for a in answers])
        rewards = torch.tensor([a.reward for a in answers])
        batch = dict(
            ids=ids.to(self.device),
            mask=mask.to(self.device),
            labels=labels.to(self.device),
            rewards=rewards,
            advantages=group_advantages(rewards, cfg.group_size).to(
                self.device
            ),
            sampling=sampling,
        )
        with torch.no_grad():
            if cfg.reuse > 1:  # the sampling policy, for the ratio
                batch["old"] = self.answer_logps(self.model, batch)
            if self.reference is not None:
                batch["ref"] = self.answer_logps(self.reference, batch)
        return batch

    def answer_logps(self, net, batch) -> torch.Tensor:
        """(N, T - 1): each answer token's log-probability under ``net``
        (0 elsewhere)."""
        logits = net(batch["ids"], attention_mask=batch["mask"])
        return token_logprobs(logits, batch["labels"])

    def batch(self, step: int) -> dict:
        if step % self.cfg.reuse == 0 or self.rollouts is None:
            self.rollouts = self.sample(step - step % self.cfg.reuse)
        return self.rollouts

    def loss(self, batch) -> torch.Tensor:
        cfg = self.cfg
        logps = self.answer_logps(self.model, batch)  # (N, T - 1)
        old = batch.get("old", logps.detach())
        mask = batch["labels"][:, 1:] != IGNORE  # (N, T - 1)
        loss = grpo_loss(
            logps,
            old,
            batch.get("ref"),
            batch["advantages"],
            mask,
            clip_eps=cfg.clip_eps,
            beta=cfg.beta,
            per=cfg.per,
        )
        g = cfg.group_size
        r = batch["rewards"].view(-1, g)
        stats = dict(
            reward=r.mean().item(),
            informative=(r.std(dim=1) > 0).float().mean().item(),
            sampling=batch.pop("sampling", 0.0),  # once per batch
            answer_tokens=int(mask.sum()),
        )
        if "ref" in batch:
            kl = (kl_penalty(logps, batch["ref"]) * mask).sum() / mask.sum()
            stats["kl"] = kl.item()
        self._stats = stats
        return loss

    def after_step(self, row: dict) -> None:
        row = {**row, **self._stats}
        if self.callback is not None:  # e.g. a held-out reward, now and then
            row.update(self.callback(self.step, self.model) or {})
        self.history.append(row)
