"""llmbook.modern: the parts of today's open models, each against a
written-out reference or PyTorch, and Llama, Mistral, Qwen3 and Qwen3-MoE
loaded from Hugging Face ``transformers`` (tiny random models built
locally, never downloaded) giving the same logits."""

import pytest
import torch
import transformers as hf

from llmbook.attention import apply_rope as book_apply_rope
from llmbook.attention import precompute_rope
from llmbook.model import GPT, GPTConfig
from llmbook.modern import (
    GroupedQueryAttention,
    MixtureOfExperts,
    ModernCache,
    ModernConfig,
    ModernLM,
    apply_rope,
    balance_loss,
    from_hf,
    from_hub,
    interleave_rows,
    kv_cache_bytes,
    rope_frequencies,
    rope_tables,
    route,
    window_mask,
)

LLAMA3 = dict(
    rope_type="llama3",
    rope_theta=500000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=16,  # shorter than the test text
)
COMMON = dict(
    vocab_size=97,
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=6,
    intermediate_size=40,
    max_position_embeddings=64,
)


def randomise(model, seed=0):
    """Weights large enough that a wrong detail changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(noise if p.dim() > 1 else 1.0 + noise)
    return model.eval()


def ids(vocab=97, B=2, T=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (B, T), generator=g)


def hf_model(family, seed=0, **config):
    cls = {
        "llama": (hf.LlamaConfig, hf.LlamaForCausalLM),
        "mistral": (hf.MistralConfig, hf.MistralForCausalLM),
        "qwen3": (hf.Qwen3Config, hf.Qwen3ForCausalLM),
        "qwen3_moe": (hf.Qwen3MoeConfig, hf.Qwen3MoeForCausalLM),
    }[family]
    torch.manual_seed(seed)
    c = cls[0](**{**COMMON, **config}, attn_implementation="eager")
    return randomise(cls[1](c), seed)


# Several key/value groupings, a window shorter than the text, more experts
# than are chosen per token, Llama 3's RoPE scaling used past its context.
FAMILIES = {
    "llama-gqa": ("llama", dict(num_key_value_heads=2)),
    "llama-mqa-llama3-rope": (
        "llama",
        dict(num_key_value_heads=1, rope_parameters=LLAMA3),
    ),
    "llama-mha-tied": (
        "llama",
        dict(num_key_value_heads=6, tie_word_embeddings=True),
    ),
    "mistral-window": (
        "mistral",
        dict(num_key_value_heads=3, sliding_window=5),
    ),
    "qwen3-dense": (
        "qwen3",
        dict(num_key_value_heads=2, head_dim=10, tie_word_embeddings=True),
    ),
    "qwen3-local-global": (
        "qwen3",
        dict(
            num_key_value_heads=3,
            head_dim=12,
            use_sliding_window=True,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"] * 1
            + ["sliding_attention"],
        ),
    ),
    "qwen3-moe": (
        "qwen3_moe",
        dict(
            num_key_value_heads=2,
            head_dim=8,
            num_experts=5,
            num_experts_per_tok=2,
            moe_intermediate_size=12,
            norm_topk_prob=True,
        ),
    ),
    "qwen3-moe-top1-unnormalised": (
        "qwen3_moe",
        dict(
            num_key_value_heads=1,
            num_experts=4,
            num_experts_per_tok=1,
            moe_intermediate_size=16,
            norm_topk_prob=False,
        ),
    ),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request):
    family, config = FAMILIES[request.param]
    model = hf_model(family, **config)
    idx = ids()
    with torch.no_grad():
        ref = model(idx).logits
    return model, idx, ref


def test_same_logits_as_transformers(pair):
    model, idx, ref = pair
    with torch.no_grad():
        ours = from_hf(model)(idx)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=2e-5)


def test_same_logits_from_a_checkpoint_folder(pair, tmp_path):
    """The folder save_pretrained writes is what the Hub serves: experts
    one matrix each (``experts.3.gate_proj.weight``), the config as JSON."""
    model, idx, ref = pair
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        ours = from_hf(tmp_path)(idx)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=2e-5)


def test_interleaved_pairing_is_the_same_model(pair):
    model, idx, ref = pair
    with torch.no_grad():
        ours = from_hf(model, rope_pairing="interleaved")(idx)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=2e-5)


def test_cache_gives_the_same_logits_in_chunks(pair):
    model, idx, ref = pair
    ours = from_hf(model)
    cache = ModernCache(ours.config)
    with torch.no_grad():
        parts = [
            ours(idx[:, a:b], cache) for a, b in ((0, 9), (9, 10), (10, 21))
        ]
    torch.testing.assert_close(torch.cat(parts, 1), ref, rtol=1e-5, atol=2e-5)
    assert cache.length == 21


def test_from_hub_downloads_then_loads(tmp_path, monkeypatch):
    import huggingface_hub

    model = hf_model("qwen3", num_key_value_heads=2, head_dim=8)
    model.save_pretrained(tmp_path)
    asked = []

    def fake_download(repo_id, allow_patterns):
        asked.append((repo_id, allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    ours = from_hub("Qwen/Qwen3-0.6B", block_size=32)
    assert asked[0][0] == "Qwen/Qwen3-0.6B"
    assert ours.config.block_size == 32
    idx = ids(T=12)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(idx), model(idx).logits, rtol=1e-5, atol=2e-5
        )


def test_unsupported_models_are_refused_clearly(tmp_path):
    gpt2 = hf.GPT2LMHeadModel(hf.GPT2Config(n_layer=1, n_embd=16, n_head=2))
    with pytest.raises(ValueError, match="model type 'gpt2' is not supported"):
        from_hf(gpt2)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_hf(tmp_path)
    with pytest.raises(TypeError, match="transformers model or a checkpoint"):
        from_hf(42)
    scaled = hf_model(
        "llama",
        rope_parameters=dict(rope_type="yarn", rope_theta=1e4, factor=2.0),
    )
    with pytest.raises(ValueError, match="RoPE type 'yarn' is not supported"):
        from_hf(scaled)


def test_the_book_gpt_is_a_modern_lm():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.preset("book", n_layer=2)).eval()
    idx = ids(vocab=2048, T=40)
    with torch.no_grad():
        torch.testing.assert_close(
            ModernLM.from_gpt(gpt)(idx), gpt(idx), rtol=1e-5, atol=1e-5
        )
    with pytest.raises(ValueError, match="needs a GPT with positions='rope'"):
        ModernLM.from_gpt(GPT(GPTConfig.preset("tiny")))


# -- the parts ----------------------------------------------------------------


def test_config_errors_say_what_to_change():
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        ModernConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="head_size must be even"):
        ModernConfig(head_size=7)
    with pytest.raises(ValueError, match="window is None"):
        ModernConfig(n_layer=2, layer_types=("sliding", "full"))
    with pytest.raises(ValueError, match="layer_types has 1 entries"):
        ModernConfig(n_layer=2, window=4, layer_types=("sliding",))
    with pytest.raises(ValueError, match="cannot exceed n_expert"):
        ModernConfig(n_expert=2, n_expert_per_token=3)
    with pytest.raises(ValueError, match="exactly the keys"):
        ModernConfig(rope_scaling={"factor": 8.0})
    with pytest.raises(ValueError, match="set head_size explicitly"):
        ModernConfig(n_embd=50, n_head=4)
    c = ModernConfig(n_head=8, n_kv_head=2, window=16)
    assert c.n_group == 4 and c.layer_types == ("sliding",) * 4


def test_rope_matches_chapter_6_and_llama3_scaling_matches_hf():
    cos, sin = rope_tables(rope_frequencies(16, 500.0), 30)
    ref_cos, ref_sin = precompute_rope(16, 30, 500.0)
    torch.testing.assert_close(cos, ref_cos)
    x = torch.randn(2, 3, 30, 16)
    torch.testing.assert_close(
        apply_rope(x, cos, sin), book_apply_rope(x, ref_cos, ref_sin)
    )
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = hf.LlamaConfig(**COMMON, head_dim=64, rope_parameters=LLAMA3)
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
    scaling = dict(
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_block_size=16,
    )
    ours = rope_frequencies(64, 500000.0, scaling)
    torch.testing.assert_close(ours, ref)
    # with Llama 3.1's context of 8192: fast rotations kept, slow ones / 8
    plain = rope_frequencies(128, 500000.0)
    llama31 = rope_frequencies(
        128, 500000.0, {**scaling, "original_block_size": 8192}
    )
    wavelen = 2 * torch.pi / plain
    kept, slowed = wavelen < 8192 / 4, wavelen > 8192
    assert kept.sum() > 10 and slowed.sum() > 10
    assert torch.equal(llama31[kept], plain[kept])
    torch.testing.assert_close(llama31[slowed], plain[slowed] / 8)


def test_interleaving_rows_turns_half_pairs_into_neighbours():
    torch.manual_seed(0)
    n_head, hs, C, T = 3, 8, 5, 7
    wq, wk = torch.randn(n_head * hs, C), torch.randn(n_head * hs, C)
    x = torch.randn(T, C)
    cos, sin = rope_tables(rope_frequencies(hs), T)

    def scores(wq, wk, pairing):
        q = (x @ wq.T).view(T, n_head, hs).transpose(0, 1)  # (nh, T, hs)
        k = (x @ wk.T).view(T, n_head, hs).transpose(0, 1)
        q, k = (
            apply_rope(q, cos, sin, pairing),
            apply_rope(k, cos, sin, pairing),
        )
        return q @ k.transpose(-2, -1)

    half = scores(wq, wk, "half")
    inter = scores(
        interleave_rows(wq, n_head), interleave_rows(wk, n_head), "interleaved"
    )
    torch.testing.assert_close(inter, half)
    assert not torch.allclose(scores(wq, wk, "interleaved"), half)
    with pytest.raises(ValueError, match="even size"):
        interleave_rows(torch.randn(9, 2), 3)
    with pytest.raises(ValueError, match="pairing must be"):
        apply_rope(x, cos, sin, "pairs")


@pytest.mark.parametrize("window", [None, 1, 3, 50])
def test_window_mask_against_loops(window):
    q_pos, k_pos = torch.arange(5, 9), torch.arange(9)
    got = window_mask(q_pos, k_pos, window)
    for i, q in enumerate(q_pos.tolist()):
        for j, k in enumerate(k_pos.tolist()):
            near = window is None or q - k < window
            assert got[i, j] == (k <= q and near)


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_grouped_query_attention_is_attention_with_shared_heads(n_kv_head):
    """GQA equals multi-head attention whose key and value projections
    repeat each key/value head for its group, and its fast path (PyTorch's
    fused kernel with enable_gqa) equals the written-out one."""
    torch.manual_seed(0)
    gqa_cfg = ModernConfig(
        n_embd=32, n_head=4, n_kv_head=n_kv_head, qk_norm=True
    )
    mha_cfg = ModernConfig(n_embd=32, n_head=4, qk_norm=True)
    gqa, mha = GroupedQueryAttention(gqa_cfg), GroupedQueryAttention(mha_cfg)
    g, hs = 4 // n_kv_head, 8
    with torch.no_grad():
        for name in ("q_proj", "o_proj", "q_norm", "k_norm"):
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(n_kv_head, hs, 32)
            getattr(mha, name).weight.copy_(
                w.repeat_interleave(g, dim=0).reshape(32, 32)
            )
    x, pos = torch.randn(2, 10, 32), torch.arange(10)
    cos, sin = rope_tables(rope_frequencies(hs), 10)
    fast = gqa(x, cos, sin, pos)
    gqa.fast = False
    torch.testing.assert_close(gqa(x, cos, sin, pos), fast)
    torch.testing.assert_close(mha(x, cos, sin, pos), fast)


def test_sliding_window_cache_stops_growing_and_matches_the_formula():
    torch.manual_seed(0)
    config = ModernConfig(
        vocab_size=50,
        block_size=40,
        n_layer=3,
        n_embd=32,
        n_head=4,
        n_kv_head=2,
        window=6,
        layer_types=("sliding", "full", "sliding"),
    )
    model = ModernLM(config).eval()
    idx = ids(vocab=50, B=1, T=30)
    cache = ModernCache(config)
    with torch.no_grad():
        full = model(idx)
        steps = [model(idx[:, :3], cache)]
        for t in range(3, 30):
            steps.append(model(idx[:, t : t + 1], cache))
            # the next query sees window - 1 of the stored keys
            keep = min(t + 1, config.window - 1)
            assert cache.filled[:2] == [keep, t + 1]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    per_position = 2 * config.n_kv_head * config.head_size * 4
    assert cache.nbytes() == (30 + 2 * 5) * per_position
    assert kv_cache_bytes(config, 30, bytes_per_value=4) == cache.nbytes()
    mha = ModernConfig(n_layer=2, n_embd=64, n_head=8)
    assert kv_cache_bytes(mha, 100, batch_size=3) == 3 * 100 * 2 * 2 * 64 * 2


# -- mixture of experts -------------------------------------------------------


def hf_moe_block(n_expert=6, k=2, normalise=True, seed=0):
    from transformers.models.qwen3_moe.modeling_qwen3_moe import (
        Qwen3MoeSparseMoeBlock,
    )

    config = hf.Qwen3MoeConfig(
        hidden_size=16,
        num_experts=n_expert,
        num_experts_per_tok=k,
        moe_intermediate_size=12,
        norm_topk_prob=normalise,
    )
    return randomise(Qwen3MoeSparseMoeBlock(config), seed)


@pytest.mark.parametrize("k,normalise", [(1, True), (2, True), (3, False)])
def test_mixture_of_experts_matches_qwen3_moe(k, normalise):
    ref = hf_moe_block(k=k, normalise=normalise)
    config = ModernConfig(
        n_embd=16,
        n_head=2,
        n_expert=6,
        n_expert_per_token=k,
        expert_hidden=12,
        norm_topk=normalise,
    )
    ours = MixtureOfExperts(config)
    with torch.no_grad():
        ours.router.weight.copy_(ref.gate.weight)
        ours.gate_up.copy_(ref.experts.gate_up_proj)
        ours.down.copy_(ref.experts.down_proj)
    x = torch.randn(3, 11, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
        _, ref_weights, ref_ids = ref.gate(x.view(-1, 16))
    weights, chosen = route(ours.last_logits, k, normalise)
    torch.testing.assert_close(weights, ref_weights)
    assert torch.equal(chosen, ref_ids)
    assert ours.tokens_per_expert.sum() == 33 * k
    assert torch.equal(
        ours.tokens_per_expert, torch.bincount(chosen.flatten(), minlength=6)
    )


def test_balance_loss_matches_transformers():
    from transformers.models.qwen3_moe.modeling_qwen3_moe import (
        load_balancing_loss_func,
    )

    logits = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    for k in (1, 2, 3):
        ref = load_balancing_loss_func((logits,), 8, k)
        torch.testing.assert_close(balance_loss(logits, k), ref)
    uniform = torch.zeros(64, 8)  # every expert equally likely
    uniform[torch.arange(64), torch.arange(64) % 8] = 1e-4  # spread the picks
    assert abs(balance_loss(uniform, 2).item() - 2.0) < 1e-3
    skewed = torch.zeros(64, 8)
    skewed[:, 0] = 5.0  # everything to one expert
    assert balance_loss(skewed, 1) > 3.0


def test_moe_model_counts_active_parameters_and_trains():
    torch.manual_seed(0)
    dense = ModernLM(
        ModernConfig(vocab_size=40, n_layer=2, n_embd=32, n_head=4)
    )
    moe = ModernLM(
        ModernConfig(
            vocab_size=40,
            n_layer=2,
            n_embd=32,
            n_head=4,
            n_expert=4,
            n_expert_per_token=1,
            expert_hidden=dense.config.mlp_hidden,
        )
    )
    h = dense.config.mlp_hidden
    router = 2 * 4 * 32  # (E, C) per layer
    # per layer: 3 more experts of 3 C x H each, and the router
    assert moe.n_params() == dense.n_params() + 2 * 3 * 3 * 32 * h + router
    assert moe.n_params(active=True) == dense.n_params() + router
    assert dense.balance_loss() == 0
    idx = ids(vocab=40, T=16)
    loss = torch.nn.functional.cross_entropy(
        moe(idx).flatten(0, 1), idx.flatten()
    )
    (loss + 0.01 * moe.balance_loss()).backward()
    assert moe.blocks[0].mlp.router.weight.grad.abs().sum() > 0


def test_the_benchmark_runs_and_compares_equal_models(capsys):
    from llmbook.bench.modern import main

    flags = "--repeats 1 --batch 1 --seq 8 --new-tokens 2 --context 4"
    assert main(flags.split()) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split()[:2] for r in rows] == [
        ["Llama", "fwd+bwd"],
        ["Llama", "greedy"],
        ["Qwen3-MoE", "fwd+bwd"],
        ["Qwen3-MoE", "greedy"],
    ]
    for row in rows:  # the largest logit difference, last column
        assert float(row.split()[-1]) < 1e-4


# -- generation: the book's one engine ----------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        dict(n_kv_head=2, window=5, layer_types=("sliding", "full")),
        dict(n_kv_head=1, n_expert=4, n_expert_per_token=2),
    ],
    ids=["gqa-window", "mqa-moe"],
)
def test_the_generation_engine_runs_a_modern_lm(extra):
    """llmbook.generate drives ModernLM like GPT: left-padded rows give
    what each prompt gives alone, with the cache and without, past the
    window and past block_size (where the engine re-encodes)."""
    from llmbook.generate import generate

    torch.manual_seed(0)
    config = ModernConfig(
        vocab_size=50, block_size=24, n_layer=2, n_embd=32, n_head=4, **extra
    )
    model = randomise(ModernLM(config), seed=1)
    prompts = [[1, 2, 3], list(range(5, 16)), [7]]
    alone = [generate(model, p, 20, temperature=0) for p in prompts]
    assert generate(model, prompts, 20, temperature=0) == alone
    no_cache = generate(model, prompts, 20, temperature=0, use_cache=False)
    assert no_cache == alone
    assert len({tuple(a) for a in alone}) == 3  # the prompts matter


def test_greedy_tokens_equal_transformers_generate():
    from llmbook.generate import generate

    model = hf_model(
        "qwen3", num_key_value_heads=2, head_dim=8, max_position_embeddings=64
    )
    prompt = ids(T=9)[:1]
    with torch.no_grad():
        ref = model.generate(
            prompt,
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
            pad_token_id=0,
        )[0, 9:]
    ours = generate(from_hf(model), prompt[0].tolist(), 12, temperature=0)
    assert ours == ref.tolist()


def test_padding_mask_must_be_two_dimensional():
    model = ModernLM(ModernConfig(vocab_size=20, n_layer=1, n_embd=16))
    idx = ids(vocab=20, B=1, T=4)
    with pytest.raises(ValueError, match="padding mask"):
        model(idx, attention_mask=torch.ones(1, 4, 4, dtype=torch.bool))
