"""The training loop: configuration, presets, the loop, metrics.

1. ``TrainConfig`` with named presets (``TRAIN_PRESETS``: "smoke", "book",
   "gpu").
2. ``train``: sample a batch, forward, loss, backward, clip, step; gradient
   accumulation, autocast, ``torch.compile``, evaluation, samples, metrics
   as JSON lines, checkpoints, resuming, and distributed data parallel when
   started by ``torchrun``.
3. ``plot_metrics``: the four curves of a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from llmbook.checkpoint import load_checkpoint, save_checkpoint
from llmbook.data import (
    atomic_write,
    batch_at,
    load_meta,
    load_tokens,
    prepare_tokens,
    random_offsets,
    read_text_bytes,
    shakespeare_path,
)
from llmbook.loss import LanguageModelLoss, bits_per_byte, cross_entropy
from llmbook.model import GPT, GPTConfig
from llmbook.optim import AdamW, clip_grad_norm, lr_at, param_groups


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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


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


def get_tokenizer(cfg: TrainConfig, data_path: Path):
    from llmbook.tokenizer import Tokenizer, book_tokenizer, train_bpe

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
    from llmbook.generate import generate

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
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world


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
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank, local_rank, world = _distributed()
    master = rank == 0
    out = Path(cfg.out_dir)
    data = Path(data) if data is not None else shakespeare_path()
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.max_steps < 1:
        raise ValueError("batch_size, grad_accum and max_steps must be >= 1")
    if cfg.batch_size % (cfg.grad_accum * world):
        raise ValueError(
            f"batch_size {cfg.batch_size} does not split into grad_accum "
            f"{cfg.grad_accum} x {world} process(es): make it a multiple of "
            f"{cfg.grad_accum * world}"
        )
    micro = cfg.batch_size // (cfg.grad_accum * world)
    read_text_bytes(data)  # a missing or empty file fails here, clearly

    # data: encode once (rank 0), everyone memory-maps the arrays
    tokenizer = get_tokenizer(cfg, data) if master else None
    if master:
        prepare_tokens(data, tokenizer, out / "tokens")
    if world > 1:
        dist.barrier()
        if not master:
            tokenizer = get_tokenizer(cfg, data)
    meta = load_meta(out / "tokens")
    train_ids, val_ids = (
        load_tokens(out / "tokens", s) for s in ("train", "val")
    )
    for split, arr in (("training", train_ids), ("validation", val_ids)):
        if len(arr) < cfg.block_size + 1:
            raise ValueError(
                f"the {split} split of {data} has {len(arr)} tokens, fewer "
                f"than one block of block_size + 1 = {cfg.block_size + 1}: "
                "use more text or a smaller block_size (--set block_size=...)"
            )

    # model, optimizer, randomness (the same seed on every rank: same init)
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    batch_gen = torch.Generator().manual_seed(cfg.seed)
    model = GPT(cfg.model_config(tokenizer.vocab_size)).to(device)
    optimizer = AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
    )
    amp, dtype = autocast_context(device, cfg.dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")

    ckpt_path = out / "ckpt.pt"
    step, elapsed, history, samples = 0, 0.0, [], []
    if resume and ckpt_path.exists():
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        _check_same_run(saved.get("train_config", {}), cfg, ckpt_path)
        del saved
        state = load_checkpoint(ckpt_path, model, optimizer)
        step, elapsed = state["step"], state["elapsed"]
        batch_gen.set_state(state["rng"]["batch"])
        history = _read_metrics(out / "metrics.jsonl", upto=step)
        samples = [
            (r["step"], r["text"])
            for r in _read_metrics(out / "samples.jsonl", upto=step)
        ]
        if master:
            log(f"resumed from {ckpt_path} at step {step}")
    last_good = ckpt_path if resume and ckpt_path.exists() else None
    if master:
        _write_metrics(out / "metrics.jsonl", history)
        _write_metrics(
            out / "samples.jsonl", [dict(step=s, text=t) for s, t in samples]
        )

    fwd = LanguageModelLoss(model)
    fwd = torch.compile(fwd) if cfg.compile else fwd
    if world > 1:
        fwd = DDP(
            fwd, device_ids=[local_rank] if device.type == "cuda" else None
        )
    tokens_per_step = cfg.batch_size * cfg.block_size
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        disable=not (progress and master),
        desc="training",
        unit="step",
        ncols=80,
        ascii=True,
        file=sys.stdout,  # in order with the samples, which print there
    )
    model.train()
    t_last = time.perf_counter()
    while step < cfg.max_steps:
        lr = lr_at(
            step,
            lr=cfg.lr,
            min_lr=cfg.min_lr,
            warmup=cfg.warmup,
            max_steps=cfg.max_steps,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        # one global draw per step, so 1 process x grad_accum micro-batches
        # and N processes see the same sequences: (accum, world, micro)
        offsets = random_offsets(
            len(train_ids), cfg.batch_size, cfg.block_size, batch_gen
        ).reshape(cfg.grad_accum, world, micro)
        loss_sum = torch.zeros((), device=device)
        for i in range(cfg.grad_accum):
            x, y = batch_at(
                train_ids, offsets[i, rank], cfg.block_size, device
            )
            last = i == cfg.grad_accum - 1
            sync = (
                fwd.no_sync()
                if world > 1 and not last
                else contextlib.nullcontext()
            )
            with sync:
                with amp:
                    loss = fwd(x, y)  # next-token loss of (B, T) ids
                scaler.scale(loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        if world > 1:
            dist.all_reduce(loss_sum)
        train_loss = loss_sum.item() / (cfg.grad_accum * world)
        if not math.isfinite(train_loss):
            bar.close()
            where = (
                (
                    f"the last good checkpoint is {last_good} (resume with "
                    "--resume, perhaps with a lower lr)"
                )
                if last_good
                else "no checkpoint was written before it"
            )
            raise TrainingDiverged(
                f"the loss became {train_loss} at step {step}; {where}"
            )
        scaler.unscale_(optimizer)
        norm = clip_grad_norm(
            model.parameters(), cfg.grad_clip or float("inf")
        )
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        now = time.perf_counter()
        dt, t_last = now - t_last, now
        elapsed += dt
        row = dict(
            step=step,
            train_loss=train_loss,
            val_loss=None,
            lr=lr,
            grad_norm=norm.item(),
            tokens_per_s=tokens_per_step / dt,
            elapsed=elapsed,
        )
        if cfg.eval_interval and (
            step % cfg.eval_interval == 0 or step == cfg.max_steps
        ):
            row["val_loss"] = estimate_loss(model, val_ids, cfg, device, amp)
        if master and cfg.sample_interval and step % cfg.sample_interval == 0:
            text = _sample(model, tokenizer, cfg, device)
            samples.append((step, text))
            _append_metric(out / "samples.jsonl", dict(step=step, text=text))
            bar.write(f"--- sample at step {step} ---\n{text}\n---")
        history.append(row)
        if master:
            _append_metric(out / "metrics.jsonl", row)
        bar.set_postfix(loss=f"{train_loss:.3f}", refresh=False)
        bar.update(1)
        want_ckpt = (
            cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0
        )
        if want_ckpt or step == cfg.max_steps:
            if master:
                save_checkpoint(
                    ckpt_path,
                    model,
                    optimizer,
                    cfg,
                    tokenizer,
                    step=step,
                    elapsed=elapsed,
                    batch_gen=batch_gen,
                    meta=meta,
                )
            last_good = ckpt_path
        # evaluation, samples and saving are not timed
        t_last = time.perf_counter()
    bar.close()

    val_loss = evaluate(model, val_ids, cfg.block_size, device)
    bpb = bits_per_byte(val_loss, meta["val"]["tokens"], meta["val"]["bytes"])
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    if master:
        log(f"validation: {val_loss:.4f} nats/token, {bpb:.4f} bits/byte")
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        config=cfg,
        history=history,
        samples=samples,
        checkpoint=ckpt_path,
        val_loss=val_loss,
        val_bpb=bpb,
        tokens_seen=step * tokens_per_step,
        elapsed=elapsed,
        flops_per_token=model.flops_per_token(cfg.block_size),
        peak_memory=peak,
    )


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


def _append_metric(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _read_metrics(path: Path, upto: int | None = None) -> list[dict]:
    """The rows of a metrics.jsonl file (up to step ``upto``), in step
    order; a line cut short by a kill, or one out of order (a process that
    should not be writing there), is dropped."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if upto is not None and row["step"] > upto:
                continue
            if not rows or row["step"] > rows[-1]["step"]:
                rows.append(row)
    return rows


def _write_metrics(path: Path, rows: list[dict]) -> None:
    with atomic_write(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def plot_metrics(history, path=None):
    """Four panels from the rows of metrics.jsonl (a list of dicts or the
    file's path): losses, learning rate, gradient norm, tokens/s."""
    import matplotlib.pyplot as plt

    rows = (
        _read_metrics(Path(history))
        if isinstance(history, (str, Path))
        else history
    )
    steps = [r["step"] for r in rows]
    ev = [r for r in rows if r.get("val_loss") is not None]
    fig, ax = plt.subplots(2, 2, figsize=(9, 6))
    ax[0, 0].plot(
        steps,
        [r["train_loss"] for r in rows],
        "-",
        lw=0.8,
        color="0.6",
        label="train (one batch)",
    )
    ax[0, 0].plot(
        [r["step"] for r in ev],
        [r["val_loss"] for r in ev],
        "ko--",
        ms=4,
        label="validation",
    )
    ax[0, 0].set(xlabel="step", ylabel="loss (nats/token)")
    ax[0, 0].legend()
    ax[0, 1].plot(steps, [r["lr"] for r in rows], "k-")
    ax[0, 1].set(xlabel="step", ylabel="learning rate")
    ax[1, 0].plot(steps, [r["grad_norm"] for r in rows], "k-", lw=0.8)
    ax[1, 0].set(
        xlabel="step", ylabel="gradient norm (before clipping)", yscale="log"
    )
    ax[1, 1].plot(steps, [r["tokens_per_s"] for r in rows], "k.", ms=2)
    ax[1, 1].set(xlabel="step", ylabel="tokens/s")
    fig.tight_layout()
    if path:
        fig.savefig(path)
    return fig
