"""Generation speed: our GPT with and without the KV cache, and Hugging Face
``transformers``' ``GPT2LMHeadModel.generate``, on the same weights.

    python benchmarks/generate.py [--new-tokens 256] [--prompt-tokens 32]
                                  [--repeats 3] [--no-cache-repeats N]
                                  [--threads N]

GPT-2 small's shape (124M parameters) with random weights (no download): a
``GPT2LMHeadModel(GPT2Config())`` is built locally and its weights are loaded
into ours with ``GPT.from_hf_gpt2``. Greedy decoding, batch 1, CPU. The
contenders alternate within each repeat; medians are reported (the machine
is shared, so single runs are noisy). The three greedy outputs are compared
token for token. ``--no-cache-repeats 1`` runs the slow contender (minutes
at 256 tokens on 2 cores) only in the first repeat.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmbook.model import GPT

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config()).eval()
    ours = GPT.from_hf_gpt2(hf).eval()
    return ours, hf


def contenders(ours, hf, prompt: torch.Tensor, n: int):
    """name -> function generating n tokens greedily after prompt (1, T)."""
    from llmbook.generate import generate

    ids = prompt[0].tolist()
    mask = torch.ones_like(prompt)

    def hf_generate():
        with torch.inference_mode():
            out = hf.generate(
                prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                do_sample=False, use_cache=True, pad_token_id=0,
            )
        return out[0, prompt.size(1):].tolist()

    return {
        "ours, KV cache": lambda: generate(ours, ids, n, temperature=0),
        "ours, no cache": lambda: generate(
            ours, ids, n, temperature=0, use_cache=False
        ),
        "transformers generate": hf_generate,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cache-repeats", type=int, default=None,
                        help="repeats of the slow no-cache run (default: all)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.no_cache_repeats is None:
        args.no_cache_repeats = args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    n = args.new_tokens
    ours, hf = build()
    torch.manual_seed(1)
    prompt = torch.randint(0, 50257, (1, args.prompt_tokens))  # (1, T)
    runs = contenders(ours, hf, prompt, n)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads; GPT-2 small shape "
          f"({ours.num_parameters() / 1e6:.1f}M parameters), random weights")
    print(f"greedy, batch 1, {args.prompt_tokens}-token prompt, {n} new tokens, "
          f"{args.repeats} alternating repeats, medians\n")

    for f in contenders(ours, hf, prompt, 4).values():
        f()  # warm-up: first-call allocations, lazy initialisation

    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {}
    for r in range(args.repeats):
        for name, f in runs.items():
            if name == "ours, no cache" and r >= args.no_cache_repeats:
                continue
            t0 = time.perf_counter()
            outputs[name] = f()
            times[name].append(time.perf_counter() - t0)
        print(f"  repeat {r + 1}: " + ", ".join(
            f"{name} {ts[-1]:.2f} s" for name, ts in times.items()
            if len(ts) == r + 1), flush=True)
    print()
    ref = outputs["transformers generate"]
    for name, out in outputs.items():
        same = sum(a == b for a, b in zip(out, ref))
        print(f"  {name:24s} {same}/{len(ref)} tokens equal to transformers'")
    print()
    rate = {name: n / statistics.median(ts) for name, ts in times.items() if ts}
    for name in rate:
        print(f"{name:24s} {rate[name]:8.1f} tokens/s   (median of "
              f"{len(times[name])}: {statistics.median(times[name]):.2f} s)")
    cache_vs_hf = rate["ours, KV cache"] / rate["transformers generate"]
    print(f"\nours cached / transformers:   {cache_vs_hf:.2f}x  (goal >= 1)")
    if times["ours, no cache"]:
        cache_vs_none = rate["ours, KV cache"] / rate["ours, no cache"]
        print(f"ours cached / ours no cache:  {cache_vs_none:.2f}x  (goal >= 5)")


if __name__ == "__main__":
    main()
