"""llmbook.train: each piece against PyTorch, then the loop: resuming after
SIGKILL, DDP against one process, divergence, bad input."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import llmbook.train as T
import llmbook.train.cli as train_cli
import llmbook.train.runs as runs
from llmbook.checkpoint import load_checkpoint, load_model
from llmbook.checks import parse_settings
from llmbook.model import GPT, GPTConfig
from llmbook.train import (
    AdamW,
    TrainConfig,
    clip_grad_norm,
    cross_entropy,
    lr_at,
    param_groups,
    train,
)
from llmbook.train.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n"
) * 60


def tiny_gpt(modern=False, seed=0):
    torch.manual_seed(seed)
    extra = (
        dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False)
        if modern
        else {}
    )
    return GPT(GPTConfig.preset("tiny", **extra))


# -- the loss -----------------------------------------------------------------


def test_cross_entropy_equals_torch():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 4  # (B, T, V)
    targets = torch.randint(0, 11, (3, 5))  # (B, T)
    ref = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert torch.allclose(cross_entropy(logits, targets), ref, atol=1e-6)
    # large logits: log-sum-exp must not overflow
    big = logits * 1e4
    ref = F.cross_entropy(big.flatten(0, 1), targets.flatten())
    assert torch.allclose(cross_entropy(big, targets), ref, rtol=1e-6)


def test_cross_entropy_gradient_and_ignore_index():
    torch.manual_seed(1)
    a = torch.randn(4, 6, 9, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    targets = torch.randint(0, 9, (4, 6))
    targets[0, :3] = -100
    ours = cross_entropy(a, targets, ignore_index=-100)
    ref = F.cross_entropy(
        b.flatten(0, 1), targets.flatten(), ignore_index=-100
    )
    assert torch.allclose(ours, ref, atol=1e-6)
    ours.backward()
    ref.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_cross_entropy_keeps_float64_and_computes_half_types_in_float32():
    torch.manual_seed(3)
    logits = torch.randn(4, 7, 13, dtype=torch.float64) * 5  # (B, T, V)
    targets = torch.randint(0, 13, (4, 7))
    targets[1, 2:] = -100
    for ignore in (None, -100):
        kw = {} if ignore is None else dict(ignore_index=ignore)
        y = targets.clamp(min=0) if ignore is None else targets
        ours = cross_entropy(logits, y, **kw)
        ref = F.cross_entropy(logits.flatten(0, 1), y.flatten(), **kw)
        assert ours.dtype == torch.float64
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    a = logits.clone().requires_grad_()
    cross_entropy(a, targets, ignore_index=-100).backward()
    b = logits.clone().requires_grad_()
    F.cross_entropy(
        b.flatten(0, 1), targets.flatten(), ignore_index=-100
    ).backward()
    assert a.grad.dtype == torch.float64
    torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=1e-12)
    y = targets.clamp(min=0)
    for half in (torch.float16, torch.bfloat16):
        z = logits.to(half)
        ours = cross_entropy(z, y)
        assert ours.dtype == torch.float32  # as F.cross_entropy under autocast
        ref = F.cross_entropy(z.float().flatten(0, 1), y.flatten())
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = F.cross_entropy(z.flatten(0, 1), y.flatten())
        assert auto.dtype == torch.float32
    f32 = logits.float()
    assert torch.equal(cross_entropy(f32, y), cross_entropy(f32.float(), y))


def test_cross_entropy_shape_mismatch():
    with pytest.raises(ValueError, match="do not match"):
        cross_entropy(
            torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)
        )


def test_fused_linear_cross_entropy_equals_torch():
    torch.manual_seed(2)
    h = torch.randn(37, 16, requires_grad=True)  # (N, C); N not a multiple
    w = (torch.randn(50, 16) * 0.3).requires_grad_()  # (V, C)
    y = torch.randint(0, 50, (37,))
    ref = F.cross_entropy(h @ w.t(), y)
    ref.backward()
    gh, gw = h.grad, w.grad
    h.grad = w.grad = None
    ours = T.LinearCrossEntropy.apply(h, w, y, 8)
    (ours * 3).backward()  # an outer factor reaches the gradients
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(h.grad, 3 * gh, atol=1e-6)
    assert torch.allclose(w.grad, 3 * gw, atol=1e-6)


@pytest.mark.parametrize("modern", [False, True])
def test_training_loss_module_equals_the_plain_path(modern):
    a, b = tiny_gpt(modern), tiny_gpt(modern)
    idx = torch.randint(0, 64, (3, 16))
    y = torch.randint(0, 64, (3, 16))
    h = a.hidden_states(idx)  # (B, T, C)
    assert torch.allclose(h @ a.lm_head.weight.t(), a(idx), atol=1e-5)
    fused = T.LanguageModelLoss(a)(idx, y)
    plain = F.cross_entropy(b(idx).flatten(0, 1), y.flatten())
    fused.backward()
    plain.backward()
    assert torch.allclose(fused, plain, atol=1e-5)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    with torch.no_grad():  # evaluation takes the plain path
        assert torch.allclose(T.LanguageModelLoss(a)(idx, y), plain, atol=1e-5)


def test_untrained_loss_is_about_ln_vocab():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (4, 16))
    loss = cross_entropy(model(idx)[:, :-1], idx[:, 1:])
    assert abs(loss.item() - math.log(64)) < 0.2


# -- AdamW, groups, schedule, clipping ----------------------------------------


def test_param_groups_exclude_norms_biases_embeddings():
    for modern in (False, True):
        model = tiny_gpt(modern)
        decay, no_decay = param_groups(model, 0.1)
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        names = {id(p): n for n, p in model.named_parameters()}
        d = {names[id(p)] for p in decay["params"]}
        nd = {names[id(p)] for p in no_decay["params"]}
        assert "wte.weight" in nd  # the tied LM head too: listed once
        assert all(p.dim() >= 2 for p in decay["params"])
        assert not any(
            "wte" in n or "wpe" in n or "ln" in n or "norm" in n for n in d
        )
        assert len(d) + len(nd) == len(list(model.parameters()))
        if not modern:
            assert any(n.endswith(".bias") for n in nd)


@pytest.mark.parametrize("modern", [False, True])
def test_adamw_equals_torch_over_steps(modern):
    ours, ref = tiny_gpt(modern), tiny_gpt(modern)
    opt = AdamW(param_groups(ours, 0.1), lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    ref_opt = torch.optim.AdamW(
        param_groups(ref, 0.1), lr=3e-3, betas=(0.9, 0.95), eps=1e-8
    )
    g = torch.Generator().manual_seed(0)
    for step in range(12):
        idx = torch.randint(0, 64, (4, 16), generator=g)
        for model, o in ((ours, opt), (ref, ref_opt)):
            for group in o.param_groups:  # a changing lr, as in training
                group["lr"] = 3e-3 * (0.5 + 0.05 * step)
            loss = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
            o.zero_grad()
            loss.backward()
            o.step()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5), name
    # and the optimizer state has the same layout as PyTorch's
    s, r = opt.state_dict()["state"][0], ref_opt.state_dict()["state"][0]
    assert s.keys() == r.keys() and float(s["step"]) == float(r["step"]) == 12


def test_adamw_bad_arguments():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr"):
        AdamW(p, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        AdamW(p, betas=(0.9, 1.0))


def test_lr_at_matches_torch_schedulers():
    lr, min_lr, warmup, max_steps = 1e-3, 1e-4, 10, 50
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(p, lr=lr)
    warm = torch.optim.lr_scheduler.LinearLR(
        opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1
    )
    got = []
    for _ in range(warmup):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        warm.step()
    opt = torch.optim.SGD(p, lr=lr)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max_steps - warmup, eta_min=min_lr
    )
    for _ in range(max_steps - warmup + 1):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        cos.step()
    ours = [
        lr_at(s, lr=lr, min_lr=min_lr, warmup=warmup, max_steps=max_steps)
        for s in range(max_steps + 1)
    ]
    assert ours == pytest.approx(got, rel=1e-9, abs=1e-12)
    assert (
        lr_at(500, lr=lr, min_lr=min_lr, warmup=warmup, max_steps=max_steps)
        == min_lr
    )


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_clip_grad_norm_equals_torch(scale):
    a, b = tiny_gpt(), tiny_gpt()
    idx = torch.randint(0, 64, (2, 16))
    for m in (a, b):
        (
            F.cross_entropy(m(idx).flatten(0, 1), idx.flatten()) * scale
        ).backward()
    ours = clip_grad_norm(a.parameters(), 1.0)
    ref = torch.nn.utils.clip_grad_norm_(b.parameters(), 1.0)
    assert torch.allclose(ours, ref, rtol=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=1e-10)


# -- the loop -----------------------------------------------------------------


def small_cfg(tmp_path, **kw):
    base = dict(
        model="tiny",
        tokenizer="own",
        vocab_size=300,
        batch_size=8,
        block_size=16,
        max_steps=12,
        warmup=3,
        lr=1e-2,
        min_lr=1e-3,
        eval_interval=4,
        eval_iters=2,
        sample_interval=0,
        checkpoint_interval=4,
        out_dir=str(tmp_path / "run"),
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture()
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(CORPUS)
    return p


def test_training_lowers_the_loss_and_writes_everything(tmp_path, corpus):
    cfg = small_cfg(
        tmp_path, max_steps=30, sample_interval=15, sample_tokens=8
    )
    res = train(cfg, corpus, progress=False, log=lambda *a: None)
    losses = [r["train_loss"] for r in res.history]
    assert losses[-1] < losses[0] - 1.0
    assert len(res.samples) == 2 and isinstance(res.samples[0][1], str)
    rows = [
        json.loads(x)
        for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert set(rows[0]) >= {
        "step",
        "train_loss",
        "val_loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "elapsed",
    }
    assert rows[3]["val_loss"] is not None and rows[2]["val_loss"] is None
    meta = json.loads((tmp_path / "run" / "tokens" / "meta.json").read_text())
    expect = T.bits_per_byte(
        res.val_loss, meta["val"]["tokens"], meta["val"]["bytes"]
    )
    assert res.val_bpb == pytest.approx(expect)
    # the checkpoint loads with weights_only=True and gives the same model
    state = torch.load(res.checkpoint, weights_only=True)
    assert state["step"] == 30
    model, tok = load_model(res.checkpoint)
    x = torch.tensor([tok.encode("ROMEO:\nBut soft")])
    assert torch.allclose(model(x), res.model.eval()(x))
    assert tok.decode(tok.encode(CORPUS[:200])) == CORPUS[:200]


def test_plot_metrics(tmp_path, corpus):
    import matplotlib

    matplotlib.use("Agg")
    train(
        small_cfg(tmp_path, max_steps=4),
        corpus,
        progress=False,
        log=lambda *a: None,
    )
    fig = T.plot_metrics(
        tmp_path / "run" / "metrics.jsonl", tmp_path / "m.png"
    )
    assert len(fig.axes) == 4 and (tmp_path / "m.png").stat().st_size > 0


def test_resume_refuses_other_settings_and_reads_back_a_finished_run(
    tmp_path, corpus
):
    quiet = dict(progress=False, log=lambda *a: None)
    first = train(small_cfg(tmp_path, max_steps=4), corpus, **quiet)
    again = train(
        small_cfg(tmp_path, max_steps=4), corpus, resume=True, **quiet
    )
    assert again.history == first.history and again.val_loss == first.val_loss
    with pytest.raises(ValueError, match="other settings.*'lr'"):
        train(
            small_cfg(tmp_path, max_steps=4, lr=0.5),
            corpus,
            resume=True,
            **quiet,
        )


def test_gradient_accumulation_equals_one_big_batch(tmp_path, corpus):
    a = train(
        small_cfg(tmp_path, max_steps=3, out_dir=str(tmp_path / "a")),
        corpus,
        progress=False,
        log=lambda *a: None,
    )
    b = train(
        small_cfg(
            tmp_path, max_steps=3, grad_accum=4, out_dir=str(tmp_path / "b")
        ),
        corpus,
        progress=False,
        log=lambda *a: None,
    )
    for ra, rb in zip(a.history, b.history):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)


def test_nan_loss_stops_naming_step_and_checkpoint(
    tmp_path, corpus, monkeypatch
):
    calls = {"n": 0}
    real = T.LanguageModelLoss.forward

    def flaky(self, idx, targets):
        calls["n"] += 1
        loss = real(self, idx, targets)
        return loss * float("nan") if calls["n"] > 6 else loss

    monkeypatch.setattr(T.LanguageModelLoss, "forward", flaky)
    cfg = small_cfg(tmp_path, checkpoint_interval=2, eval_interval=0)
    with pytest.raises(T.TrainingDiverged, match=r"nan at step 6.*ckpt\.pt"):
        train(cfg, corpus, progress=False, log=lambda *a: None)
    assert (
        torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["step"]
        == 6
    )


def test_bad_input_errors(tmp_path, corpus):
    quiet = dict(progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="does not exist"):
        train(small_cfg(tmp_path), tmp_path / "missing.txt", **quiet)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        train(small_cfg(tmp_path), empty, **quiet)
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be. " * 20)
    with pytest.raises(ValueError, match="fewer than one block"):
        train(
            small_cfg(tmp_path, block_size=64, vocab_size=260), short, **quiet
        )
    with pytest.raises(ValueError, match="does not split"):
        train(small_cfg(tmp_path, batch_size=6, grad_accum=4), corpus, **quiet)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        TrainConfig.preset("huge")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['lr_max'\]"):
        TrainConfig.preset("smoke", lr_max=1.0)
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        parse_settings(["colour=red"], TrainConfig)
    with pytest.raises(ValueError, match="not a valid int"):
        parse_settings(["max_steps=ten"], TrainConfig)
    with pytest.raises(ValueError, match="unknown dtype"):
        train(small_cfg(tmp_path, dtype="float8"), corpus, **quiet)


def test_cli_reports_errors(tmp_path, capsys):
    # bad input exits 2, as argparse and the other programs do
    assert train_main(["--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m llmbook.train: error: unknown preset")
    assert (
        train_main(["--data", str(tmp_path / "x.txt"), "--set", "wat=1"]) == 2
    )
    assert "unknown setting 'wat'" in capsys.readouterr().err
    assert (
        train_main(["--preset", "smoke", "--data", str(tmp_path / "x.txt")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_cli_exits_1_when_the_run_itself_fails(monkeypatch, capsys):
    def diverge(*args, **kwargs):
        raise T.TrainingDiverged("the loss became nan at step 3")

    monkeypatch.setattr(train_cli, "train", diverge)
    assert train_main(["--preset", "smoke"]) == 1
    assert "error: the loss became nan" in capsys.readouterr().err


def test_cli_help_lists_every_setting(capsys):
    with pytest.raises(SystemExit) as e:
        train_main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(TrainConfig):
        assert f"{field.name}=" in out, field.name
    assert "max_steps=600" in out and "exit status" in out


# -- killed and resumed; distributed ------------------------------------------


def cli(corpus, out_dir, *sets):
    cmd = [
        sys.executable,
        "-m",
        "llmbook.train",
        "--preset",
        "smoke",
        "--quiet",
        "--data",
        str(corpus),
        "--set",
        f"out_dir={out_dir}",
        "--set",
        "tokenizer=own",
        "--set",
        "vocab_size=300",
        "--set",
        "device=cpu",
        "--set",
        "sample_interval=0",
    ]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run_env():
    # one thread: identical float sums in every process, and no stalls on a
    # busy machine
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def losses(out_dir):
    rows = [
        json.loads(x)
        for x in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    return [r["step"] for r in rows], [r["train_loss"] for r in rows]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, corpus):
    steps = [
        "max_steps=60",
        "checkpoint_interval=5",
        "dropout=0.1",
        "eval_interval=10",
    ]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(
        cli(corpus, full, *steps),
        check=True,
        env=run_env(),
        cwd=ROOT,
        capture_output=True,
    )
    proc = subprocess.Popen(
        cli(corpus, cut, *steps),
        env=run_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (cut / "ckpt.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(cut / "ckpt.pt", weights_only=True)["step"]
    assert killed_at < 60, "the run finished before it could be killed"
    subprocess.run(
        cli(corpus, cut, *steps) + ["--resume"],
        check=True,
        env=run_env(),
        cwd=ROOT,
        capture_output=True,
    )
    steps_full, loss_full = losses(full)
    steps_cut, loss_cut = losses(cut)
    assert steps_cut == steps_full == list(range(1, 61))
    assert loss_cut == loss_full  # exactly, on CPU
    a = torch.load(full / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(cut / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_two_processes_match_one_with_the_same_global_batch(
    tmp_path, corpus
):
    common = ["max_steps=8", "batch_size=8", "eval_interval=0"]
    one, two = tmp_path / "one", tmp_path / "two"
    # the tokenizer is trained once, so both runs use the very same ids
    subprocess.run(
        cli(corpus, one, *common, "grad_accum=2"),
        check=True,
        env=run_env(),
        cwd=ROOT,
        capture_output=True,
    )
    two.mkdir()
    (two / "tokenizer.json").write_text((one / "tokenizer.json").read_text())
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "llmbook.train",
    ]
    cmd = torchrun + cli(corpus, two, *common, "grad_accum=1")[3:]
    out = subprocess.run(
        cmd, env=run_env(), cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    s1, l1 = losses(one)
    s2, l2 = losses(two)
    assert s1 == s2 == list(range(1, 9))
    assert l2 == pytest.approx(l1, rel=1e-5, abs=1e-6)
    a = torch.load(one / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(two / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_book_checkpoint_is_cached_and_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(
        runs, "checkpoint_dir", lambda profile: tmp_path / profile
    )
    path = T.book_checkpoint("smoke")
    stamp = path.stat().st_mtime_ns
    assert T.book_checkpoint("smoke") == path  # cached: not trained again
    assert path.stat().st_mtime_ns == stamp
    model, tok = load_model(path)
    assert model.config.vocab_size == tok.vocab_size == 512
    state = load_checkpoint(path, restore_rng=False)
    assert (
        state["train_config"]
        == TrainConfig.preset(
            "smoke", out_dir=str(tmp_path / "smoke")
        ).__dict__
    )


# -- checkpoints: paths and file objects --------------------------------------


def _saved(target, modern=True):
    from llmbook.checkpoint import save_checkpoint
    from llmbook.tokenizer import Tokenizer

    tok = Tokenizer({i: bytes([i]) for i in range(256)}, [])
    model = tiny_gpt(modern)
    opt = AdamW(param_groups(model, 0.1), lr=1e-3)
    model(torch.randint(0, 64, (2, 8))).sum().backward()
    opt.step()
    out = save_checkpoint(
        target, model, opt, TrainConfig.preset("smoke"), tok, step=3
    )
    return model, opt, out


def test_checkpoint_round_trip_through_bytesio():
    import io

    buf = io.BytesIO()
    model, opt, out = _saved(buf)
    assert out is buf and not buf.closed
    buf.seek(0)
    fresh = tiny_gpt(True, seed=1)
    fresh_opt = AdamW(param_groups(fresh, 0.1), lr=1e-3)
    state = load_checkpoint(buf, fresh, fresh_opt, restore_rng=False)
    assert state["step"] == 3
    for (k, a), b in zip(
        model.state_dict().items(), fresh.state_dict().values()
    ):
        assert torch.equal(a, b), k
    assert torch.equal(
        opt.state_dict()["state"][0]["exp_avg"],
        fresh_opt.state_dict()["state"][0]["exp_avg"],
    )
    buf.seek(0)
    loaded, tok = load_model(buf)
    idx = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        assert torch.equal(loaded(idx), model.eval()(idx))
    assert tok.vocab_size == 256


def test_checkpoint_through_an_opened_file_and_a_path(tmp_path):
    path = tmp_path / "ckpt.pt"
    with open(path, "wb") as f:
        model, _, _ = _saved(f)
    with open(path, "rb") as f:
        loaded, _ = load_model(f)
    assert torch.equal(loaded.wte.weight, model.wte.weight)
    assert _saved(tmp_path / "p.pt")[2] == tmp_path / "p.pt"
    assert torch.equal(
        load_model(str(tmp_path / "p.pt"))[0].wte.weight, model.wte.weight
    )
    import io

    with pytest.raises(ValueError, match="is not an llmbook checkpoint"):
        buf = io.BytesIO()
        torch.save(torch.zeros(2), buf)
        buf.seek(0)
        load_checkpoint(buf)
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_damaged_or_foreign_file_is_a_one_line_error(tmp_path):
    good = tmp_path / "good.pt"
    _saved(good)
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])  # a copy cut short
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": object}, pickled)  # a pickle with a class in it
    for path in [cut, text, pickled]:
        with pytest.raises(ValueError) as e:
            load_checkpoint(path)
        message = str(e.value)
        assert str(path) in message and "\n" not in message
        assert "is not an llmbook checkpoint, or it is damaged" in message
        assert "weights_only" not in message  # never suggest running code


def test_saving_to_a_path_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    model, _, _ = _saved(path)
    before = path.read_bytes()

    def dies(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        _saved(path)
    assert path.read_bytes() == before  # the old checkpoint, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_checkpoints_without_the_new_config_fields_still_load():
    # written before GPTConfig had mlp_hidden and rope_base
    import io

    buf = io.BytesIO()
    model, _, _ = _saved(buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    for key in ("mlp_hidden", "rope_base"):
        del state["model_config"][key]
    old = io.BytesIO()
    torch.save(state, old)
    old.seek(0)
    loaded, _ = load_model(old)
    assert loaded.config == model.config
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
