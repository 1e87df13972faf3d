"""The fast engines (llmbook.generate.static, .quantize, .speculative): every
fast path gives the tokens of the reference engine.

References: ``llmbook.generate.generate`` on the same model (itself tested
against a written-out loop and Hugging Face); the exact distribution of a
small Markov chain and of a tiny GPT, enumerated, for speculative sampling.
"""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmbook.generate import (
    Int8Embedding,
    Int8Linear,
    Prompts,
    SpeculativeEngine,
    StaticCacheEngine,
    dequantize,
    generate,
    greedy_accept,
    measure_bandwidth,
    model_bytes,
    probabilities,
    quantize_int8,
    quantize_per_channel,
    speculative_accept,
    to_bfloat16,
    weight_bytes,
)
from llmbook.model import GPT, GPTConfig
from llmbook.train import DRAFT_PRESETS, draft_config

MODERN = dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False)


def chi2_999(dof: int) -> float:
    """The chi-square value exceeded with probability 0.001 (Wilson and
    Hilferty's approximation, within 1% of the tables for dof >= 3)."""
    z = 3.0902  # the standard normal's 0.999 quantile
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(arch="gpt2", seed=0, sharpen=1.0, **overrides):
    """A random tiny GPT; ``sharpen`` scales the embeddings (tied to the
    head), so that its next-token distributions are far from uniform."""
    torch.manual_seed(seed)
    extra = MODERN if arch == "modern" else {}
    sizes = dict(vocab_size=64, block_size=48, n_layer=2, n_head=2, n_embd=32)
    model = GPT(GPTConfig.preset("tiny", **{**sizes, **extra, **overrides}))
    with torch.no_grad():
        model.wte.weight.mul_(sharpen)
    return model.eval()


@pytest.fixture(scope="module", params=["gpt2", "modern"])
def model(request):
    return tiny(request.param, sharpen=20.0)


PROMPTS = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3, 5, 8, 9, 7], [2]]


# ---------------------------------------------------------------------------
# The static-cache decoder


def test_prefill_logits_equal_the_model(model):
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        ref = model(ids)
    dec = StaticCacheEngine(model)
    with torch.inference_mode():
        dec.allocate(1)
        out = dec.forward(
            ids, torch.arange(ids.size(1)), torch.zeros(1, dtype=torch.long)
        )
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_step_by_step_logits_equal_one_pass(model):
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        ref = model(ids)  # (1, T, V)
    dec = StaticCacheEngine(model)
    pad = torch.zeros(1, dtype=torch.long)
    with torch.inference_mode():
        dec.allocate(1)
        rows = [
            dec.step(ids[:, t : t + 1], torch.tensor([t]), pad)
            for t in range(ids.size(1))
        ]
    torch.testing.assert_close(torch.cat(rows, 1), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_equals_generate(model, prompt):
    n = model.config.block_size - len(prompt) + 1  # fills every slot
    assert StaticCacheEngine(model).generate(
        prompt, n, temperature=0
    ) == generate(model, prompt, n, temperature=0)


def test_sampling_with_a_seed_equals_generate(model):
    kw = dict(temperature=0.8, top_k=20, top_p=0.9, seed=7)
    assert StaticCacheEngine(model).generate(PROMPTS[0], 30, **kw) == generate(
        model, PROMPTS[0], 30, **kw
    )


def test_batch_of_different_lengths_row_by_row(model):
    out = StaticCacheEngine(model).generate(PROMPTS, 20, temperature=0)
    assert [len(r) for r in out] == [20, 20, 20]
    for row, prompt in zip(out, PROMPTS):
        assert row == generate(model, prompt, 20, temperature=0)


def test_equal_length_batch_tensor_equals_generate(model):
    batch = torch.tensor([PROMPTS[0], PROMPTS[0][::-1]])
    out = StaticCacheEngine(model).generate(batch, 12, temperature=0)
    assert out == generate(model, batch, 12, temperature=0)
    assert out == [generate(model, p, 12, temperature=0) for p in batch]


def test_stop_tokens_as_in_generate(model):
    free = generate(model, PROMPTS[0], 20, temperature=0)
    stop = free[5]
    want = generate(model, PROMPTS[0], 20, temperature=0, stop_ids=[stop])
    assert (
        StaticCacheEngine(model).generate(
            PROMPTS[0], 20, temperature=0, stop_ids=[stop]
        )
        == want
    )
    assert want[-1] == stop
    # in a batch, each row ends at its own stop token
    out = StaticCacheEngine(model).generate(
        PROMPTS, 20, temperature=0, stop_ids=[stop]
    )
    assert out[0] == want
    ref = generate(model, PROMPTS, 20, temperature=0, stop_ids=[stop])
    assert out == ref


def test_decoder_reused_across_batch_sizes_and_calls(model):
    dec = StaticCacheEngine(model, max_len=32)
    a = dec.generate(PROMPTS[0], 10, temperature=0)
    dec.generate(PROMPTS, 10, temperature=0)
    assert dec.generate(PROMPTS[0], 10, temperature=0) == a
    assert dec.nbytes() == 2 * 2 * 1 * 2 * 32 * 16 * 4  # K,V x layers x...


def test_zero_new_tokens(model):
    assert StaticCacheEngine(model).generate(PROMPTS[0], 0) == []
    assert StaticCacheEngine(model).generate(PROMPTS, 0) == [[], [], []]


def continuous(engine, arrivals, n):
    """A server's loop in a few lines: greedy decoding of the prompts in
    ``arrivals`` ({step: [(row, prompt)]}), each joining the batch at its
    step while the others decode; every row stops after ``n`` tokens, and
    a finished row's slot takes the next arrival. -> {prompt index: ids}."""
    B, V = engine.batch_size, engine.model.config.vocab_size
    pos = torch.zeros(B, dtype=torch.long)  # each row's length so far
    logits = torch.zeros(B, V)
    out, owner = {}, [None] * B  # the prompt each row is writing
    step = 0
    with torch.inference_mode():
        while step in arrivals or any(o is not None for o in owner):
            for row, (i, prompt) in arrivals.get(step, []):
                assert owner[row] is None, "that row is still writing"
                logits[row] = engine.prefill_row(row, prompt)
                pos[row], owner[row], out[i] = len(prompt), i, []
            nxt = logits.argmax(-1)  # (B,)
            for row, i in enumerate(owner):
                if i is not None:
                    out[i].append(int(nxt[row]))
                    if len(out[i]) == n:
                        owner[row] = None  # done: the row is free
            logits = engine.decode_rows(nxt, pos)
            pos += torch.tensor([o is not None for o in owner])
            step += 1
    return out


def test_requests_join_and_leave_a_running_batch(model):
    """Continuous batching: prompts start while others are decoding, in a
    free row of their own (row 0 is reused by the third); each writes what
    it writes alone."""
    engine = StaticCacheEngine(model, max_len=32)
    engine.allocate(2)
    arrivals = {
        0: [(0, (0, PROMPTS[0]))],
        3: [(1, (1, PROMPTS[1]))],
        8: [(0, (2, PROMPTS[2]))],  # row 0 finished at step 8
    }
    out = continuous(engine, arrivals, 8)
    for i, prompt in enumerate(PROMPTS):
        assert out[i] == generate(model, prompt, 8, temperature=0), i
    with pytest.raises(ValueError, match="row must be an int in"):
        engine.prefill_row(2, [1, 2])
    with pytest.raises(ValueError, match="max_len = 32 slots"):
        engine.decode_rows(torch.tensor([1, 1]), torch.tensor([0, 32]))


def test_prompts_are_padded_on_the_left():
    idx, pad = Prompts.parse([[5, 6, 7], [8]], 10).left_padded()
    assert idx.tolist() == [[5, 6, 7], [0, 0, 8]] and pad.tolist() == [0, 2]
    assert not Prompts.parse([[5, 6, 7], [8]], 10).one
    prompts = Prompts.parse(torch.tensor([1, 2]), 10)
    assert prompts.left_padded()[0].tolist() == [[1, 2]] and prompts.one


@pytest.mark.slow
def test_compiled_step_equals_generate():
    model = tiny("modern", sharpen=20.0)
    dec = StaticCacheEngine(model, max_len=32, compile=True)
    secs = dec.warmup(1)
    assert secs > 0 and (1, 1) in dec.compile_seconds
    assert dec.generate(PROMPTS[1], 20, temperature=0) == generate(
        model, PROMPTS[1], 20, temperature=0
    )
    out = dec.generate(PROMPTS, 12, temperature=0)  # compiles for batch 3
    for row, prompt in zip(out, PROMPTS):
        assert row == generate(model, prompt, 12, temperature=0)


def test_decoder_bad_input(model):
    dec = StaticCacheEngine(model)
    with pytest.raises(TypeError, match="needs a GPT"):
        StaticCacheEngine(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="max_len must be"):
        StaticCacheEngine(model, max_len=model.config.block_size + 1)
    with pytest.raises(ValueError, match="cache slots"):
        dec.generate(PROMPTS[0], model.config.block_size, temperature=0)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        dec.generate([1, 64], 3)
    with pytest.raises(ValueError, match="prompt is empty"):
        dec.generate([], 3)
    with pytest.raises(ValueError, match="prompt is empty"):
        dec.generate([[1, 2], []], 3)
    with pytest.raises(TypeError, match="not text"):
        dec.generate("hello", 3)
    with pytest.raises(TypeError, match="integer token ids"):
        dec.generate(torch.tensor([1.0, 2.0]), 3)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        dec.generate([1], 3, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        dec.generate([1], 3, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        dec.generate([1], 3, top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        dec.generate([1], -1)
    with pytest.raises(ValueError, match="stop id"):
        dec.generate([1], 3, stop_ids=[99])


def test_measure_bandwidth_small():
    bw = measure_bandwidth(copy_mib=4, matvec_n=256, repeats=2)
    assert set(bw) == {"copy", "matvec"}
    assert all(v > 0 and math.isfinite(v) for v in bw.values())


# ---------------------------------------------------------------------------
# int8 and bfloat16 weights


def test_quantize_per_channel_error_bound():
    torch.manual_seed(0)
    w = torch.randn(40, 30) * torch.logspace(-3, 1, 40)[:, None]  # row scales
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (40,)
    assert int(q.abs().max()) == 127 and int(q.min()) >= -127
    err = (w - dequantize(q, scale)).abs()  # (40, 30)
    assert (err <= scale[:, None] / 2 * (1 + 1e-6)).all()  # half a step
    # relative to each row's largest weight: at most 1/254
    assert (err.amax(1) / w.abs().amax(1) <= 1 / 254 + 1e-7).all()
    # symmetric: -w quantizes to -q
    q_neg, _ = quantize_per_channel(-w)
    assert torch.equal(q_neg, -q)


def test_quantize_bfloat16_weights_bound_uses_the_stored_scale():
    torch.manual_seed(0)
    w = (torch.randn(64, 48) * 0.02).bfloat16()
    q, scale = quantize_per_channel(w)
    assert scale.dtype == torch.bfloat16
    err = (w.float() - q.float() * scale.float()[:, None]).abs()
    assert (err <= scale.float()[:, None] * (0.5 + 1e-2)).all()


def test_quantize_zero_row_and_exact_values():
    w = torch.zeros(3, 4)
    w[1] = torch.tensor([127.0, -127.0, 1.0, 0.0])
    q, scale = quantize_per_channel(w)
    assert scale.tolist() == [1.0, 1.0, 1.0]
    assert torch.equal(dequantize(q, scale), w)  # representable exactly


def test_quantize_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        quantize_per_channel(torch.ones(3))
    with pytest.raises(TypeError, match="floating point"):
        quantize_per_channel(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="inf or NaN"):
        quantize_per_channel(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="unknown kernel"):
        Int8Linear.from_linear(nn.Linear(2, 2), kernel="fast")
    with pytest.raises(ValueError, match="scale must have shape"):
        Int8Linear(torch.zeros(2, 2, dtype=torch.int8), torch.ones(3))
    with pytest.raises(TypeError, match="needs a GPT"):
        quantize_int8(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="needs a GPT"):
        to_bfloat16(nn.Linear(2, 2))


@pytest.mark.parametrize("kernel", ["dequant", "int8pack"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_matches_dequantized_weights(kernel, dtype):
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    qlin = Int8Linear.from_linear(lin, kernel=kernel)
    x = torch.randn(3, 5, 64)
    ref = F.linear(x, qlin.weight, lin.bias)  # the weights it stands for
    out = qlin(x.to(dtype)).float()
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    # and close to the float layer: the error of int8 rounding only
    assert (out - lin(x)).abs().max() < 0.02


def test_int8_model_shares_the_tied_table_and_shrinks(model):
    qm = quantize_int8(model)
    assert isinstance(qm.lm_head, Int8Linear)
    assert isinstance(qm.wte, Int8Embedding)
    assert isinstance(qm.blocks[0].attn.c_attn, Int8Linear)
    assert isinstance(model.lm_head, nn.Linear)  # the original is untouched
    # int8 weights + float scales/norms: well under half the bytes
    assert model_bytes(qm) < 0.45 * model_bytes(model)
    assert weight_bytes(qm) < 0.45 * weight_bytes(model)
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        ref, out = model(ids), qm(ids)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_weight_bytes_counts_the_head_once():
    m = tiny()  # gpt2 style: tied head, learned positions
    c = m.config
    wpe = c.block_size * c.n_embd * 4
    assert weight_bytes(m) == model_bytes(m) - wpe
    untied = tiny(tie_weights=False)
    wte = c.vocab_size * c.n_embd * 4
    assert weight_bytes(untied) == model_bytes(untied) - wpe - wte


def test_bfloat16_model():
    m = tiny("modern", sharpen=20.0)
    b = to_bfloat16(m)
    assert b.wte.weight.dtype == torch.bfloat16
    assert b.rope_cos.dtype == torch.float32
    assert m.wte.weight.dtype == torch.float32
    assert model_bytes(b) < 0.55 * model_bytes(m)


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_decoder_on_smaller_weights_equals_generate(arch, precision):
    m = tiny(arch, sharpen=20.0)
    m = to_bfloat16(m) if precision == "bf16" else quantize_int8(m)
    for prompt in PROMPTS:
        assert StaticCacheEngine(m).generate(
            prompt, 20, temperature=0
        ) == generate(m, prompt, 20, temperature=0)


# ---------------------------------------------------------------------------
# Speculative decoding


def pair(arch="gpt2", k=3, **kw):
    target = tiny(arch, seed=0, sharpen=20.0)
    draft = tiny(arch, seed=1, sharpen=20.0, n_layer=1, n_embd=16)
    return target, draft, SpeculativeEngine(target, draft, k=k, **kw)


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_speculative_greedy_equals_target_greedy(arch, k):
    target, draft, spec = pair(arch, k)
    for prompt in PROMPTS:
        n = target.config.block_size - len(prompt) - k
        assert spec.generate(prompt, n, temperature=0) == generate(
            target, prompt, n, temperature=0
        )
    s = spec.stats
    assert s.emitted == n and 0 <= s.accepted <= s.proposed == k * s.rounds


def test_speculative_greedy_with_its_own_model_accepts_everything():
    target, _, _ = pair()
    spec = SpeculativeEngine(target, target, k=4)
    out = spec.generate(PROMPTS[0], 30, temperature=0)
    assert out == generate(target, PROMPTS[0], 30, temperature=0)
    assert spec.stats.acceptance_rate == 1.0
    assert spec.stats.tokens_per_round == 5.0  # 6 rounds of 5 tokens


def test_speculative_stop_tokens():
    target, _, spec = pair()
    free = generate(target, PROMPTS[0], 20, temperature=0)
    out = spec.generate(PROMPTS[0], 20, temperature=0, stop_ids=[free[6]])
    assert out == free[: free.index(free[6]) + 1]


def test_greedy_accept_rule():
    logits = torch.full((1, 4, 5), -1.0)
    for i, best in enumerate([2, 3, 0, 4]):
        logits[0, i, best] = 1.0
    n, nxt = greedy_accept(torch.tensor([[2, 3, 1]]), logits)
    assert n.tolist() == [2] and nxt.tolist() == [0]
    n, nxt = greedy_accept(torch.tensor([[2, 3, 0]]), logits)
    assert n.tolist() == [3] and nxt.tolist() == [4]  # the bonus token


def random_chain(v, seed, sharp):
    g = torch.Generator().manual_seed(seed)
    return F.softmax(sharp * torch.randn(v, v, generator=g), dim=-1)


def spec_round(P, Q, state, k, gen):
    """One speculative round from each row's state (N,) on Markov chains
    P (target) and Q (draft), vectorised: (emitted (N, k+1), count (N,))."""
    N = state.numel()
    d, q, p = [], [], [P[state]]
    s = state
    for _ in range(k):
        q.append(Q[s])
        s = torch.multinomial(Q[s], 1, generator=gen).squeeze(1)
        d.append(s)
        p.append(P[s])
    d = torch.stack(d, 1)  # (N, k)
    n_acc, nxt = speculative_accept(
        d, torch.stack(q, 1), torch.stack(p, 1), gen
    )
    emitted = torch.cat([d, torch.zeros(N, 1, dtype=torch.long)], 1)
    emitted[torch.arange(N), n_acc] = nxt
    return emitted, n_acc + 1


def chi2(counts, probs):
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("k", [1, 3])
def test_speculative_sampling_keeps_the_target_distribution_markov(k):
    """Two tokens after state 0 of a 5-token Markov chain, 200,000 times:
    (x1, x2) must follow P[0, x1] * P[x1, x2] whatever the draft Q."""
    V, N = 5, 200_000
    P, Q = random_chain(V, 0, 1.5), random_chain(V, 1, 1.5)
    gen = torch.Generator().manual_seed(1234)
    start = torch.zeros(N, dtype=torch.long)
    first, count = spec_round(P, Q, start, k, gen)
    second, _ = spec_round(P, Q, first[:, 0], k, gen)  # when one came out
    x1 = first[:, 0]
    x2 = torch.where(count >= 2, first[:, 1], second[:, 0])
    counts = torch.bincount(x1 * V + x2, minlength=V * V).double()
    exact = (P[0][:, None] * P).flatten().double()  # (V * V,)
    assert chi2(counts, exact) < chi2_999(V * V - 1)
    # the test has power: the draft's own distribution fails it badly
    draft_joint = (Q[0][:, None] * Q).flatten().double()
    assert chi2(counts, draft_joint) > 50 * chi2_999(V * V - 1)


def test_speculative_sampling_with_tiny_gpts():
    """End to end, through both models: the first two tokens of
    speculative sampling, over 1,000 seeds, against the target's exact
    (temperature 0.9, top-k 3) distribution, enumerated."""
    V, N, kw = 4, 1000, dict(temperature=0.9, top_k=3)
    # untied heads, scaled up: peaked distributions that differ
    target = tiny("modern", seed=0, vocab_size=V, tie_weights=False)
    draft = tiny("modern", seed=3, vocab_size=V, n_layer=1, tie_weights=False)
    with torch.no_grad():
        target.lm_head.weight.mul_(45.0)
        draft.lm_head.weight.mul_(45.0)
    prompt = [1, 2]
    with torch.no_grad():
        p1 = probabilities(target(torch.tensor([prompt]))[0, -1], **kw)
        seqs = torch.tensor([prompt + [a] for a in range(V)])
        p2 = probabilities(target(seqs)[:, -1], **kw)  # (V, V)
    exact = (p1[:, None] * p2).flatten().double()
    spec = SpeculativeEngine(target, draft, k=2, max_len=16)
    counts = torch.zeros(V * V, dtype=torch.float64)
    rates = []
    for seed in range(N):
        a, b = spec.generate(prompt, 2, seed=seed, **kw)
        counts[a * V + b] += 1
        rates.append(spec.stats.acceptance_rate)
    live = exact > 0  # top-k removes some pairs: never sampled
    assert counts[~live].sum() == 0
    assert chi2(counts[live], exact[live]) < chi2_999(int(live.sum()) - 1)
    # the draft disagrees often enough that the residual rule was exercised
    assert 0.05 < sum(rates) / N < 0.95


def test_speculative_several_prompts_are_each_what_they_give_alone():
    target, draft, spec = pair(k=3)
    prompts = [[1, 2, 3], [4], [5, 6]]
    alone = [spec.generate(p, 10, temperature=0) for p in prompts]
    assert spec.generate(prompts, 10, temperature=0) == alone
    assert alone == [generate(target, p, 10, temperature=0) for p in prompts]


def test_speculative_accept_all_when_draft_is_target():
    torch.manual_seed(0)
    p = F.softmax(torch.randn(1000, 4, 6), dim=-1)
    d = torch.multinomial(p[:, :3].reshape(-1, 6), 1).view(1000, 3)
    n, _ = speculative_accept(d, p[:, :3], p)
    assert (n == 3).all()


def test_speculative_bad_input():
    target, draft, spec = pair()
    with pytest.raises(ValueError, match="vocabulary"):
        SpeculativeEngine(target, tiny(vocab_size=32))
    with pytest.raises(ValueError, match="k .draft tokens per round"):
        SpeculativeEngine(target, draft, k=0)
    with pytest.raises(TypeError, match="GPT"):
        SpeculativeEngine(target, nn.Linear(2, 2))
    with pytest.raises(NotImplementedError, match="call generate"):
        spec.stream([1, 2], 4)
    with pytest.raises(ValueError, match="cache slots"):
        spec.generate([1, 2], target.config.block_size - 3)
    with pytest.raises(ValueError, match="temperature"):
        spec.generate([1, 2], 4, temperature=-0.5)
    with pytest.raises(ValueError, match=r"\(B, k \+ 1, V\)"):
        speculative_accept(
            torch.zeros(1, 2, dtype=torch.long),
            torch.ones(1, 2, 5) / 5,
            torch.ones(1, 2, 5) / 5,
        )
    with pytest.raises(ValueError, match="unknown profile"):
        draft_config("huge")


def test_draft_presets_share_the_targets_tokenizer():
    from llmbook.train import TRAIN_PRESETS

    for profile in DRAFT_PRESETS:
        d, t = draft_config(profile), TRAIN_PRESETS[profile]
        assert (d.tokenizer, d.vocab_size) == (
            t.get("tokenizer", "book"),
            t["vocab_size"],
        )
        assert d.n_layer < t["n_layer"]
        assert d.out_dir.endswith(f"draft-{profile}")
