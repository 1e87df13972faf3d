"""The training command line: ``python -m llmbook.train --preset book
--data FILE`` (or under ``torchrun``)."""

from __future__ import annotations

import argparse
import os
import sys

from llmbook.checks import parse_settings, settings_help
from llmbook.train import TRAIN_PRESETS, TrainConfig, TrainingDiverged, train

__all__ = ["main"]


def _settings_help() -> str:
    """The settings --set can change, with the book preset's values."""
    return (
        settings_help(
            TrainConfig.preset("book"),
            title="--set KEY=VALUE; the book preset's values",
        )
        + "\n\nexit status: 0 trained; 1 the run failed (the loss "
        "diverged);\n2 bad input (a setting, the data file, a checkpoint)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.train",
        description="Train a GPT on a UTF-8 text file. Text is encoded with "
        "the book's BPE (trained on Shakespeare; any UTF-8 text encodes), or "
        "with --set tokenizer=own, a BPE trained on your file. The last 10% "
        "of the file is held out for validation. Runs on N processes with "
        "torchrun --nproc_per_node N -m llmbook.train ...",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset", default="book", help=f"one of {list(TRAIN_PRESETS)}"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="UTF-8 text file (default: the book's Shakespeare)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TrainConfig field, e.g. max_steps=200",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from out_dir/ckpt.pt if it exists",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        cfg = TrainConfig.preset(
            args.preset, **parse_settings(args.set, TrainConfig)
        )
        result = train(
            cfg, args.data, resume=args.resume, progress=not args.quiet
        )
    except (ValueError, TypeError, TrainingDiverged) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        # 2: bad input, as argparse exits; 1: the run itself failed
        return 1 if isinstance(e, TrainingDiverged) else 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final train loss {result.history[-1]['train_loss']:.4f}")
        print(
            f"val loss {result.val_loss:.4f} nats/token, "
            f"bits per byte {result.val_bpb:.4f}"
        )
        print(f"checkpoint: {result.checkpoint}")
    return 0
