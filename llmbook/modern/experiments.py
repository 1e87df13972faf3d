"""The chapter's measurements: training small models that differ in one
switch, on the book's text, at equal compute; and decoding speed.

``compare`` trains each ``ModernConfig`` of a dict for the same steps on
the same batches (one training loop: ``llmbook.train.Trainer``) and returns
each run's validation loss; several seeds give the spread that says whether
a difference is real. ``decode_seconds`` times batch-1 greedy decoding with
the cache at a given context length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from llmbook.data import batch_at, get_batch
from llmbook.modern.attention import ModernCache
from llmbook.modern.config import ModernConfig
from llmbook.modern.model import ModernLM
from llmbook.modern.moe import MixtureOfExperts
from llmbook.ngram import corpus_split, encode_split
from llmbook.train import AdamW, Schedule, Trainer, cross_entropy

__all__ = ["Run", "book_tokens", "compare", "decode_seconds", "train_one"]


def book_tokens(profile: str = "book"):
    """(train_ids, val_ids, vocab_size): the training chapter's texts in the
    book's tokens."""
    train, val = corpus_split()
    return encode_split(train, val, "token", profile)


@dataclass
class Run:
    name: str
    seed: int
    val_loss: float  # nats per token
    params: int
    active: int  # parameters one token uses
    seconds: float
    expert_share: list  # per MoE layer, each expert's share of the tokens


class LMTrainer(Trainer):
    """Next-token training of a ``ModernLM``: cross-entropy, plus
    ``balance_weight`` times the load-balancing loss of its MoE layers."""

    def __init__(
        self, model, ids, batch_size, schedule, seed, balance_weight, device
    ):
        optimizer = AdamW(model.parameters(), lr=schedule.lr, weight_decay=0.1)
        super().__init__(model, optimizer, schedule)
        self.ids, self.batch_size = ids, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.balance_weight = balance_weight
        self.device = device

    def batch(self, step):
        t = self.model.config.block_size
        return get_batch(
            self.ids, self.batch_size, t, self.device, self.generator
        )

    def loss(self, batch):
        x, y = batch  # (B, T) each
        loss = cross_entropy(self.model(x), y)
        return loss + self.balance_weight * self.model.balance_loss()


@torch.no_grad()
def evaluate(model: ModernLM, ids, n_batches: int = 16, batch_size=32):
    """Mean loss over fixed windows spread evenly over ``ids``, and each
    MoE layer's share of tokens per expert over them."""
    model.eval()
    device = next(model.parameters()).device
    t = model.config.block_size
    starts = np.linspace(0, len(ids) - t - 1, n_batches * batch_size)
    moe = [b.mlp for b in model.blocks if isinstance(b.mlp, MixtureOfExperts)]
    counts = [torch.zeros_like(m.tokens_per_expert) for m in moe]
    losses = []
    for chunk in np.split(starts.astype(np.int64), n_batches):
        x, y = batch_at(ids, chunk, t, device)
        losses.append(cross_entropy(model(x), y).item())
        for c, m in zip(counts, moe):
            c += m.tokens_per_expert
    model.train()
    shares = [(c / c.sum()).tolist() for c in counts]
    return float(np.mean(losses)), shares


def train_one(
    config: ModernConfig,
    train_ids,
    val_ids,
    steps: int,
    seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 16,
    balance_weight: float = 0.01,
    device: str = "cpu",
) -> tuple[ModernLM, float, float]:
    """Train a fresh ``ModernLM(config)``; returns it, its validation loss
    with the MoE layers' expert shares (``evaluate``), and the training
    seconds."""
    torch.manual_seed(seed)
    model = ModernLM(config).to(device)
    schedule = Schedule(lr, lr / 10, max(1, steps // 10), steps)
    trainer = LMTrainer(
        model, train_ids, batch_size, schedule, seed, balance_weight, device
    )
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    return model, evaluate(model, val_ids), seconds


def compare(configs: dict, train_ids, val_ids, steps, seeds, **kw):
    """Every config of ``configs`` (name -> ModernConfig) trained with every
    seed of ``seeds`` on the same batches: a list of ``Run``."""
    runs = []
    for seed in seeds:
        for name, config in configs.items():
            model, (loss, shares), seconds = train_one(
                config, train_ids, val_ids, steps, seed, **kw
            )
            runs.append(
                Run(
                    name,
                    seed,
                    loss,
                    model.n_params(),
                    model.n_params(active=True),
                    seconds,
                    shares,
                )
            )
    return runs


@torch.no_grad()
def decode_seconds(model: ModernLM, context: int, n_new: int = 32) -> float:
    """Seconds per new token of batch-1 greedy decoding after a prompt of
    ``context`` tokens (the cache already holds them)."""
    model.eval()
    prompt = torch.zeros(1, context, dtype=torch.long)
    cache = ModernCache(model.config)
    logits = model(prompt, cache)
    start = time.perf_counter()
    for _ in range(n_new):
        logits = model(logits[:, -1:].argmax(-1), cache)
    return (time.perf_counter() - start) / n_new
