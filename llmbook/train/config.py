"""What a training run is: ``TrainConfig``, its named presets
(``TRAIN_PRESETS``: "smoke", "book", "gpu"), and where and in what
precision it runs (``pick_device``, ``autocast_context``)."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch

from llmbook.model import GPTConfig

__all__ = [
    "TrainConfig",
    "TRAIN_PRESETS",
    "pick_device",
    "autocast_context",
]


@dataclass
class TrainConfig:
    """Everything a run needs besides the text. ``batch_size`` is the global
    batch in sequences per optimizer step; it is split into ``grad_accum``
    micro-batches on each of the processes (``torchrun``)."""

    # the model: a GPTConfig preset, and overrides (None: the preset's)
    model: str = "book"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    dropout: float = 0.0
    # the tokenizer: "book" (the book's BPE, any UTF-8 text), "own" (a BPE
    # trained on the data file) or the path of a saved tokenizer
    tokenizer: str = "book"
    vocab_size: int = 2048
    # batches and steps
    batch_size: int = 32
    block_size: int = 128
    grad_accum: int = 1
    max_steps: int = 1000
    # AdamW and the schedule
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0: no clipping
    # what happens along the way (in steps; 0: never)
    eval_interval: int = 100
    eval_iters: int = 10
    sample_interval: int = 0
    sample_tokens: int = 48
    checkpoint_interval: int = 0
    out_dir: str = "runs/book"
    # where and how
    device: str = "auto"  # "auto": cuda, else mps, else cpu
    dtype: str = "auto"  # float32, bfloat16, float16; auto: bf16 on GPU
    compile: bool = False
    seed: int = 1337

    @classmethod
    def preset(cls, name: str, **overrides) -> TrainConfig:
        if name not in TRAIN_PRESETS:
            raise ValueError(
                f"unknown preset {name!r}; choose one of {list(TRAIN_PRESETS)}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {unknown}; settings are {sorted(fields)}"
            )
        return cls(**{**TRAIN_PRESETS[name], **overrides})

    def model_config(self, vocab_size: int) -> GPTConfig:
        sizes = {
            k: getattr(self, k)
            for k in ("n_layer", "n_head", "n_embd")
            if getattr(self, k) is not None
        }
        return GPTConfig.preset(
            self.model,
            vocab_size=vocab_size,
            block_size=self.block_size,
            dropout=self.dropout,
            **sizes,
        )


TRAIN_PRESETS: dict[str, dict] = {
    # seconds on a CPU: for tests and the notebooks' smoke runs
    "smoke": dict(
        model="book",
        n_layer=2,
        n_head=2,
        n_embd=64,
        vocab_size=512,
        batch_size=8,
        block_size=32,
        max_steps=30,
        warmup=5,
        lr=3e-3,
        min_lr=3e-4,
        eval_interval=10,
        eval_iters=2,
        sample_interval=15,
        sample_tokens=16,
        out_dir="runs/smoke",
    ),
    # the book's run: about five minutes on two CPU cores
    "book": dict(
        model="book",
        n_layer=4,
        n_head=4,
        n_embd=256,
        vocab_size=2048,
        batch_size=16,
        block_size=128,
        max_steps=600,
        warmup=50,
        lr=3e-3,
        min_lr=3e-4,
        weight_decay=0.1,
        eval_interval=50,
        eval_iters=8,
        sample_interval=100,
        checkpoint_interval=100,
        out_dir="runs/book",
    ),
    # one GPU: a wider, deeper model on longer windows, same data
    "gpu": dict(
        model="book",
        n_layer=8,
        n_head=8,
        n_embd=512,
        vocab_size=4096,
        dropout=0.1,
        batch_size=64,
        block_size=256,
        max_steps=3000,
        warmup=200,
        lr=1e-3,
        min_lr=1e-4,
        eval_interval=250,
        eval_iters=20,
        sample_interval=1000,
        out_dir="runs/gpu",
    ),
}


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if (
        getattr(torch.backends, "mps", None)
        and torch.backends.mps.is_available()
    ):
        return torch.device("mps")
    return torch.device("cpu")


def autocast_context(device: torch.device, dtype: str):
    """bf16/fp16 autocast: matmuls in half precision, reductions (softmax,
    norms, the loss) in fp32, weights and optimizer state stay fp32."""
    if dtype == "auto":
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        dtype = "bfloat16" if bf16_ok else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(
            f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto"
        )
    if dtype == "float32":
        return contextlib.nullcontext(), dtype
    return torch.autocast(device.type, dtype=getattr(torch, dtype)), dtype
