"""llmbook.attention against PyTorch's fused attention, and RoPE against its
definition."""

import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.attention import (
    CausalSelfAttention,
    KVCache,
    apply_rope,
    causal_attention,
    causal_mask,
    fused_causal_attention,
    precompute_rope,
)
from llmbook.model import GPTConfig


def qkv(B=2, nh=3, T=7, hs=8, t_k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    t_k = T if t_k is None else t_k
    q = torch.randn(B, nh, T, hs, generator=g)
    k = torch.randn(B, nh, t_k, hs, generator=g)
    v = torch.randn(B, nh, t_k, hs, generator=g)
    return q, k, v


# -- the formula --------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 3, 7, 8), (3, 4, 33, 16)])
def test_written_out_equals_sdpa(shape):
    q, k, v = qkv(*shape)
    ours = causal_attention(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_written_out_equals_sdpa_in_training_mode_without_dropout():
    q, k, v = qkv()
    ours = causal_attention(q, k, v, dropout_p=0.0, training=True)
    ref = F.scaled_dot_product_attention(
        q, k, v, dropout_p=0.0, is_causal=True
    )
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    q, k, v = qkv()
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    evaluated = causal_attention(q, k, v, dropout_p=0.5, training=False)
    torch.testing.assert_close(evaluated, ref, atol=1e-5, rtol=1e-5)
    torch.manual_seed(0)
    trained = causal_attention(q, k, v, dropout_p=0.5, training=True)
    assert trained.shape == ref.shape and torch.isfinite(trained).all()
    assert (trained - ref).abs().max() > 1e-3


@pytest.mark.parametrize("t_q", [1, 3, 9])
def test_fewer_queries_than_keys_are_the_last_positions(t_q):
    # queries at the end of the sequence (after cached keys) must give the
    # same rows as full causal attention over the whole sequence
    q, k, v = qkv(T=9)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for attend in (causal_attention, fused_causal_attention):
        part = attend(q[:, :, -t_q:], k, v)
        torch.testing.assert_close(
            part, full[:, :, -t_q:], atol=1e-5, rtol=1e-5
        )


def test_more_queries_than_keys_is_an_error():
    q, k, v = qkv(T=5, t_k=3)
    with pytest.raises(ValueError, match="T_q <= T_k"):
        causal_attention(q, k, v)


def test_causal_mask():
    assert causal_mask(3, 3).tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]
    assert causal_mask(2, 4).tolist() == [
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_future_does_not_leak():
    q, k, v = qkv(T=6)
    out = causal_attention(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 4:] += 10.0
    v2[:, :, 4:] -= 10.0
    out2 = causal_attention(q, k2, v2)
    torch.testing.assert_close(out[:, :, :4], out2[:, :, :4])
    assert not torch.allclose(out[:, :, 4:], out2[:, :, 4:])


# -- RoPE ---------------------------------------------------------------------


def test_rope_tables():
    cos, sin = precompute_rope(8, 5)
    assert cos.shape == sin.shape == (5, 4)
    theta = 10000.0 ** (-torch.arange(0, 8, 2).float() / 8)
    torch.testing.assert_close(cos[3], torch.cos(3 * theta))
    torch.testing.assert_close(sin[3], torch.sin(3 * theta))
    torch.testing.assert_close(cos[0], torch.ones(4))


@pytest.mark.parametrize("hs", [0, 7, -2])
def test_rope_needs_even_head_size(hs):
    with pytest.raises(ValueError, match="even"):
        precompute_rope(hs, 4)


def rope_as_complex(x, m, base=10000.0):
    """RoFormer's definition: pair (x_i, x_{i+hs/2}) as the complex number
    x_i + i x_{i+hs/2} and multiply it by e^{i m theta_j} (rotate-half
    pairing)."""
    hs = x.size(-1)
    theta = base ** (-2.0 * torch.arange(hs // 2, dtype=torch.float64) / hs)
    z = torch.complex(x[..., : hs // 2].double(), x[..., hs // 2 :].double())
    z = z * torch.polar(torch.ones_like(theta), m * theta)
    return torch.cat((z.real, z.imag), dim=-1).float()


def test_rope_equals_complex_rotation():
    cos, sin = precompute_rope(16, 64)
    x = torch.randn(2, 3, 5, 16)
    for offset in (0, 7, 59):
        ours = apply_rope(x, cos, sin, offset=offset)
        for t in range(5):
            ref = rope_as_complex(x[:, :, t], offset + t)
            torch.testing.assert_close(
                ours[:, :, t], ref, atol=1e-4, rtol=1e-4
            )


def test_rope_keeps_lengths():
    cos, sin = precompute_rope(16, 32)
    x = torch.randn(4, 2, 32, 16)
    torch.testing.assert_close(
        apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1)
    )


def test_rope_scores_depend_only_on_relative_position():
    # q at position m, k at position n: <R_m q, R_n k> depends on m - n only
    hs = 32
    cos, sin = precompute_rope(hs, 512)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(hs, generator=g), torch.randn(hs, generator=g)

    def score(m, n):
        qm = apply_rope(q.view(1, hs), cos, sin, offset=m)  # (1, hs) at m
        kn = apply_rope(k.view(1, hs), cos, sin, offset=n)  # (1, hs) at n
        return float(qm @ kn.T)

    for m, n in [(5, 2), (2, 5), (9, 9), (100, 30)]:
        for shift in (1, 17, 300):
            assert score(m, n) == pytest.approx(
                score(m + shift, n + shift), abs=1e-4
            )
    # and it does depend on the distance
    assert abs(score(5, 2) - score(5, 4)) > 1e-3


def test_rope_beyond_tables_is_an_error():
    cos, sin = precompute_rope(8, 4)
    with pytest.raises(ValueError, match="precompute longer tables"):
        apply_rope(torch.randn(1, 1, 3, 8), cos, sin, offset=2)


def test_rope_refuses_shapes_that_would_broadcast_wrongly():
    cos, sin = precompute_rope(8, 16)
    positions = torch.tensor([[0, 1, 2], [3, 4, 5]])  # (B, T) = (2, 3)
    # a 3-D x with (B, T) positions would broadcast to (B, B, T, hs)
    with pytest.raises(ValueError, match=r"need x of shape \(B, nh, T, hs\)"):
        apply_rope(torch.randn(2, 3, 8), cos, sin, positions=positions)
    with pytest.raises(ValueError, match="the same B"):
        apply_rope(torch.randn(3, 1, 3, 8), cos, sin, positions=positions)
    assert apply_rope(
        torch.randn(2, 4, 3, 8), cos, sin, positions=positions
    ).shape == (2, 4, 3, 8)
    with pytest.raises(ValueError, match="head size 6 but the RoPE tables"):
        apply_rope(torch.randn(1, 1, 3, 6), cos, sin)


# -- the module and the cache ------------------------------------------------


def tiny_attention(**overrides):
    torch.manual_seed(0)
    cfg = GPTConfig.preset("tiny", **overrides)
    return cfg, CausalSelfAttention(cfg)


@pytest.mark.parametrize("positions", ["learned", "rope"])
@pytest.mark.parametrize("train", [False, True])
def test_module_fast_and_written_out_paths_agree(positions, train):
    cfg, attn = tiny_attention(positions=positions, dropout=0.0)
    attn.train(train)
    rope = precompute_rope(cfg.head_size, cfg.block_size)
    rope = rope if positions == "rope" else None
    x = torch.randn(3, cfg.block_size, cfg.n_embd)
    attn.fast = True
    fast = attn(x, rope)
    attn.fast = False
    slow = attn(x, rope)
    assert fast.shape == x.shape
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_module_matches_a_by_hand_reference():
    # the multi-head split and merge against a per-head loop
    cfg, attn = tiny_attention()
    x = torch.randn(2, 5, cfg.n_embd)
    q, k, v = attn.c_attn(x).split(cfg.n_embd, dim=2)
    hs = cfg.head_size
    heads = []
    for h in range(cfg.n_head):
        sl = slice(h * hs, (h + 1) * hs)
        heads.append(
            F.scaled_dot_product_attention(
                q[..., sl], k[..., sl], v[..., sl], is_causal=True
            )
        )
    ref = attn.c_proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)


def test_module_with_cache_matches_full():
    cfg, attn = tiny_attention(positions="rope")
    attn.eval()
    rope = precompute_rope(cfg.head_size, cfg.block_size)
    x = torch.randn(2, 12, cfg.n_embd)
    full = attn(x, rope)
    for fast in (True, False):
        attn.fast = fast
        cache = KVCache(1, 2, cfg.n_head, cfg.block_size, cfg.head_size)
        outs = []
        for a, b in [(0, 4), (4, 5), (5, 9), (9, 10), (10, 12)]:
            outs.append(attn(x[:, a:b], rope, cache))
            cache.advance(b - a)
        torch.testing.assert_close(
            torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5
        )


def test_kv_cache_buffers():
    cache = KVCache(
        n_layer=3, batch_size=2, n_head=4, block_size=10, head_size=8
    )
    assert len(cache.k) == len(cache.v) == 3
    assert cache.k[0].shape == (2, 4, 10, 8) and cache.pos == 0
    k, v = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8)
    k_all, v_all = cache.update(1, k, v)
    assert k_all.shape == (2, 4, 3, 8)
    torch.testing.assert_close(cache.k[1][:, :, :3], k)
    cache.advance(3)
    k_all, v_all = cache.update(1, k, v)
    assert k_all.shape == (2, 4, 6, 8)
    torch.testing.assert_close(v_all[:, :, 3:], v)
    cache.advance(3)
    assert cache.pos == 6 and "pos=6" in repr(cache)
    cache.reset()
    assert cache.pos == 0
    with pytest.raises(ValueError, match="batch_size must be positive"):
        KVCache(1, 0, 1, 4, 2)


def test_sdpa_scale_is_one_over_sqrt_head_size():
    # the reason for the scale: unit-variance q, k give unit-variance scores
    torch.manual_seed(0)
    hs = 256
    q, k = torch.randn(4000, hs), torch.randn(4000, hs)
    scores = (q * k).sum(-1) / math.sqrt(hs)
    assert 0.9 < scores.var().item() < 1.1


# -- boolean masks ------------------------------------------------------------
#
# Against F.scaled_dot_product_attention with the same boolean mask (causality
# folded in), in float64 so that agreement is to 1e-12, not to float32 noise.
# Rows with no allowed key: SDPA returns zeros (PyTorch >= 2.5); so do ours.


def random_mask(shape, seed, empty_rows=True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) > 0.4
    if empty_rows and len(shape) >= 2 and shape[-2] > 1:
        mask[..., 1, :] = False  # a query that may attend to nothing
    return mask


def qkv64(lead, t_q, t_k, hs=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, t_q, hs, generator=g, dtype=torch.float64)
    k = torch.randn(*lead, t_k, hs, generator=g, dtype=torch.float64)
    v = torch.randn(*lead, t_k, hs, generator=g, dtype=torch.float64)
    return q, k, v


MASK_CASES = [
    # (leading dims of q, k, v), T_q, T_k, mask shape
    ((2, 3), 5, 5, (5, 5)),  # 4-D tensors, one pattern for all
    ((2, 3), 5, 5, (2, 1, 5, 5)),  # per row, shared by heads
    ((2, 3), 5, 5, (2, 3, 5, 5)),  # per row and head
    ((2, 3), 4, 7, (2, 1, 1, 7)),  # padding over keys, cached keys
    ((2, 3), 1, 7, (2, 1, 1, 7)),  # one new query
    ((6,), 5, 5, (6, 5, 5)),  # 3-D tensors (B * nh, T, hs)
    ((6,), 3, 6, (1, 3, 6)),  # 3-D, fewer queries than keys
]


@pytest.mark.parametrize("lead, t_q, t_k, mshape", MASK_CASES)
@pytest.mark.parametrize("causal", [True, False])
def test_masked_attention_equals_sdpa(lead, t_q, t_k, mshape, causal):
    q, k, v = qkv64(lead, t_q, t_k)
    mask = random_mask(mshape, seed=len(mshape) + t_q)
    full = mask & causal_mask(t_q, t_k) if causal else mask
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=full)
    for attend in (causal_attention, fused_causal_attention):
        ours = attend(q, k, v, mask=mask, causal=causal)
        assert ours.shape == ref.shape and ours.dtype == torch.float64
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
        empty = ~full.any(-1)  # (.., T_q): queries that see no key
        if empty.any():
            assert (ours.masked_select(empty[..., None]) == 0).all()


def test_masked_attention_float32_paths_agree():
    q, k, v = qkv(B=2, nh=3, T=6)
    mask = random_mask((2, 1, 6, 6), seed=3)
    ref = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask & causal_mask(6, 6)
    )
    for attend in (causal_attention, fused_causal_attention):
        torch.testing.assert_close(
            attend(q, k, v, mask=mask), ref, atol=1e-6, rtol=1e-5
        )


def test_an_all_true_mask_changes_nothing():
    q, k, v = qkv(T=6)
    ones = torch.ones(6, 6, dtype=torch.bool)
    for attend in (causal_attention, fused_causal_attention):
        torch.testing.assert_close(
            attend(q, k, v, mask=ones), attend(q, k, v), atol=1e-6, rtol=1e-6
        )


@pytest.mark.parametrize("attend", [causal_attention, fused_causal_attention])
def test_fully_masked_rows_give_zeros_and_finite_gradients(attend):
    q, k, v = (t.requires_grad_() for t in qkv64((2, 2), 4, 4))
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    mask[0, :, 2] = False  # row 0, query 2 sees nothing
    mask[1, :, :, 0] = False  # key 0 hidden: query 0 of row 1 sees nothing
    out = attend(q, k, v, mask=mask)
    assert torch.isfinite(out).all()
    assert (out[0, :, 2] == 0).all() and (out[1, :, 0] == 0).all()
    (out * torch.randn_like(out)).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[0, :, 2] == 0).all()  # nothing flows through an empty row


def test_masked_attention_gradients_equal_sdpa():
    q, k, v = qkv64((2, 2), 5, 5)
    mask = random_mask((2, 1, 5, 5), seed=7)
    full = mask & causal_mask(5, 5)
    grads = []
    for fn in (
        lambda *a: causal_attention(*a, mask=mask),
        lambda *a: fused_causal_attention(*a, mask=mask),
        lambda *a: F.scaled_dot_product_attention(*a, attn_mask=full),
    ):
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        fn(*x).pow(2).sum().backward()
        grads.append([t.grad for t in x])
    for ours in grads[:2]:
        for a, b in zip(ours, grads[2]):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_mask_errors_say_what_is_wrong():
    q, k, v = qkv(T=4)
    for attend in (causal_attention, fused_causal_attention):
        with pytest.raises(TypeError, match="mask must be boolean"):
            attend(q, k, v, mask=torch.zeros(4, 4))
        with pytest.raises(ValueError, match=r"does not broadcast to .*4, 4"):
            attend(q, k, v, mask=torch.ones(3, 4, dtype=torch.bool))
        with pytest.raises(ValueError, match="T_q <= T_k"):
            attend(*qkv(T=5, t_k=3))


def test_rope_at_positions_equals_rope_at_offsets():
    cos, sin = precompute_rope(8, 16)
    x = torch.randn(3, 2, 5, 8)  # (B, nh, T, hs)
    offsets = [0, 4, 11]
    positions = torch.stack([torch.arange(o, o + 5) for o in offsets])
    rows = apply_rope(x, cos, sin, positions=positions)
    for b, o in enumerate(offsets):
        assert torch.equal(rows[b], apply_rope(x[b], cos, sin, offset=o))
    same = apply_rope(x, cos, sin, positions=torch.arange(2, 7))  # (T,)
    assert torch.equal(same, apply_rope(x, cos, sin, offset=2))
    with pytest.raises(ValueError, match="tables cover positions 0..15"):
        apply_rope(x, cos, sin, positions=positions + 5)
    with pytest.raises(
        ValueError, match=r"positions must be \(T,\) or \(B, T\)"
    ):
        apply_rope(x, cos, sin, positions=torch.arange(4))


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_module_with_padding_mask_fast_and_written_out_agree(positions):
    cfg, attn = tiny_attention(positions=positions)
    attn.eval()
    rope = precompute_rope(cfg.head_size, cfg.block_size)
    rope = rope if positions == "rope" else None
    x = torch.randn(2, 6, cfg.n_embd)
    keep = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    mask = keep[:, None, None, :]  # (B, 1, 1, T)
    pos = (keep.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    outs = []
    for fast in (True, False):
        attn.fast = fast
        outs.append(attn(x, rope, mask=mask, positions=pos))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    # row 0's real tokens, left-padded by 2, as if alone
    alone = attn(x[:1, 2:], rope)
    torch.testing.assert_close(outs[0][:1, 2:], alone, atol=1e-5, rtol=1e-5)


def test_bf16_falls_back_where_the_fused_cpu_kernel_fails(monkeypatch):
    """Where PyTorch's fused CPU kernel refuses bfloat16 (an AMX CPU with
    ATEN_CPU_CAPABILITY=avx2), the written-out attention answers instead:
    the model and the fast decoder still run, and agree with the fused
    kernel to bfloat16's precision."""
    import llmbook.attention as A

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 16, 8, dtype=torch.bfloat16) for _ in "qkv")
    fused = A.fused_causal_attention(q, k, v)
    monkeypatch.setattr(A, "CPU_BF16_FLASH", False)
    assert not A.use_fused(q) and A.use_fused(q.float())
    written = A.fused_causal_attention(q, k, v)
    torch.testing.assert_close(written, fused, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(
        written, A.causal_attention(q, k, v), rtol=0, atol=0
    )
