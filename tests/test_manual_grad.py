"""Hand-written backward passes against autograd and finite differences.

Every test builds the same computation twice, once from
``torch.nn.functional`` (differentiated by autograd) and once from the
forward/backward pairs of ``llmbook.manual_grad``, in float64.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from llmbook import manual_grad as mg

DT = torch.float64
TOL = 1e-10


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=DT, generator=g)


def autograd_grads(fn, inputs, dout):
    """Gradients of sum(fn(*inputs) * dout) w.r.t. the float inputs."""
    leaves = [
        a.detach().clone().requires_grad_()
        if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in inputs
    ]
    out = fn(*leaves)
    out.backward(dout)
    return out.detach(), [
        a.grad
        for a in leaves
        if isinstance(a, torch.Tensor) and a.requires_grad
    ]


def assert_close(manual, reference):
    if not isinstance(manual, (tuple, list)):
        manual = [manual]
    manual = [m for m in manual if m is not None]
    assert len(manual) == len(reference)
    for m, r in zip(manual, reference):
        assert m.shape == r.shape
        assert (m - r).abs().max().item() < TOL


CASES = {
    # name: (reference function, manual forward, manual backward, inputs)
    "linear": (
        F.linear,
        mg.linear_forward,
        mg.linear_backward,
        lambda: [rand(2, 3, 4), rand(5, 4, seed=1), rand(5, seed=2)],
    ),
    "linear_nobias": (
        F.linear,
        mg.linear_forward,
        mg.linear_backward,
        lambda: [rand(2, 3, 4), rand(5, 4, seed=1)],
    ),
    "gelu_tanh": (
        lambda x: F.gelu(x, approximate="tanh"),
        mg.gelu_forward,
        mg.gelu_backward,
        lambda: [3 * rand(4, 6)],
    ),
    "gelu_exact": (
        F.gelu,
        lambda x: mg.gelu_forward(x, "none"),
        mg.gelu_backward,
        lambda: [3 * rand(4, 6)],
    ),
    "silu": (
        F.silu,
        mg.silu_forward,
        mg.silu_backward,
        lambda: [3 * rand(4, 6)],
    ),
    "swiglu": (
        lambda a, g: F.silu(a) * g,
        mg.swiglu_forward,
        mg.swiglu_backward,
        lambda: [rand(3, 5), rand(3, 5, seed=1)],
    ),
    "softmax": (
        lambda x: F.softmax(x, dim=-1),
        mg.softmax_forward,
        mg.softmax_backward,
        lambda: [5 * rand(2, 3, 7)],
    ),
    "layernorm": (
        lambda x, w, b: F.layer_norm(x, (6,), w, b),
        mg.layernorm_forward,
        mg.layernorm_backward,
        lambda: [rand(2, 3, 6), rand(6, seed=1), rand(6, seed=2)],
    ),
    "layernorm_nobias": (
        lambda x, w: F.layer_norm(x, (6,), w),
        mg.layernorm_forward,
        mg.layernorm_backward,
        lambda: [rand(2, 3, 6), rand(6, seed=1)],
    ),
    "rmsnorm": (
        lambda x, w: F.rms_norm(x, (6,), w, eps=1e-5),
        mg.rmsnorm_forward,
        mg.rmsnorm_backward,
        lambda: [rand(2, 3, 6), rand(6, seed=1)],
    ),
    "attention": (
        lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, is_causal=True
        ),
        mg.attention_forward,
        mg.attention_backward,
        lambda: [rand(2, 3, 5, 4, seed=s) for s in range(3)],
    ),
    "attention_nomask": (
        F.scaled_dot_product_attention,
        lambda q, k, v: mg.attention_forward(q, k, v, causal=False),
        mg.attention_backward,
        lambda: [rand(2, 3, 5, 4, seed=s) for s in range(3)],
    ),
    "residual": (
        torch.add,
        mg.residual_forward,
        mg.residual_backward,
        lambda: [rand(2, 3), rand(2, 3, seed=1)],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_backward_matches_autograd(name):
    ref, fwd, bwd, make = CASES[name]
    inputs = make()
    out_ref = ref(*inputs)
    dout = rand(*out_ref.shape, seed=9)
    out_ref, grads_ref = autograd_grads(ref, inputs, dout)
    out, cache = fwd(*inputs)
    assert (out - out_ref).abs().max().item() < TOL
    assert_close(bwd(dout, cache), grads_ref)


def rope_tables(t, d, seed=3):
    angles = (
        torch.rand(
            t, d // 2, dtype=DT, generator=torch.Generator().manual_seed(seed)
        )
        * 6.0
    )
    return angles.cos(), angles.sin()


def test_rope_matches_package_apply_rope():
    from llmbook.attention import apply_rope

    cos, sin = rope_tables(5, 4)
    x, dout = rand(2, 3, 5, 4), rand(2, 3, 5, 4, seed=1)
    out_ref, grads_ref = autograd_grads(
        lambda x: apply_rope(x, cos, sin), [x], dout
    )
    out, cache = mg.rope_forward(x, cos, sin)
    assert (out - out_ref).abs().max().item() < TOL
    assert_close(mg.rope_backward(dout, cache), grads_ref)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rope", [False, True])
def test_self_attention_matches_autograd(bias, rope):
    B, T, C, H = 2, 5, 8, 2
    x = rand(B, T, C)
    w_qkv, w_o = rand(3 * C, C, seed=1) / 3, rand(C, C, seed=2) / 3
    b_qkv = rand(3 * C, seed=3) if bias else None
    b_o = rand(C, seed=4) if bias else None
    tables = rope_tables(T, C // H) if rope else None

    def ref(x, w_qkv, w_o, b_qkv=None, b_o=None):
        q, k, v = F.linear(x, w_qkv, b_qkv).split(C, dim=-1)
        q, k, v = (z.view(B, T, H, C // H).transpose(1, 2) for z in (q, k, v))
        if rope:
            q, _ = mg.rope_forward(q, *tables)  # rope itself tested above
            k, _ = mg.rope_forward(k, *tables)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.linear(y.transpose(1, 2).reshape(B, T, C), w_o, b_o)

    inputs = [x, w_qkv, w_o] + ([b_qkv, b_o] if bias else [])
    dout = rand(B, T, C, seed=9)
    out_ref, (dx, dw_qkv, dw_o, *dbs) = autograd_grads(ref, inputs, dout)
    out, cache = mg.self_attention_forward(
        x, w_qkv, b_qkv, w_o, b_o, H, tables
    )
    assert (out - out_ref).abs().max().item() < TOL
    got = mg.self_attention_backward(dout, cache)
    want = [
        dx,
        dw_qkv,
        dbs[0] if bias else None,
        dw_o,
        dbs[1] if bias else None,
    ]
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            assert (g - w).abs().max().item() < TOL


def test_cross_entropy_matches_torch():
    logits = 4 * rand(2, 3, 7)
    targets = torch.randint(
        0, 7, (2, 3), generator=torch.Generator().manual_seed(0)
    )
    leaf = logits.clone().requires_grad_()
    ref = F.cross_entropy(leaf.view(-1, 7), targets.view(-1))
    ref.backward(torch.tensor(0.5, dtype=DT))
    loss, cache = mg.cross_entropy_forward(logits, targets)
    assert abs(loss.item() - ref.item()) < TOL
    dlogits = mg.cross_entropy_backward(0.5, cache)
    assert dlogits.shape == logits.shape
    assert (dlogits - leaf.grad).abs().max().item() < TOL


def test_cross_entropy_is_stable_for_huge_logits():
    logits = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=torch.float32)
    targets = torch.tensor([1])
    loss, cache = mg.cross_entropy_forward(logits, targets)
    assert loss.item() == pytest.approx(1000.0)
    assert torch.isfinite(mg.cross_entropy_backward(1.0, cache)).all()


def test_softmax_handles_masked_and_huge_entries():
    x = torch.tensor([[1000.0, 999.0, float("-inf")]])
    p, _ = mg.softmax_forward(x)
    assert torch.allclose(p, torch.softmax(x, -1))
    assert p[0, 2].item() == 0.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="need targets of shape"):
        mg.cross_entropy_forward(
            rand(2, 3, 5), torch.zeros(3, dtype=torch.long)
        )
    with pytest.raises(TypeError, match="targets must be int64"):
        mg.cross_entropy_forward(rand(2, 5), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="approximate must be"):
        mg.gelu_forward(rand(3), "erf")
    with pytest.raises(ValueError, match="not divisible by n_head"):
        mg.self_attention_forward(
            rand(1, 2, 6), rand(18, 6), None, rand(6, 6), None, 4
        )


def req(t):
    return t.detach().clone().requires_grad_()


def gradcheck_cases():
    x = req(rand(2, 3, 4))
    w, b = req(rand(4, seed=1)), req(rand(4, seed=2))
    q, k, v = (req(rand(1, 2, 4, 3, seed=s)) for s in range(3))
    cos, sin = rope_tables(4, 4)
    xs, w_qkv, w_o = req(rand(1, 4, 4)), req(rand(12, 4)), req(rand(4, 4))
    b_qkv, b_o = req(rand(12)), req(rand(4))
    targets = torch.tensor([[0, 3, 1], [2, 2, 0]])
    return {
        "linear": (mg.LinearFunction, (x, req(rand(5, 4)), req(rand(5)))),
        "linear_nobias": (mg.LinearFunction, (x, req(rand(5, 4)))),
        "gelu_tanh": (mg.GeluFunction, (x,)),
        "gelu_exact": (mg.GeluFunction, (x, "none")),
        "silu": (mg.SiluFunction, (x,)),
        "swiglu": (mg.SwigluFunction, (x, req(rand(2, 3, 4, seed=1)))),
        "softmax": (mg.SoftmaxFunction, (x,)),
        "cross_entropy": (mg.CrossEntropyFunction, (x, targets)),
        "layernorm": (mg.LayerNormFunction, (x, w, b)),
        "layernorm_nobias": (mg.LayerNormFunction, (x, w)),
        "rmsnorm": (mg.RMSNormFunction, (x, w)),
        "attention": (mg.AttentionFunction, (q, k, v)),
        "rope": (mg.RopeFunction, (req(rand(1, 2, 4, 4)), cos, sin)),
        "self_attention": (
            mg.SelfAttentionFunction,
            (xs, w_qkv, b_qkv, w_o, b_o, 2),
        ),
        "self_attention_rope": (
            mg.SelfAttentionFunction,
            (xs, w_qkv, None, w_o, None, 2, rope_tables(4, 2)),
        ),
        "residual": (mg.ResidualFunction, (x, req(rand(2, 3, 4, seed=1)))),
    }


@pytest.mark.parametrize("name", list(gradcheck_cases()))
def test_gradcheck_functions(name):
    fn, inputs = gradcheck_cases()[name]
    assert gradcheck(fn.apply, inputs)


# ------------------------------------------------ blocks and whole models

ARCHS = {
    "gpt2": dict(
        positions="learned",
        norm="layernorm",
        mlp="gelu",
        bias=True,
        tie_weights=True,
    ),
    "modern": dict(
        positions="rope",
        norm="rmsnorm",
        mlp="swiglu",
        bias=False,
        tie_weights=True,
    ),
    "untied_mixed": dict(
        positions="learned",
        norm="rmsnorm",
        mlp="gelu",
        bias=False,
        tie_weights=False,
    ),
    "untied_mixed2": dict(
        positions="rope",
        norm="layernorm",
        mlp="swiglu",
        bias=True,
        tie_weights=False,
    ),
}


def tiny_model(arch, **sizes):
    from llmbook.model import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig.preset("tiny", **ARCHS[arch], **sizes)
    model = GPT(cfg).double()
    with torch.no_grad():  # away from the init, so every gradient matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, cfg


@pytest.mark.parametrize("arch", ARCHS)
def test_block_matches_package_block(arch):
    model, cfg = tiny_model(arch)
    block = model.blocks[0]
    x, dout = rand(2, 7, cfg.n_embd), rand(2, 7, cfg.n_embd, seed=1)
    rope = None
    if cfg.positions == "rope":
        rope = (model.rope_cos[:7], model.rope_sin[:7])
    leaf = x.clone().requires_grad_()
    out_ref = block(leaf, rope)
    out_ref.backward(dout)
    p = {n: t.detach() for n, t in block.named_parameters()}
    out, cache = mg.block_forward(x, p, cfg, rope)
    assert (out - out_ref).abs().max().item() < TOL
    dx, grads = mg.block_backward(dout, cache)
    assert (dx - leaf.grad).abs().max().item() < TOL
    assert set(grads) == set(p)
    for n, t in block.named_parameters():
        assert (grads[n] - t.grad).abs().max().item() < TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_gpt_gradients_match_package_model(arch):
    model, cfg = tiny_model(arch)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, cfg.vocab_size, (2, 9), generator=g)
    targets = torch.randint(0, cfg.vocab_size, (2, 9), generator=g)
    logits_ref = model(idx)
    loss_ref = F.cross_entropy(logits_ref.flatten(0, 1), targets.flatten())
    loss_ref.backward()
    p = mg.gpt_params(model)
    logits, _ = mg.gpt_forward(idx, p, cfg)
    assert (logits - logits_ref).abs().max().item() < TOL
    loss, grads = mg.gpt_loss_and_grads(p, idx, targets, cfg)
    assert abs(loss.item() - loss_ref.item()) < TOL
    names = [n for n, _ in model.named_parameters()]
    assert sorted(grads) == sorted(names)
    for n, t in model.named_parameters():
        assert (grads[n] - t.grad).abs().max().item() < TOL, n


@pytest.mark.slow
def test_gradcheck_block_and_gpt():
    model, cfg = tiny_model(
        "gpt2", n_embd=4, n_head=2, vocab_size=5, n_layer=1, block_size=3
    )
    p = {n: req(t) for n, t in model.blocks[0].named_parameters()}
    x = req(rand(1, 3, 4))
    assert gradcheck(
        lambda x, *v: mg.block_function(x, dict(zip(p, v)), cfg),
        (x, *p.values()),
    )
    p = {n: req(t) for n, t in mg.gpt_params(model).items()}
    idx = torch.tensor([[0, 4, 2]])
    assert gradcheck(
        lambda *v: mg.gpt_function(idx, dict(zip(p, v)), cfg),
        tuple(p.values()),
    )


def test_gradcheck_modern_block_with_rope():
    # SwiGLU's hidden width is at least 64: check x and the attention only
    model, cfg = tiny_model("modern", n_embd=4, n_head=2, vocab_size=5)
    p = {
        n: t.detach().requires_grad_("mlp" not in n)
        for n, t in model.blocks[0].named_parameters()
    }
    rope = (model.rope_cos[:3], model.rope_sin[:3])
    x = req(rand(1, 3, 4))
    assert gradcheck(
        lambda x, *v: mg.block_function(x, dict(zip(p, v)), cfg, rope),
        (x, *p.values()),
    )


def test_gpt_bad_inputs():
    model, cfg = tiny_model("gpt2")
    p = mg.gpt_params(model)
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="dropout=0.0"):
        mg.gpt_forward(idx, p, dataclasses.replace(cfg, dropout=0.1))
    with pytest.raises(TypeError, match=r"\(B, T\) int64"):
        mg.gpt_forward(idx[0], p, cfg)
    with pytest.raises(ValueError, match="exceeds block_size"):
        mg.gpt_forward(torch.zeros(1, 17, dtype=torch.long), p, cfg)
