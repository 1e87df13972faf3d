"""Learning from preferences and rewards, the objectives written out.

1. ``token_logprobs``: the log-probability a model gives each token of an
   answer, from its logits; ``sequence_logprobs``, their sum.
2. ``dpo_loss``: Direct Preference Optimization on a pair of answers to
   one prompt, one preferred (chosen) and one not (rejected).
3. ``group_advantages``, ``kl_penalty``, ``grpo_loss``: GRPO, a policy
   gradient on groups of sampled answers per prompt, each answer scored
   against its group's mean reward, with PPO's clipped ratio and a KL
   term that keeps the policy near a reference.

Every function takes tensors, not models, so the same code scores the
book's GPT and a Hugging Face model; tests/test_align.py proves each equal
to a written-out reference and to TRL's trainers on the same inputs.
Labels follow chapter 11: -100 (``IGNORE``) where nothing counts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from llmbook.finetune.instruct import IGNORE


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V) of a batch, labels (B, T) -> (B, T - 1): at t, the
    log-probability of labels[:, t + 1] given the tokens up to t, and 0
    where that label is ``IGNORE``. Computed in float32 at least."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} "
            "do not match: logits must be (B, T, V) for labels (B, T)"
        )
    targets = labels[:, 1:]  # (B, T - 1)
    counted = targets != IGNORE
    z = logits[:, :-1]
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    logp = torch.log_softmax(z, dim=-1)  # (B, T - 1, V)
    picked = logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return torch.where(counted, picked, torch.zeros_like(picked))


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor):
    """(B,): the log-probability of each row's counted tokens, log p(answer
    | prompt) when the labels count the answer only."""
    return token_logprobs(logits, labels).sum(-1)


class DPOLoss(NamedTuple):
    loss: torch.Tensor  # scalar: the mean over the pairs
    chosen_rewards: torch.Tensor  # (B,) beta * log(pi / pi_ref), chosen
    rejected_rewards: torch.Tensor  # (B,) the same for the rejected


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> DPOLoss:
    """DPO's loss on B pairs, from the sequence log-probabilities (B,) of
    the chosen and rejected answers under the policy and the frozen
    reference: -log sigmoid(r_chosen - r_rejected), with the implicit
    reward r = beta * (log pi(y | x) - log pi_ref(y | x))."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    shapes = {
        tuple(t.shape) for t in (chosen, rejected, ref_chosen, ref_rejected)
    }
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(
            "chosen, rejected and their reference log-probabilities must "
            f"be four tensors of one shape (B,), got {sorted(shapes)}"
        )
    chosen_rewards = beta * (chosen - ref_chosen)
    rejected_rewards = beta * (rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return DPOLoss(loss, chosen_rewards, rejected_rewards)


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps=1e-4
) -> torch.Tensor:
    """rewards (N,) of N = G * group_size answers, each group's answers to
    one prompt next to each other -> advantages (N,): each reward minus
    its group's mean, divided by the group's standard deviation (with
    Bessel's correction) plus ``eps`` when ``scale``. A group whose answers
    all score the same gets 0: it teaches nothing."""
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2, got {group_size}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be (N,) with N a multiple of group_size "
            f"{group_size}, got shape {tuple(rewards.shape)}"
        )
    r = rewards.float().view(-1, group_size)  # (G, n)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (r.std(dim=1, keepdim=True) + eps)
    return adv.reshape(-1)


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per token, the estimate exp(d) - d - 1 of KL(pi || pi_ref), with
    d = log pi_ref - log pi at the sampled token: never negative, 0 where
    the two agree, and unbiased for tokens sampled from pi."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.04,
    per: str = "sequence",
    kl_ratio: bool = False,
) -> torch.Tensor:
    """GRPO's loss (to minimise) on B sampled answers. logps, old_logps,
    ref_logps (B, T): each answer token's log-probability under the policy
    being trained, the policy that sampled it, and the reference; mask
    (B, T): 1 at answer tokens; advantages (B,).

    Per token: -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) with
    ratio = pi / pi_old, plus ``beta`` times ``kl_penalty`` (times the
    ratio with ``kl_ratio``, which makes the estimate unbiased for tokens
    sampled from pi_old rather than pi; TRL's default). Averaged over
    each answer's tokens, then over the answers (``per="sequence"``, the
    GRPO paper's), or over all answer tokens at once (``per="token"``,
    where a long answer weighs more)."""
    if per not in ("sequence", "token"):
        raise ValueError(f"per must be 'sequence' or 'token', got {per!r}")
    if logps.shape != old_logps.shape or logps.shape != mask.shape:
        raise ValueError(
            f"logps {tuple(logps.shape)}, old_logps "
            f"{tuple(old_logps.shape)} and mask {tuple(mask.shape)} must "
            "have one shape (B, T)"
        )
    if advantages.shape != logps.shape[:1]:
        raise ValueError(
            f"advantages must be (B,) = ({logps.shape[0]},), one per "
            f"answer, got {tuple(advantages.shape)}"
        )
    if beta and ref_logps is None:
        raise ValueError("beta > 0 needs ref_logps, the reference's")
    ratio = torch.exp(logps - old_logps)  # (B, T)
    a = advantages[:, None]  # (B, 1)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
    per_token = -torch.min(ratio * a, clipped * a)  # (B, T)
    if beta:
        kl = kl_penalty(logps, ref_logps)  # (B, T)
        per_token = per_token + beta * (kl * ratio if kl_ratio else kl)
    mask = mask.to(per_token.dtype)
    if per == "token":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    per_answer = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_answer.mean()
