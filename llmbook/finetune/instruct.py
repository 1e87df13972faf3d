"""Instructions: special tokens, one prompt format, a response-only loss.

New special tokens (``add_special_tokens``) and a model whose embedding and
LM head grow to match (``resize_vocab``); ONE format, ``format_instruction``,
used by training, evaluation and generation; labels of ``IGNORE`` (-100) on
the prompt and the padding; greedy answers that stop at ``<|end|>``;
``exact_match``.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn as nn

from llmbook.finetune.classify import pad, wilson_interval
from llmbook.generate import generate
from llmbook.model import GPT
from llmbook.tokenizer import Tokenizer
from llmbook.train.loss import cross_entropy

IGNORE = -100  # the label of a position that the loss leaves out


INSTRUCTION = "<|instruction|>"
RESPONSE = "<|response|>"
END = "<|end|>"
SPECIAL_TOKENS = (INSTRUCTION, RESPONSE, END)


def add_special_tokens(
    tokenizer: Tokenizer, tokens=SPECIAL_TOKENS
) -> Tokenizer:
    """A new tokenizer with ``tokens`` as extra special tokens, appended
    after the largest id: every existing id, and so the encoding of any
    text without the new tokens, stays what it was."""
    new = [t for t in tokens if t not in tokenizer.special_tokens]
    out = Tokenizer(
        tokenizer.vocab,
        tokenizer.merges,
        [*tokenizer.special_tokens, *new],
        tokenizer.pattern,
    )
    moved = {
        t: (i, out.special_tokens[t])
        for t, i in tokenizer.special_tokens.items()
        if out.special_tokens[t] != i
    }
    if moved:  # cannot happen with a vocabulary of distinct tokens
        raise ValueError(f"special tokens would change ids: {moved}")
    return out


def resize_vocab(
    model: GPT, new_size: int, generator: torch.Generator | None = None
) -> GPT:
    """Grow the token embedding (and the LM head) of ``model`` to
    ``new_size`` rows, in place: the old rows are kept exactly, the new
    ones drawn from N(0, 0.02^2) as in ``GPT``'s own initialisation. A
    tied LM head stays the same tensor as the embedding. Returns
    ``model``, whose ``config.vocab_size`` is now ``new_size``."""
    old = model.wte.weight
    v, c = old.shape
    if new_size < v:
        raise ValueError(
            f"resize_vocab only grows the vocabulary: {v} -> {new_size}"
        )
    if new_size == v:
        return model

    def grown(weight: torch.Tensor) -> nn.Parameter:
        w = torch.empty(new_size, c, dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            w[:v] = weight
            nn.init.normal_(w[v:], mean=0.0, std=0.02, generator=generator)
        return nn.Parameter(w, requires_grad=weight.requires_grad)

    model.wte = nn.Embedding.from_pretrained(grown(old), freeze=False)
    model.wte.weight.requires_grad_(old.requires_grad)
    tied = model.lm_head.weight is old
    if tied:
        model.lm_head.weight = model.wte.weight
    else:
        model.lm_head.weight = grown(model.lm_head.weight)
    model.lm_head.out_features = new_size
    model.config = dataclasses.replace(model.config, vocab_size=new_size)
    return model


def format_instruction(
    instruction: str, input: str = "", response: str | None = None
) -> str:
    """The one prompt format, for training, evaluation and generation:

        <|instruction|>{instruction}\\n{input}<|response|>{response}<|end|>

    (no newline and input when ``input`` is empty). With
    ``response=None`` it stops after ``<|response|>``: the prompt that
    generation continues."""
    text = INSTRUCTION + instruction
    if input:
        text += "\n" + input
    text += RESPONSE
    if response is not None:
        text += response + END
    return text


def encode_instruction(
    tokenizer: Tokenizer,
    instruction: str,
    input: str = "",
    response: str | None = None,
) -> tuple[list[int], int]:
    """(ids of ``format_instruction(...)``, number of prompt tokens). The
    prompt ends with a special token, which BPE never merges across, so
    the prompt's ids are a prefix of the whole example's."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.special_tokens]
    if missing:
        raise ValueError(
            f"the tokenizer lacks {missing}: use add_special_tokens(tokenizer)"
        )
    prompt = tokenizer.encode(format_instruction(instruction, input))
    if response is None:
        return prompt, len(prompt)
    ids = tokenizer.encode(format_instruction(instruction, input, response))
    assert ids[: len(prompt)] == prompt
    return ids, len(prompt)


def instruction_batch(
    examples: list[tuple[list[int], int]],
    loss_on: str = "response",
    pad_id: int = 0,
):
    """(ids, n_prompt) pairs -> ids (B, T), mask (B, T), labels (B, T).

    ``labels`` are the ids with -100 (ignored) on the padding and, for
    ``loss_on="response"``, on the prompt too: the model is trained to
    answer, not to write questions. ``"all"`` counts every real token.
    """
    if loss_on not in ("response", "all"):
        raise ValueError(f"loss_on must be 'response' or 'all': {loss_on!r}")
    ids, mask = pad([e[0] for e in examples], pad_id)
    labels = ids.masked_fill(~mask, IGNORE)
    if loss_on == "response":
        for i, (_, n_prompt) in enumerate(examples):
            labels[i, :n_prompt] = IGNORE
    return ids, mask, labels


def instruction_loss(model, ids, mask, labels) -> torch.Tensor:
    """Mean next-token loss over the positions whose label is not -100:
    position t predicts labels[t + 1]. The LM head runs at those positions
    only: the loss of the full (B, T, V) logits, without computing the
    rows it ignores (with the loss on the answers, nine in ten)."""
    h = model.hidden_states(ids, attention_mask=mask)  # (B, T, C)
    targets = labels[:, 1:]  # (B, T - 1)
    counted = targets != IGNORE
    logits = model.lm_head(h[:, :-1][counted])  # (N, V)
    return cross_entropy(logits, targets[counted])


def generate_answers(
    model, tokenizer, examples, max_new_tokens: int = 32, batch_size=32
) -> list[str]:
    """Greedy answers to ``examples`` ({"instruction", "input"}): the text
    generated after the prompt up to ``<|end|>`` (or ``max_new_tokens``),
    stripped of surrounding whitespace."""
    end = tokenizer.special_tokens[END]
    prompts = [
        encode_instruction(tokenizer, e["instruction"], e.get("input", ""))[0]
        for e in examples
    ]
    answers = []
    for i in range(0, len(prompts), batch_size):
        rows = generate(
            model,
            prompts[i : i + batch_size],
            max_new_tokens,
            temperature=0.0,
            stop_ids=[end],
        )
        for row in rows:
            row = row[:-1] if row and row[-1] == end else row
            answers.append(tokenizer.decode(row).strip())
    return answers


def exact_match(
    model, tokenizer, examples, max_new_tokens: int = 32, batch_size=32
) -> dict:
    """The share of ``examples`` whose greedy answer equals ``output``
    (both stripped), with its Wilson 95% interval, the share per ``task``
    (when examples have one) and the answers."""
    answers = generate_answers(
        model, tokenizer, examples, max_new_tokens, batch_size
    )
    hits = [a == e["output"].strip() for a, e in zip(answers, examples)]
    by_task: dict[str, list[bool]] = {}
    for e, h in zip(examples, hits):
        by_task.setdefault(e.get("task", ""), []).append(h)
    n, correct = len(hits), sum(hits)
    return dict(
        accuracy=correct / n if n else 0.0,
        correct=correct,
        n=n,
        ci95=wilson_interval(correct, n),
        by_task={t: sum(h) / len(h) for t, h in sorted(by_task.items())},
        answers=answers,
    )


# ---------------------------------------------------------------------------
# The task, as the finetuning run (llmbook.finetune.finetuner) sees it


class InstructTask:
    """Instruction following for ``finetune``: examples {"instruction",
    "input", "output"}, the special tokens added and the vocabulary grown,
    the next-token loss on the response (``cfg.loss_on="response"``) or on
    every token (``"all"``)."""

    name = "instruct"

    def prepare(self, cfg, model, tokenizer, examples):
        """The tokenizer with the special tokens, the model (a copy) with
        rows for them (drawn from ``cfg.seed``)."""
        tokenizer = add_special_tokens(tokenizer)
        if tokenizer.vocab_size > model.config.vocab_size:
            model = resize_vocab(
                copy.deepcopy(model),
                tokenizer.vocab_size,
                torch.Generator().manual_seed(cfg.seed),
            )
        return model, tokenizer

    def encode(self, example: dict, tokenizer, labels: list, where: str):
        """-> (ids, number of prompt tokens)."""
        return encode_instruction(
            tokenizer,
            example["instruction"],
            example.get("input", ""),
            example["output"],
        )

    def network(self, gpt, n_labels: int):
        """The GPT itself; the new tokens' rows must learn, so the
        embedding and the LM head (one matrix when tied) train with LoRA
        too."""
        keep = ("wte.",) if gpt.config.tie_weights else ("wte.", "lm_head.")
        return gpt, keep

    def loss(self, net, batch, device, cfg) -> torch.Tensor:
        ids, mask, labels = instruction_batch(batch, cfg.loss_on)  # (B, T)
        return instruction_loss(
            net, ids.to(device), mask.to(device), labels.to(device)
        )
