"""llmbook.model: configuration, pieces, counts, KV cache, and equality with
Hugging Face's GPT-2 on a tiny random model built locally (no download)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.model import GPT, MLP, PRESETS, GPTConfig, RMSNorm

ARCHS = list(
    itertools.product(
        ["learned", "rope"], ["layernorm", "rmsnorm"], ["gelu", "swiglu"]
    )
)
GPT2_STYLE = dict(positions="learned", norm="layernorm", mlp="gelu", bias=True)
BOOK_STYLE = dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False)


def tiny(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny", **overrides))


def ids(cfg, B=2, T=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, cfg.vocab_size, (B, T or cfg.block_size), generator=g
    )


# -- configuration ------------------------------------------------------------


def test_defaults_are_gpt2():
    assert GPTConfig() == GPTConfig.preset("gpt2")


def test_presets():
    gpt2 = GPTConfig.preset("gpt2")
    assert (
        gpt2.vocab_size,
        gpt2.block_size,
        gpt2.n_layer,
        gpt2.n_head,
        gpt2.n_embd,
    ) == (50257, 1024, 12, 12, 768)
    assert (
        gpt2.positions,
        gpt2.norm,
        gpt2.mlp,
        gpt2.bias,
        gpt2.tie_weights,
    ) == ("learned", "layernorm", "gelu", True, True)
    book = GPTConfig.preset("book")
    assert (
        book.positions,
        book.norm,
        book.mlp,
        book.bias,
        book.tie_weights,
    ) == ("rope", "rmsnorm", "swiglu", False, True)
    assert book.vocab_size == 2048
    assert set(PRESETS) >= {"gpt2", "gpt2-medium", "book", "tiny"}
    assert GPTConfig.preset("book", n_layer=6).n_layer == 6
    assert PRESETS["book"]["n_layer"] == 4  # overrides do not leak


def test_preset_errors():
    with pytest.raises(
        ValueError, match="unknown preset 'gpt5'.*choose one of"
    ):
        GPTConfig.preset("gpt5")
    with pytest.raises(
        TypeError, match=r"unknown GPTConfig field\(s\) \['n_layers'\]"
    ):
        GPTConfig.preset("tiny", n_layers=3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(n_embd=30, n_head=4),
            "n_embd \\(30\\) must be divisible by n_head \\(4\\)",
        ),
        (
            dict(n_embd=30, n_head=2, positions="rope"),
            "RoPE needs an even head size",
        ),
        (dict(n_layer=0), "n_layer must be an int >= 1, got 0"),
        (dict(vocab_size=-5), "vocab_size must be an int >= 1"),
        (dict(block_size=2.5), "block_size must be an int >= 1"),
        (dict(n_head=True), "n_head must be an int >= 1"),
        (dict(positions="alibi"), "unknown positions 'alibi'; choose one of"),
        (dict(norm="batchnorm"), "unknown norm 'batchnorm'"),
        (dict(mlp="relu"), "unknown mlp 'relu'"),
        (dict(dropout=1.0), "dropout must be in \\[0, 1\\)"),
        (dict(dropout=-0.1), "dropout must be in \\[0, 1\\)"),
        (dict(bias="yes"), "bias must be True or False"),
    ],
)
def test_invalid_configs(overrides, message):
    # TypeError for a value of the wrong kind, ValueError out of range
    with pytest.raises((TypeError, ValueError), match=message):
        GPTConfig.preset("tiny", **overrides)


def test_gpt_needs_a_config():
    with pytest.raises(TypeError, match="GPT needs a GPTConfig"):
        GPT(dict(n_layer=2))


def test_swiglu_hidden_size_keeps_the_gelu_parameter_count():
    for n_embd in (256, 768, 1024):
        cfg = GPTConfig(n_embd=n_embd, n_head=4, mlp="swiglu")
        assert cfg.mlp_hidden % 64 == 0
        assert abs(cfg.mlp_hidden - 8 * n_embd / 3) <= 32
        swiglu = 3 * n_embd * cfg.mlp_hidden
        gelu = 8 * n_embd**2
        assert abs(swiglu - gelu) / gelu < 0.05
    assert GPTConfig(n_embd=768, mlp="swiglu").mlp_hidden == 2048
    assert GPTConfig(n_embd=256, n_head=4, mlp="swiglu").mlp_hidden == 704
    assert GPTConfig(n_embd=768).mlp_hidden == 3072


# -- the pieces ---------------------------------------------------------------


def test_rmsnorm_matches_torch():
    x = torch.randn(3, 5, 16)
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    ref = F.rms_norm(x, (16,), norm.weight, eps=norm.eps)
    torch.testing.assert_close(norm(x), ref, atol=1e-6, rtol=1e-5)


def test_gelu_mlp_matches_hf():
    from transformers.activations import NewGELUActivation

    cfg = GPTConfig.preset("tiny")
    mlp = MLP(cfg)
    x = torch.randn(2, 3, cfg.n_embd)
    ref = mlp.c_proj(NewGELUActivation()(mlp.c_fc(x)))
    torch.testing.assert_close(mlp(x), ref, atol=1e-6, rtol=1e-5)


def test_swiglu_mlp_by_hand():
    cfg = GPTConfig.preset("tiny", mlp="swiglu", bias=False)
    mlp = MLP(cfg)
    H = cfg.mlp_hidden
    x = torch.randn(2, 3, cfg.n_embd)
    w_gate, w_up = mlp.c_fc.weight[:H], mlp.c_fc.weight[H:]
    ref = (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ mlp.c_proj.weight.T
    torch.testing.assert_close(mlp(x), ref, atol=1e-6, rtol=1e-5)


# -- every architecture -------------------------------------------------------


@pytest.mark.parametrize("positions, norm, mlp", ARCHS)
@pytest.mark.parametrize("bias, tie", [(True, True), (False, False)])
def test_every_architecture_runs(positions, norm, mlp, bias, tie):
    model = tiny(
        positions=positions, norm=norm, mlp=mlp, bias=bias, tie_weights=tie
    )
    cfg = model.config
    names = dict(model.named_parameters())
    assert ("wpe.weight" in names) == (positions == "learned")
    assert (model.lm_head.weight is model.wte.weight) == tie
    assert isinstance(
        model.blocks[0].ln_1,
        RMSNorm if norm == "rmsnorm" else torch.nn.LayerNorm,
    )
    assert any(n.endswith(".bias") for n in names) == bias
    idx = ids(cfg)
    logits = model(idx)
    assert logits.shape == (2, cfg.block_size, cfg.vocab_size)
    # untrained: close to uniform, loss ~ ln(vocab_size) on random targets
    targets = ids(cfg, seed=1)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.1
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    # both attention paths compute the same function
    model.eval()
    with torch.no_grad():
        fast = model(idx)
        slow = model.set_fast_attention(False)(idx)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_causal_model_does_not_see_the_future():
    for arch in (GPT2_STYLE, BOOK_STYLE):
        model = tiny(**arch).eval()
        idx = ids(model.config, B=1)
        idx2 = idx.clone()
        idx2[0, 10:] = (idx2[0, 10:] + 1) % model.config.vocab_size
        with torch.no_grad():
            a, b = model(idx), model(idx2)
        torch.testing.assert_close(a[:, :10], b[:, :10])


def test_dropout_in_train_mode_only():
    model = tiny(dropout=0.2, **BOOK_STYLE)
    idx = ids(model.config)
    torch.manual_seed(1)
    a = model(idx)
    torch.manual_seed(2)
    b = model(idx)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(idx), model(idx))


def test_initialisation():
    model = tiny(n_layer=8, n_embd=256, n_head=4, vocab_size=512, bias=True)
    c_proj = model.blocks[0].mlp.c_proj.weight
    assert c_proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.blocks[3].attn.c_proj.weight.std().item() == pytest.approx(
        0.02 / 4, rel=0.05
    )
    assert model.blocks[0].attn.c_attn.weight.std().item() == pytest.approx(
        0.02, rel=0.05
    )
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            assert torch.all(p == 0), name
        if "ln" in name and name.endswith(".weight"):
            assert torch.all(p == 1), name


# -- counting -----------------------------------------------------------------


def meta_model(name, **overrides):
    with torch.device("meta"):  # shapes only: no memory, no time
        return GPT(GPTConfig.preset(name, **overrides))


def test_gpt2_parameter_count():
    model = meta_model("gpt2")
    assert model.num_parameters() == 124_439_808
    assert model.num_parameters(non_embedding=True) == 124_439_808 - 1024 * 768
    assert meta_model("gpt2-medium").num_parameters() == 354_823_168


def test_gpt2_parameter_count_matches_hf():
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        hf = GPT2LMHeadModel(GPT2Config())
    n_hf = sum(p.numel() for p in hf.parameters())  # tied weights count once
    assert meta_model("gpt2").num_parameters() == n_hf


@pytest.mark.parametrize("positions, norm, mlp", ARCHS)
@pytest.mark.parametrize("tie", [True, False])
def test_parameter_count_of_real_models(positions, norm, mlp, tie):
    model = tiny(positions=positions, norm=norm, mlp=mlp, tie_weights=tie)
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())
    cfg = model.config
    lookup = (cfg.block_size * cfg.n_embd if positions == "learned" else 0) + (
        0 if tie else cfg.vocab_size * cfg.n_embd
    )
    assert (
        model.num_parameters(non_embedding=True)
        == model.num_parameters() - lookup
    )


def test_gpt2_parameter_count_by_formula():
    # where GPT-2's parameters live, as the chapter tabulates them
    V, T, L, C = 50257, 1024, 12, 768
    per_block = (
        (2 * C)
        + (C * 3 * C + 3 * C)
        + (C * C + C)
        + (2 * C)
        + (C * 4 * C + 4 * C)
        + (4 * C * C + C)
    )
    total = V * C + T * C + L * per_block + 2 * C
    assert total == 124_439_808 == meta_model("gpt2").num_parameters()


def test_flops_per_token():
    model = meta_model("gpt2")
    n = model.num_parameters(non_embedding=True)
    assert model.flops_per_token() == 6 * n + 12 * 12 * 768 * 1024
    assert model.flops_per_token(seq_len=256) == 6 * n + 12 * 12 * 768 * 256


# -- bad input ----------------------------------------------------------------


def test_bad_input():
    model = tiny()
    cfg = model.config
    with pytest.raises(TypeError, match="integer token ids.*idx.long\\(\\)"):
        model(torch.zeros(1, 4))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        model([[1, 2, 3]])
    with pytest.raises(
        ValueError, match=r"shape \(B, T\), got \(4,\).*unsqueeze\(0\)"
    ):
        model(torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match=r"shape \(B, T\), got \(1, 1, 4\)"):
        model(torch.zeros(1, 1, 4, dtype=torch.long))
    with pytest.raises(
        ValueError, match="sequence length 17 exceeds block_size 16"
    ):
        model(torch.zeros(1, cfg.block_size + 1, dtype=torch.long))
    with pytest.raises(
        ValueError, match="token id 64 is out of range for vocab_size"
    ):
        model(torch.tensor([[1, 64]]))
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    # int32 ids are fine
    assert model(torch.tensor([[1, 2]], dtype=torch.int32)).shape == (1, 2, 64)


# -- the KV cache -------------------------------------------------------------


@pytest.mark.parametrize(
    "arch", [GPT2_STYLE, BOOK_STYLE], ids=["gpt2", "book"]
)
@pytest.mark.parametrize("fast", [True, False])
def test_kv_cache_matches_full_forward(arch, fast):
    model = tiny(**arch).eval().set_fast_attention(fast)
    idx = ids(model.config, B=3)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_kv_cache(3)
        assert cache.pos == 0
        chunks = [(0, 5), (5, 6), (6, 7), (7, 11), (11, 12), (12, 16)]
        parts = []
        for a, b in chunks:  # prefill, single steps, multi-token chunks
            parts.append(model(idx[:, a:b], kv_cache=cache))
            assert cache.pos == b
        torch.testing.assert_close(
            torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5
        )
        # reset and reuse: a different sequence, one token at a time
        cache.reset()
        idx2 = ids(model.config, B=3, seed=1)
        steps = [model(idx2[:, t : t + 1], kv_cache=cache) for t in range(16)]
        torch.testing.assert_close(
            torch.cat(steps, 1), model(idx2), atol=1e-5, rtol=1e-5
        )


def test_kv_cache_errors():
    model = tiny(**BOOK_STYLE).eval()
    cache = model.new_kv_cache(2)
    assert (
        cache.k[0].shape == (2, 2, 16, 16)
        and cache.k[0].dtype == torch.float32
    )
    with torch.no_grad():
        model(ids(model.config, B=2, T=10), kv_cache=cache)
        with pytest.raises(ValueError, match="KV cache overflow.*reset"):
            model(ids(model.config, B=2, T=7), kv_cache=cache)
        assert cache.pos == 10  # a refused call changes nothing
        with pytest.raises(
            ValueError, match="batch size 1.*new_kv_cache\\(1\\)"
        ):
            model(ids(model.config, B=1, T=1), kv_cache=cache)


# -- Hugging Face GPT-2 -------------------------------------------------------


def hf_tiny(seed=0, **overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = dict(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=100,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        attn_implementation="eager",
    )
    config.update(overrides)
    hf = GPT2LMHeadModel(GPT2Config(**config))
    # random biases and norm weights, so that a mix-up would show
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return hf.eval()


def test_from_hf_gpt2_matches_logits():
    hf = hf_tiny()
    model = GPT.from_hf_gpt2(hf).eval()
    cfg = model.config
    assert (
        cfg.vocab_size,
        cfg.block_size,
        cfg.n_layer,
        cfg.n_head,
        cfg.n_embd,
    ) == (100, 64, 2, 2, 32)
    assert cfg.tie_weights and model.lm_head.weight is model.wte.weight
    idx = torch.randint(
        0, 100, (3, 64), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        ref = hf(idx).logits
        ours = model(idx)
        slow = model.set_fast_attention(False)(idx)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slow, ref, atol=1e-5, rtol=1e-5)
    assert model.num_parameters() == sum(p.numel() for p in hf.parameters())


def test_from_hf_gpt2_state_dict():
    hf = hf_tiny(seed=1)
    idx = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        ref = hf(idx).logits
        model = GPT.from_hf_gpt2(hf.state_dict(), n_head=2).eval()
        torch.testing.assert_close(model(idx), ref, atol=1e-5, rtol=1e-5)
        # GPT2Model's keys have no "transformer." prefix and no lm_head
        model = GPT.from_hf_gpt2(hf.transformer.state_dict(), n_head=2).eval()
        torch.testing.assert_close(model(idx), ref, atol=1e-5, rtol=1e-5)
    # without n_head, GPT-2's 64-channel heads are assumed
    with pytest.raises(ValueError, match="cannot tell n_head.*pass n_head="):
        GPT.from_hf_gpt2(hf.state_dict())
    sd = hf_tiny(seed=3, n_embd=128, n_head=2).state_dict()
    assert GPT.from_hf_gpt2(sd).config.n_head == 2
    assert GPT.from_hf_gpt2(sd, n_head=4).config.n_head == 4


def test_from_hf_gpt2_untied_head():
    hf = hf_tiny(seed=2, tie_word_embeddings=False)
    with torch.no_grad():
        hf.lm_head.weight.copy_(torch.randn_like(hf.lm_head.weight) * 0.02)
    model = GPT.from_hf_gpt2(hf).eval()
    assert not model.config.tie_weights
    idx = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(
            model(idx), hf(idx).logits, atol=1e-5, rtol=1e-5
        )


def test_from_hf_gpt2_errors():
    with pytest.raises(
        TypeError, match="expects a transformers GPT2LMHeadModel"
    ):
        GPT.from_hf_gpt2("gpt2")
    with pytest.raises(ValueError, match="no 'wte.weight'"):
        GPT.from_hf_gpt2({"foo": torch.zeros(1)})


def test_state_dict_round_trip():
    # RoPE tables are buffers but not persistent: checkpoints hold weights only
    model = tiny(**BOOK_STYLE).eval()
    sd = model.state_dict()
    assert not any("rope" in k for k in sd)
    fresh = tiny(seed=1, **BOOK_STYLE).eval()
    fresh.load_state_dict(sd)
    assert fresh.lm_head.weight is fresh.wte.weight
    idx = ids(model.config)
    with torch.no_grad():
        torch.testing.assert_close(fresh(idx), model(idx))


# -- sizes a reader can set ---------------------------------------------------


def test_mlp_hidden_and_rope_base_can_be_set():
    cfg = GPTConfig.preset(
        "book", n_embd=512, n_head=8, mlp_hidden=1344, rope_base=500000.0
    )
    model = GPT(cfg)
    mlp = model.blocks[0].mlp
    assert mlp.c_fc.weight.shape == (2 * 1344, 512)  # gate and up, fused
    assert mlp.c_proj.weight.shape == (512, 1344)
    hs = cfg.head_size
    theta = 500000.0 ** (-2.0 * torch.arange(hs // 2) / hs)
    angles = torch.arange(cfg.block_size)[:, None] * theta  # (T, hs/2)
    torch.testing.assert_close(model.rope_cos, angles.cos())
    torch.testing.assert_close(model.rope_sin, angles.sin())
    assert GPTConfig(mlp_hidden=1000).mlp_hidden == 1000  # GELU too
    gelu = GPT(GPTConfig.preset("tiny", mlp_hidden=48)).blocks[0].mlp
    assert gelu.c_fc.weight.shape == (48, 32)


def test_the_book_preset_is_the_model_that_chapter_5_trains():
    # One "book model" across the book: the GPTConfig preset that chapter 6
    # describes, the TrainConfig preset that chapter 7 trains, and the
    # tokenizer that book_tokenizer("book") gives.
    from llmbook.tokenizer import BOOK_VOCAB_SIZES
    from llmbook.train import TrainConfig

    train = TrainConfig.preset("book")
    assert train.model_config(train.vocab_size) == GPTConfig.preset("book")
    assert BOOK_VOCAB_SIZES["book"] == train.vocab_size


def test_default_sizes_are_the_old_rule_and_old_configs_still_load():
    from llmbook.model import mlp_hidden_rule

    book = GPTConfig.preset("book")
    assert book.mlp_hidden == mlp_hidden_rule("swiglu", 256) == 704
    assert book.rope_base == 10000.0
    # a config saved before the two fields existed
    old = {
        k: v
        for k, v in vars(book).items()
        if k not in ("mlp_hidden", "rope_base")
    }
    assert GPTConfig(**old) == book
    explicit = GPTConfig.preset("book", mlp_hidden=704, rope_base=10000.0)
    a, b = (GPT(c) for c in (book, explicit))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.rope_cos, b.rope_cos)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(mlp_hidden=0), "mlp_hidden must be an int >= 1"),
        (dict(mlp_hidden=64.0), "mlp_hidden must be an int >= 1"),
        (dict(mlp_hidden=True), "mlp_hidden must be an int >= 1"),
        (
            dict(rope_base=1.0, positions="rope"),
            "rope_base must be a number > 1",
        ),
        (dict(rope_base=float("inf"), positions="rope"), "rope_base must be"),
        (
            dict(rope_base="1e4", positions="rope"),
            "rope_base must be a number",
        ),
        (
            dict(rope_base=5e5),
            "rope_base=500000.0 has no effect with positions",
        ),
    ],
)
def test_invalid_sizes(overrides, message):
    with pytest.raises((TypeError, ValueError), match=message):
        GPTConfig.preset("tiny", **overrides)


# -- padding masks and positions ----------------------------------------------


def left_pad(rows, pad_id=0):
    t = max(len(r) for r in rows)
    idx = torch.tensor([[pad_id] * (t - len(r)) + r for r in rows])
    mask = torch.tensor(
        [[False] * (t - len(r)) + [True] * len(r) for r in rows]
    )
    return idx, mask


@pytest.mark.parametrize(
    "arch", [GPT2_STYLE, BOOK_STYLE], ids=["gpt2", "book"]
)
@pytest.mark.parametrize("fast", [True, False])
def test_left_padded_rows_equal_each_prompt_alone(arch, fast):
    model = tiny(**arch).eval().set_fast_attention(fast)
    g = torch.Generator().manual_seed(0)
    rows = [
        torch.randint(0, 64, (n,), generator=g).tolist() for n in (9, 3, 16)
    ]
    idx, mask = left_pad(rows, pad_id=5)
    with torch.no_grad():
        out = model(idx, attention_mask=mask)  # (B, T, V)
        assert torch.isfinite(out).all()  # padding queries too
        for i, r in enumerate(rows):
            alone = model(torch.tensor([r]))[0]  # (T_i, V)
            torch.testing.assert_close(
                out[i, -len(r) :], alone, atol=1e-5, rtol=1e-5
            )
        # 0/1 integers as in Hugging Face work the same
        torch.testing.assert_close(model(idx, attention_mask=mask.long()), out)


@pytest.mark.parametrize(
    "arch", [GPT2_STYLE, BOOK_STYLE], ids=["gpt2", "book"]
)
@pytest.mark.parametrize("fast", [True, False])
def test_kv_cache_with_padding_mask_matches_full_forward(arch, fast):
    model = tiny(**arch).eval().set_fast_attention(fast)
    rows = [[3, 1, 4, 1, 5, 9, 2, 6], [5, 3], [5, 8, 9, 7, 9]]
    idx, mask = left_pad(rows)
    with torch.no_grad():
        full = model(idx, attention_mask=mask)
        cache = model.new_kv_cache(3)
        parts = []
        for a, b in [(0, 5), (5, 6), (6, 8)]:
            parts.append(
                model(idx[:, a:b], kv_cache=cache, attention_mask=mask[:, :b])
            )
        got = torch.cat(parts, 1)
    torch.testing.assert_close(got[mask], full[mask], atol=1e-5, rtol=1e-5)


def test_default_path_is_the_unmasked_one():
    # no mask and an all-True mask: the same logits (different kernels)
    for arch in (GPT2_STYLE, BOOK_STYLE):
        model = tiny(**arch).eval()
        idx = ids(model.config, B=2, T=10)
        ones = torch.ones(2, 10, dtype=torch.bool)
        with torch.no_grad():
            torch.testing.assert_close(
                model(idx, attention_mask=ones),
                model(idx),
                atol=1e-5,
                rtol=1e-5,
            )
            pos = torch.arange(10).expand(2, 10)
            torch.testing.assert_close(
                model(idx, position_ids=pos), model(idx), atol=1e-6, rtol=1e-6
            )


def test_a_full_attention_mask_and_explicit_positions():
    # a (B, T, T) mask that only allows the diagonal: each token alone
    model = tiny(**BOOK_STYLE).eval()
    idx = ids(model.config, B=2, T=6)
    diag = torch.eye(6, dtype=torch.bool).expand(2, 6, 6)
    with torch.no_grad():
        out = model(
            idx,
            attention_mask=diag,
            position_ids=torch.zeros(2, 6, dtype=torch.long),
        )
        alone = torch.stack(
            [model(idx[:, t : t + 1])[:, 0] for t in range(6)], 1
        )
    torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-5)


def test_padding_mask_matches_hf_gpt2():
    # Hugging Face's GPT-2 with the same mask and position ids
    hf = hf_tiny()
    model = GPT.from_hf_gpt2(hf).eval()
    idx, mask = left_pad([[5, 6, 7, 8, 9, 10], [11, 12, 13]])
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf(idx, attention_mask=mask.long(), position_ids=pos).logits
        ours = model(idx, attention_mask=mask)
    torch.testing.assert_close(ours[mask], ref[mask], atol=1e-5, rtol=1e-5)


def test_mask_and_position_errors():
    model = tiny().eval()
    idx = ids(model.config, B=2, T=5)
    cases = [
        (dict(attention_mask=torch.ones(2, 4)), TypeError, "boolean"),
        (
            dict(attention_mask=torch.ones(2, 4, dtype=torch.bool)),
            ValueError,
            r"padding mask is \(B, cached \+ new positions\) = \(2, 5\)",
        ),
        (
            dict(attention_mask=torch.ones(2, 5, 4, dtype=torch.bool)),
            ValueError,
            r"attention mask is \(B, \[nh,\] T, T_k\)",
        ),
        (
            dict(attention_mask=torch.ones(5, dtype=torch.bool)),
            ValueError,
            "must be",
        ),
        (dict(position_ids=torch.arange(5.0)), TypeError, "integer tensor"),
        (
            dict(position_ids=torch.arange(4)),
            ValueError,
            r"\(B, T\) = \(2, 5\)",
        ),
        (
            dict(position_ids=torch.arange(14, 19)),
            ValueError,
            "position_ids must be in 0 .. block_size - 1 = 15",
        ),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            model(idx, **kwargs)


def test_a_rope_block_used_alone_rotates_with_its_own_base():
    # A Block (or its attention) built on its own has no model to hand it
    # RoPE tables: it makes them from its own config, base included.
    from llmbook.attention import precompute_rope
    from llmbook.model import Block

    cfg = GPTConfig.preset(
        "book",
        vocab_size=64,
        block_size=16,
        n_layer=1,
        n_embd=32,
        n_head=2,
        rope_base=500.0,
    )
    torch.manual_seed(0)
    block = Block(cfg).eval()
    x = torch.randn(2, 10, 32)  # (B, T, C)
    own = precompute_rope(cfg.head_size, cfg.block_size, 500.0)
    other = precompute_rope(cfg.head_size, cfg.block_size, 10000.0)
    with torch.no_grad():
        alone, given = block(x), block(x, rope=own)
        wrong = block(x, rope=other)
    assert torch.equal(alone, given)
    assert not torch.allclose(alone, wrong)
