"""Today's open models, side by side: ``ModernLM`` against Hugging Face's
``LlamaForCausalLM`` and ``Qwen3MoeForCausalLM`` with the same weights.

    python -m llmbook.bench.modern [--threads 2] [--repeats 5]
        [--batch 8] [--seq 128] [--new-tokens 64] [--context 512]

For each family (a model of the book's width, random weights loaded into
ours with ``from_hf``): a forward + backward pass on (B, T) tokens, and
batch-1 greedy decoding of ``--new-tokens`` tokens after a ``--context``
prompt, ``llmbook.generate`` (the book's engine, with ``ModernCache``)
against Hugging Face's ``generate`` and cache. Contenders alternate within
one process; the script prints medians (ms), the ratio to Hugging Face's
and the largest logit difference.
``transformers`` is a benchmark dependency, imported where it is used.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from llmbook.generate import generate
from llmbook.modern import from_hf
from llmbook.timing import alternate


def hf_models(max_len: int) -> dict:
    """Llama (GQA 4:1) and Qwen3-MoE (8 experts, 2 per token) at the
    book's width, SDPA attention, random weights."""
    import transformers as hf  # optional: see the docstring

    hf.logging.set_verbosity_error()
    common = dict(
        vocab_size=2048,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        intermediate_size=704,
        max_position_embeddings=max_len,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    models = {
        "Llama": hf.LlamaForCausalLM(hf.LlamaConfig(**common)),
        "Qwen3-MoE": hf.Qwen3MoeForCausalLM(
            hf.Qwen3MoeConfig(
                **common,
                num_experts=8,
                num_experts_per_tok=2,
                moe_intermediate_size=352,
            )
        ),
    }
    with torch.no_grad():  # weights that make every part matter
        for model in models.values():
            for p in model.parameters():
                p.normal_(1.0 if p.dim() == 1 else 0.0, 0.05)
    return models


def train_step(model, ids, hf: bool):
    def step():
        out = model(ids)
        logits = out.logits if hf else out
        logits.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    return step


def greedy(model, prompt, n_new: int, hf: bool):
    """Batch-1 greedy decoding with each side's own cache."""

    @torch.no_grad()
    def run():
        if hf:
            return model.generate(
                prompt,
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                do_sample=False,
                pad_token_id=0,
            )
        return generate(model, prompt[0].tolist(), n_new, temperature=0)

    return run


def compare(args) -> None:
    max_len = max(args.seq, args.context + args.new_tokens) + 1
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2048, (args.batch, args.seq), generator=g)
    prompt = torch.randint(0, 2048, (1, args.context), generator=g)
    print(f"{'':30} {'ours ms':>9} {'HF ms':>9} {'HF / ours':>9}  logits")
    for name, hf_model in hf_models(max_len).items():
        ours = from_hf(hf_model, block_size=max_len)
        with torch.no_grad():
            gap = (ours(ids) - hf_model.eval()(ids).logits).abs().max()
        for task, make in (
            (
                f"fwd+bwd {args.batch}x{args.seq}",
                lambda m, h: train_step(m, ids, h),
            ),
            (
                f"greedy {args.new_tokens} after {args.context}",
                lambda m, h: greedy(m, prompt, args.new_tokens, h),
            ),
        ):
            times = alternate(
                {"ours": make(ours, False), "hf": make(hf_model, True)},
                args.repeats,
            )
            mine, theirs = (
                statistics.median(times[k]) for k in ("ours", "hf")
            )
            label = f"{name} {task}"
            print(
                f"{label:30} {mine * 1e3:9.1f} {theirs * 1e3:9.1f} "
                f"{theirs / mine:8.2f}x  {gap:.1e}"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--context", type=int, default=512)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} thread(s), float32, CPU")
    compare(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
