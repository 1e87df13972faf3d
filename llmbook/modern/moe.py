"""The MLPs of a modern block: dense SwiGLU, and a mixture of experts.

A mixture of experts (Shazeer et al. 2017; Switch, Fedus et al. 2021;
Mixtral, Qwen3-MoE) replaces the one MLP by E smaller ones and a router: a
linear map that scores every expert for every token. Each token goes to its
k best-scoring experts, and their outputs are summed, weighted by the
router's probabilities (renormalised over the k, as Qwen3 does). A token
therefore uses k / E of the experts' parameters: the model stores many
parameters and computes with few.

Left alone, a router sends most tokens to a few experts, which then learn
faster and attract still more tokens. The load-balancing loss
(``balance_loss``, Switch's) is smallest when tokens and router
probability spread evenly; training adds it, times a small weight, to the
language-model loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmbook.modern.config import ModernConfig

__all__ = ["MixtureOfExperts", "SwiGLU", "balance_loss", "route"]


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): (..., C) -> (..., C), width H."""

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(n_embd, hidden, bias=False)
        self.up = nn.Linear(n_embd, hidden, bias=False)
        self.down = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def route(
    logits: torch.Tensor, k: int, normalise: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k experts of each token and their weights.

    logits: (N, E) router scores. Returns weights (N, k), the softmax
    probabilities of the chosen experts (summing to 1 over k when
    ``normalise``), and ids (N, k), best first.
    """
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # (N, E)
    weights, ids = probs.topk(k, dim=-1)  # (N, k) each
    if normalise:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(logits.dtype), ids


def balance_loss(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Switch's load-balancing loss for router logits (N, E) and top-k
    routing: E * sum_e f_e * P_e, where f_e is the share of the N * k
    choices that went to expert e times k (the tokens that chose e, over N)
    and P_e the mean probability the router gave e. It is k when both are
    uniform and grows as routing concentrates."""
    n, n_expert = logits.shape
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # (N, E)
    ids = probs.topk(k, dim=-1).indices  # (N, k)
    chosen = torch.zeros(n_expert, device=logits.device)
    chosen.index_add_(
        0, ids.flatten(), torch.ones(ids.numel(), device=logits.device)
    )
    f = chosen / n  # (E,): sums to k
    return n_expert * (f * probs.mean(dim=0)).sum()


class MixtureOfExperts(nn.Module):
    """E SwiGLU experts and a top-k router: (B, T, C) -> (B, T, C).

    The experts' weights are stacked, as Hugging Face stores them in
    memory: ``gate_up`` (E, 2H, C) and ``down`` (E, C, H). After each
    forward pass, ``last_logits`` holds the router's (B*T, E) scores and
    ``tokens_per_expert`` (E,) how many tokens each expert processed.
    """

    def __init__(self, config: ModernConfig):
        super().__init__()
        e, c, h = config.n_expert, config.n_embd, config.expert_hidden
        self.k, self.normalise = config.n_expert_per_token, config.norm_topk
        self.router = nn.Linear(c, e, bias=False)
        self.gate_up = nn.Parameter(torch.empty(e, 2 * h, c))
        self.down = nn.Parameter(torch.empty(e, c, h))
        nn.init.normal_(self.gate_up, std=0.02)
        nn.init.normal_(self.down, std=0.02)
        self.last_logits: torch.Tensor | None = None
        self.tokens_per_expert = torch.zeros(e, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, C): tokens, batch flattened
        logits = self.router(x)  # (N, E)
        weights, ids = route(logits, self.k, self.normalise)  # (N, k) each
        out = torch.zeros_like(x)  # (N, C)
        counts = torch.zeros(len(self.down), dtype=torch.long)
        for e in ids.unique().tolist():  # only the experts some token chose
            token, slot = torch.where(ids == e)  # (n_e,) each
            gate, up = F.linear(x[token], self.gate_up[e]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.down[e])  # (n_e, C)
            out.index_add_(0, token, y * weights[token, slot, None])
            counts[e] = len(token)
        self.last_logits, self.tokens_per_expert = logits, counts
        return out.reshape(shape)
