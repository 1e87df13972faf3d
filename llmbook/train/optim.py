"""Optimizer, schedule and clipping: how a gradient becomes a step.

``param_groups`` (no weight decay for norms, biases and embeddings),
``AdamW``, ``lr_at`` (linear warmup, then cosine decay) and
``clip_grad_norm``. Each equals its PyTorch counterpart (tests).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices of Linear layers decay; embeddings (a tied LM
    head is an embedding too), norm gains and biases do not. Decay pulls a
    weight towards zero: right for a matrix that mixes channels, wrong for
    a gain whose neutral value is one. Embeddings follow minGPT's
    convention (nanoGPT decays them)."""
    embeddings = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)
    }
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() lists a tied matrix once
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and id(p) not in embeddings:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        dict(params=decay, weight_decay=weight_decay),
        dict(params=no_decay, weight_decay=0.0),
    ]


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019):

        p <- p * (1 - lr * wd)                 decay, outside the gradient
        m <- b1 m + (1 - b1) g                 first moment
        v <- b2 v + (1 - b2) g^2               second moment
        p <- p - lr/(1 - b1^t) * m / (sqrt(v/(1 - b2^t)) + eps)

    The same numbers as ``torch.optim.AdamW``. Each line runs as one
    ``torch._foreach_*`` call over all tensors of a parameter group, so a
    step costs a few kernel launches instead of a few per parameter.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(
                f"eps and weight_decay must be >= 0, got {eps}, {weight_decay}"
            )
        super().__init__(
            params,
            dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay),
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, ms, vs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
                steps.append(state["step"].item())
            if not params:
                continue
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            if wd != 0:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(ms, grads, 1 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, grads, grads, 1 - beta2)
            step_size = [-lr / (1 - beta1**t) for t in steps]
            bc2_sqrt = [(1 - beta2**t) ** 0.5 for t in steps]
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, bc2_sqrt)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, ms, denom, step_size)
        return loss


def lr_at(
    step: int, *, lr: float, min_lr: float, warmup: int, max_steps: int
) -> float:
    """Learning rate at ``step`` (0-based): linear warmup from lr/warmup to
    lr over ``warmup`` steps (Goyal et al. 2017), then a half cosine down
    to ``min_lr`` at ``max_steps`` (Loshchilov and Hutter 2017); after
    that, ``min_lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= max_steps:
        return min_lr
    progress = (step - warmup) / max(1, max_steps - warmup)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def clip_grad_norm(parameters, max_norm: float = 1.0) -> torch.Tensor:
    """Scale all gradients together so that their joint L2 norm is at most
    ``max_norm`` (Pascanu et al. 2013); returns the norm before clipping.
    The direction of the update is kept; only a step that would be huge
    (an exploding gradient) is shortened. Same as ``clip_grad_norm_``."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads)  # one norm per tensor
    # sqrt(sum of squares): the norm of all gradients as one vector
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)
    return total
