"""The training command line: ``python -m llmbook.train --preset book
--data FILE`` (or under ``torchrun``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap

from llmbook.train import TRAIN_PRESETS, TrainConfig, TrainingDiverged, train

__all__ = ["main"]


def _parse_set(items: list[str]) -> dict:
    """``key=value`` strings -> overrides, each value converted to the type
    of the field's default."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set takes key=value, got {item!r}")
        if key not in fields:
            raise ValueError(
                f"unknown setting {key!r}; settings are {sorted(fields)}"
            )
        default = getattr(TrainConfig(), key)
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out[key] = value.lower() in ("true", "1")
            elif isinstance(default, int) or key in (
                "n_layer",
                "n_head",
                "n_embd",
            ):
                out[key] = int(value)
            elif isinstance(default, float):
                out[key] = float(value)
            else:
                out[key] = value
        except ValueError:
            raise ValueError(
                f"setting {key}={value!r} is not a valid "
                f"{type(default).__name__}"
            ) from None
    return out


def _settings_help() -> str:
    """The settings --set can change, with the book preset's values."""
    book = TrainConfig.preset("book")
    items = [
        f"{f.name}={getattr(book, f.name)!r}"
        for f in dataclasses.fields(TrainConfig)
    ]
    settings = textwrap.fill(
        ", ".join(items), 78, initial_indent="  ", subsequent_indent="  "
    )
    return (
        "settings (--set KEY=VALUE; the book preset's values):\n"
        f"{settings}\n\n"
        "exit status: 0 trained; 1 the run failed (the loss diverged);\n"
        "2 bad input (a setting, the data file, a checkpoint)"
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
        cfg = TrainConfig.preset(args.preset, **_parse_set(args.set))
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
