"""Classification: a linear head on a pretrained GPT's last real token.

``Classifier`` puts the head on; ``freeze`` chooses what trains (the head,
the last block, everything); ``evaluate_classifier`` gives accuracy, a 95%
interval and the confusion matrix. Batches are padded on the right (not
packed): every example is one row, its padding masked out with the
attention mask (``GPT.forward``'s ``attention_mask``), so no example sees
another.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmbook.finetune.data import DataFormatError
from llmbook.model import GPT, GPTConfig

TRAIN_CHOICES = ("head", "last_block", "all")


class FinetuneError(ValueError):
    """A finetuning run cannot start; the message says why."""


class Classifier(nn.Module):
    """A GPT with a linear head: idx (B, T) -> class logits (B, K).

    The head reads the final hidden state of each row's LAST real token
    (the last position where ``attention_mask`` is True). Attention is
    causal: a token sees only itself and the tokens before it, so only the
    last token's state depends on the whole passage; the first token's
    state knows one token, and an average over positions would mostly
    mix states that saw part of it. The GPT's LM head is not used.
    """

    def __init__(self, gpt: GPT, n_classes: int):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, n_classes)
        nn.init.normal_(self.head.weight, mean=0.0, std=0.02)  # as GPT's
        nn.init.zeros_(self.head.bias)

    @property
    def config(self) -> GPTConfig:
        return self.gpt.config

    def forward(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.gpt.hidden_states(idx, attention_mask=attention_mask)
        B, T, _ = h.shape  # (B, T, C)
        if attention_mask is None:
            last = torch.full((B,), T - 1, device=h.device)
        else:  # the index of the last True, padding on either side
            steps = torch.arange(1, T + 1, device=h.device)
            last = ((attention_mask.to(h.device) != 0) * steps).argmax(1)
        pooled = h[torch.arange(B, device=h.device), last]  # (B, C)
        return self.head(pooled)  # (B, K)


def freeze(model: nn.Module, train: str = "head") -> list[str]:
    """Make only part of ``model`` (a ``Classifier`` or a ``GPT``)
    trainable; return the names of the trainable parameters.

    "head": the classifier's head (for a GPT: the final norm and the LM
    head, which is the token embedding when tied); "last_block": that and
    the last transformer block with the final norm; "all": everything.
    """
    if train not in TRAIN_CHOICES:
        raise ValueError(
            f"unknown train={train!r}; choose one of {TRAIN_CHOICES}"
        )
    gpt = model.gpt if isinstance(model, Classifier) else model
    keep: list[nn.Module] = [model]
    if train != "all":
        if isinstance(model, Classifier):
            keep = [model.head]
        else:
            keep = [gpt.ln_f, gpt.lm_head]
        if train == "last_block":
            keep += [gpt.blocks[-1], gpt.ln_f]
    for p in model.parameters():
        p.requires_grad_(False)
    for m in keep:
        for p in m.parameters():
            p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def pad(
    seqs: list[list[int]], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists of any lengths -> ids (B, T) padded on the right with
    ``pad_id`` and the mask (B, T), True at real tokens."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return ids, mask


def wilson_interval(correct: int, n: int, z: float = 1.96):
    """The 95% (z = 1.96) Wilson score interval of a proportion: unlike
    p +- z sqrt(p (1-p) / n) it stays inside [0, 1] and is right near 0
    and 1 (Wilson 1927)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    half /= 1 + z * z / n
    return (max(0.0, centre - half), min(1.0, centre + half))


@torch.no_grad()
def predict(classifier, tokenizer, texts, batch_size: int = 64):
    """The predicted class index of each text."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            ids, mask = pad(
                [tokenizer.encode(t) for t in texts[i : i + batch_size]]
            )
            logits = classifier(ids.to(device), attention_mask=mask)
            out += logits.argmax(-1).tolist()
    finally:
        classifier.train(was_training)
    return out


def evaluate_classifier(
    classifier, tokenizer, examples, labels, batch_size: int = 64
) -> dict:
    """Accuracy on ``examples`` ({"text", "label"}), its Wilson 95%
    interval and the confusion matrix (rows: true label, columns:
    predicted, in the order of ``labels``)."""
    index = {label: i for i, label in enumerate(labels)}
    truth = [index[e["label"]] for e in examples]
    pred = predict(
        classifier, tokenizer, [e["text"] for e in examples], batch_size
    )
    confusion = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, pred):
        confusion[t][p] += 1
    correct = sum(t == p for t, p in zip(truth, pred))
    n = len(truth)
    return dict(
        accuracy=correct / n if n else 0.0,
        correct=correct,
        n=n,
        ci95=wilson_interval(correct, n),
        confusion=confusion,
        predictions=[labels[p] for p in pred],
    )


# ---------------------------------------------------------------------------
# The task, as the finetuning run (llmbook.finetune.finetuner) sees it


class ClassifyTask:
    """Classification for ``finetune``: examples {"text", "label"}, a
    ``Classifier`` on the GPT, cross-entropy over the labels."""

    name = "classify"

    def prepare(self, cfg, model, tokenizer, examples):
        """The labels: the settings', or those of the examples, sorted."""
        if not cfg.labels:
            cfg.labels = sorted({e["label"] for _, e in examples})
        return model, tokenizer

    def encode(self, example: dict, tokenizer, labels: list, where: str):
        """-> (ids, label index); an unknown label is refused."""
        if example["label"] not in labels:
            shown = ", ".join(repr(x) for x in labels[:12])
            raise DataFormatError(
                f"{where}: unknown label {example['label']!r}; the labels "
                f"are {shown}{' ...' if len(labels) > 12 else ''}"
            )
        return tokenizer.encode(example["text"]), labels.index(
            example["label"]
        )

    def network(self, gpt, n_labels: int):
        """-> (the network, what trains besides LoRA's adapters)."""
        return Classifier(gpt, n_labels), ("head.",)

    def loss(self, net, batch, device, cfg) -> torch.Tensor:
        ids, mask = pad([ids for ids, _ in batch])  # (B, T), right-padded
        y = torch.tensor([label for _, label in batch], device=device)
        logits = net(ids.to(device), attention_mask=mask.to(device))
        return F.cross_entropy(logits, y)  # logits (B, n_labels)
