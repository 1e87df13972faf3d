"""``finetune``: a finetuning run for both tasks, full or with LoRA
(``llmbook.finetune.lora``), on the training loop of pretraining
(``llmbook.train.trainer.Trainer``: AdamW, warmup and cosine decay, fixed
seeds, atomic checkpoints that an interrupted run resumes from, bit for
bit). ``Finetuner`` adds only what differs: batches of labelled examples
and the task's loss.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from llmbook.checkpoint import load_checkpoint
from llmbook.finetune.classify import (
    TRAIN_CHOICES,
    ClassifyTask,
    FinetuneError,
    freeze,
)
from llmbook.finetune.data import DataFormatError
from llmbook.finetune.instruct import InstructTask
from llmbook.finetune.lora import apply_lora, count_parameters
from llmbook.model import GPT, GPTConfig
from llmbook.tokenizer import Tokenizer
from llmbook.train.optim import AdamW, param_groups
from llmbook.train.trainer import Schedule, Trainer

# The tasks a run can finetune for: what differs between them (the data's
# encoding, the network, the loss), one object each.
TASKS = {task.name: task for task in (ClassifyTask(), InstructTask())}


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
            raise FinetuneError(
                f"unknown task {self.task!r}; use one of {tuple(TASKS)}"
            )
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
    history: list[dict]  # {"step", "loss", "lr"} of every step, resumed too
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
    out = []
    for line, e in examples:
        where = f"{source}:{line}"
        item = TASKS[task].encode(e, tokenizer, labels, where)
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
    net, keep = TASKS[cfg.task].network(copy.deepcopy(gpt), n_labels)
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


class Finetuner(Trainer):
    """The shared loop (``llmbook.train.trainer.Trainer``) on labelled
    examples: each step takes ``cfg.batch_size`` of them (``_batch``: a
    function of the step alone), padded on the right."""

    def __init__(self, cfg, net, tokenizer, data, device):
        super().__init__(
            net,
            AdamW(
                param_groups(net, cfg.weight_decay),
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
            ),
            Schedule(cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps),
            grad_clip=cfg.grad_clip,
            cfg=cfg,
            tokenizer=tokenizer,
            path=Path(cfg.out_dir) / "ckpt.pt" if cfg.out_dir else None,
            checkpoint_interval=cfg.checkpoint_interval,
        )
        self.data, self.device, self.callback = data, device, None

    def batch(self, step: int) -> list:
        cfg = self.cfg
        return [
            self.data[i]
            for i in _batch(len(self.data), cfg.batch_size, step, cfg.seed)
        ]

    def loss(self, batch) -> torch.Tensor:
        task = TASKS[self.cfg.task]
        return task.loss(self.model, batch, self.device, self.cfg)

    def after_step(self, row: dict) -> None:
        step, loss = row["step"], row["loss"]
        self.history.append(dict(step=step, loss=loss, lr=row["lr"]))
        if self.callback is not None:
            self.callback(step, loss)

    def checkpoint_extra(self) -> dict:
        return {"history": self.history}

    def resume(self) -> dict | None:
        state = super().resume()
        if state is not None:  # the steps run before, as they were logged
            self.history = list(state.get("history", []))
        return state

    def check_same_run(self, saved: dict) -> None:
        now = dataclasses.asdict(self.cfg)
        diff = sorted(k for k in now if saved.get(k) != now[k])
        if diff:
            raise FinetuneError(
                f"{self.path} is a run with other settings or inputs "
                f"({', '.join(diff)} differ); use another out_dir, or "
                "delete it to start again"
            )


def _prepare(cfg: FinetuneConfig, model, tokenizer, train, source):
    """The settings completed (the labels), the model and tokenizer made
    ready for the task, and the examples encoded."""
    cfg = dataclasses.replace(cfg, labels=list(cfg.labels))
    numbered = _numbered(train, source)
    task = TASKS[cfg.task]
    model, tokenizer = task.prepare(cfg, model, tokenizer, numbered)
    block_size = model.config.block_size
    data = encode_examples(
        cfg.task, numbered, tokenizer, cfg.labels, block_size, source
    )
    cfg.data_sha256 = _sha256(data)
    cfg.base_sha256 = _weights_sha256(model)
    return cfg, model, tokenizer, data


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
    cosine decay to ``min_lr``; gradients clipped): the training loop of
    pretraining, ``Trainer``. With ``cfg.out_dir``, a checkpoint
    (``ckpt.pt``, atomic) is written every ``checkpoint_interval`` steps
    and at the end; a run started again with the same settings, model and
    data continues from it and ends with the same weights, bit for bit, as
    a run never stopped (other settings are refused). ``callback(step,
    loss)`` runs after each step.
    """
    cfg, model, tokenizer, data = _prepare(
        cfg, model, tokenizer, train, source
    )
    net = build_model(cfg, model, len(cfg.labels)).to(device)
    trainer = Finetuner(cfg, net, tokenizer, data, device)
    trainer.callback = callback
    trainer.resume()
    history = trainer.run()[:]
    net.eval()
    n_train, n_total = count_parameters(net)
    return FinetuneResult(
        net,
        tokenizer,
        cfg,
        history,
        trainer.elapsed,
        n_train,
        n_total,
        trainer.path,
    )


def run_dir(root, cfg: FinetuneConfig, model: GPT, train) -> Path:
    """A directory under ``root`` for the run of ``cfg`` on ``model`` and
    ``train``, named by a hash of the three (the settings but out_dir,
    the pretrained weights, the examples): two chapters that make the
    same run share its checkpoint, and a run with anything different
    gets a directory of its own instead of a refused checkpoint."""
    settings = dataclasses.asdict(dataclasses.replace(cfg, out_dir=None))
    examples = [e for _, e in _numbered(train, "training examples")]
    key = _sha256([settings, _weights_sha256(model), _sha256(examples)])
    return Path(root) / f"{cfg.task}-{key[:16]}"


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
