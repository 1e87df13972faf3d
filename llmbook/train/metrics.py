"""A run's metrics: one JSON line per step, written as the run goes (a
kill loses at most the line being written), read back on resume, and
plotted."""

from __future__ import annotations

import json
from pathlib import Path

from llmbook.data import atomic_write

__all__ = ["append_metric", "read_metrics", "write_metrics", "plot_metrics"]


def append_metric(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(path: Path, upto: int | None = None) -> list[dict]:
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


def write_metrics(path: Path, rows: list[dict]) -> None:
    with atomic_write(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def plot_metrics(history, path=None):
    """Four panels from the rows of metrics.jsonl (a list of dicts or the
    file's path): losses, learning rate, gradient norm, tokens/s."""
    import matplotlib.pyplot as plt

    rows = (
        read_metrics(Path(history))
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
