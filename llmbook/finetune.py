"""Finetuning a pretrained GPT: a classifier and an instruction follower.

1. Classification: ``Classifier`` puts a linear head on the GPT's last
   real token; ``freeze`` chooses what trains (the head, the last block,
   everything); ``evaluate_classifier`` gives accuracy, a 95% interval and
   the confusion matrix.
2. Instructions: new special tokens (``add_special_tokens``) and a model
   whose embedding and LM head grow to match (``resize_vocab``); ONE
   format, ``format_instruction``, used by training, evaluation and
   generation; labels of -100 (ignored) on the prompt and the padding;
   greedy answers that stop at ``<|end|>``; ``exact_match``.
3. ``finetune``: one loop for both tasks (AdamW, warmup and cosine decay,
   fixed seeds, atomic checkpoints that an interrupted run resumes from,
   bit for bit), full or with LoRA (``llmbook.lora``).
4. The command line, ``python -m llmbook.finetune --help``.

Batches are padded on the right (not packed): every example is one row,
its padding masked out with the attention mask (``GPT.forward``'s
``attention_mask``), so no example sees another.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmbook.checkpoint import load_checkpoint, load_model, save_checkpoint
from llmbook.finetune_data import DataFormatError, read_jsonl
from llmbook.generate import generate
from llmbook.lora import apply_lora, count_parameters, unload_lora
from llmbook.loss import cross_entropy
from llmbook.model import GPT, GPTConfig
from llmbook.optim import AdamW, clip_grad_norm, lr_at, param_groups
from llmbook.tokenizer import Tokenizer

TASKS = ("classify", "instruct")
TRAIN_CHOICES = ("head", "last_block", "all")
IGNORE = -100  # the label of a position that the loss leaves out


class FinetuneError(ValueError):
    """A finetuning run cannot start; the message says why."""


# ---------------------------------------------------------------------------
# 1. Classification


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
# 2. Instructions

INSTRUCTION = "<|instruction|>"
RESPONSE = "<|response|>"
END = "<|end|>"
SPECIAL_TOKENS = (INSTRUCTION, RESPONSE, END)


def add_special_tokens(
    tokenizer: Tokenizer, tokens=SPECIAL_TOKENS
) -> Tokenizer:
    """A new tokenizer with ``tokens`` as extra special tokens, appended
    after the largest id: every existing id, and so the encoding of any
    text without the new tokens, stays what it was."""
    new = [t for t in tokens if t not in tokenizer.special_tokens]
    out = Tokenizer(
        tokenizer.vocab,
        tokenizer.merges,
        [*tokenizer.special_tokens, *new],
        tokenizer.pattern,
    )
    moved = {
        t: (i, out.special_tokens[t])
        for t, i in tokenizer.special_tokens.items()
        if out.special_tokens[t] != i
    }
    if moved:  # cannot happen with a vocabulary of distinct tokens
        raise ValueError(f"special tokens would change ids: {moved}")
    return out


def resize_vocab(
    model: GPT, new_size: int, generator: torch.Generator | None = None
) -> GPT:
    """Grow the token embedding (and the LM head) of ``model`` to
    ``new_size`` rows, in place: the old rows are kept exactly, the new
    ones drawn from N(0, 0.02^2) as in ``GPT``'s own initialisation. A
    tied LM head stays the same tensor as the embedding. Returns
    ``model``, whose ``config.vocab_size`` is now ``new_size``."""
    old = model.wte.weight
    v, c = old.shape
    if new_size < v:
        raise ValueError(
            f"resize_vocab only grows the vocabulary: {v} -> {new_size}"
        )
    if new_size == v:
        return model

    def grown(weight: torch.Tensor) -> nn.Parameter:
        w = torch.empty(new_size, c, dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            w[:v] = weight
            nn.init.normal_(w[v:], mean=0.0, std=0.02, generator=generator)
        return nn.Parameter(w, requires_grad=weight.requires_grad)

    model.wte = nn.Embedding.from_pretrained(grown(old), freeze=False)
    model.wte.weight.requires_grad_(old.requires_grad)
    tied = model.lm_head.weight is old
    if tied:
        model.lm_head.weight = model.wte.weight
    else:
        model.lm_head.weight = grown(model.lm_head.weight)
    model.lm_head.out_features = new_size
    model.config = dataclasses.replace(model.config, vocab_size=new_size)
    return model


def format_instruction(
    instruction: str, input: str = "", response: str | None = None
) -> str:
    """The one prompt format, for training, evaluation and generation:

        <|instruction|>{instruction}\\n{input}<|response|>{response}<|end|>

    (no newline and input when ``input`` is empty). With
    ``response=None`` it stops after ``<|response|>``: the prompt that
    generation continues."""
    text = INSTRUCTION + instruction
    if input:
        text += "\n" + input
    text += RESPONSE
    if response is not None:
        text += response + END
    return text


def encode_instruction(
    tokenizer: Tokenizer,
    instruction: str,
    input: str = "",
    response: str | None = None,
) -> tuple[list[int], int]:
    """(ids of ``format_instruction(...)``, number of prompt tokens). The
    prompt ends with a special token, which BPE never merges across, so
    the prompt's ids are a prefix of the whole example's."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.special_tokens]
    if missing:
        raise ValueError(
            f"the tokenizer lacks {missing}: use add_special_tokens(tokenizer)"
        )
    prompt = tokenizer.encode(format_instruction(instruction, input))
    if response is None:
        return prompt, len(prompt)
    ids = tokenizer.encode(format_instruction(instruction, input, response))
    assert ids[: len(prompt)] == prompt
    return ids, len(prompt)


def instruction_batch(
    examples: list[tuple[list[int], int]],
    loss_on: str = "response",
    pad_id: int = 0,
):
    """(ids, n_prompt) pairs -> ids (B, T), mask (B, T), labels (B, T).

    ``labels`` are the ids with -100 (ignored) on the padding and, for
    ``loss_on="response"``, on the prompt too: the model is trained to
    answer, not to write questions. ``"all"`` counts every real token.
    """
    if loss_on not in ("response", "all"):
        raise ValueError(f"loss_on must be 'response' or 'all': {loss_on!r}")
    ids, mask = pad([e[0] for e in examples], pad_id)
    labels = ids.masked_fill(~mask, IGNORE)
    if loss_on == "response":
        for i, (_, n_prompt) in enumerate(examples):
            labels[i, :n_prompt] = IGNORE
    return ids, mask, labels


def instruction_loss(model, ids, mask, labels) -> torch.Tensor:
    """Mean next-token loss over the positions whose label is not -100:
    position t predicts labels[t + 1]."""
    logits = model(ids, attention_mask=mask)  # (B, T, V)
    return cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=IGNORE)


def generate_answers(
    model, tokenizer, examples, max_new_tokens: int = 32, batch_size=32
) -> list[str]:
    """Greedy answers to ``examples`` ({"instruction", "input"}): the text
    generated after the prompt up to ``<|end|>`` (or ``max_new_tokens``),
    stripped of surrounding whitespace."""
    end = tokenizer.special_tokens[END]
    prompts = [
        encode_instruction(tokenizer, e["instruction"], e.get("input", ""))[0]
        for e in examples
    ]
    answers = []
    for i in range(0, len(prompts), batch_size):
        rows = generate(
            model,
            prompts[i : i + batch_size],
            max_new_tokens,
            temperature=0.0,
            stop_ids=[end],
        )
        for row in rows:
            row = row[:-1] if row and row[-1] == end else row
            answers.append(tokenizer.decode(row).strip())
    return answers


def exact_match(
    model, tokenizer, examples, max_new_tokens: int = 32, batch_size=32
) -> dict:
    """The share of ``examples`` whose greedy answer equals ``output``
    (both stripped), with its Wilson 95% interval, the share per ``task``
    (when examples have one) and the answers."""
    answers = generate_answers(
        model, tokenizer, examples, max_new_tokens, batch_size
    )
    hits = [a == e["output"].strip() for a, e in zip(answers, examples)]
    by_task: dict[str, list[bool]] = {}
    for e, h in zip(examples, hits):
        by_task.setdefault(e.get("task", ""), []).append(h)
    n, correct = len(hits), sum(hits)
    return dict(
        accuracy=correct / n if n else 0.0,
        correct=correct,
        n=n,
        ci95=wilson_interval(correct, n),
        by_task={t: sum(h) / len(h) for t, h in sorted(by_task.items())},
        answers=answers,
    )


# ---------------------------------------------------------------------------
# 3. The loop


@dataclass
class FinetuneConfig:
    """Everything a finetuning run needs besides the model and the data."""

    task: str = "classify"  # "classify" or "instruct"
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0: no clipping
    train: str = "all"  # "head", "last_block", "all" (without LoRA)
    lora_rank: int = 0  # > 0: LoRA on the attention's Linear layers
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    loss_on: str = "response"  # instruct: "response" or "all"
    labels: list[str] = field(default_factory=list)  # classify; [] = data's
    checkpoint_interval: int = 50  # steps; a checkpoint at the end too
    out_dir: str | None = None  # None: no checkpoints
    seed: int = 0
    # filled in by finetune, so that a resumed run checks its inputs
    data_sha256: str = ""
    base_sha256: str = ""

    def __post_init__(self):
        if self.task not in TASKS:
            raise FinetuneError(f"unknown task {self.task!r}; use {TASKS}")
        if self.train not in TRAIN_CHOICES:
            raise FinetuneError(
                f"unknown train={self.train!r}; use one of {TRAIN_CHOICES}"
            )
        if self.loss_on not in ("response", "all"):
            raise FinetuneError(
                f"loss_on must be response or all: {self.loss_on!r}"
            )
        for name in ("steps", "batch_size", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise FinetuneError(f"{name} must be >= 1")
        if self.lora_rank < 0:
            raise FinetuneError("lora_rank must be >= 0 (0: no LoRA)")


@dataclass
class FinetuneResult:
    model: nn.Module  # the Classifier, or the GPT (with LoRA layers if any)
    tokenizer: Tokenizer  # for instruct: with the new special tokens
    config: FinetuneConfig
    history: list[dict]  # {"step", "loss", "lr"} of the steps run here
    elapsed: float  # seconds of training, over all resumed parts
    trainable: int  # parameters
    total: int
    checkpoint: Path | None


def _numbered(examples, source: str) -> list[tuple[int, dict]]:
    """(line, example) pairs from read_jsonl's pairs or plain dicts."""
    out = []
    for i, e in enumerate(examples, start=1):
        out.append(e if isinstance(e, tuple) else (i, e))
    if not out:
        raise DataFormatError(f"{source}: no examples")
    return out


def encode_examples(task, examples, tokenizer, labels, block_size, source):
    """Token ids of every example: (ids, label index) for classify,
    (ids, n_prompt) for instruct. ``examples``: (line, dict) pairs. An
    unknown label, or an example longer than the context, is refused
    with the file and line (examples are never truncated)."""
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for line, e in examples:
        where = f"{source}:{line}"
        if task == "classify":
            if e["label"] not in index:
                shown = ", ".join(repr(x) for x in labels[:12])
                raise DataFormatError(
                    f"{where}: unknown label {e['label']!r}; the labels "
                    f"are {shown}{' ...' if len(labels) > 12 else ''}"
                )
            item = (tokenizer.encode(e["text"]), index[e["label"]])
        else:
            item = encode_instruction(
                tokenizer, e["instruction"], e.get("input", ""), e["output"]
            )
        if len(item[0]) > block_size:
            raise DataFormatError(
                f"{where}: the example is {len(item[0])} tokens long, "
                f"more than the model's context of {block_size} tokens "
                "(examples are refused, not truncated: shorten it)"
            )
        out.append(item)
    return out


def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()


def _weights_sha256(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        flat = t.detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy())
    return h.hexdigest()


def _batch(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The example indices of ``step``: epochs of shuffled examples, back
    to back, each shuffle seeded by (seed, epoch); a function of the step
    alone, so a resumed run draws the same batches."""
    perms: dict[int, list[int]] = {}  # epoch -> its order (one or two)
    out = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(pos, n)
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perms[epoch] = torch.randperm(n, generator=g).tolist()
        out.append(perms[epoch][i])
    return out


def build_model(cfg: FinetuneConfig, gpt: GPT, n_labels: int = 0):
    """The network that ``finetune`` trains, from a pretrained GPT (which
    is copied, not changed): for classify a ``Classifier``, for instruct
    the GPT itself (its vocabulary already resized); then LoRA or
    ``freeze``. Seeded by ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    gpt = copy.deepcopy(gpt)
    if cfg.task == "classify":
        net, keep = Classifier(gpt, n_labels), ("head.",)
    else:
        # the new tokens' rows must learn: the embedding and the LM head
        # (one matrix when tied) train with LoRA too
        net, keep = gpt, ("wte.", "lm_head.")
        if gpt.config.tie_weights:  # lm_head.weight is wte.weight
            keep = ("wte.",)
    if cfg.lora_rank:
        apply_lora(
            net,
            r=cfg.lora_rank,
            alpha=cfg.lora_alpha,
            dropout=cfg.lora_dropout,
            trainable=keep,
        )
    else:
        freeze(net, cfg.train)
    return net


def finetune(
    cfg: FinetuneConfig,
    model: GPT,
    tokenizer: Tokenizer,
    train,
    callback=None,
    device="cpu",
    source: str = "training examples",
) -> FinetuneResult:
    """Finetune a copy of the pretrained ``model`` on ``train`` (a list of
    example dicts, or ``read_jsonl``'s (line, dict) pairs).

    For instruct the tokenizer gets the special tokens and the model a
    larger vocabulary first. Each step takes ``cfg.batch_size`` examples
    (``_batch``), pads them, and takes one AdamW step (warmup, then
    cosine decay to ``min_lr``; gradients clipped). With ``cfg.out_dir``,
    a checkpoint (``ckpt.pt``, atomic) is written every
    ``checkpoint_interval`` steps and at the end; a run started again
    with the same settings, model and data continues from it and ends
    with the same weights, bit for bit, as a run never stopped (other
    settings are refused). ``callback(step, loss)`` runs after each step.
    """
    cfg = dataclasses.replace(cfg, labels=list(cfg.labels))
    numbered = _numbered(train, source)
    block_size = model.config.block_size
    if cfg.task == "instruct":
        tokenizer = add_special_tokens(tokenizer)
        if tokenizer.vocab_size > model.config.vocab_size:
            model = resize_vocab(
                copy.deepcopy(model),
                tokenizer.vocab_size,
                torch.Generator().manual_seed(cfg.seed),
            )
    elif not cfg.labels:
        cfg.labels = sorted({e["label"] for _, e in numbered})
    data = encode_examples(
        cfg.task, numbered, tokenizer, cfg.labels, block_size, source
    )
    cfg.data_sha256 = _sha256(data)
    cfg.base_sha256 = _weights_sha256(model)
    net = build_model(cfg, model, len(cfg.labels)).to(device)
    opt = AdamW(
        param_groups(net, cfg.weight_decay),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    trainable = [p for p in net.parameters() if p.requires_grad]
    path = Path(cfg.out_dir) / "ckpt.pt" if cfg.out_dir else None
    start, elapsed = 0, 0.0
    if path is not None and path.exists():
        saved = load_checkpoint(path, restore_rng=False)
        was = saved["train_config"]
        now = dataclasses.asdict(cfg)
        diff = sorted(k for k in now if was.get(k) != now[k])
        if diff:
            raise FinetuneError(
                f"{path} is a run with other settings or inputs "
                f"({', '.join(diff)} differ); use another out_dir, or "
                "delete it to start again"
            )
        load_checkpoint(path, net, opt, restore_rng=True)
        start, elapsed = saved["step"], saved["elapsed"]
    history = []
    net.train()
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        lr = lr_at(
            step,
            lr=cfg.lr,
            min_lr=cfg.min_lr,
            warmup=cfg.warmup,
            max_steps=cfg.steps,
        )
        for group in opt.param_groups:
            group["lr"] = lr
        batch = [
            data[i] for i in _batch(len(data), cfg.batch_size, step, cfg.seed)
        ]
        if cfg.task == "classify":
            ids, mask = pad([ids for ids, _ in batch])
            y = torch.tensor([label for _, label in batch], device=device)
            logits = net(ids.to(device), attention_mask=mask.to(device))
            loss = F.cross_entropy(logits, y)
        else:
            ids, mask, labels = instruction_batch(batch, cfg.loss_on)
            loss = instruction_loss(
                net, ids.to(device), mask.to(device), labels.to(device)
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            clip_grad_norm(trainable, cfg.grad_clip)
        opt.step()
        done = step + 1
        history.append(dict(step=done, loss=loss.item(), lr=lr))
        if path is not None and (
            done % cfg.checkpoint_interval == 0 or done == cfg.steps
        ):
            save_checkpoint(
                path,
                net,
                opt,
                cfg,
                tokenizer,
                step=done,
                elapsed=elapsed + time.perf_counter() - t0,
            )
        if callback is not None:
            callback(done, history[-1]["loss"])
    elapsed += time.perf_counter() - t0
    net.eval()
    n_train, n_total = count_parameters(net)
    return FinetuneResult(
        net, tokenizer, cfg, history, elapsed, n_train, n_total, path
    )


def load_finetuned(path, device="cpu"):
    """(network, tokenizer, FinetuneConfig) from a finetuning checkpoint
    (``ckpt.pt``): the ``Classifier`` or GPT, with its LoRA layers if it
    was trained with them, in eval mode."""
    state = load_checkpoint(path, restore_rng=False)
    cfg = FinetuneConfig(**state["train_config"])
    gpt = GPT(GPTConfig(**state["model_config"]))
    net = build_model(cfg, gpt, len(cfg.labels))
    net.load_state_dict(state["model"])
    return net.to(device).eval(), Tokenizer.from_json(state["tokenizer"]), cfg


# ---------------------------------------------------------------------------
# 4. The command line

_EPILOG = """\
Data files are JSON lines: one JSON object per line (blank lines are
skipped, other fields ignored).

  --task classify   {"text": "a passage", "label": "Hamlet"}
      The labels are those that occur in the --data file (sorted), unless
      --labels lists them; a label of --val that is not among them is an
      error.
  --task instruct   {"instruction": "Which play is this line from?",
                     "input": "Is this a dagger which I see before me,",
                     "output": "Macbeth"}
      "input" may be left out (empty). The loss is on the response only
      (--loss-on all: on every token). Three special tokens are added:
      <|instruction|>, <|response|>, <|end|>; answers stop at <|end|>.

An example longer than the model's context (the text, or the formatted
instruction with its answer, in tokens) is refused with its length and the
limit, never truncated. Errors name the file and line; they exit with
status 2.

Written to --out: ckpt.pt (the run's checkpoint; starting the same command
again resumes it), and for instruct model.pt, a plain llmbook checkpoint
(LoRA merged) that `python -m llmbook.generate` reads.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llmbook.finetune",
        description="Finetune a pretrained llmbook GPT to classify text or "
        "to follow instructions.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", required=True, help="training examples (JSONL)")
    p.add_argument(
        "--val", help="held-out examples (JSONL), scored at the end"
    )
    p.add_argument(
        "--checkpoint", required=True, help="a pretrained llmbook checkpoint"
    )
    p.add_argument("--labels", help="classify: the labels, comma-separated")
    p.add_argument(
        "--lora-rank", type=int, default=0, help="LoRA rank (0: no LoRA)"
    )
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument(
        "--train",
        choices=TRAIN_CHOICES,
        default="all",
        help="without LoRA: what trains (default all)",
    )
    p.add_argument(
        "--loss-on", choices=("response", "all"), default="response"
    )
    p.add_argument(
        "--out", help="output directory (default runs/finetune-TASK)"
    )
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--checkpoint-interval", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    return p


def _run(args) -> int:
    pairs = read_jsonl(args.data, args.task)
    val = read_jsonl(args.val, args.task) if args.val else []
    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise FinetuneError(f"{ckpt}: no such checkpoint file")
    try:
        model, tokenizer = load_model(ckpt)
    except Exception as e:  # not a checkpoint, damaged, a foreign format
        raise FinetuneError(
            f"{ckpt}: not a pretrained llmbook checkpoint ({e})"
        ) from None
    labels = []
    if args.labels is not None:
        labels = [x.strip() for x in args.labels.split(",") if x.strip()]
        if not labels:
            raise FinetuneError("--labels is empty")
    elif args.task == "classify":
        labels = sorted({e["label"] for _, e in pairs})
    if args.task == "instruct":
        labels = []
    cfg = FinetuneConfig(
        task=args.task,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.lr / 10,
        train=args.train,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        loss_on=args.loss_on,
        labels=labels,
        checkpoint_interval=args.checkpoint_interval,
        out_dir=args.out or f"runs/finetune-{args.task}",
        seed=args.seed,
    )
    # every error of either file before any training
    tok = (
        add_special_tokens(tokenizer) if args.task == "instruct" else tokenizer
    )
    block_size = model.config.block_size
    encode_examples(args.task, pairs, tok, labels, block_size, args.data)
    if val:
        encode_examples(args.task, val, tok, labels, block_size, args.val)
    result = finetune(
        cfg, model, tokenizer, pairs, device=args.device, source=args.data
    )
    last = (
        f"last loss {result.history[-1]['loss']:.4f}"
        if result.history
        else "finished before (nothing to resume)"
    )
    print(
        f"{args.task}: {cfg.steps} steps, {last}, "
        f"{result.trainable:,} of {result.total:,} parameters trained, "
        f"{result.elapsed:.1f} s"
    )
    net, tok = result.model, result.tokenizer
    records = [e for _, e in val]
    if args.task == "classify" and records:
        ev = evaluate_classifier(net, tok, records, cfg.labels)
        lo, hi = ev["ci95"]
        print(
            f"validation accuracy {ev['accuracy']:.3f} "
            f"(95% CI {lo:.3f}-{hi:.3f}, n={ev['n']})"
        )
    if args.task == "instruct":
        plain = copy.deepcopy(net)
        unload_lora(plain)
        out = Path(cfg.out_dir) / "model.pt"
        save_checkpoint(out, plain, None, cfg, tok, step=cfg.steps)
        print(f"wrote {out}")
        if records:
            ev = exact_match(plain, tok, records)
            lo, hi = ev["ci95"]
            print(
                f"validation exact match {ev['accuracy']:.3f} "
                f"(95% CI {lo:.3f}-{hi:.3f}, n={ev['n']})"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (DataFormatError, FinetuneError) as e:
        message = " ".join(str(e).split())  # one line
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
