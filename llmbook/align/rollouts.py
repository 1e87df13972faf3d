"""Answers sampled from a model, the rewards code gives them, and the
preference pairs built from them.

- ``sample_groups``: ``group_size`` answers to each question, sampled from
  the model with one seed per answer (one seed for every row would give
  identical answers to identical prompts);
- ``exact_reward``: 1 when an answer is exactly the expected one, else 0:
  the reward a program computes, with nothing learned in it;
- ``preference_pairs``: (chosen, rejected) pairs, a right answer against
  a wrong one to the same question, for DPO;
- ``answer_batch``: prompts and answers as one padded batch whose labels
  count the answers' tokens only (chapter 11's convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmbook.finetune.instruct import (
    END,
    encode_instruction,
    instruction_batch,
)
from llmbook.generate import generate


@dataclass(frozen=True)
class Answer:
    """One sampled answer: its tokens (with ``<|end|>`` when the model
    ended it), its text (without it, stripped) and its reward."""

    ids: tuple[int, ...]
    text: str
    reward: float


def exact_reward(text: str, example: dict) -> float:
    """1.0 when ``text`` equals the example's ``output`` (both stripped),
    else 0.0: chapter 11's exact match, one answer at a time."""
    return float(text.strip() == example["output"].strip())


def prompt_ids(tokenizer, example: dict) -> list[int]:
    """The instruction prompt of ``example``, ending in ``<|response|>``."""
    return encode_instruction(
        tokenizer, example["instruction"], example.get("input", "")
    )[0]


@torch.no_grad()
def sample_groups(
    model,
    tokenizer,
    examples: list[dict],
    group_size: int,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 32,
    seed: int = 0,
    reward=exact_reward,
    batch_size: int = 128,
) -> list[list[Answer]]:
    """``group_size`` answers to each of ``examples``, sampled at
    ``temperature`` (0: greedy, every answer the same), each scored by
    ``reward(text, example)``. Answer j of question i is drawn from its
    own seed, a function of (seed, i, j): the same call gives the same
    answers, whatever the batch size. An answer is cut where prompt and
    answer fill the model's context, so that it can be scored in one
    forward pass."""
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    end = tokenizer.special_tokens[END]
    prompts = [prompt_ids(tokenizer, e) for e in examples]
    block_size = model.config.block_size
    for i, p in enumerate(prompts):
        if len(p) >= block_size:
            raise ValueError(
                f"question {i}: its prompt is {len(p)} tokens, which leaves "
                f"no room for an answer in the context of {block_size}; "
                "leave such questions out"
            )
    rows = [(i, j) for i in range(len(examples)) for j in range(group_size)]
    was_training = model.training
    model.eval()
    out: list[list[Answer]] = [[] for _ in examples]
    try:
        for k in range(0, len(rows), batch_size):
            chunk = rows[k : k + batch_size]
            seeds = tuple((seed * 1_000_003 + i) * 1_009 + j for i, j in chunk)
            new = generate(
                model,
                [prompts[i] for i, _ in chunk],
                max_new_tokens,
                temperature=temperature,
                seed=seeds if temperature > 0 else None,
                stop_ids=[end],
            )
            for (i, _), ids in zip(chunk, new):
                # no longer than the context, so that it can be scored
                ids = ids[: block_size - len(prompts[i])]
                body = ids[:-1] if ids and ids[-1] == end else ids
                text = tokenizer.decode(body).strip()
                out[i].append(
                    Answer(tuple(ids), text, reward(text, examples[i]))
                )
    finally:
        model.train(was_training)
    return out


def answer_batch(prompts, answers, pad_id: int = 0):
    """Lists of prompt ids and answer ids -> ids, mask, labels (B, T), the
    labels -100 everywhere except at the answers' tokens."""
    if len(prompts) != len(answers):
        raise ValueError(
            f"{len(prompts)} prompts but {len(answers)} answers: give one "
            "answer per prompt"
        )
    # chapter 11's batch of (ids, n_prompt): labels on the answers only
    return instruction_batch(
        [(list(p) + list(a), len(p)) for p, a in zip(prompts, answers)],
        pad_id=pad_id,
    )


def preference_pairs(
    tokenizer, examples: list[dict], groups: list[list[Answer]]
) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt, chosen, rejected) token lists: for each question whose
    group has a right answer (reward > 0) and a wrong one (reward 0), its
    first right answer against its first wrong one. Questions whose
    answers are all right, or all wrong, give no pair."""
    if len(examples) != len(groups):
        raise ValueError(
            f"{len(examples)} examples but {len(groups)} groups of answers"
        )
    pairs = []
    for e, group in zip(examples, groups):
        right = [a for a in group if a.reward > 0]
        wrong = [a for a in group if a.reward == 0]
        if right and wrong:
            pairs.append(
                (
                    prompt_ids(tokenizer, e),
                    list(right[0].ids),
                    list(wrong[0].ids),
                )
            )
    return pairs
