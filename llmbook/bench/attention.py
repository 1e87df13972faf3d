"""Attention, side by side: our written-out attention, our fused (SDPA) path,
and Hugging Face GPT-2's attention (eager and SDPA), with the same weights.

    python -m llmbook.bench.attention [--threads 1] [--repeats 7]
        [--batch 8] [--seq 256] [--n-embd 256] [--n-head 4]

Each contender runs forward + backward on the same (B, T, C) input; they
alternate within one process (``llmbook.timing.alternate``, after a warm-up
round) and the script prints medians (ms) and each output's largest
difference from ours. A second table does the same for a whole model
(GPT-2 architecture, the book's sizes) against GPT2LMHeadModel. Timings are
noisy on a shared machine; the medians and the ordering matter.

``transformers`` is a benchmark dependency, not one of the package's: it is
imported where it is used, and without it the tables show ours alone.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from llmbook.attention import CausalSelfAttention
from llmbook.model import GPT, GPTConfig
from llmbook.timing import alternate


def hf_attention(config: GPTConfig, impl: str, ours: CausalSelfAttention):
    """HF's GPT2Attention with our weights (Conv1D stores the transpose)."""
    from transformers import GPT2Config  # optional: see the docstring
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    hf_config = GPT2Config(
        n_embd=config.n_embd,
        n_head=config.n_head,
        n_positions=config.block_size,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        attn_implementation=impl,
    )
    attn = GPT2Attention(hf_config, layer_idx=0)
    with torch.no_grad():
        for name in ("c_attn", "c_proj"):
            getattr(attn, name).weight.copy_(getattr(ours, name).weight.t())
            getattr(attn, name).bias.copy_(getattr(ours, name).bias)
    return attn


def hf_gpt2_model(config: GPTConfig):
    """HF's GPT2LMHeadModel of ``config``'s shape, SDPA attention, dropout
    0; raises ImportError without transformers."""
    from transformers import GPT2Config, GPT2LMHeadModel  # optional

    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=config.vocab_size,
            n_positions=config.block_size,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_embd=config.n_embd,
            bos_token_id=0,
            eos_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            attn_implementation="sdpa",
        )
    )


def medians(contenders: dict, repeats: int) -> dict:
    """Alternate the contenders after a warm-up round; return {name:
    (median seconds, output of the last call)}."""
    outputs = {}
    times = alternate(contenders, repeats, warmup=1, outputs=outputs)
    return {
        name: (statistics.median(times[name]), outputs[name]) for name in times
    }


def print_table(title: str, results: dict, reference: str) -> None:
    print(f"\n{title}")
    print(f"{'contender':<24}{'median ms':>12}{'x ours':>9}{'max |diff|':>13}")
    base = results[reference][0]
    ref_out = results[reference][1]
    for name, (seconds, out) in results.items():
        diff = (out - ref_out).abs().max().item()
        print(
            f"{name:<24}{seconds * 1e3:>12.2f}"
            f"{seconds / base:>9.2f}{diff:>13.2e}"
        )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=4)
    return ap


def layer_table(config: GPTConfig, B: int, T: int, repeats: int) -> None:
    """One attention layer (B, T, C) -> (B, T, C), forward + backward: ours
    written out and with SDPA, against Hugging Face's GPT2Attention."""
    ours = CausalSelfAttention(config)
    x = torch.randn(B, T, config.n_embd)
    mask = (
        torch.full((T, T), float("-inf")).triu(1).view(1, 1, T, T)
    )  # additive

    def run(module_fn, fast=None):
        def fn():
            if fast is not None:
                ours.fast = fast
            xg = x.detach().requires_grad_()
            y = module_fn(xg)
            y.square().mean().backward()
            return y.detach()

        return fn

    contenders = {
        "ours, written out": run(ours, fast=False),
        "ours, SDPA": run(ours, fast=True),
    }
    try:
        for impl in ("eager", "sdpa"):
            hf = hf_attention(config, impl, ours)
            contenders[f"HF GPT2Attention {impl}"] = run(
                lambda xg, hf=hf: hf(xg, attention_mask=mask)[0]
            )
    except ImportError:
        print("(transformers not installed: HF contenders skipped)")
    print_table(
        "one attention layer (B, T, C) -> (B, T, C)",
        medians(contenders, repeats),
        "ours, SDPA",
    )


def model_table(config: GPTConfig, B: int, T: int, repeats: int) -> None:
    """A whole GPT-2-shaped model, a training step's forward + backward,
    ours against GPT2LMHeadModel on the same weights."""
    contenders = {}
    idx = torch.randint(0, config.vocab_size, (B, T))
    targets = torch.randint(0, config.vocab_size, (B, T))
    try:
        hf_model = hf_gpt2_model(config)
        model = GPT.from_hf_gpt2(hf_model)
    except ImportError:
        hf_model, model = None, GPT(config)

    def step(logits_fn):
        def fn():
            logits = logits_fn()
            F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
            return logits.detach()

        return fn

    contenders["ours (GPT-2 arch)"] = step(lambda: model(idx))
    if hf_model is not None:
        contenders["HF GPT2LMHeadModel sdpa"] = step(
            lambda: hf_model(idx).logits
        )
    print_table(
        f"GPT-2 architecture, {config.n_layer} layers, vocab "
        f"{config.vocab_size}: forward + backward",
        medians(contenders, repeats),
        "ours (GPT-2 arch)",
    )


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T = args.batch, args.seq
    config = GPTConfig.preset(
        "gpt2",
        block_size=T,
        n_layer=4,
        vocab_size=4096,
        n_embd=args.n_embd,
        n_head=args.n_head,
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"B={B} T={T} C={config.n_embd} n_head={config.n_head}, fp32, "
        f"forward + backward, median of {args.repeats}"
    )
    layer_table(config, B, T, args.repeats)
    model_table(config, B, T, args.repeats)


if __name__ == "__main__":
    raise SystemExit(main())
