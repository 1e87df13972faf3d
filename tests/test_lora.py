"""llmbook.finetune.lora, proven equal to Hugging Face peft (pinned in
requirements.txt): same base weights and the same A and B give the same
logits, the same gradients of every A and B, the same trainable parameters
and the same merged weights. The rest: merging, state dicts, dropout,
freezing, optimizer memory and the error messages."""

import copy
import math
import re

import peft
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmbook.finetune import lora
from llmbook.model import GPT, GPTConfig
from llmbook.train.optim import AdamW

ATTN = ("attn.c_attn", "attn.c_proj")
ALL_LINEAR = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def tiny_gpt(seed=0, **overrides):
    torch.manual_seed(seed)
    kw = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
    return GPT(GPTConfig(**{**kw, **overrides})).eval()


def batch(seed=1, B=3, T=16, V=64):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(V, (B, T + 1), generator=g)


def loss_of(model, ids):
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def randomize_b(model, seed=2):
    """Non-zero B (the default zeros would make every check trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora.lora_layers(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


def peft_pair(targets, r=4, alpha=8.0, seed=0, dropout=0.0, **overrides):
    """(peft model, our model) on the same base weights, with peft's random
    A and B (init_lora_weights=False) copied into ours."""
    base = tiny_gpt(seed, **overrides)
    config = peft.LoraConfig(
        target_modules=list(targets),
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        init_lora_weights=False,  # B random too, not zero
    )
    torch.manual_seed(seed + 10)
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    ours = copy.deepcopy(base)
    wrapped = lora.apply_lora(ours, r, alpha, dropout, targets=targets)
    inner = theirs.base_model.model
    with torch.no_grad():
        for name in wrapped:
            p = inner.get_submodule(name)
            m = ours.get_submodule(name)
            m.lora_A.copy_(p.lora_A["default"].weight)
            m.lora_B.copy_(p.lora_B["default"].weight)
    return theirs, ours, wrapped


LORA = ("lora_A", "lora_B")


def ours_trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def peft_name(name):
    """peft's parameter name -> ours: blocks.0.attn.c_attn.lora_A."""
    name = name.removeprefix("base_model.model.")
    return re.sub(r"\.(lora_[AB])\.default\.weight$", r".\1", name)


# ---------------------------------------------------------------------------
# The reference: peft
# ---------------------------------------------------------------------------

PEFT_CASES = [
    pytest.param(ATTN, {}, id="attention"),
    pytest.param(ALL_LINEAR, {}, id="all-blocks"),
    pytest.param(
        ALL_LINEAR + ("lm_head",),
        dict(tie_weights=False, mlp="swiglu", positions="rope", bias=False),
        id="untied-head-swiglu-rope",
    ),
]


@pytest.mark.parametrize("targets, overrides", PEFT_CASES)
def test_logits_and_gradients_equal_peft(targets, overrides):
    theirs, ours, wrapped = peft_pair(targets, **overrides)
    # the same layers wrapped: peft's target matching is ours
    assert set(wrapped) == {
        n
        for n, m in theirs.base_model.model.named_modules()
        if isinstance(m, peft.tuners.lora.LoraLayer)
    }
    assert all(
        m.lora_B.abs().sum() > 0 for m in lora.lora_layers(ours).values()
    )
    ids = batch()
    # Exactly equal, not merely close: both compute base(x) +
    # B(A(x)) * (alpha / r) with the same ops in the same order.
    loss_theirs, loss_ours = loss_of(theirs, ids), loss_of(ours, ids)
    with torch.no_grad():
        assert torch.equal(theirs(ids[:, :-1]), ours(ids[:, :-1]))
    assert torch.equal(loss_theirs, loss_ours)
    loss_theirs.backward()
    loss_ours.backward()
    mine = dict(ours.named_parameters())
    trainable = {
        peft_name(n): p
        for n, p in theirs.named_parameters()
        if p.requires_grad
    }
    assert set(trainable) == {n for n, p in mine.items() if p.requires_grad}
    assert len(trainable) == 2 * len(wrapped)
    for name, p in trainable.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.equal(p.grad, mine[name].grad), name
    assert lora.count_parameters(ours) == theirs.get_nb_trainable_parameters()


def test_dropout_equals_peft_in_train_mode():
    """Dropout on the LoRA path's input, as in peft: from the same random
    state, both draw the same masks, so even training steps agree."""
    theirs, ours, _ = peft_pair(ATTN, dropout=0.25)
    theirs.train()
    ours.train()
    ids = batch()
    torch.manual_seed(5)
    loss_theirs = loss_of(theirs, ids)
    torch.manual_seed(5)
    loss_ours = loss_of(ours, ids)
    assert torch.equal(loss_theirs, loss_ours)
    torch.manual_seed(6)  # another mask, another loss: dropout is on
    assert not torch.equal(loss_of(ours, ids), loss_ours)
    loss_theirs.backward()
    loss_ours.backward()
    mine = dict(ours.named_parameters())
    for n, p in theirs.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, mine[peft_name(n)].grad), n


@pytest.mark.parametrize("targets, overrides", PEFT_CASES[:2])
def test_merged_weights_equal_peft(targets, overrides):
    theirs, ours, wrapped = peft_pair(targets, **overrides)
    plain, merged = copy.deepcopy(theirs), copy.deepcopy(ours)
    theirs.merge_adapter()
    lora.merge_lora(ours)
    inner = theirs.base_model.model
    for name in wrapped:
        # W += (B @ A) * scaling in both: bit for bit the same
        assert torch.equal(
            inner.get_submodule(name).base_layer.weight,
            ours.get_submodule(name).base.weight,
        )
    # merge and put the plain nn.Linear back: the same state dict as peft's
    lora.unload_lora(merged)
    plain = plain.merge_and_unload()
    assert merged.state_dict().keys() == plain.state_dict().keys()
    for k, v in plain.state_dict().items():
        assert torch.equal(v, merged.state_dict()[k]), k


def test_trainable_head_like_peft_modules_to_save():
    """``trainable`` keeps whole modules trainable, as peft's
    modules_to_save does (peft trains a copy; the count is the same)."""
    base = tiny_gpt()
    ours = copy.deepcopy(base)
    lora.apply_lora(ours, r=4, targets=ATTN, trainable=("ln_f.",))
    config = peft.LoraConfig(
        target_modules=list(ATTN), r=4, modules_to_save=["ln_f"]
    )
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    trainable, _ = theirs.get_nb_trainable_parameters()
    assert lora.count_parameters(ours)[0] == trainable
    # r (in + out) per layer: c_attn 4 (32 + 96), c_proj 4 (32 + 32), in 2
    # blocks; and ln_f's weight and bias, 2 x 32
    assert trainable == 2 * (4 * (32 + 96) + 4 * (32 + 32)) + 2 * 32
    assert ours.ln_f.weight.requires_grad and ours.ln_f.bias.requires_grad


# ---------------------------------------------------------------------------
# LoRALinear
# ---------------------------------------------------------------------------


def test_initialisation_leaves_the_model_unchanged():
    base = tiny_gpt()
    model = copy.deepcopy(base)
    lora.apply_lora(model, r=4, targets=ALL_LINEAR)
    ids = batch()[:, :-1]
    with torch.no_grad():
        assert torch.equal(model(ids), base(ids))  # B = 0: exactly the base
    for m in lora.lora_layers(model).values():
        assert m.lora_A.shape == (4, m.base.in_features)
        assert m.lora_B.shape == (m.base.out_features, 4)
        assert torch.equal(m.lora_B, torch.zeros_like(m.lora_B))
        # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)), spread out
        bound = 1 / math.sqrt(m.base.in_features)
        assert m.lora_A.abs().max() <= bound
        assert m.lora_A.abs().max() > 0.8 * bound
        assert m.scaling == 16.0 / 4 and m.r == 4 and m.alpha == 16.0
        assert not m.merged
        assert not any(p.requires_grad for p in m.base.parameters())


def test_lora_linear_formula_by_hand():
    torch.manual_seed(0)
    layer = lora.LoRALinear(nn.Linear(6, 5), r=2, alpha=3.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 7, 6)
    W, b = layer.base.weight, layer.base.bias
    A, B = layer.lora_A, layer.lora_B
    want = x @ W.T + b + (x @ A.T @ B.T) * (3.0 / 2)
    torch.testing.assert_close(layer(x), want, rtol=1e-6, atol=1e-6)
    assert "r=2, alpha=3.0, merged=False" in repr(layer)


def test_merge_unmerge():
    model = tiny_gpt()
    lora.apply_lora(model, r=4, targets=ALL_LINEAR)
    randomize_b(model)
    ids = batch()[:, :-1]
    before = {
        n: m.base.weight.clone() for n, m in lora.lora_layers(model).items()
    }
    with torch.no_grad():
        unmerged = model(ids)
        lora.merge_lora(model)
        merged = model(ids)
        assert all(m.merged for m in lora.lora_layers(model).values())
        # merging twice is idempotent: the update is not added again
        weights = [
            m.base.weight.clone() for m in lora.lora_layers(model).values()
        ]
        lora.merge_lora(model)
        again = [m.base.weight for m in lora.lora_layers(model).values()]
        assert all(torch.equal(a, b) for a, b in zip(weights, again))
        assert torch.equal(model(ids), merged)
    # One matmul, x (W + B A s)^T, instead of two summed paths: a different
    # float rounding. Over 20 seeds (this setup, |logits| <= 0.4, |B A s|
    # up to 0.44) the largest |diff| measured was 1.07e-6; 10x that:
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    lora.unmerge_lora(model)
    lora.unmerge_lora(model)  # idempotent too
    eps = torch.finfo(torch.float32).eps
    for n, m in lora.lora_layers(model).items():
        assert not m.merged
        # (W + d) - d rounds twice, each time by at most half an ulp of the
        # result, and ulp(x) <= eps |x|; d is recomputed bit for bit. So
        # |error| <= eps / 2 (|W + d| + |W|), element by element (measured
        # max over 20 seeds: 1.5e-8, with |W| <= 0.085 and |d| <= 0.44).
        W, d = before[n], m.delta_weight().detach()
        bound = eps / 2 * ((W + d).abs() + W.abs())
        assert ((m.base.weight - W).abs() <= bound).all(), n
    with torch.no_grad():
        torch.testing.assert_close(model(ids), unmerged, rtol=0, atol=1e-6)


def test_unload_gives_a_plain_model():
    base = tiny_gpt()
    model = copy.deepcopy(base)
    lora.apply_lora(model, r=4, targets=ALL_LINEAR)
    randomize_b(model)
    ids = batch()[:, :-1]
    with torch.no_grad():
        want = model(ids)
    names = lora.unload_lora(model)
    assert len(names) == 8 and not lora.lora_layers(model)
    assert model.state_dict().keys() == base.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), want, rtol=0, atol=1e-6)
    # a model unloaded is a model to which LoRA can be applied again
    lora.apply_lora(model, r=2)


def test_state_dict_round_trip():
    model = tiny_gpt()
    lora.apply_lora(model, r=4)
    randomize_b(model)
    state = lora.lora_state_dict(model)
    assert sorted(state) == sorted(
        f"blocks.{i}.attn.{c}.{p}"
        for i in range(2)
        for c in ("c_attn", "c_proj")
        for p in ("lora_A", "lora_B")
    )
    assert (
        sum(v.numel() for v in state.values())
        == lora.count_parameters(model)[0]
    )
    fresh = tiny_gpt()
    lora.apply_lora(fresh, r=4)
    ids = batch()[:, :-1]
    with torch.no_grad():
        assert not torch.equal(fresh(ids), model(ids))
        lora.load_lora_state_dict(fresh, state)
        assert torch.equal(fresh(ids), model(ids))


def test_state_dict_errors():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="call apply_lora first"):
        lora.load_lora_state_dict(model, {})
    lora.apply_lora(model, r=4)
    state = lora.lora_state_dict(model)
    missing = dict(state)
    del missing["blocks.0.attn.c_attn.lora_A"]
    with pytest.raises(ValueError, match=r"missing keys \['blocks.0.attn"):
        lora.load_lora_state_dict(model, missing)
    extra = {**state, "blocks.0.mlp.c_fc.lora_A": torch.zeros(4, 32)}
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks.0.mlp"):
        lora.load_lora_state_dict(model, extra)
    other = tiny_gpt()
    lora.apply_lora(other, r=2)
    with pytest.raises(ValueError, match=r"shape \(2, 32\).*\(4, 32\)"):
        lora.load_lora_state_dict(model, lora.lora_state_dict(other))
    lora.merge_lora(model)
    with pytest.raises(ValueError, match="unmerge the model"):
        lora.load_lora_state_dict(model, state)


def test_dropout_only_in_train_mode():
    model = tiny_gpt()
    lora.apply_lora(model, r=4, dropout=0.5)
    randomize_b(model)
    ids = batch()[:, :-1]
    model.eval()
    with torch.no_grad():
        a, b = model(ids), model(ids)
        assert torch.equal(a, b)
        model.train()
        torch.manual_seed(0)
        c = model(ids)
        torch.manual_seed(1)
        d = model(ids)
    assert not torch.equal(c, d) and not torch.equal(a, c)
    # dropout acts on the LoRA path only: with B = 0 train mode is the base
    base = tiny_gpt().train()
    wrapped = copy.deepcopy(base)
    lora.apply_lora(wrapped, r=4, dropout=0.5)
    with torch.no_grad():
        assert torch.equal(wrapped(ids), base(ids))  # model dropout is 0
    no_dropout = lora.LoRALinear(nn.Linear(4, 4), dropout=0.0)
    assert isinstance(no_dropout.dropout, nn.Identity)


def test_frozen_base_gets_no_gradient_and_a_step_changes_only_lora():
    model = tiny_gpt()
    model.head = nn.Linear(32, 3)  # as a classifier would add
    lora.apply_lora(model, r=4, trainable=("head.",))
    randomize_b(model)
    before = {n: p.clone() for n, p in model.named_parameters()}
    optimizer = AdamW(model.parameters(), lr=1e-2)  # every parameter given
    ids = batch()
    (loss_of(model, ids) + model.head(model.wte.weight).sum()).backward()
    for n, p in model.named_parameters():
        is_trained = n.endswith(("lora_A", "lora_B")) or n.startswith("head.")
        assert p.requires_grad == is_trained, n
        assert (p.grad is not None) == is_trained, n
    optimizer.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == p.requires_grad, n


@pytest.mark.parametrize("opt", [AdamW, torch.optim.AdamW])
def test_optimizer_state_bytes(opt):
    """fp32 AdamW: two moments of 4 bytes per trainable parameter, and a
    4-byte step counter per tensor; frozen parameters have no state."""
    sizes = {}
    for use_lora in (False, True):
        model = tiny_gpt()
        if use_lora:
            lora.apply_lora(model, r=4)
        optimizer = opt(model.parameters(), lr=1e-3)
        assert lora.optimizer_state_bytes(optimizer) == 0  # state is lazy
        loss_of(model, batch()).backward()
        optimizer.step()
        trainable, _ = lora.count_parameters(model)
        tensors = sum(1 for p in model.parameters() if p.requires_grad)
        sizes[use_lora] = lora.optimizer_state_bytes(optimizer)
        assert sizes[use_lora] == 2 * 4 * trainable + 4 * tensors
    assert sizes[True] < sizes[False] / 10  # 1,536 of 28,032 parameters


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match=r"r must be an int >= 1, got 0"):
        lora.apply_lora(tiny_gpt(), r=0)
    with pytest.raises(TypeError, match=r"r must be an int >= 1, got 2.5"):
        lora.LoRALinear(nn.Linear(2, 2), r=2.5)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        lora.apply_lora(tiny_gpt(), dropout=1.0)
    with pytest.raises(TypeError, match="wraps an nn.Linear; got Embedding"):
        lora.LoRALinear(nn.Embedding(4, 4))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "no nn.Linear in the model matches targets ['attn.q_proj']; its "
            "Linear layers are ['blocks.{i}.attn.c_attn', 'blocks.{i}.attn."
            "c_proj', 'blocks.{i}.mlp.c_fc', 'blocks.{i}.mlp.c_proj', "
            "'lm_head']"
        ),
    ):
        lora.apply_lora(tiny_gpt(), targets=("attn.q_proj",))
    # whole name components: "proj" is not "c_proj"
    with pytest.raises(ValueError, match="no nn.Linear"):
        lora.apply_lora(tiny_gpt(), targets=("proj",))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "cannot apply LoRA to 'lm_head': its weight is tied to "
            "['wte.weight'] (the same tensor), so merging B A into it would "
            "change the token embeddings too"
        ),
    ):
        lora.apply_lora(tiny_gpt(), targets=("lm_head",))
    model = tiny_gpt()
    with pytest.raises(ValueError, match=r"prefix\(es\) \['head.'\] match no"):
        lora.apply_lora(model, trainable=("head.",))
    assert not lora.lora_layers(model)  # a refused call changes nothing
    assert all(p.requires_grad for p in model.parameters())
    # lists work as well as tuples, a single name as well as a list
    lora.apply_lora(model, targets=["attn.c_attn"], trainable="ln_f.")
    assert ours_trainable(model) == {"ln_f.weight", "ln_f.bias"} | {
        f"blocks.{i}.attn.c_attn.{p}" for i in range(2) for p in LORA
    }
    # a tied matrix answers to both its names
    tied = tiny_gpt()
    lora.apply_lora(tied, trainable=("lm_head.",))
    assert tied.wte.weight.requires_grad and "wte.weight" in ours_trainable(
        tied
    )
    with pytest.raises(ValueError, match="LoRA is already applied"):
        lora.apply_lora(model)
