"""The command line: ``python -m llmbook.generate --checkpoint PATH
--prompt TEXT`` streams a continuation of TEXT to stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmbook.checkpoint import load_model
from llmbook.generate.reference import stream
from llmbook.generate.text import TextStream

__all__ = ["main"]


def _error(parser, message) -> None:
    """One line on stderr, as argparse writes its own errors."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """``python -m llmbook.generate --checkpoint PATH --prompt TEXT``: stream
    a continuation of TEXT to stdout as it is generated."""
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.generate",
        description="Continue a prompt with a trained llmbook checkpoint, "
        "printing text as it is generated.",
        epilog="The sampling flags are the fields of "
        "llmbook.generate.SamplingParams. exit status: 0 generated; 2 bad "
        "input (a flag, the checkpoint file)",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint file")
    parser.add_argument(
        "--prompt",
        default="",
        help="text to continue (empty: start from the end-of-text token)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="0 for greedy decoding"
    )
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute the whole context at every step",
    )
    parser.add_argument(
        "--ignore-eot",
        action="store_true",
        help="do not stop at the end-of-text token",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    args = parser.parse_args(argv)

    if not Path(args.checkpoint).is_file():
        _error(parser, f"no checkpoint file at {args.checkpoint}")
        return 2
    try:
        model, tokenizer = load_model(args.checkpoint)
    except ValueError as e:  # not an llmbook checkpoint, wrong format
        _error(parser, e)
        return 2
    model.to(args.device)
    eot = getattr(tokenizer, "eot_id", None)
    stops = () if args.ignore_eot or eot is None else (eot,)
    out = sys.stdout
    if hasattr(out, "reconfigure"):  # never die on a terminal's encoding
        out.reconfigure(errors="replace")
    try:
        tokens = stream(
            model,
            tokenizer.encode(args.prompt),
            args.max_new_tokens,
            use_cache=not args.no_cache,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            stop_ids=stops,
            seed=args.seed,
            eot_id=eot,
        )
    except (ValueError, TypeError) as e:
        _error(parser, e)
        return 2
    out.write(args.prompt)
    out.flush()
    text = TextStream(tokenizer)
    for t in tokens:
        if t in stops:
            break
        out.write(text.push(t))
        out.flush()
    out.write(text.flush() + "\n")
    out.flush()
    return 0
