"""Pretraining: a GPT learns to predict the next token of a text.

``train(cfg, data)`` is the book's training run, made of named parts:
``_prepare_data`` (encode once, memory-map the token arrays),
``_build_model`` (seeded), then ``Pretrainer``, the shared loop
(``llmbook.train.trainer.Trainer``) with what pretraining adds: random
windows of the token arrays as batches, gradient accumulation, autocast,
``torch.compile``, distributed data parallel under ``torchrun``, evaluation
on fixed batches, samples, metrics as JSON lines (``llmbook.train.metrics``)
and the final evaluation on the whole validation split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from llmbook.data import (
    batch_at,
    load_meta,
    load_tokens,
    prepare_tokens,
    random_offsets,
    read_text_bytes,
    shakespeare_path,
)
from llmbook.generate import generate
from llmbook.model import GPT
from llmbook.tokenizer import Tokenizer, book_tokenizer, train_bpe
from llmbook.train.config import TrainConfig, autocast_context, pick_device
from llmbook.train.loss import LanguageModelLoss, bits_per_byte, cross_entropy
from llmbook.train.metrics import append_metric, read_metrics, write_metrics
from llmbook.train.optim import AdamW, param_groups
from llmbook.train.trainer import Schedule, Trainer

__all__ = [
    "TrainResult",
    "get_tokenizer",
    "estimate_loss",
    "evaluate",
    "Pretrainer",
    "train",
]


@dataclass
class TrainResult:
    model: GPT
    tokenizer: object
    config: TrainConfig
    history: list[dict]  # one dict per step, as in metrics.jsonl
    samples: list[tuple[int, str]]  # (step, text)
    checkpoint: Path
    val_loss: float  # nats per token, over the whole validation split
    val_bpb: float  # the same in bits per byte of text
    tokens_seen: int
    elapsed: float  # seconds of training (without the final evaluation)
    flops_per_token: int
    peak_memory: int | None = None  # bytes, GPU only

    @property
    def flops(self) -> float:
        return float(self.flops_per_token) * self.tokens_seen


def get_tokenizer(cfg: TrainConfig, data_path: Path):
    if cfg.tokenizer == "book":
        return book_tokenizer("book", vocab_size=cfg.vocab_size)
    if cfg.tokenizer == "own":
        path = Path(cfg.out_dir) / "tokenizer.json"
        if path.exists():
            return Tokenizer.load(path)
        eot = "<|endoftext|>"
        vocab, merges = train_bpe(
            data_path, cfg.vocab_size, special_tokens=[eot]
        )
        tok = Tokenizer(vocab, merges, special_tokens=[eot])
        tok.save(path)
        return tok
    if Path(cfg.tokenizer).is_file():
        return Tokenizer.load(cfg.tokenizer)
    raise ValueError(
        f"tokenizer must be 'book', 'own' or the path of a saved tokenizer; "
        f"got {cfg.tokenizer!r}"
    )


@torch.no_grad()
def estimate_loss(model, array, cfg: TrainConfig, device, amp) -> float:
    """Mean loss over ``eval_iters`` batches drawn with a fixed seed: the
    same batches at every evaluation, so the curve shows the model change,
    not the draw."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    was_training = model.training
    model.eval()
    total = 0.0
    batch = min(cfg.batch_size, 64)
    for _ in range(cfg.eval_iters):
        x, y = batch_at(
            array,
            random_offsets(len(array), batch, cfg.block_size, gen),
            cfg.block_size,
            device,
        )
        with amp:
            total += cross_entropy(model(x), y).item()
    model.train(was_training)
    return total / max(1, cfg.eval_iters)


@torch.no_grad()
def evaluate(
    model, array, block_size: int, device="cpu", batch_size: int = 32
) -> float:
    """Mean loss (nats per token) over every token of ``array`` but the
    first: the array is cut into consecutive windows of ``block_size``."""
    was_training = model.training
    model.eval()
    ids = torch.from_numpy(np.asarray(array, dtype=np.int64))
    n = len(ids) - 1  # positions with a target
    starts = list(range(0, n, block_size))
    total = 0.0
    full = [s for s in starts if s + block_size <= n]
    for i in range(0, len(full), batch_size):
        chunk = full[i : i + batch_size]
        x = torch.stack([ids[s : s + block_size] for s in chunk]).to(device)
        y = torch.stack([ids[s + 1 : s + block_size + 1] for s in chunk]).to(
            device
        )
        total += cross_entropy(model(x), y).item() * y.numel()
    for s in starts[len(full) :]:  # the tail, shorter than a block
        x, y = ids[s:n][None].to(device), ids[s + 1 : n + 1][None].to(device)
        total += cross_entropy(model(x), y).item() * y.numel()
    model.train(was_training)
    return total / n


def _sample(model, tokenizer, cfg: TrainConfig, device) -> str:
    prompt = tokenizer.encode("\n")
    with torch.random.fork_rng(devices=[]):  # leave training's RNG alone
        ids = generate(
            model,
            prompt,
            cfg.sample_tokens,
            temperature=0.8,
            top_k=40,
            seed=cfg.seed,
        )
    return tokenizer.decode(ids)


def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size); joins the process group when
    ``torchrun`` started this process (it sets RANK and WORLD_SIZE)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world


class Pretrainer(Trainer):
    """The shared loop (``Trainer``) for pretraining: ``cfg`` on the token
    arrays ``train_ids`` and ``val_ids``; process ``rank`` of ``world``."""

    def __init__(self, cfg, model, tokenizer, arrays, meta, device, dist):
        self.rank, self.world, local_rank = dist
        self.master = self.rank == 0
        self.train_ids, self.val_ids = arrays
        self.meta, self.device = meta, device
        self.amp, dtype = autocast_context(device, cfg.dtype)
        optimizer = AdamW(
            param_groups(model, cfg.weight_decay),
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
        )
        super().__init__(
            model,
            optimizer,
            Schedule(cfg.lr, cfg.min_lr, cfg.warmup, cfg.max_steps),
            grad_clip=cfg.grad_clip,
            cfg=cfg,
            tokenizer=tokenizer,
            path=Path(cfg.out_dir) / "ckpt.pt",
            checkpoint_interval=cfg.checkpoint_interval,
            scaler=torch.amp.GradScaler(
                device.type, enabled=dtype == "float16"
            ),
        )
        self.batch_gen = torch.Generator().manual_seed(cfg.seed)
        self.micro = cfg.batch_size // (cfg.grad_accum * self.world)
        self.samples: list[tuple[int, str]] = []
        self.fwd = LanguageModelLoss(model)  # (B, T) ids -> mean loss
        if cfg.compile:
            self.fwd = torch.compile(self.fwd)
        if self.world > 1:
            ids = [local_rank] if device.type == "cuda" else None
            self.fwd = DDP(self.fwd, device_ids=ids)
        self.bar = None

    # -- resuming: the shared part, then the data position and the logs ----

    def check_same_run(self, saved: dict) -> None:
        _check_same_run(saved, self.cfg, self.path)

    def resume(self) -> dict | None:
        state = super().resume()
        out = Path(self.cfg.out_dir)
        if state is not None:
            self.batch_gen.set_state(state["rng"]["batch"])
            self.history = read_metrics(out / "metrics.jsonl", upto=self.step)
            self.samples = [
                (r["step"], r["text"])
                for r in read_metrics(out / "samples.jsonl", upto=self.step)
            ]
        return state

    def start_logs(self) -> None:
        """The logs start where the run does: empty, or cut back to the
        checkpoint's step (a killed run may have logged steps after it)."""
        if self.master:
            out = Path(self.cfg.out_dir)
            write_metrics(out / "metrics.jsonl", self.history)
            write_metrics(
                out / "samples.jsonl",
                [dict(step=s, text=t) for s, t in self.samples],
            )

    # -- one step ----------------------------------------------------------

    def gradients(self, step: int) -> float:
        """Micro-batches of one global draw of windows: 1 process x
        ``grad_accum`` micro-batches and N processes see the same
        sequences, offsets (accum, world, micro)."""
        cfg = self.cfg
        offsets = random_offsets(
            len(self.train_ids), cfg.batch_size, cfg.block_size, self.batch_gen
        ).reshape(cfg.grad_accum, self.world, self.micro)
        loss_sum = torch.zeros((), device=self.device)
        for i in range(cfg.grad_accum):
            x, y = batch_at(
                self.train_ids,
                offsets[i, self.rank],
                cfg.block_size,
                self.device,
            )
            last = i == cfg.grad_accum - 1
            sync = (
                self.fwd.no_sync()
                if self.world > 1 and not last
                else contextlib.nullcontext()
            )
            with sync:
                with self.amp:
                    loss = self.fwd(x, y)  # next-token loss of (B, T) ids
                self.scaler.scale(loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        if self.world > 1:
            dist.all_reduce(loss_sum)
        return loss_sum.item() / (cfg.grad_accum * self.world)

    # -- between steps -----------------------------------------------------

    def after_step(self, row: dict) -> None:
        cfg, step, out = self.cfg, self.step, Path(self.cfg.out_dir)
        row = dict(
            step=step,
            train_loss=row["loss"],
            val_loss=None,
            lr=row["lr"],
            grad_norm=row["grad_norm"],
            tokens_per_s=cfg.batch_size * cfg.block_size / row["seconds"],
            elapsed=self.elapsed,
        )
        if cfg.eval_interval and (
            step % cfg.eval_interval == 0 or step == cfg.max_steps
        ):
            row["val_loss"] = estimate_loss(
                self.model, self.val_ids, cfg, self.device, self.amp
            )
        if (
            self.master
            and cfg.sample_interval
            and step % cfg.sample_interval == 0
        ):
            text = _sample(self.model, self.tokenizer, cfg, self.device)
            self.samples.append((step, text))
            append_metric(out / "samples.jsonl", dict(step=step, text=text))
            self.bar.write(f"--- sample at step {step} ---\n{text}\n---")
        self.history.append(row)
        if self.master:
            append_metric(out / "metrics.jsonl", row)
        self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", refresh=False)
        self.bar.update(1)

    def checkpoint_extra(self) -> dict:
        return dict(batch_gen=self.batch_gen, meta=self.meta)

    def save(self) -> None:
        if self.master:  # one writer; every rank knows it exists
            super().save()
        self.last_good = self.path

    def run(self, progress: bool = True) -> list[dict]:
        self.bar = tqdm(
            total=self.max_steps,
            initial=self.step,
            disable=not (progress and self.master),
            desc="training",
            unit="step",
            ncols=80,
            ascii=True,
            file=sys.stdout,  # in order with the samples, which print there
        )
        try:
            return super().run()
        finally:
            self.bar.close()

    def result(self, log=print) -> TrainResult:
        """The final evaluation, on every token of the validation split."""
        cfg, device = self.cfg, self.device
        val_loss = evaluate(self.model, self.val_ids, cfg.block_size, device)
        val = self.meta["val"]
        bpb = bits_per_byte(val_loss, val["tokens"], val["bytes"])
        peak = (
            torch.cuda.max_memory_allocated()
            if device.type == "cuda"
            else None
        )
        if self.master:
            log(f"validation: {val_loss:.4f} nats/token, {bpb:.4f} bits/byte")
        return TrainResult(
            model=self.model,
            tokenizer=self.tokenizer,
            config=cfg,
            history=self.history,
            samples=self.samples,
            checkpoint=self.path,
            val_loss=val_loss,
            val_bpb=bpb,
            tokens_seen=self.step * cfg.batch_size * cfg.block_size,
            elapsed=self.elapsed,
            flops_per_token=self.model.flops_per_token(cfg.block_size),
            peak_memory=peak,
        )


def _check_batches(cfg: TrainConfig, world: int) -> None:
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.max_steps < 1:
        raise ValueError("batch_size, grad_accum and max_steps must be >= 1")
    if cfg.batch_size % (cfg.grad_accum * world):
        raise ValueError(
            f"batch_size {cfg.batch_size} does not split into grad_accum "
            f"{cfg.grad_accum} x {world} process(es): make it a multiple of "
            f"{cfg.grad_accum * world}"
        )


def _prepare_data(cfg: TrainConfig, data: Path, rank: int, world: int):
    """-> (tokenizer, meta, (train_ids, val_ids)): the text encoded once (by
    rank 0) into token arrays that every process memory-maps."""
    out = Path(cfg.out_dir)
    tokenizer = get_tokenizer(cfg, data) if rank == 0 else None
    if rank == 0:
        prepare_tokens(data, tokenizer, out / "tokens")
    if world > 1:
        dist.barrier()
        if rank != 0:
            tokenizer = get_tokenizer(cfg, data)
    meta = load_meta(out / "tokens")
    arrays = tuple(load_tokens(out / "tokens", s) for s in ("train", "val"))
    for split, arr in zip(("training", "validation"), arrays):
        if len(arr) < cfg.block_size + 1:
            raise ValueError(
                f"the {split} split of {data} has {len(arr)} tokens, fewer "
                f"than one block of block_size + 1 = {cfg.block_size + 1}: "
                "use more text or a smaller block_size (--set block_size=...)"
            )
    return tokenizer, meta, arrays


def _build_model(cfg: TrainConfig, vocab_size: int, local_rank, world):
    """The device, and the model initialised from ``cfg.seed`` (the same
    seed on every rank: the same initial weights)."""
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    return GPT(cfg.model_config(vocab_size)).to(device), device


def train(
    cfg: TrainConfig,
    data=None,
    *,
    resume: bool = False,
    progress: bool = True,
    log=print,
) -> TrainResult:
    """Train a GPT on the UTF-8 text file ``data`` (default: the book's
    nine plays); returns a ``TrainResult``. Writes ``cfg.out_dir``:
    ``tokens/`` (the token arrays), ``metrics.jsonl`` (one line per step),
    ``samples.jsonl`` and ``ckpt.pt`` (the last checkpoint; also written at
    the end). ``resume=True`` continues from ``ckpt.pt`` when there is one;
    a finished run is then only evaluated, its history read back."""
    rank, local_rank, world = _distributed()
    data = Path(data) if data is not None else shakespeare_path()
    _check_batches(cfg, world)
    read_text_bytes(data)  # a missing or empty file fails here, clearly
    tokenizer, meta, arrays = _prepare_data(cfg, data, rank, world)
    model, device = _build_model(cfg, tokenizer.vocab_size, local_rank, world)
    trainer = Pretrainer(
        cfg, model, tokenizer, arrays, meta, device, (rank, world, local_rank)
    )
    if resume and trainer.resume() is not None and trainer.master:
        log(f"resumed from {trainer.path} at step {trainer.step}")
    trainer.start_logs()
    trainer.run(progress)
    return trainer.result(log)


def _check_same_run(saved: dict, cfg: TrainConfig, path: Path) -> None:
    """Resuming with other settings would silently mix two runs; only a
    different ``max_steps`` (train longer) or device is allowed."""
    free = {"max_steps", "device", "out_dir"}
    diff = {
        k: (saved.get(k), v)
        for k, v in dataclasses.asdict(cfg).items()
        if k not in free and saved.get(k) != v
    }
    if diff:
        raise ValueError(
            f"{path} was written with other settings (saved, now): {diff}; "
            "use another out_dir, or start afresh without --resume"
        )
