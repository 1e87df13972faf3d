"""The book's cached runs: the training chapter's model, trained once.

``book_run(profile)`` trains (or continues, or only evaluates) the
chapter's run on the nine plays in ``data_dir()/checkpoints/<profile>/``;
``book_checkpoint(profile)`` is the path of its finished checkpoint, which
other chapters load. A lock keeps two notebooks from training it twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch

from llmbook.data import data_dir, shakespeare_path
from llmbook.loop import TrainConfig, TrainResult, train


def checkpoint_dir(profile: str = "book") -> Path:
    return data_dir() / "checkpoints" / profile


def _same_settings(saved: dict | None, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's TrainConfig is ``cfg`` (where it was written
    and on which device do not matter)."""
    if not saved:
        return False
    now = dataclasses.asdict(cfg)
    return all(saved.get(k) == v for k, v in now.items()
               if k not in ("out_dir", "device"))


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


def book_run(profile: str = "book", progress: bool = True,
             log=print) -> TrainResult:
    """The training chapter's run for ``profile`` ("smoke", "book", "gpu")
    on the nine plays, in ``data_dir()/checkpoints/<profile>/``. A run that
    was stopped continues from its checkpoint; a finished one is only
    evaluated, its history and samples read back; one made with other
    settings is replaced. Deterministic: same seed, data and settings."""
    cfg = TrainConfig.preset(profile, out_dir=str(checkpoint_dir(profile)))
    path = checkpoint_dir(profile) / "ckpt.pt"
    with _locked(checkpoint_dir(profile)):
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not _same_settings(state.get("train_config"), cfg):
                path.unlink()
        return train(cfg, shakespeare_path(), resume=True, progress=progress,
                     log=log)


def book_checkpoint(profile: str = "book", progress: bool = False) -> Path:
    """The path of the book's trained model for ``profile``: the checkpoint
    of ``book_run(profile)``, trained first if it is not cached in
    ``data_dir()/checkpoints/<profile>/ckpt.pt``."""
    cfg = TrainConfig.preset(profile)
    path = checkpoint_dir(profile) / "ckpt.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if _same_settings(state.get("train_config"), cfg) and \
                state.get("step") == cfg.max_steps:
            return path
    book_run(profile, progress=progress, log=lambda *a: None)
    return path
