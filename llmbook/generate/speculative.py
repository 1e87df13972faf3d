"""Speculative decoding: a small model guesses, the large one checks.

A decoding step of a large model costs about as much for 1 token as for 5:
it is bound by reading the weights, not by arithmetic. Speculative decoding
(Leviathan et al. 2023; Chen et al. 2023) uses that. A small *draft* model
proposes k tokens, one at a time (cheap steps); the *target* model then
scores all k in one pass, and keeps the longest prefix it agrees with, plus
one token of its own. Every round emits between 1 and k + 1 tokens for one
target pass.

What "agrees" means decides what comes out:

- **greedy**: a draft token is kept when it is the target's argmax; the
  first one that is not is replaced by the target's argmax. The output is
  the target's own greedy output, token for token.
- **sampling**: draft token x, drawn from the draft's distribution q, is
  kept with probability min(1, p(x) / q(x)), p the target's. At the first
  rejection, the replacement is drawn from the residual
  norm(max(0, p - q)); if all k are kept, a bonus token is drawn from the
  target's next distribution. Kept or replaced, every token is then
  distributed exactly as the target alone would sample it (the proof is
  three lines, in the chapter); the tests check it statistically.

Temperature, top-k and top-p reshape p and q the same way before the rule
(they define the distribution being sampled). One row at a time: rows
would accept different numbers of tokens, so several prompts are generated
one after the other.

The draft here is a model of the book's kind, trained by the book's loop on
the same text with the same tokenizer, only smaller
(``llmbook.train.runs.draft_checkpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llmbook.checks import check_int, check_number
from llmbook.generate.engine import Engine
from llmbook.generate.prompts import Prompts, until_stop
from llmbook.generate.sampling import (
    SamplingParams,
    apply_temperature,
    top_k_filter,
    top_p_filter,
)
from llmbook.generate.static import StaticCacheEngine
from llmbook.model import GPT

__all__ = [
    "probabilities",
    "speculative_accept",
    "greedy_accept",
    "expected_tokens_per_round",
    "SpeculativeEngine",
    "SpeculativeStats",
]


def probabilities(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """The distribution ``llmbook.generate.sample_next`` samples from:
    logits (..., V) -> float32 probabilities (..., V), temperature > 0."""
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return F.softmax(logits.float(), dim=-1)


def _check_rule_shapes(draft_tokens: Tensor, p: Tensor, q: Tensor | None):
    if draft_tokens.dim() != 2:
        raise ValueError(
            f"draft_tokens must be (B, k), got {tuple(draft_tokens.shape)}"
        )
    B, k = draft_tokens.shape
    if p.dim() != 3 or p.shape[:2] != (B, k + 1):
        raise ValueError(
            f"the target's scores must be (B, k + 1, V) = "
            f"({B}, {k + 1}, V), got {tuple(p.shape)}"
        )
    if q is not None and q.shape != (B, k, p.size(-1)):
        raise ValueError(
            f"q must be (B, k, V) = ({B}, {k}, {p.size(-1)}), "
            f"got {tuple(q.shape)}"
        )


def greedy_accept(
    draft_tokens: Tensor, target_logits: Tensor
) -> tuple[Tensor, Tensor]:
    """The greedy rule. draft_tokens (B, k); target_logits (B, k + 1, V),
    row i scoring the token after draft token i (row 0: after the last
    accepted token). Returns (n_accepted (B,), next_token (B,)): the draft's
    first n_accepted tokens are kept, then next_token (the target's argmax
    at the first disagreement, or after all k)."""
    _check_rule_shapes(draft_tokens, target_logits, None)
    best = target_logits.argmax(dim=-1)  # (B, k + 1)
    agree = best[:, :-1] == draft_tokens  # (B, k)
    n_acc = agree.long().cumprod(dim=-1).sum(dim=-1)  # (B,) leading agreement
    return n_acc, best.gather(1, n_acc[:, None]).squeeze(1)


def speculative_accept(
    draft_tokens: Tensor,
    q: Tensor,
    p: Tensor,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The sampling rule that keeps the target's distribution.

    draft_tokens (B, k), drawn from q (B, k, V), the draft's probabilities;
    p (B, k + 1, V), the target's, row i for the token after draft token i.
    Returns (n_accepted (B,), next_token (B,)): token i is kept while
    u_i < p_i(x_i) / q_i(x_i), u_i uniform in [0, 1); next_token is drawn
    from norm(max(0, p_j - q_j)) at the first rejection j, or from p_k when
    all k are kept.
    """
    _check_rule_shapes(draft_tokens, p, q)
    B, k = draft_tokens.shape
    x = draft_tokens[..., None]  # (B, k, 1)
    p_x = p[:, :k].gather(-1, x).squeeze(-1)  # (B, k): target prob of x
    q_x = q.gather(-1, x).squeeze(-1)  # (B, k): draft prob of x (> 0)
    u = torch.rand(B, k, generator=generator, device=p.device)
    keep = u * q_x < p_x  # (B, k): with probability min(1, p/q)
    n_acc = keep.long().cumprod(dim=-1).sum(dim=-1)  # (B,)
    rows = torch.arange(B, device=p.device)
    p_j = p[rows, n_acc]  # (B, V): the target at the first rejection (or k)
    q_j = torch.cat([q, torch.zeros_like(q[:, :1])], dim=1)[rows, n_acc]
    residual = (p_j - q_j).clamp_min(0)  # (B, V); = p_k when all were kept
    mass = residual.sum(dim=-1, keepdim=True)  # (B, 1)
    # mass 0 means p = q there, where rejection has probability 0; guard
    # against rounding anyway
    residual = torch.where(mass > 0, residual / mass.clamp_min(1e-30), p_j)
    nxt = torch.multinomial(residual, 1, generator=generator).squeeze(-1)
    return n_acc, nxt


def expected_tokens_per_round(alpha: float, k: int) -> float:
    """The tokens a round emits on average when each of the k draft tokens
    is accepted with probability ``alpha``, independently of the others
    (Leviathan et al. 2023): the first i are kept with probability
    alpha**i, and the target adds one token, so
    1 + alpha + ... + alpha**k = (1 - alpha**(k + 1)) / (1 - alpha)."""
    check_number("alpha (a probability)", alpha, 0.0, 1.0)
    check_int("k (draft tokens per round)", k, low=1)
    if alpha == 1.0:  # every draft kept: k of them and the target's one
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


@dataclass
class SpeculativeStats:
    """What a speculative run did: ``rounds`` target passes (after the
    prompt's), ``proposed`` draft tokens, ``accepted`` of them, and
    ``emitted`` tokens in all."""

    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    emitted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_round(self) -> float:
        return self.emitted / self.rounds if self.rounds else 0.0


class SpeculativeEngine(Engine):
    """Speculative generation with a target and a draft ``GPT`` sharing a
    vocabulary (and, to be useful, a tokenizer). ``k``: draft tokens per
    round. Both models run on static caches (``StaticCacheEngine``,
    ``max_len`` slots, compiled steps with ``compile=True``). After
    ``generate``, ``stats`` holds the run's ``SpeculativeStats``.

    Greedy (``temperature=0``) gives the target's greedy output; sampling
    gives tokens distributed as the target's (not the same tokens as the
    reference engine with the same seed: the random numbers are used
    differently)."""

    def __init__(
        self,
        target: GPT,
        draft: GPT,
        k: int = 4,
        max_len: int | None = None,
        compile: bool = False,
    ):
        if not isinstance(target, GPT) or not isinstance(draft, GPT):
            raise TypeError("target and draft must both be GPT models")
        if target.config.vocab_size != draft.config.vocab_size:
            raise ValueError(
                f"the draft's vocabulary ({draft.config.vocab_size}) differs "
                f"from the target's ({target.config.vocab_size}): they must "
                "share a tokenizer"
            )
        check_int("k (draft tokens per round)", k, low=1)
        if max_len is None:
            max_len = min(target.config.block_size, draft.config.block_size)
        super().__init__(target)
        self.target = StaticCacheEngine(target, max_len, compile)
        self.draft = StaticCacheEngine(draft, max_len, compile)
        self.k = k
        self.stats = SpeculativeStats()

    def _tokens(self, prompts: Prompts, params: SamplingParams) -> Tensor:
        """Each prompt in turn (its own generator); rows that stop early
        repeat their stop token, as in every engine's batch."""
        self.stats = SpeculativeStats()
        gens = params.generators(len(prompts), self.device) or [None] * len(
            prompts
        )
        rows = [
            self._one(Prompts([r], True), params, g)
            for r, g in zip(prompts.rows, gens)
        ]
        n = max(len(r) for r in rows)
        rows = [r + r[-1:] * (n - len(r)) for r in rows]
        return torch.tensor(rows, dtype=torch.long).view(len(rows), n)

    def steps(self, prompts, params):
        raise NotImplementedError(
            "speculative decoding emits several tokens per round, not one "
            "per step: call generate()"
        )

    @torch.inference_mode()
    def _one(self, prompt: Prompts, params: SamplingParams, gen) -> list:
        idx, pad = prompt.left_padded()
        T, k, n_new = idx.size(1), self.k, params.max_new_tokens
        need = T + n_new + k
        if need > self.target.max_len:
            raise ValueError(
                f"a {T}-token prompt, {n_new} new tokens and k={k} "
                f"need {need} cache slots; max_len is {self.target.max_len}"
            )
        stats, stops = self.stats, set(params.stop_ids)
        if n_new == 0:
            return []
        dev = self.target.device
        idx, pad = idx.to(dev), pad.to(dev)
        t, top_k, top_p = params.temperature, params.top_k, params.top_p
        greedy = t == 0

        def pick(logits):  # (1, V) -> token (1,) and its distribution
            if greedy:
                return logits.argmax(dim=-1), None
            probs = probabilities(logits, t, top_k, top_p)
            return torch.multinomial(probs, 1, generator=gen)[:, 0], probs

        self.draft.prefill(idx, pad)
        cur, _ = pick(self.target.prefill(idx, pad))  # (1,): first token
        out = [int(cur)]
        slot = torch.full((1,), T, dtype=torch.long, device=dev)
        while len(out) < n_new and not stops.intersection(out):
            # the draft proposes k tokens, one step each, starting at cur
            tokens, q = [cur], []
            for i in range(k):
                logits = self.draft.step(tokens[-1][:, None], slot + i, pad)
                d, probs = pick(logits[:, -1])
                tokens.append(d)
                q.append(probs)
            proposal = torch.stack(tokens, dim=1)  # (1, k + 1): cur + drafts
            # the target scores cur and the k drafts in one pass
            logits = self.target.step(proposal, slot, pad)  # (1, k + 1, V)
            if greedy:
                n_acc, nxt = greedy_accept(proposal[:, 1:], logits)
            else:
                p = probabilities(logits, t, top_k, top_p)
                n_acc, nxt = speculative_accept(
                    proposal[:, 1:], torch.stack(q, dim=1), p, gen
                )
            n = int(n_acc)
            if n == k:  # the draft never saw its own last token: feed it
                self.draft.step(proposal[:, k:], slot + k, pad)
            out += proposal[0, 1 : n + 1].tolist() + [int(nxt)]
            stats.rounds += 1
            stats.proposed += k
            stats.accepted += n
            cur = nxt
            slot += n + 1  # the slot of cur, whose keys no cache has yet
        out = until_stop(out[:n_new], stops)
        stats.emitted += len(out)
        return out
