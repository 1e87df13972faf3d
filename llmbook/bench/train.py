"""Training speed: our GPT + our AdamW against Hugging Face
GPT2LMHeadModel + torch.optim.AdamW, same shape, and model FLOPs
utilisation (MFU). Needs ``transformers``.

    python -m llmbook.bench.train [--threads 2 1] [--steps 3] [--repeats 5]

Contenders run alternately in one process (ours, theirs, ours, ...;
``llmbook.timing.alternate``), each round timing ``--steps`` optimizer
steps; the medians of the rounds are compared. Shape (the issue's): vocab
50257, context 128, 4 layers, 4 heads, 256 wide, batch 16, fp32, CPU,
dropout 0 in both. MFU = achieved training FLOP/s
(model.flops_per_token() x tokens/s) over the fp32 matmul throughput
measured in the same run (a 2048 x 2048 matmul), for that model and for the
book's CPU model (TrainConfig.preset("book")). On a shared machine the
numbers are noisy; the 1-thread figures suffer least.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from llmbook.model import GPT, GPTConfig
from llmbook.timing import alternate
from llmbook.train import AdamW, LanguageModelLoss, TrainConfig, param_groups

SHAPE = dict(vocab_size=50257, block_size=128, n_layer=4, n_head=4, n_embd=256)
BATCH = 16


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul throughput: the best of ``repeats`` n x n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = alternate({"a @ b": lambda: a @ b}, repeats)["a @ b"]
    return 2 * n**3 / min(times) / 1e9


def ours_step_fn(cfg: GPTConfig, batch: int):
    torch.manual_seed(0)
    model = GPT(cfg)
    model.train()
    opt = AdamW(param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95))

    loss_fn = LanguageModelLoss(model)  # what llmbook.train.train runs

    def step(x, y):
        loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step, model


def hf_step_fn(batch: int):
    # transformers is a benchmark dependency, not one of the package's:
    # imported here, so that the module (and --help) loads without it
    with warnings.catch_warnings():  # transformers' tqdm.auto complains
        warnings.simplefilter("ignore")
        from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=SHAPE["vocab_size"],
        n_positions=SHAPE["block_size"],
        n_embd=SHAPE["n_embd"],
        n_layer=SHAPE["n_layer"],
        n_head=SHAPE["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    model.train()
    groups = param_groups(model, 0.1)
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95))
    V = config.vocab_size

    def step(x, y):
        logits = model(input_ids=x).logits  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, V), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step, model


def steps_of(step, x, y, n: int, cpu_seconds: list[float]):
    """A contender for ``alternate``: ``n`` steps on one batch. It records
    the process's CPU seconds per step in ``cpu_seconds`` too: with one
    thread on a busy machine that is the steadier measure."""

    def run():
        c = time.process_time()
        for _ in range(n):
            step(x, y)
        cpu_seconds.append((time.process_time() - c) / n)

    return run


def run(threads: int, steps: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    peak = matmul_gflops()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(
        0, SHAPE["vocab_size"], (BATCH, SHAPE["block_size"]), generator=g
    )
    y = torch.roll(x, -1, dims=1)
    ours_cfg = GPTConfig.preset("gpt2", **SHAPE, dropout=0.0)
    ours, ours_model = ours_step_fn(ours_cfg, BATCH)
    hf, _ = hf_step_fn(BATCH)

    book = TrainConfig.preset("book")
    bcfg = book.model_config(book.vocab_size)
    book_step, book_model = ours_step_fn(bcfg, book.batch_size)
    bx = torch.randint(
        0, bcfg.vocab_size, (book.batch_size, book.block_size), generator=g
    )
    by = torch.roll(bx, -1, dims=1)

    for fn, a, b in ((ours, x, y), (hf, x, y), (book_step, bx, by)):
        fn(a, b)  # warm up, one step each: allocations, kernel choice
    batches = {
        "ours": (ours, x, y),
        "hf": (hf, x, y),
        "book": (book_step, bx, by),
    }
    cpu_seconds = {k: [] for k in batches}
    seconds = alternate(
        {
            k: steps_of(fn, a, b, steps, cpu_seconds[k])
            for k, (fn, a, b) in batches.items()
        },
        repeats,
        warmup=0,  # warmed up above, with one step rather than a round
    )
    rounds = {  # tokens/s of each round
        k: [steps * batches[k][1].numel() / t for t in seconds[k]]
        for k in batches
    }
    cpu = {k: statistics.median(c) for k, c in cpu_seconds.items()}
    peak_after = matmul_gflops()
    med = {k: statistics.median(v) for k, v in rounds.items()}
    fpt = ours_model.flops_per_token(SHAPE["block_size"])
    bfpt = book_model.flops_per_token(book.block_size)
    peak = max(peak, peak_after)
    return dict(
        threads=threads,
        peak=peak,
        med=med,
        rounds=rounds,
        cpu=cpu,
        mfu_ours=med["ours"] * fpt / 1e9 / peak,
        mfu_hf=med["hf"] * fpt / 1e9 / peak,
        mfu_book=med["book"] * bfpt / 1e9 / peak,
        book_params=book_model.num_parameters(),
        book_fpt=bfpt,
        params=ours_model.num_parameters(),
        fpt=fpt,
        book_steps_per_s=med["book"] / (book.batch_size * book.block_size),
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print(
        f"shape: {SHAPE}, batch {BATCH}, fp32, CPU; torch {torch.__version__}"
    )
    for threads in args.threads:
        r = run(threads, args.steps, args.repeats)
        m = r["med"]
        print(
            f"\n== {threads} thread(s); fp32 matmul peak "
            f"{r['peak']:.0f} GFLOP/s"
        )
        print(f"{'contender':34s} {'tokens/s':>10s} {'MFU':>6s}")
        print(
            f"{'ours: GPT + our AdamW':34s} {m['ours']:10.0f} "
            f"{r['mfu_ours']:6.1%}"
        )
        print(
            f"{'HF GPT2LMHeadModel + torch AdamW':34s} {m['hf']:10.0f} "
            f"{r['mfu_hf']:6.1%}"
        )
        print(f"ratio ours / HF: {m['ours'] / m['hf']:.2f}x (goal >= 1.2x)")
        c = r["cpu"]
        print(
            f"CPU seconds per step (median): ours {c['ours']:.2f}, HF "
            f"{c['hf']:.2f}, ratio HF/ours {c['hf'] / c['ours']:.2f}x"
        )
        print(f"  rounds ours: {[round(v) for v in r['rounds']['ours']]}")
        print(f"  rounds HF:   {[round(v) for v in r['rounds']['hf']]}")
        print(
            f"book model ({r['book_params'] / 1e6:.2f} M params, "
            f"{r['book_fpt'] / 1e6:.1f} MFLOP/token): "
            f"{m['book']:.0f} tokens/s, "
            f"{r['book_steps_per_s']:.2f} steps/s, MFU {r['mfu_book']:.1%} "
            "(goal >= 50%)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
