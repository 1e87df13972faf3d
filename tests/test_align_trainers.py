"""llmbook.align's rollouts and trainers: answers sampled in groups with a
seed each, rewards from code, preference pairs, and DPO and GRPO as runs of
the book's training loop. Tiny random models and a tokenizer trained here:
seconds, nothing downloaded."""

import math

import pytest
import torch

from llmbook import finetune as ft
from llmbook.align import (
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    answer_batch,
    exact_reward,
    preference_pairs,
    sample_groups,
)
from llmbook.align.rollouts import Answer
from llmbook.model import GPT, GPTConfig
from llmbook.tokenizer import EOT, Tokenizer, train_bpe

TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in "
    "the mind to suffer the slings and arrows of outrageous fortune. "
) * 10
QUESTIONS = [
    {"instruction": "Who asks?", "input": "to be", "output": "Hamlet"},
    {"instruction": "What follows?", "input": "", "output": "the question"},
    {"instruction": "Which word?", "input": "or not", "output": "or"},
]


@pytest.fixture(scope="module")
def tok():
    vocab, merges = train_bpe(TEXT, 300, special_tokens=[EOT])
    return ft.add_special_tokens(
        Tokenizer(vocab, merges, special_tokens=[EOT])
    )


def tiny_gpt(tok, seed=0, block_size=48):
    torch.manual_seed(seed)
    return GPT(
        GPTConfig.preset(
            "tiny", vocab_size=tok.vocab_size, block_size=block_size
        )
    ).eval()


# ---------------------------------------------------------------------------
# Sampling groups, rewards, pairs


def test_each_answer_of_a_group_is_drawn_from_its_own_seed(tok):
    model = tiny_gpt(tok)
    groups = sample_groups(model, tok, QUESTIONS, 4, max_new_tokens=6)
    assert [len(g) for g in groups] == [4, 4, 4]
    # one seed for the whole batch would give identical answers
    assert all(len({a.ids for a in g}) > 1 for g in groups)
    again = sample_groups(
        model, tok, QUESTIONS, 4, max_new_tokens=6, batch_size=5
    )
    assert again == groups  # the same seeds, whatever the batch size
    other = sample_groups(model, tok, QUESTIONS, 4, max_new_tokens=6, seed=1)
    assert other != groups
    greedy = sample_groups(
        model, tok, QUESTIONS, 3, max_new_tokens=6, temperature=0.0
    )
    assert all(len({a.ids for a in g}) == 1 for g in greedy)
    assert not model.training


def test_answers_are_scored_and_fit_the_context(tok):
    model = tiny_gpt(tok, block_size=24)
    end = tok.special_tokens[ft.END]
    groups = sample_groups(
        model,
        tok,
        QUESTIONS,
        3,
        max_new_tokens=40,
        reward=lambda text, e: float(len(text)),
    )
    for e, g in zip(QUESTIONS, groups):
        n_prompt = len(
            ft.encode_instruction(tok, e["instruction"], e["input"])[0]
        )
        for a in g:
            assert n_prompt + len(a.ids) <= 24
            body = a.ids[:-1] if a.ids[-1:] == (end,) else a.ids
            assert a.text == tok.decode(list(body)).strip()
            assert a.reward == len(a.text)
    too_long = dict(QUESTIONS[0], input="to be or not to be " * 8)
    with pytest.raises(ValueError, match="no room for an answer"):
        sample_groups(model, tok, [too_long], 2)


def test_exact_reward_is_exact_match_of_stripped_text():
    e = {"output": " Hamlet "}
    assert exact_reward("Hamlet", e) == 1.0
    assert exact_reward(" Hamlet\n", e) == 1.0
    assert exact_reward("hamlet", e) == 0.0
    assert exact_reward("Hamlet.", e) == 0.0


def test_answer_batch_labels_only_the_answers():
    ids, mask, labels = answer_batch([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]])
    assert ids.tolist() == [[5, 6, 7, 1, 2], [8, 3, 4, 9, 0]]
    assert mask.tolist() == [[True] * 5, [True] * 4 + [False]]
    assert labels.tolist() == [
        [ft.IGNORE] * 3 + [1, 2],
        [ft.IGNORE, 3, 4, 9, ft.IGNORE],
    ]
    with pytest.raises(ValueError, match="one answer per prompt"):
        answer_batch([[1]], [[2], [3]])


def test_pairs_put_a_right_answer_against_a_wrong_one(tok):
    def answer(text, reward):
        return Answer(tuple(tok.encode(text)), text, reward)

    groups = [
        [answer("x", 0.0), answer("Hamlet", 1.0), answer("y", 0.0)],
        [answer("the question", 1.0)] * 3,  # all right: no pair
        [answer("a", 0.0), answer("b", 0.0)],  # all wrong: no pair
    ]
    pairs = preference_pairs(tok, QUESTIONS, groups)
    assert len(pairs) == 1
    prompt, chosen, rejected = pairs[0]
    q = QUESTIONS[0]
    assert (
        prompt == ft.encode_instruction(tok, q["instruction"], q["input"])[0]
    )
    assert tok.decode(chosen) == "Hamlet" and tok.decode(rejected) == "x"
    with pytest.raises(ValueError, match="groups"):
        preference_pairs(tok, QUESTIONS, groups[:2])


# ---------------------------------------------------------------------------
# The trainers


def _pairs(tok):
    end = tok.special_tokens[ft.END]
    out = []
    for q, wrong in zip(QUESTIONS, ["x", "y", "z"]):
        p = ft.encode_instruction(tok, q["instruction"], q["input"])[0]
        out.append(
            (p, tok.encode(q["output"]) + [end], tok.encode(wrong) + [end])
        )
    return out


def test_dpo_starts_at_log_2_learns_the_pairs_and_keeps_the_reference(tok):
    model = tiny_gpt(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = DPOConfig(steps=30, batch_size=3, lr=3e-3, warmup=1, beta=0.5)
    run = DPOTrainer(cfg, model, _pairs(tok))
    history = run.run()
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert history[-1]["loss"] < 0.3
    assert history[-1]["pair_accuracy"] == 1.0
    assert history[-1]["chosen_reward"] > history[-1]["rejected_reward"]
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )
    with pytest.raises(ValueError, match="no preference pairs"):
        DPOTrainer(cfg, model, [])


def test_grpo_step_on_a_group_that_agrees_changes_nothing(tok):
    model = tiny_gpt(tok)
    cfg = GRPOConfig(steps=1, questions=3, group_size=4, max_new_tokens=6)
    run = GRPOTrainer(cfg, model, tok, QUESTIONS, reward=lambda t, e: 1.0)
    run.run()
    # every advantage 0 and the policy equal to the reference: no gradient
    assert run.history[0]["informative"] == 0.0
    assert run.history[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    for p, q in zip(run.model.parameters(), model.parameters()):
        assert torch.equal(p, q)


def test_grpo_raises_the_reward_it_is_given(tok):
    model = tiny_gpt(tok)

    def short(text, example):  # a reward every group disagrees about
        return -float(len(text))

    def mean_reward(net):
        groups = sample_groups(
            net, tok, QUESTIONS, 16, max_new_tokens=8, seed=99, reward=short
        )
        return sum(a.reward for g in groups for a in g) / 48

    cfg = GRPOConfig(
        steps=25, questions=3, group_size=8, lr=1e-2, max_new_tokens=8
    )
    run = GRPOTrainer(cfg, model, tok, QUESTIONS, reward=short)
    run.run()
    assert mean_reward(run.model) > mean_reward(model) + 5
    assert run.history[-1]["kl"] > 0
    assert {"reward", "informative", "sampling", "kl"} <= set(run.history[0])


def test_grpo_reuses_a_batch_of_answers_for_reuse_steps(tok):
    model = tiny_gpt(tok)
    cfg = GRPOConfig(
        steps=4, questions=2, group_size=2, reuse=2, max_new_tokens=4
    )
    run = GRPOTrainer(cfg, model, tok, QUESTIONS, reward=lambda t, e: 0.0)
    seen = []
    original = run.sample

    def sample(step):
        seen.append(step)
        return original(step)

    run.sample = sample
    run.run()
    assert seen == [0, 2]


def test_grpo_callback_adds_to_the_history(tok):
    model = tiny_gpt(tok)
    cfg = GRPOConfig(steps=3, questions=2, group_size=2, max_new_tokens=4)
    seen = []

    def callback(step, policy):
        seen.append((step, policy.training))
        return {"held_out": float(step)} if step % 2 else None

    run = GRPOTrainer(
        cfg, model, tok, QUESTIONS, reward=lambda t, e: 0.0, callback=callback
    )
    run.run()
    assert seen == [(1, True), (2, True), (3, True)]
    assert [h.get("held_out") for h in run.history] == [1.0, None, 3.0]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(group_size=1), "group_size must be at least 2"),
        (dict(lr=0.0), "lr must be positive"),
        (dict(beta=-1.0), "beta must be >= 0"),
    ],
)
def test_grpo_config_refuses_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**kw)


def test_grpo_needs_enough_questions(tok):
    with pytest.raises(ValueError, match="fewer than questions=4"):
        GRPOTrainer(GRPOConfig(questions=4), tiny_gpt(tok), tok, QUESTIONS)
