"""The book's cached runs: the training chapter's model, trained once, and
the smaller draft model of speculative decoding.

``book_run(profile)`` trains (or continues, or only evaluates) the
chapter's run on the nine plays in ``data_dir()/checkpoints/<profile>/``;
``book_checkpoint(profile)`` is the path of its finished checkpoint, which
other chapters load. A lock keeps two notebooks from training it twice.

The cache is keyed by everything that determines the model (``run_key``):
the settings, the corpus's sha256, the source of every module the training
runs through, the torch and numpy versions and the device type. When any of
them changes, the model is trained again (and one line on stderr says why):
a cached model never outlives the code that trained it.

``draft_checkpoint(profile)`` is the draft model of chapter 9's
speculative decoding: the same settings, a smaller model, cached the same
way.

``check_run(result)`` says whether a run of the book's settings landed in
the band measured across machines and seeds (``book_band.json``, written by
tests/measure_spread.py), and if not, what usually causes that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llmbook.data import (
    data_dir,
    record,
    sha256_of,
    shakespeare_path,
    source_hashes,
    stale,
)
from llmbook.train.config import TRAIN_PRESETS, TrainConfig, pick_device
from llmbook.train.pretrain import TrainResult, train

# Every module a training run executes: an edit to any of them retrains.
TRAINING_MODULES = (
    "checks",
    "data",
    "tokenizer",
    "attention",
    "model",
    "checkpoint",
    "generate.sampling",
    "generate.prompts",
    "generate.engine",
    "generate.reference",
    "train.config",
    "train.loss",
    "train.optim",
    "train.metrics",
    "train.trainer",
    "train.pretrain",
)
KEY_FILE = "cache_key.json"
BAND_FILE = Path(__file__).with_name("book_band.json")


def checkpoint_dir(profile: str = "book") -> Path:
    return data_dir() / "checkpoints" / profile


def run_key(cfg: TrainConfig) -> dict:
    """What determines the trained model of ``cfg`` on the nine plays."""
    settings = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if k not in ("out_dir", "device")
    }
    return {
        "settings": settings,
        "data": sha256_of(shakespeare_path()),
        "code": source_hashes(*TRAINING_MODULES),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": pick_device(cfg.device).type,
    }


@contextlib.contextmanager
def _locked(directory: Path):
    """An exclusive lock on ``directory``: two notebooks asking for the same
    book checkpoint at once train it once, not twice into the same files."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _book_config(profile: str, overrides: dict) -> TrainConfig:
    return TrainConfig.preset(
        profile, out_dir=str(checkpoint_dir(profile)), **overrides
    )


def book_run(
    profile: str = "book", progress: bool = True, log=print, **overrides
) -> TrainResult:
    """The training chapter's run for ``profile`` ("smoke", "book", "gpu"),
    with ``overrides`` of its settings (e.g. ``seed=1``), on the nine plays,
    in ``data_dir()/checkpoints/<profile>/``. A run that was stopped
    continues from its checkpoint; a finished one is only evaluated, its
    history and samples read back; one made by other settings, data, code or
    library versions is replaced. Deterministic on one machine."""
    cfg = _book_config(profile, overrides)
    directory = Path(cfg.out_dir)
    key = run_key(cfg)
    with _locked(directory):
        reason = stale(directory / KEY_FILE, key)
        if reason:
            ckpt = directory / "ckpt.pt"
            if ckpt.exists():
                print(
                    f"llmbook: training the {profile} model again: {reason}",
                    file=sys.stderr,
                )
                ckpt.unlink()
            record(directory / KEY_FILE, key)
        return train(
            cfg, shakespeare_path(), resume=True, progress=progress, log=log
        )


def book_checkpoint(
    profile: str = "book", progress: bool = False, **overrides
) -> Path:
    """The path of the book's trained model for ``profile`` (and
    ``overrides``): the checkpoint of ``book_run``, trained first unless a
    finished one made by the same key is cached."""
    cfg = _book_config(profile, overrides)
    path = Path(cfg.out_dir) / "ckpt.pt"
    if (
        path.exists()
        and stale(Path(cfg.out_dir) / KEY_FILE, run_key(cfg)) is None
    ):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("step") == cfg.max_steps:
            return path
    book_run(profile, progress=progress, log=lambda *a: None, **overrides)
    return path


# ---------------------------------------------------------------------------
# The draft model: the book's model, smaller, trained the same way

DRAFT_PRESETS: dict[str, dict] = {
    # same tokenizer and data as the target of the same profile
    "smoke": dict(
        TRAIN_PRESETS["smoke"],
        n_layer=1,
        n_head=2,
        n_embd=32,
        max_steps=20,
        sample_interval=0,
    ),
    "book": dict(
        TRAIN_PRESETS["book"],
        n_layer=1,
        n_head=2,
        n_embd=128,
        max_steps=600,
        sample_interval=0,
        checkpoint_interval=200,
    ),
    "gpu": dict(
        TRAIN_PRESETS["gpu"],
        n_layer=2,
        n_head=4,
        n_embd=256,
        sample_interval=0,
    ),
}


def draft_config(profile: str = "book", **overrides) -> TrainConfig:
    """The draft's TrainConfig for ``profile``: the target's settings (same
    tokenizer, data, batches, schedule) with a smaller model, and
    ``overrides`` of them (e.g. ``seed=1``, ``max_steps=2``)."""
    if profile not in DRAFT_PRESETS:
        raise ValueError(
            f"unknown profile {profile!r}; choose one of {list(DRAFT_PRESETS)}"
        )
    out = data_dir() / "checkpoints" / f"draft-{profile}"
    settings = {**DRAFT_PRESETS[profile], **overrides, "out_dir": str(out)}
    return TrainConfig(**settings)


def draft_checkpoint(
    profile: str = "book", progress: bool = False, **overrides
) -> Path:
    """The path of the draft model for ``profile`` (and ``overrides`` of its
    settings), trained (by ``llmbook.train.train``, deterministically) the
    first time and cached in ``data_dir()/checkpoints/draft-<profile>/``,
    keyed like the book's runs (``llmbook.train.runs.run_key``: settings, data,
    code, versions): other settings train it again."""
    cfg = draft_config(profile, **overrides)
    directory = Path(cfg.out_dir)
    path, key_file = directory / "ckpt.pt", directory / "cache_key.json"
    key = run_key(cfg)
    with _locked(directory):
        reason = stale(key_file, key)
        if reason:
            if path.exists():
                path.unlink()
            record(key_file, key)
        elif path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("step") == cfg.max_steps:
                return path
        train(
            cfg,
            shakespeare_path(),
            resume=True,
            progress=progress,
            log=lambda *a: None,
        )
    return path


# ---------------------------------------------------------------------------
# Is my run normal?


@dataclass
class RunCheck:
    """The verdict of ``check_run``: ``ok``, and a message for people
    (printed in lines of at most 79 characters, the book's code width)."""

    ok: bool
    message: str

    def __str__(self) -> str:
        return textwrap.fill(self.message, 79)


def expected_band() -> dict:
    """The validation loss a run of ``TrainConfig.preset("book")`` should
    show at each evaluation: the book's values and their tolerances,
    measured across CPUs' kernel paths, thread counts and seeds."""
    return json.loads(BAND_FILE.read_text())


def check_run(result: TrainResult, band: dict | None = None) -> RunCheck:
    """Whether ``result`` (of ``train``/``book_run`` with the book's
    settings, any seed) is inside the expected band, and if not, what
    typically causes that."""
    band = band or expected_band()
    cfg, book = result.config, TrainConfig.preset("book")
    differ = [
        f"{f.name}={getattr(cfg, f.name)!r} (book: {getattr(book, f.name)!r})"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("out_dir", "device", "seed")
        and getattr(cfg, f.name) != getattr(book, f.name)
    ]
    if differ:
        return RunCheck(
            False,
            (
                "cannot tell: the band was measured for "
                "TrainConfig.preset('book') (any seed), and these settings "
                f"differ: {', '.join(differ)}"
            ),
        )
    evals = {
        r["step"]: r["val_loss"]
        for r in result.history
        if r.get("val_loss") is not None
    }
    checks = list(
        zip(band["steps"], band["val_loss"], band["val_loss_tolerance"])
    )
    checks.append(
        ("end", band["final_val_loss"], band["final_val_loss_tolerance"])
    )
    evals["end"] = result.val_loss
    outside = []
    for step, want, tol in checks:
        got = evals.get(step, math.nan)
        if not abs(got - want) <= tol:
            outside.append((step, got, want, tol))
    final, final_tol = band["final_val_loss"], band["final_val_loss_tolerance"]
    if not outside:
        return RunCheck(
            True,
            (
                "normal: the validation loss is inside the expected band at "
                f"all {len(checks) - 1} evaluations and at the end (expected "
                "there: "
                f"{final:.2f} +- {final_tol:.2f} nats per token)"
            ),
        )
    where = ", ".join(
        f"step {s}: {g:.2f} (expected {w:.2f} +- {t:.2f})"
        for s, g, w, t in outside[:4]
    )
    return RunCheck(
        False,
        f"outside the expected band at {len(outside)} of "
        f"{len(checks)} points ({where}). {_causes(cfg, outside)}",
    )


def _causes(cfg: TrainConfig, outside: list[tuple]) -> str:
    device = pick_device(cfg.device)
    hints = []
    if cfg.dtype != "float32" and (
        cfg.dtype != "auto" or device.type == "cuda"
    ):
        hints.append(
            "half-precision autocast (the band is float32: set "
            "dtype='float32')"
        )
    got = [g for _, g, _, _ in outside]
    if any(math.isnan(g) for g in got):
        hints.append(
            "a run that diverged or did not reach every "
            "evaluation (a NaN loss, or fewer steps)"
        )
    if all(g > w for _, g, w, _ in outside if not math.isnan(g)):
        hints.append(
            "other data or another tokenizer than the nine plays "
            "with the book's BPE, or an edited loss, optimizer or "
            "schedule"
        )
    elif all(g < w for _, g, w, _ in outside if not math.isnan(g)):
        hints.append("validation text leaking into training (another split)")
    if device.type != "cpu":
        hints.append(
            f"the {device.type} device (the band was measured on CPUs)"
        )
    return (
        "Typical causes: "
        + "; ".join(
            hints or ["changed code in the model or the training loop"]
        )
        + "."
    )
