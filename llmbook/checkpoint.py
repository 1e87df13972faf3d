"""Checkpoints: a run saved to disk, and a trained model loaded back.

Training writes them (to continue a run exactly) and generation reads them
(to use the model), so they sit below both. ``save_checkpoint`` and
``load_checkpoint`` (atomic; loaded with ``weights_only=True``: tensors and
plain data only, no code runs), and ``load_model``.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch

from llmbook.data import atomic_write
from llmbook.model import GPT, GPTConfig

CHECKPOINT_FORMAT = 1


def _rng_state(batch_gen: torch.Generator) -> dict:
    """Every random state the run uses, as tensors and plain numbers (what
    ``torch.load(weights_only=True)`` accepts)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        batch=batch_gen.get_state(),
        numpy=[
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            pos,
            has_gauss,
            gauss,
        ],
        python=[version, list(py_state), py_gauss],
    )
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(
        (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    )
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path,
    model: GPT,
    optimizer,
    cfg,
    tokenizer,
    *,
    step: int,
    elapsed: float = 0.0,
    batch_gen: torch.Generator | None = None,
    meta: dict | None = None,
    history: list[dict] | None = None,
):
    """Everything needed to continue the run exactly, or to use the model:
    weights, optimizer state, step, random states (torch, numpy, python and
    the batch sampler's generator: the data position), the configs (``cfg``
    is the run's TrainConfig), the tokenizer and, when given, ``history``
    (the rows logged so far, for a run that reports them after resuming).

    ``path``: a file path, written to a temporary file and renamed, so a
    kill at any moment leaves the previous checkpoint or the new one, never
    half; or a binary file object (``io.BytesIO``, ``open(f, "wb")``),
    written at its position and left open. Returns the Path, or the file.
    """
    data = (
        {k: meta[k] for k in ("source", "source_sha256", "train", "val")}
        if meta
        else {}
    )
    obj = dict(
        format=CHECKPOINT_FORMAT,
        step=step,
        elapsed=elapsed,
        model=model.state_dict(),
        model_config=dataclasses.asdict(model.config),
        optimizer=optimizer.state_dict() if optimizer is not None else None,
        train_config=dataclasses.asdict(cfg),
        tokenizer=tokenizer.to_json() if tokenizer is not None else None,
        rng=_rng_state(batch_gen or torch.Generator()),
        data=data,
    )
    if history is not None:
        obj["history"] = history
    if hasattr(path, "write"):
        torch.save(obj, path)
        return path
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def load_checkpoint(
    path, model: GPT | None = None, optimizer=None, restore_rng: bool = True
) -> dict:
    """Load a checkpoint from a path or a binary file object
    (``weights_only=True``: tensors and plain data only, no code runs).
    Copies the weights into ``model`` and the state into ``optimizer`` when
    given, restores the random states, and returns the checkpoint's dict."""
    if hasattr(path, "read"):
        name = getattr(path, "name", "the file object")
    else:
        path = name = Path(path)
        if not path.is_file():
            raise ValueError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds here
        # Not PyTorch's message: for a pickle it suggests weights_only=False,
        # which would run whatever code the file holds.
        raise ValueError(
            f"{name} is not an llmbook checkpoint, or it is damaged (for "
            f"example cut short by a full disk): PyTorch could not read it "
            f"({type(e).__name__}); train again or copy the file again"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise ValueError(
            f"{name} is not an llmbook checkpoint (format {found!r})"
        )
    if model is not None:
        model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if restore_rng:
        _set_rng_state(state["rng"])
    return state


def load_model(path, device="cpu"):
    """(model, tokenizer) from a checkpoint (a path or a binary file
    object), the model in eval mode."""
    from llmbook.tokenizer import Tokenizer

    state = load_checkpoint(path, restore_rng=False)
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, Tokenizer.from_json(state["tokenizer"])
