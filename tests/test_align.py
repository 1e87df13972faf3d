"""llmbook.align, the objectives of learning from preferences and rewards,
proven equal to written-out references and to TRL (pinned in
requirements.txt): DPO's loss against ``DPOTrainer``'s on the same batch
and models, GRPO's loss against ``GRPOTrainer``'s on the same answers,
log-probabilities, advantages and reference. TRL runs on a tiny random
GPT-2 of ``transformers`` with a word-level tokenizer built in memory:
nothing is downloaded."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.align import (
    dpo_loss,
    group_advantages,
    grpo_loss,
    kl_penalty,
    sequence_logprobs,
    token_logprobs,
)
from llmbook.finetune import IGNORE

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")

WORDS = ["<pad>", "<eos>"] + [f"w{i}" for i in range(30)]


@pytest.fixture(scope="module")
def hf():
    """(a tiny random GPT-2, its tokenizer): 32 words, 2 layers."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tk = Tokenizer(
        models.WordLevel(
            {w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"
        )
    )
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>"
    )
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=len(WORDS),
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg).eval(), tok


def perturbed(model, seed=3, scale=0.3):
    """A copy of ``model`` moved away from it: a policy that is not its
    reference."""
    policy = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return policy.eval()


# ---------------------------------------------------------------------------
# Log-probabilities of answers


def test_token_logprobs_is_log_softmax_at_the_next_token():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 1], [IGNORE, 2, 6, 0, 5]])
    got = token_logprobs(logits, labels)  # (2, 4)
    logp = F.log_softmax(logits, dim=-1)
    for b in range(2):
        for t in range(4):
            y = labels[b, t + 1].item()
            want = 0.0 if y == IGNORE else logp[b, t, y].item()
            assert got[b, t].item() == pytest.approx(want, abs=1e-6)
    total = sequence_logprobs(logits, labels)
    torch.testing.assert_close(total, got.sum(-1))


def test_token_logprobs_of_bfloat16_logits_are_float32():
    logits = torch.randn(1, 3, 5).bfloat16()
    out = token_logprobs(logits, torch.tensor([[0, 1, 2]]))
    assert out.dtype == torch.float32


def test_token_logprobs_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"logits \(2, 5, 7\) and labels"):
        token_logprobs(torch.zeros(2, 5, 7), torch.zeros(2, 4).long())


# ---------------------------------------------------------------------------
# DPO


def test_dpo_loss_written_out():
    g = torch.Generator().manual_seed(1)
    c, r, rc, rr = (torch.randn(6, generator=g) * 3 for _ in range(4))
    out = dpo_loss(c, r, rc, rr, beta=0.2)
    for i in range(6):
        margin = 0.2 * ((c[i] - rc[i]) - (r[i] - rr[i])).item()
        assert out.chosen_rewards[i].item() == pytest.approx(
            0.2 * (c[i] - rc[i]).item(), abs=1e-6
        )
        # -log sigmoid(m) = log(1 + exp(-m))
        want = math.log1p(math.exp(-margin))
        assert F.logsigmoid(torch.tensor(margin)).neg().item() == (
            pytest.approx(want, abs=1e-6)
        )
    margins = out.chosen_rewards - out.rejected_rewards
    want = sum(math.log1p(math.exp(-m)) for m in margins.tolist()) / 6
    assert out.loss.item() == pytest.approx(want, rel=1e-6)


def test_dpo_loss_starts_at_log_2_and_rewards_the_chosen_answer():
    x = torch.tensor([-5.0, -7.0])
    assert dpo_loss(x, x - 1, x, x - 1).loss.item() == pytest.approx(
        math.log(2)
    )
    chosen = x.clone().requires_grad_(True)
    rejected = (x - 1).clone().requires_grad_(True)
    dpo_loss(chosen, rejected, x, x - 1).loss.backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


def test_dpo_loss_refuses_bad_input():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="beta must be positive"):
        dpo_loss(x, x, x, x, beta=0)
    with pytest.raises(ValueError, match="four tensors of one shape"):
        dpo_loss(x, x, x, torch.zeros(2))


def test_dpo_loss_equals_trl(hf, tmp_path):
    from datasets import Dataset

    ref, tok = hf
    policy = perturbed(ref)
    data = Dataset.from_dict(
        {
            "prompt": ["w1 w2 w3", "w4 w5", "w6"],
            "chosen": [" w7 w8", " w9", " w10 w11 w12"],
            "rejected": [" w13", " w14 w15 w16", " w17 w18"],
        }
    )
    args = trl.DPOConfig(
        output_dir=str(tmp_path),
        report_to=[],
        beta=0.25,
        per_device_train_batch_size=3,
        use_cpu=True,
    )
    trainer = trl.DPOTrainer(
        model=policy,
        ref_model=copy.deepcopy(ref),
        args=args,
        train_dataset=data,
        processing_class=tok,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    ids = batch["input_ids"]  # (2B, T): the chosen rows, then the rejected
    counted = batch["completion_mask"].bool()
    labels = ids.masked_fill(~counted, IGNORE)
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, batch)
        logps = [
            sequence_logprobs(
                m(
                    input_ids=ids, attention_mask=batch["attention_mask"]
                ).logits,
                labels,
            ).chunk(2)
            for m in (trainer.model, trainer.ref_model)
        ]
    (chosen, rejected), (ref_chosen, ref_rejected) = logps
    ours = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.25)
    assert abs(ours.loss.item() - math.log(2)) > 0.01  # policy != ref
    torch.testing.assert_close(ours.loss, theirs)


# ---------------------------------------------------------------------------
# GRPO


def test_group_advantages_equal_trls_normalisation():
    from trl.trainer.utils import nanstd

    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.25])
    got = group_advantages(rewards, group_size=3)
    r = rewards.view(-1, 3)
    mean = r.mean(1).repeat_interleave(3)
    std = nanstd(r, dim=1).repeat_interleave(3)
    torch.testing.assert_close(got, (rewards - mean) / (std + 1e-4))
    assert got[3:6].abs().max() == 0  # one reward for all: nothing learnt
    unscaled = group_advantages(rewards, group_size=3, scale=False)
    torch.testing.assert_close(unscaled, rewards - mean)


def test_group_advantages_refuse_bad_groups():
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.zeros(4), group_size=1)
    with pytest.raises(ValueError, match="multiple of group_size 3"):
        group_advantages(torch.zeros(4), group_size=3)


def test_kl_penalty_estimates_the_kl_divergence():
    g = torch.Generator().manual_seed(2)
    p = torch.softmax(torch.randn(5, generator=g), 0)
    q = torch.softmax(torch.randn(5, generator=g), 0)
    exact = (p * (p / q).log()).sum()
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=g)
    k3 = kl_penalty(p.log()[tokens], q.log()[tokens])
    assert (k3 >= 0).all()
    assert k3.mean().item() == pytest.approx(exact.item(), rel=0.03)
    assert kl_penalty(p.log(), p.log()).abs().max() == 0


def _grpo_written_out(logps, old, ref, adv, mask, eps, beta, per):
    rows, tokens = [], []
    for b in range(logps.shape[0]):
        row = []
        for t in range(logps.shape[1]):
            if not mask[b, t]:
                continue
            ratio = math.exp(logps[b, t] - old[b, t])
            a = adv[b].item()
            surrogate = min(ratio * a, min(max(ratio, 1 - eps), 1 + eps) * a)
            d = (ref[b, t] - logps[b, t]).item()
            row.append(-surrogate + beta * (math.exp(d) - d - 1))
        rows.append(sum(row) / len(row))
        tokens += row
    return (
        sum(rows) / len(rows)
        if per == "sequence"
        else sum(tokens) / len(tokens)
    )


def _grpo_inputs(seed=1, B=4, T=5):
    g = torch.Generator().manual_seed(seed)
    logps = torch.randn(B, T, generator=g) * 0.5 - 2
    old = logps + torch.randn(B, T, generator=g) * 0.3
    ref = logps + torch.randn(B, T, generator=g) * 0.3
    mask = torch.tensor(
        [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    )[:B, :T]
    adv = torch.tensor([0.8, -1.2, 0.4, -0.1])[:B]
    return logps, old, ref, adv, mask


@pytest.mark.parametrize("per", ["sequence", "token"])
def test_grpo_loss_written_out(per):
    logps, old, ref, adv, mask = _grpo_inputs()
    ratio = (logps - old).exp()[mask.bool()]
    assert ((ratio < 0.8) | (ratio > 1.2)).any()  # the clip is exercised
    got = grpo_loss(logps, old, ref, adv, mask, 0.2, 0.04, per=per)
    want = _grpo_written_out(logps, old, ref, adv, mask, 0.2, 0.04, per)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_grpo_loss_clips_only_in_the_direction_of_the_advantage():
    # a token already 50% more likely than when sampled: with A > 0 the
    # clipped term has no gradient; with A < 0 the unclipped one does
    logps = torch.tensor([[math.log(1.5)]], requires_grad=True)
    zeros, one = torch.zeros(1, 1), torch.ones(1, 1)
    grpo_loss(logps, zeros, None, torch.tensor([1.0]), one, beta=0).backward()
    assert logps.grad.item() == 0
    logps.grad = None
    grpo_loss(logps, zeros, None, torch.tensor([-1.0]), one, beta=0).backward()
    assert logps.grad.item() == pytest.approx(1.5)


def test_grpo_loss_refuses_bad_input():
    logps, old, ref, adv, mask = _grpo_inputs()
    with pytest.raises(ValueError, match="per must be"):
        grpo_loss(logps, old, ref, adv, mask, per="answer")
    with pytest.raises(ValueError, match="one per answer"):
        grpo_loss(logps, old, ref, adv[:2], mask)
    with pytest.raises(ValueError, match="needs ref_logps"):
        grpo_loss(logps, old, None, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="must have one shape"):
        grpo_loss(logps, old[:, :3], ref, adv, mask)


@pytest.mark.parametrize(
    "per,loss_type,kl_ratio",
    [
        ("sequence", "grpo", False),  # the GRPO paper's
        ("sequence", "grpo", True),  # TRL's default KL
        ("token", "bnpo", False),
    ],
)
def test_grpo_loss_equals_trl(hf, tmp_path, per, loss_type, kl_ratio):
    from datasets import Dataset

    model, tok = hf
    path = str(tmp_path / "model")
    model.save_pretrained(path)  # TRL loads the policy and reference by path
    tok.save_pretrained(path)
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "out"),
        report_to=[],
        beta=0.04,
        epsilon=0.2,
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=5,
        loss_type=loss_type,
        use_bias_correction_kl=kl_ratio,
        use_cpu=True,
    )
    trainer = trl.GRPOTrainer(
        model=path,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["w1 w2", "w3"]}),
        processing_class=tok,
    )
    trainer.model.eval()  # TRL's eval mode: no gradient accumulation
    g = torch.Generator().manual_seed(4)
    B, P, T = 4, 3, 5
    prompt = torch.randint(2, len(WORDS), (B, P), generator=g)
    answer = torch.randint(2, len(WORDS), (B, T), generator=g)
    _, _, _, adv, mask = _grpo_inputs(B=B, T=T)
    noise = torch.randn(2, B, T, generator=g) * 0.3
    ids = torch.cat([prompt, answer], 1)  # (B, P + T)
    attention = torch.cat([torch.ones_like(prompt), mask], 1)  # as TRL's
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=attention).logits
    labels = torch.cat([torch.full_like(prompt, IGNORE), answer], 1)
    logps = token_logprobs(logits, labels)[:, P - 1 :]  # (B, T): the answer
    old, ref = logps + noise[0], logps + noise[1]  # sampler, reference
    inputs = dict(
        prompt_ids=prompt,
        prompt_mask=torch.ones_like(prompt),
        completion_ids=answer,
        completion_mask=mask,
        advantages=adv,
        old_per_token_logps=old,
        ref_per_token_logps=ref,
    )
    with torch.no_grad():
        theirs = trainer._compute_loss(trainer.model, inputs)
    ours = grpo_loss(
        logps, old, ref, adv, mask, 0.2, 0.04, per=per, kl_ratio=kl_ratio
    )
    torch.testing.assert_close(ours, theirs)
