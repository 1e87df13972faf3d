"""Generation speed against Hugging Face ``generate`` and against the
memory-bandwidth roofline, in one run.

    python -m llmbook.bench.generate [--new-tokens 128]
        [--prompt-tokens 32] [--repeats 3] [--threads N] [--batches 1 4 16]
        [--no-compile] [--no-cache-repeats 0] [--no-quality] [--no-profile]

GPT-2 small's shape (124M parameters) with random weights (no download): a
``GPT2LMHeadModel(GPT2Config())`` is built locally and its weights are loaded
into ours with ``GPT.from_hf_gpt2``. CPU, greedy. In one process:

1. the memory bandwidth: a 256 MiB copy (bytes read + written) and an fp32
   matrix-vector product (8192 x 8192, matrix bytes), and the kernels that
   can compute a bf16 or int8 product, on the same matrix;
2. batch 1: Hugging Face ``generate`` (fp32, its KV cache), our
   ``llmbook.generate.generate`` (``Reference``: the model's forward pass, a
   KV cache that grows) and ``StaticCacheEngine``
   (``llmbook.generate.static``: a static cache; the rows "static ...") in
   fp32, bf16 and int8 weights, eager and ``torch.compile``-d (compile time
   reported apart). Contenders alternate within each repeat
   (``llmbook.timing.alternate``); medians. Each one's greedy tokens are
   compared with Hugging Face's, and its speed with the roofline: weight
   bytes read per token x tokens/s over the bandwidth;
3. the quality cost of each precision on the book's trained model (if its
   checkpoint is cached): validation loss and greedy agreement with fp32;
4. batches of 1, 4, 16 prompts of different lengths (left-padded), ours
   against Hugging Face's batched ``generate``;
5. a torch.profiler table of one decoding step of the fastest path: what
   the time goes to.

The machine may be shared: the load average is printed; single runs are
noisy, ratios within one run less so.

``transformers`` is needed (Hugging Face is the reference), but it is a
benchmark dependency, not one of the package's: it is imported where it is
used, so that the module and ``--help`` load without it.
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from llmbook.checkpoint import load_model
from llmbook.data import load_tokens
from llmbook.generate import (
    StaticCacheEngine,
    generate,
    measure_bandwidth,
    model_bytes,
    quantize_int8,
    quantize_per_channel,
    to_bfloat16,
    weight_bytes,
)
from llmbook.model import GPT
from llmbook.timing import alternate, median_seconds
from llmbook.train import TrainConfig, checkpoint_dir, evaluate


def build(seed: int = 0):
    """GPT-2 small with random weights: (ours, Hugging Face's), the same
    weights."""
    from transformers import GPT2Config, GPT2LMHeadModel  # optional

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config()).eval()
    ours = GPT.from_hf_gpt2(hf).eval()
    return ours, hf


def hf_generate(hf, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Hugging Face greedy generate, a left-padded batch: the ``n`` new
    tokens of each prompt, as our engines return them."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    )
    with torch.inference_mode():
        out = hf.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )
    return out[:, width:].tolist()


def kernel_table(n: int = 8192, repeats: int = 10) -> list[tuple[str, float]]:
    """GB/s of the weight bytes for each way to compute x @ W^T at M = 1."""
    torch.manual_seed(0)
    w = torch.randn(n, n)
    q, scale = quantize_per_channel(w)
    x = torch.randn(1, n)
    xb, wb = x.bfloat16(), w.bfloat16()
    rows = [
        ("fp32  F.linear (MKL sgemv)", lambda: F.linear(x, w), 4),
        ("bf16  F.linear (oneDNN/MKL)", lambda: F.linear(xb, wb), 2),
        (
            "int8  _weight_int8pack_mm, bf16 x",
            lambda: torch.ops.aten._weight_int8pack_mm(
                xb, q, scale.bfloat16()
            ),
            1,
        ),
        (
            "int8  _weight_int8pack_mm, fp32 x",
            lambda: torch.ops.aten._weight_int8pack_mm(x, q, scale),
            1,
        ),
        (
            "int8  dequantize, then fp32 F.linear",
            lambda: F.linear(x, q.float()) * scale,
            1,
        ),
    ]
    out = []
    with torch.inference_mode():
        for name, f, nbytes in rows:
            reps = repeats if nbytes > 1 or "pack" in name else 3
            t = median_seconds(f, reps)  # after one warm-up call
            out.append((name, w.numel() * nbytes / t / 1e9))
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--no-cache-repeats",
        type=int,
        default=0,
        help="repeats of llmbook.generate without its KV cache (slow)",
    )
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    return parser


def contenders(args, n: int, prompt: list[int]):
    """The batch-1 contenders: HF generate, ours (reference and static
    cache, eager and compiled, in each precision). -> (hf, models, engines,
    runs, precision, compile_s)."""
    ours, hf = build()
    max_len = len(prompt) + n
    bf16 = to_bfloat16(ours)
    int8_bf16 = quantize_int8(bf16)  # int8 weights, bf16 activations
    int8_fp32 = quantize_int8(ours, kernel="dequant")  # fp32 activations
    models = {
        "fp32": ours,
        "bf16": bf16,
        "int8+bf16": int8_bf16,
        "int8+fp32": int8_fp32,
    }
    engines = {}
    for prec in ("fp32", "bf16", "int8+bf16"):
        engines[f"static {prec}"] = StaticCacheEngine(models[prec], max_len)
    compile_s = {}
    if not args.no_compile:
        for prec in ("fp32", "bf16", "int8+bf16", "int8+fp32"):
            name = f"static {prec}, compiled"
            engines[name] = StaticCacheEngine(
                models[prec], max_len, compile=True
            )
            compile_s[name] = engines[name].warmup(1)
            print(f"compiling {name}: {compile_s[name]:.1f} s", flush=True)
    precision = {name: name.split()[1].rstrip(",") for name in engines}

    runs = {"HF generate fp32": lambda: hf_generate(hf, [prompt], n)[0]}
    runs["llmbook.generate fp32"] = lambda: generate(
        ours, prompt, n, temperature=0
    )
    if args.no_cache_repeats:
        runs["llmbook.generate, no cache"] = lambda: generate(
            ours, prompt, n, temperature=0, use_cache=False
        )
    for name, eng in engines.items():
        runs[name] = lambda eng=eng: eng.generate(prompt, n, temperature=0)
    precision.update({name: "fp32" for name in runs if "generate" in name})
    return hf, models, engines, runs, precision, compile_s


def time_batch_one(runs: dict, args) -> tuple[dict, dict]:
    """Every contender timed in alternation, one round at a time (to report
    progress); the no-cache one only in its first rounds. -> (seconds per
    call by name, each contender's last output)."""
    times = {name: [] for name in runs}
    outputs = {}
    for r in range(args.repeats):  # one round at a time, to report progress
        now = {
            name: f
            for name, f in runs.items()
            if "no cache" not in name or r < args.no_cache_repeats
        }
        # the first round starts with an untimed call of each: first-call
        # allocations
        for name, ts in alternate(
            now, 1, warmup=1 if r == 0 else 0, outputs=outputs
        ).items():
            times[name] += ts
        print(
            f"  repeat {r + 1} done, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return times, outputs


def report_batch_one(
    args, bw, models, runs, precision, compile_s, times, outputs
) -> tuple[str, str]:
    """The batch-1 table: tokens/s, against HF, tokens equal to HF's, the
    fraction of the roofline; compile times, rooflines, footprints. ->
    (the fastest path, the fastest fp32 path)."""
    n, t_prompt = args.new_tokens, args.prompt_tokens
    bytes_per_token = {p: weight_bytes(m) for p, m in models.items()}
    ref = outputs["HF generate fp32"]
    rate = {name: n / statistics.median(ts) for name, ts in times.items()}
    base = rate["HF generate fp32"]
    print(
        f"\nbatch 1, greedy, {t_prompt}-token prompt, {n} new tokens, "
        f"{args.repeats} alternating repeats, medians; roofline = weight "
        "bytes per token x tokens/s / bandwidth"
    )
    head = (
        f"{'contender':28s} {'tokens/s':>8s} {'vs HF':>6s} {'= HF':>7s} "
        f"{'MB/token':>8s} {'% copy':>6s} {'% matvec':>8s}"
    )
    print(head)
    print("-" * len(head))
    for name in runs:
        prec = precision[name]
        mb = bytes_per_token[prec] / 1e6
        same = sum(a == b for a, b in zip(outputs[name], ref))
        frac_copy = rate[name] * mb * 1e6 / (bw["copy"] * 1e9)
        frac_mv = rate[name] * mb * 1e6 / (bw["matvec"] * 1e9)
        print(
            f"{name:28s} {rate[name]:8.1f} {rate[name] / base:5.2f}x "
            f"{same:3d}/{len(ref):<3d} {mb:8.0f} {frac_copy:6.0%} "
            f"{frac_mv:8.0%}"
        )
    for name, s in compile_s.items():
        print(
            f"  compile time, {name}: {s:.1f} s (once per shape; not in "
            "the rates)"
        )
    print(
        "roofline at batch 1 (tokens/s = bandwidth / weight bytes): "
        + ", ".join(
            f"{p} {bw['copy'] * 1e9 / b:.0f} (copy) / "
            f"{bw['matvec'] * 1e9 / b:.0f} (matvec)"
            for p, b in bytes_per_token.items()
            if p != "int8+fp32"
        )
    )
    print(
        "footprint of the weights: "
        + ", ".join(
            f"{p} {model_bytes(m) / 2**20:.0f} MiB" for p, m in models.items()
        )
    )
    fp32_names = [
        k for k in runs if precision[k] == "fp32" and k != "HF generate fp32"
    ]
    best_fp32 = max(fp32_names, key=rate.get)
    best = max(runs, key=rate.get)
    print(
        f"\nbest fp32 path: {best_fp32}, {rate[best_fp32] / base:.2f}x HF "
        "fp32 "
        f"(goal >= 1.5x), greedy tokens equal to HF: "
        f"{outputs[best_fp32] == ref}"
    )
    print(f"best path: {best}, {rate[best] / base:.2f}x HF fp32 (goal >= 3x)")
    return best, best_fp32


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers  # optional: see the docstring

    n, t_prompt = args.new_tokens, args.prompt_tokens
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, load average {load:.1f} "
        f"on {os.cpu_count()} cores at the start"
    )

    # -- 1. bandwidth and kernels ---------------------------------------------
    bw = measure_bandwidth()
    print(
        f"\nmemory bandwidth: copy {bw['copy']:.1f} GB/s (read + write), "
        f"fp32 matrix-vector {bw['matvec']:.1f} GB/s (8192 x 8192)"
    )
    print("x @ W^T at M = 1, 8192 x 8192, GB/s of the weight bytes:")
    for name, gbs in kernel_table():
        print(f"  {name:38s} {gbs:6.1f}")

    # -- 2. batch 1 -----------------------------------------------------------
    torch.manual_seed(1)
    prompt = torch.randint(0, 50257, (t_prompt,)).tolist()
    hf, models, engines, runs, precision, compile_s = contenders(
        args, n, prompt
    )
    times, outputs = time_batch_one(runs, args)
    best, best_fp32 = report_batch_one(
        args, bw, models, runs, precision, compile_s, times, outputs
    )

    # -- 3. quality cost on the trained model ---------------------------------
    if not args.no_quality:
        quality()

    # -- 4. batches of different lengths --------------------------------------
    if args.batches:
        batch_name = best if "HF" not in best else best_fp32
        batch_throughput(hf, engines, batch_name, args, n)

    # -- 5. where the time goes -----------------------------------------------
    if not args.no_profile:
        name = best if best in engines else "static fp32"
        profile_step(engines[name], name)


def quality() -> None:
    """Validation loss and greedy agreement of each precision on the book's
    trained model, if its checkpoint is cached (no training here)."""
    path = checkpoint_dir("book") / "ckpt.pt"
    if not path.exists():
        print(
            "\nquality: no cached book checkpoint (run a chapter first); "
            "skipped"
        )
        return
    model, tok = load_model(path)
    cfg = TrainConfig.preset("book")
    val = np.asarray(load_tokens(checkpoint_dir("book") / "tokens", "val"))
    variants = {
        "fp32": model,
        "bf16": to_bfloat16(model),
        "int8+bf16": quantize_int8(to_bfloat16(model)),
        "int8+fp32": quantize_int8(model, kernel="dequant"),
    }
    prompts = [
        tok.encode(s) for s in ("HAMLET.\n", "ROMEO.\nO", "First Citizen.\n")
    ]
    n = cfg.block_size - max(len(p) for p in prompts)
    ref = [generate(model, p, n, temperature=0) for p in prompts]
    print(f"\nquality on the book's trained model ({path}):")
    print(
        f"{'precision':10s} {'val loss':>9s} {'change':>8s} "
        f"{'greedy = fp32':>14s}"
    )
    print("(greedy = fp32: tokens before the first difference from fp32's)")
    base = None
    for name, m in variants.items():
        loss = evaluate(m, val, cfg.block_size)
        base = loss if base is None else base
        agree = 0  # tokens before the first difference, over the prompts
        for p, r in zip(prompts, ref):
            out = generate(m, p, n, temperature=0)
            agree += next(
                (i for i, (a, b) in enumerate(zip(out, r)) if a != b), n
            )
        print(
            f"{name:10s} {loss:9.4f} {loss - base:+8.4f} "
            f"{agree:6d}/{len(prompts) * n}"
        )


def batch_throughput(hf, engines, best, args, n) -> None:
    """Tokens/s for batches of prompts of different lengths: Hugging Face,
    our static cache in fp32, and ``best`` (its eager engine)."""
    # eager engines: a compiled one would compile again for every batch size
    best = best.replace(", compiled", "")
    best = best if best in engines else "static int8+bf16"
    torch.manual_seed(2)
    print(
        f"\nbatches of prompts of different lengths (8 to "
        f"{args.prompt_tokens} tokens, left-padded), {n} new tokens, greedy; "
        f"tokens/s = B x {n} / time"
    )
    head = (
        f"{'B':>3s} {'HF fp32':>9s} {'static fp32':>12s} {best:>28s} "
        f"{'rows = HF':>10s}"
    )
    print(head)
    fp32 = engines["static fp32"]
    for b in args.batches:
        lengths = torch.randint(8, args.prompt_tokens + 1, (b,)).tolist()
        lengths[0] = args.prompt_tokens
        prompts = [torch.randint(0, 50257, (t,)).tolist() for t in lengths]
        contenders = {
            "hf": lambda ps=prompts: hf_generate(hf, ps, n),
            "fp32": lambda ps=prompts: fp32.generate(ps, n, temperature=0),
            "best": lambda ps=prompts: engines[best].generate(
                ps, n, temperature=0
            ),
        }
        outs = {}  # one list of new tokens per prompt, from each contender
        times = alternate(  # after a warm-up round (allocations)
            contenders, max(1, args.repeats - 1), warmup=1, outputs=outs
        )
        tps = {k: b * n / statistics.median(ts) for k, ts in times.items()}
        same = sum(a == c for a, c in zip(outs["fp32"], outs["hf"]))
        print(
            f"{b:3d} {tps['hf']:9.1f} {tps['fp32']:12.1f} {tps['best']:28.1f} "
            f"{same:5d}/{b:<4d}"
        )


def profile_step(engine: StaticCacheEngine, name: str, steps: int = 16):
    """The torch.profiler table of ``steps`` decoding steps of ``engine``
    (fewer if its cache is too short for them after a 32-token prompt)."""
    t = min(32, engine.max_len // 2)
    steps = min(steps, engine.max_len - t)  # T + steps slots at most
    prompt = list(range(1, t + 1))
    engine.generate(prompt, steps + 1, temperature=0)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.generate(prompt, steps + 1, temperature=0)
    print(f"\nprofile of {steps} decoding steps, {name} (self CPU time):")
    table = prof.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=10
    )
    print(table)


if __name__ == "__main__":
    raise SystemExit(main())
