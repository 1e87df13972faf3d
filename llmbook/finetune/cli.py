"""The command line: ``python -m llmbook.finetune --help``."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

from llmbook.checkpoint import load_model, save_checkpoint
from llmbook.checks import parse_settings, settings_help
from llmbook.finetune.classify import (
    TRAIN_CHOICES,
    FinetuneError,
    evaluate_classifier,
)
from llmbook.finetune.data import DataFormatError, read_jsonl
from llmbook.finetune.finetuner import (
    TASKS,
    FinetuneConfig,
    encode_examples,
    finetune,
)
from llmbook.finetune.instruct import add_special_tokens, exact_match
from llmbook.finetune.lora import unload_lora

__all__ = ["main"]

_EPILOG = """\
Data files are JSON lines: one JSON object per line (blank lines are
skipped, other fields ignored).

  --task classify   {"text": "a passage", "label": "Hamlet"}
      The labels are those that occur in the --data file (sorted), unless
      --labels lists them; a label of --val that is not among them is an
      error.
  --task instruct   {"instruction": "Which play is this line from?",
                     "input": "Is this a dagger which I see before me,",
                     "output": "Macbeth"}
      "input" may be left out (empty). The loss is on the response only
      (--loss-on all: on every token). Three special tokens are added:
      <|instruction|>, <|response|>, <|end|>; answers stop at <|end|>.

An example longer than the model's context (the text, or the formatted
instruction with its answer, in tokens) is refused with its length and the
limit, never truncated. Errors name the file and line; they exit with
status 2.

Written to --out: ckpt.pt (the run's checkpoint; starting the same command
again resumes it), and for instruct model.pt, a plain llmbook checkpoint
(LoRA merged) that `python -m llmbook.generate` reads.

The flags set the common fields of FinetuneConfig; --set KEY=VALUE sets any
field (after the flags: it wins). min_lr defaults to --lr / 10.
"""

# filled in by the run itself, not settings
_INTERNAL = ("task", "data_sha256", "base_sha256")


def _epilog() -> str:
    values = dataclasses.replace(FinetuneConfig(), min_lr=None)
    return (
        _EPILOG
        + "\n"
        + settings_help(values, _INTERNAL, "--set KEY=VALUE; the defaults")
        .replace("min_lr=None", "min_lr=lr/10")
        .replace("out_dir=None", "out_dir='runs/finetune-TASK'")
        + "\n\nexit status: 0 finetuned; 2 bad input (a flag, a setting, a"
        " data file, a\ncheckpoint)"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llmbook.finetune",
        description="Finetune a pretrained llmbook GPT to classify text or "
        "to follow instructions.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", required=True, help="training examples (JSONL)")
    p.add_argument(
        "--val", help="held-out examples (JSONL), scored at the end"
    )
    p.add_argument(
        "--checkpoint", required=True, help="a pretrained llmbook checkpoint"
    )
    p.add_argument("--labels", help="classify: the labels, comma-separated")
    p.add_argument(
        "--lora-rank", type=int, default=0, help="LoRA rank (0: no LoRA)"
    )
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument(
        "--train",
        choices=TRAIN_CHOICES,
        default="all",
        help="without LoRA: what trains (default all)",
    )
    p.add_argument(
        "--loss-on", choices=("response", "all"), default="response"
    )
    p.add_argument(
        "--out", help="output directory (default runs/finetune-TASK)"
    )
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--checkpoint-interval", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any FinetuneConfig field, e.g. warmup=50 (list below)",
    )
    return p


def _run(args) -> int:
    try:  # the settings first: a typo costs no file reading
        overrides = parse_settings(args.set, FinetuneConfig, _INTERNAL)
    except ValueError as e:
        raise FinetuneError(str(e)) from None
    pairs = read_jsonl(args.data, args.task)
    val = read_jsonl(args.val, args.task) if args.val else []
    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise FinetuneError(f"{ckpt}: no such checkpoint file")
    try:
        model, tokenizer = load_model(ckpt)
    except Exception as e:  # not a checkpoint, damaged, a foreign format
        raise FinetuneError(
            f"{ckpt}: not a pretrained llmbook checkpoint ({e})"
        ) from None
    labels = []
    if args.labels is not None:
        labels = [x.strip() for x in args.labels.split(",") if x.strip()]
        if not labels:
            raise FinetuneError("--labels is empty")
    elif args.task == "classify":
        labels = sorted({e["label"] for _, e in pairs})
    if args.task == "instruct":
        labels = []
    cfg = FinetuneConfig(
        task=args.task,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.lr / 10,
        train=args.train,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        loss_on=args.loss_on,
        labels=labels,
        checkpoint_interval=args.checkpoint_interval,
        out_dir=args.out or f"runs/finetune-{args.task}",
        seed=args.seed,
    )
    cfg = dataclasses.replace(cfg, **overrides)
    labels = cfg.labels
    # every error of either file before any training
    tok = (
        add_special_tokens(tokenizer) if args.task == "instruct" else tokenizer
    )
    block_size = model.config.block_size
    encode_examples(args.task, pairs, tok, labels, block_size, args.data)
    if val:
        encode_examples(args.task, val, tok, labels, block_size, args.val)
    result = finetune(
        cfg, model, tokenizer, pairs, device=args.device, source=args.data
    )
    last = (
        f"last loss {result.history[-1]['loss']:.4f}"
        if result.history
        else "finished before (nothing to resume)"
    )
    print(
        f"{args.task}: {cfg.steps} steps, {last}, "
        f"{result.trainable:,} of {result.total:,} parameters trained, "
        f"{result.elapsed:.1f} s"
    )
    net, tok = result.model, result.tokenizer
    records = [e for _, e in val]
    if args.task == "classify" and records:
        ev = evaluate_classifier(net, tok, records, cfg.labels)
        lo, hi = ev["ci95"]
        print(
            f"validation accuracy {ev['accuracy']:.3f} "
            f"(95% CI {lo:.3f}-{hi:.3f}, n={ev['n']})"
        )
    if args.task == "instruct":
        plain = copy.deepcopy(net)
        unload_lora(plain)
        out = Path(cfg.out_dir) / "model.pt"
        save_checkpoint(out, plain, None, cfg, tok, step=cfg.steps)
        print(f"wrote {out}")
        if records:
            ev = exact_match(plain, tok, records)
            lo, hi = ev["ci95"]
            print(
                f"validation exact match {ev['accuracy']:.3f} "
                f"(95% CI {lo:.3f}-{hi:.3f}, n={ev['n']})"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (DataFormatError, FinetuneError) as e:
        message = " ".join(str(e).split())  # one line
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
