"""llmbook.generate: distribution transforms, the decoding loop, the KV cache,
streaming text, the command line.

References: hand-computed distributions; Hugging Face ``transformers``' own
temperature/top-k/top-p logits warpers; a decoding loop written out here
that feeds the whole (cropped) context at every step, as the book first
writes it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmbook.generate import (
    TextStream,
    apply_temperature,
    generate,
    sample_next,
    stream,
    top_k_filter,
    top_p_filter,
)
from llmbook.model import GPT, GPTConfig

NEG_INF = float("-inf")
MODERN = dict(positions="rope", norm="rmsnorm", mlp="swiglu")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models gain nothing from threads, and a busy second core makes
    # 2-thread torch up to 20x slower here (FACTS.md).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(arch="gpt2", seed=0, **overrides):
    torch.manual_seed(seed)
    extra = MODERN if arch == "modern" else {}
    return GPT(GPTConfig.preset("tiny", **extra, **overrides)).eval()


@pytest.fixture(scope="module", params=["gpt2", "modern"])
def model(request):
    return tiny(request.param)


def reference_greedy(model, ids, n):
    """The plain loop: run the whole (cropped) context, take the argmax."""
    ctx = list(ids)
    bs = model.config.block_size
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ctx[-bs:]]))[0, -1]
            ctx.append(int(logits.argmax()))
    return ctx[len(ids) :]


# ---------------------------------------------------------------------------
# The transforms, against hand-computed cases


def test_temperature_raises_probabilities_to_the_power_one_over_t():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    for t in (0.5, 2.0):
        got = F.softmax(apply_temperature(p.log(), t), dim=-1)
        want = p ** (1 / t) / (p ** (1 / t)).sum()
        torch.testing.assert_close(got, want)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    assert top_k_filter(logits, 2).tolist() == [NEG_INF, 3.0, 2.0, NEG_INF]
    assert top_k_filter(logits, 1).tolist() == [NEG_INF, 3.0, NEG_INF, NEG_INF]
    assert top_k_filter(logits, 4).tolist() == logits.tolist()
    assert top_k_filter(logits, 100).tolist() == logits.tolist()
    # ties with the k-th value are kept (documented)
    tied = torch.tensor([2.0, 1.0, 2.0, 0.0])
    assert top_k_filter(tied, 1).tolist() == [2.0, NEG_INF, 2.0, NEG_INF]
    # rows are independent
    rows = torch.tensor([[1.0, 3.0, 2.0], [5.0, 4.0, 6.0]])
    assert top_k_filter(rows, 1).tolist() == [
        [NEG_INF, 3.0, NEG_INF],
        [NEG_INF, NEG_INF, 6.0],
    ]


def test_top_p_keeps_the_smallest_set_reaching_p():
    # vocabulary order scrambled: probabilities 0.15, 0.5, 0.05, 0.3
    p = torch.tensor([0.15, 0.5, 0.05, 0.3])
    cases = {  # p -> kept ids, by hand: 0.5, +0.3 = 0.8, +0.15 = 0.95, +0.05
        0.3: {1},
        0.45: {1},
        0.75: {1, 3},
        0.85: {0, 1, 3},
        0.99: {0, 1, 2, 3},
        1.0: {0, 1, 2, 3},
    }
    for top_p, kept in cases.items():
        out = top_p_filter(p.log(), top_p)
        assert {i for i in range(4) if out[i] > NEG_INF} == kept, top_p
        assert torch.equal(out[list(kept)], p.log()[list(kept)])
    # a batch of two rows, each filtered on its own
    rows = torch.stack([p, p.flip(0)]).log()
    out = top_p_filter(rows, 0.75)
    assert (out > NEG_INF).tolist() == [
        [False, True, False, True],
        [True, False, True, False],
    ]


def test_transforms_match_transformers_warpers():
    from transformers import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(8, 100) * 3  # (B, V)
    ids = torch.zeros(8, 1, dtype=torch.long)  # unused by these warpers
    torch.testing.assert_close(
        apply_temperature(logits, 0.7),
        TemperatureLogitsWarper(0.7)(ids, logits),
    )
    for k in (1, 5, 50):
        assert torch.equal(
            top_k_filter(logits, k), TopKLogitsWarper(k)(ids, logits.clone())
        )
    for p in (0.1, 0.5, 0.9, 0.99):
        assert torch.equal(
            top_p_filter(logits, p), TopPLogitsWarper(p)(ids, logits.clone())
        )


def test_sample_next_greedy_and_frequencies():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert sample_next(logits, temperature=0).tolist() == [1, 0]
    assert sample_next(logits, top_k=1).tolist() == [1, 0]  # only one left
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.6, 0.3, 0.1])
    draws = sample_next(probs.log().expand(20000, 3), generator=g)
    freq = torch.bincount(draws, minlength=3) / 20000
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    # top_k=2 never draws the third token; renormalised 2/3, 1/3
    draws = sample_next(probs.log().expand(20000, 3), top_k=2, generator=g)
    freq = torch.bincount(draws, minlength=3) / 20000
    torch.testing.assert_close(
        freq, torch.tensor([2 / 3, 1 / 3, 0.0]), atol=0.015, rtol=0
    )


# ---------------------------------------------------------------------------
# The loop


def test_greedy_matches_the_plain_loop_with_and_without_cache(model):
    bs = model.config.block_size  # 16
    torch.manual_seed(1)
    # (prompt length, new tokens): inside the window, filling it exactly,
    # well past it, and a prompt longer than the window (cropped)
    for t, n in [(1, 5), (3, bs - 3), (5, 3 * bs), (bs, 20), (2 * bs + 3, 10)]:
        ids = torch.randint(0, model.config.vocab_size, (t,)).tolist()
        want = reference_greedy(model, ids, n)
        assert generate(model, ids, n, temperature=0, use_cache=False) == want
        assert generate(model, ids, n, temperature=0, use_cache=True) == want


def test_prompt_longer_than_context_is_cropped(model):
    bs = model.config.block_size
    ids = torch.randint(0, model.config.vocab_size, (bs + 7,)).tolist()
    assert generate(model, ids, 5, temperature=0) == generate(
        model, ids[-bs:], 5, temperature=0
    )


def test_same_seed_same_text_whatever_the_global_rng(model):
    kw = dict(temperature=1.0, top_k=20, top_p=0.9, seed=123)
    torch.manual_seed(0)
    a = generate(model, [1, 2, 3], 40, **kw)
    torch.manual_seed(99)
    torch.rand(10)
    b = generate(model, [1, 2, 3], 40, **kw)
    c = generate(model, [1, 2, 3], 40, **{**kw, "use_cache": False})
    assert a == b == c
    assert generate(model, [1, 2, 3], 40, **{**kw, "seed": 124}) != a
    # seed=None draws from the global RNG, so torch.manual_seed repeats it
    torch.manual_seed(5)
    d = generate(model, [1, 2, 3], 40)
    torch.manual_seed(5)
    assert generate(model, [1, 2, 3], 40) == d


def test_stream_yields_what_generate_returns(model):
    ids = [4, 5, 6]
    want = generate(model, ids, 30, seed=7)
    got = []
    for t in stream(model, ids, 30, seed=7):
        assert isinstance(t, int)
        assert torch.is_grad_enabled()  # no_grad does not leak to the caller
        got.append(t)
    assert got == want
    tensor_prompt = generate(model, torch.tensor(ids), 30, seed=7)
    assert tensor_prompt == want


def test_batched_prompts_match_one_at_a_time(model):
    torch.manual_seed(2)
    prompts = torch.randint(0, model.config.vocab_size, (3, 6))  # (B, T)
    out = generate(model, prompts, 25, temperature=0)  # past the window
    assert [len(row) for row in out] == [25] * 3  # one list per prompt
    for row, prompt in zip(out, prompts):
        assert row == reference_greedy(model, prompt.tolist(), 25)
    steps = list(stream(model, prompts, 4, temperature=0))
    assert [s.shape for s in steps] == [(3,)] * 4
    assert torch.stack(steps, 1).tolist() == [row[:4] for row in out]
    assert generate(model, prompts, 0) == [[], [], []]
    as_lists = generate(model, prompts.tolist(), 25, temperature=0)
    assert as_lists == out  # a tensor or a list of prompts: the same


# Prompts of different lengths: lengths 1 .. 20 against block_size 16, so
# that some are cropped, and 25 new tokens, so that every row runs past the
# window (the cache refills) at a different step.
RAGGED = [
    [7],
    [1, 2, 3],
    list(range(10, 30)),
    [5, 4, 3, 2, 1, 0, 9, 8, 7],
    list(range(3, 19)),
]


@pytest.mark.parametrize("use_cache", [True, False])
def test_prompts_of_different_lengths_equal_each_prompt_alone(
    model, use_cache
):
    kw = dict(use_cache=use_cache, eot_id=0)
    prompts = RAGGED + [[]]  # an empty prompt starts from eot_id
    greedy = generate(model, prompts, 25, temperature=0, **kw)
    assert greedy == [
        generate(model, p, 25, temperature=0, **kw) for p in prompts
    ]
    assert greedy[0] == reference_greedy(model, [7], 25)
    sample = dict(temperature=0.9, top_k=40, top_p=0.95, **kw)
    seeds = [11, 12, 13, 14, 15, 16]
    rows = generate(model, prompts, 25, seed=seeds, **sample)
    assert rows == [
        generate(model, p, 25, seed=s, **sample)
        for p, s in zip(prompts, seeds)
    ]
    # one int seeds every row alike: each equals that prompt with that seed
    rows = generate(model, prompts, 25, seed=5, **sample)
    assert rows == [generate(model, p, 25, seed=5, **sample) for p in prompts]
    # 1-D tensors as prompts; a stop token ends each row where it would alone
    stop = greedy[2][3]
    tensors = [torch.tensor(p) for p in RAGGED]
    stopped = generate(
        model, tensors, 25, temperature=0, stop_ids=[stop], **kw
    )
    assert stopped == [
        generate(model, p, 25, temperature=0, stop_ids=[stop], **kw)
        for p in RAGGED
    ]
    assert stopped[2] == greedy[2][: greedy[2].index(stop) + 1]


def test_prompts_of_different_lengths_stream_as_a_batch(model):
    steps = list(stream(model, RAGGED, 6, temperature=0))
    assert [s.shape for s in steps] == [(len(RAGGED),)] * 6
    rows = torch.stack(steps, 1).tolist()
    assert rows == generate(model, RAGGED, 6, temperature=0)
    assert generate(model, RAGGED, 0) == [[]] * len(RAGGED)


def test_stop_ids_end_generation_and_are_included(model):
    ids = [1, 2, 3]
    full = generate(model, ids, 30, temperature=0)
    stop = full[4]
    first = full.index(stop)
    assert (
        generate(model, ids, 30, temperature=0, stop_ids=[stop])
        == full[: first + 1]
    )
    assert (
        generate(model, ids, 30, temperature=0, stop_ids=stop)
        == full[: first + 1]
    )
    # in a batch each row ends at its own stop token; while the others go
    # on, a stream repeats a stopped row's stop token
    torch.manual_seed(3)
    prompts = torch.randint(0, model.config.vocab_size, (2, 4))
    rows = generate(model, prompts, 30, temperature=0)
    stop = rows[0][2]
    out = generate(model, prompts, 30, temperature=0, stop_ids=[stop])
    ends = [r.index(stop) if stop in r else 29 for r in rows]
    assert [len(r) for r in out] == [end + 1 for end in ends]
    for r, full_row, end in zip(out, rows, ends):
        assert r == full_row[: end + 1]
    steps = torch.stack(
        list(stream(model, prompts, 30, temperature=0, stop_ids=[stop])), 1
    )
    assert steps.size(1) == max(ends) + 1
    for r, end in zip(steps, ends):
        assert (r[end:] == r[end]).all()


def test_empty_prompt_starts_from_end_of_text(model):
    eot = model.config.vocab_size - 1
    assert generate(
        model, [], 8, temperature=0, eot_id=eot
    ) == reference_greedy(model, [eot], 8)
    with pytest.raises(ValueError, match="prompt is empty.*eot_id="):
        generate(model, [], 8)


def test_eval_mode_during_generation_and_restored_after():
    model = tiny(dropout=0.5).train()
    a = generate(model, [1, 2], 10, temperature=0)  # dropout would vary it
    assert model.training
    assert a == reference_greedy(model.eval(), [1, 2], 10)


def test_bad_arguments_say_what_is_wrong():
    model = tiny()
    V = model.config.vocab_size
    cases = [
        (dict(top_k=0), ValueError, "top_k must be >= 1"),
        (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), ValueError, r"top_p must be in \(0, 1\]"),
        (dict(temperature=-0.1), ValueError, "temperature must be >= 0"),
        (dict(temperature=float("nan")), ValueError, "temperature must be"),
        (dict(stop_ids=[V]), ValueError, "stop id 64 is outside"),
        (dict(top_k=2.5), TypeError, "top_k must be an int"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            generate(model, [1, 2], 5, **kwargs)
        with pytest.raises(error, match=message):  # checked at the call
            stream(model, [1, 2], 5, **kwargs)
    with pytest.raises(ValueError, match=f"prompt id {V} is outside"):
        generate(model, [1, V], 5)
    with pytest.raises(ValueError, match="prompt id -1 is outside"):
        generate(model, torch.tensor([[1, -1]]), 5)
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        generate(model, torch.zeros(1, 1, 2, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="one per prompt"):
        generate(model, [[[1, 2]], [3]], 5)
    with pytest.raises(
        ValueError, match="seed is a list of 1 but there are 2"
    ):
        generate(model, [[1, 2], [3]], 5, seed=[1])
    with pytest.raises(TypeError, match="a seed must be an int"):
        generate(model, [1, 2], 5, seed=[1.5])
    assert generate(model, [1, 2], 5, seed=[4]) == generate(
        model, [1, 2], 5, seed=4
    )
    with pytest.raises(TypeError, match="integer token ids"):
        generate(model, torch.tensor([1.0, 2.0]), 5)
    with pytest.raises(TypeError, match="encode the prompt"):
        generate(model, "hello", 5)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0"):
        generate(model, [1], -1)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        top_k_filter(torch.zeros(3), 0)
    with pytest.raises(ValueError, match="top_p must be in"):
        top_p_filter(torch.zeros(3), -0.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(torch.zeros(3), 0)


# ---------------------------------------------------------------------------
# Text out


class ByteTokenizer:
    """One token per byte: the worst case for split UTF-8 characters."""

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


class ByteTokenizerWithBytes(ByteTokenizer):
    def decode_bytes(self, ids):
        return bytes(ids)


TEXT = "caf\u00e9 \u20ac5, na\u00efve \U0001f600 \u03bb\u2192x."


@pytest.mark.parametrize("tok", [ByteTokenizer(), ByteTokenizerWithBytes()])
def test_text_stream_never_splits_a_character(tok):
    ts = TextStream(tok)
    pieces = [ts.push(b) for b in TEXT.encode()] + [ts.flush()]
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in p for p in pieces)
    # an incomplete character at the very end still comes out, replaced
    ts = TextStream(tok)
    cut = "\u20ac".encode()[:2]
    assert "".join(
        [ts.push(b) for b in b"a" + cut] + [ts.flush()]
    ) == b"a".decode() + cut.decode("utf-8", errors="replace")


@pytest.mark.slow  # building GPT-2's 50k merges takes a few seconds
def test_text_stream_with_gpt2_tokenizer():
    from llmbook.tokenizer import Tokenizer

    try:
        tok = Tokenizer.from_gpt2()
    except Exception as e:  # data not fetched: python -m llmbook.data fetch
        pytest.skip(f"GPT-2 ranks unavailable: {e}")
    ids = tok.encode(TEXT)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # a split char
    ts = TextStream(tok)
    pieces = [ts.push(i) for i in ids] + [ts.flush()]
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in p for p in pieces)


# ---------------------------------------------------------------------------
# The command line


def _checkpoint(tmp_path: Path) -> Path:
    """A tiny untrained model plus a byte-level tokenizer, saved the way the
    training chapter saves its checkpoints."""
    from llmbook.checkpoint import save_checkpoint
    from llmbook.tokenizer import Tokenizer
    from llmbook.train import TrainConfig

    tok = Tokenizer(
        {i: bytes([i]) for i in range(256)},
        [],
        special_tokens=["<|endoftext|>"],
    )
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size))
    path = tmp_path / "tiny.pt"
    save_checkpoint(
        path, model, None, TrainConfig.preset("smoke"), tok, step=0
    )
    return path


def _run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "llmbook.generate", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_streams_the_same_text_as_generate(tmp_path):
    path = _checkpoint(tmp_path)
    from llmbook.checkpoint import load_model

    model, tok = load_model(path)
    prompt = "To be, or not"
    args = [
        "--checkpoint",
        str(path),
        "--prompt",
        prompt,
        "--max-new-tokens",
        "40",
        "--temperature",
        "0.9",
        "--top-k",
        "50",
        "--top-p",
        "0.95",
        "--seed",
        "3",
    ]
    ids = generate(
        model,
        tok.encode(prompt),
        40,
        temperature=0.9,
        top_k=50,
        top_p=0.95,
        seed=3,
        stop_ids=[tok.eot_id],
    )
    ids = [i for i in ids if i != tok.eot_id]
    want = prompt + tok.decode(ids) + "\n"
    result = _run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == want
    no_cache = _run_cli(*args, "--no-cache")
    assert no_cache.stdout == want
    bad = _run_cli(*args[:4], "--top-p", "1.5")
    assert bad.returncode == 2 and "top_p must be in (0, 1]" in bad.stderr
    missing = _run_cli("--checkpoint", str(tmp_path / "nope.pt"))
    assert missing.returncode == 2 and "no checkpoint" in missing.stderr
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:1000])
    damaged = _run_cli("--checkpoint", str(cut), "--prompt", "To")
    assert damaged.returncode == 2 and damaged.stderr.count("\n") == 1
    assert f"error: {cut} is not an llmbook checkpoint" in damaged.stderr
