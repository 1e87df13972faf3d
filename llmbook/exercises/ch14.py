"""The checks of chapter 14's exercises (learning from preferences and
rewards): GRPO's group-normalised advantages, DPO's loss, and the
log-probability of an answer from logits and labels.

Both references are the package's own (``llmbook.align``), which
tests/test_align.py proves equal to TRL's trainers. The advantage check
has groups whose rewards are all equal (the advantages must be 0, not
NaN: the ``eps`` in the denominator) and two-answer groups (where the
population standard deviation and Bessel's differ by a factor of
sqrt(2)); the DPO check has margins of hundreds of nats, where
log(sigmoid(x)) computed in two steps gives -inf; the log-probability
check has labels of -100 (not counted) at the prompt and the padding, a
label at position 0 (which no position predicts) and logits large
enough that exp overflows.
"""

import torch

from llmbook.align import dpo_loss, group_advantages, sequence_logprobs
from llmbook.exercises.harness import Case, _randn, exercise
from llmbook.finetune import IGNORE


def _advantages(rewards, group_size):
    return group_advantages(rewards, group_size)


def _binary(n, seed, p=0.5):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=g) < p).float()


@exercise(
    "14.1",
    label="ex-align-advantages",
    name="my_group_advantages",
    params=("rewards", "group_size"),
    reference=_advantages,
)
def _cases_14_1():
    return [
        Case(
            (torch.tensor([1.0, 0.0, 0.0, 0.0]), 4),
            "one group of 4, one answer right: it alone gets a positive "
            "advantage",
        ),
        Case(
            (torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]), 3),
            "two groups of 3: each answer against its own group's mean, "
            "not the batch's",
        ),
        Case(
            (torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), 4),
            "a group of four with the same reward: advantages 0 (divide "
            "by std + 1e-4, never by 0)",
        ),
        Case(
            (torch.tensor([1.0, 0.0, 0.5, 0.5]), 2),
            "groups of 2: the standard deviation with Bessel's correction "
            "(n - 1), as torch.std computes it",
        ),
        Case((_binary(64, seed=1), 8), "8 groups of 8 exact-match rewards"),
        Case((_binary(48, seed=2, p=0.8), 16), "3 groups of 16"),
        Case((_randn(30, seed=3), 5), "continuous rewards, groups of 5"),
        Case((_randn(12, seed=4, scale=10.0), 6), "rewards of scale 10"),
    ]


def _dpo(chosen, rejected, ref_chosen, ref_rejected, beta):
    return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta).loss


def _logps(n, seed, shift=0.0):
    return _randn(n, seed=seed, scale=3.0) - 20.0 + shift


@exercise(
    "14.2",
    label="ex-align-dpo",
    name="my_dpo_loss",
    params=("chosen", "rejected", "ref_chosen", "ref_rejected", "beta"),
    reference=_dpo,
)
def _cases_14_2():
    cases = [
        Case(
            (
                torch.tensor([-5.0]),
                torch.tensor([-5.0]),
                torch.tensor([-5.0]),
                torch.tensor([-5.0]),
                0.1,
            ),
            "the policy is the reference: loss log 2",
        ),
        Case(
            (
                torch.tensor([-4.0, -9.0]),
                torch.tensor([-6.0, -7.0]),
                torch.tensor([-5.0, -8.0]),
                torch.tensor([-6.0, -7.0]),
                0.5,
            ),
            "each log-probability minus the reference's, then the "
            "difference between chosen and rejected",
        ),
        Case(
            (
                torch.tensor([-2.0, -3.0]),
                torch.tensor([-30.0, -31.0]),
                torch.tensor([-2.0, -3.0]),
                torch.tensor([-30.0, -31.0]),
                0.1,
            ),
            "chosen far more likely than rejected, under the policy and "
            "the reference alike: still log 2",
        ),
    ]
    for seed, (n, beta) in enumerate(
        [(4, 0.1), (16, 0.1), (8, 0.5), (1, 2.0), (32, 0.05)], start=1
    ):
        cases.append(
            Case(
                (
                    _logps(n, seed, 1.0),
                    _logps(n, seed + 10),
                    _logps(n, seed + 20),
                    _logps(n, seed + 30),
                    beta,
                ),
                f"{n} pair(s), beta {beta}: the mean over the pairs",
            )
        )
    cases.append(
        Case(
            (
                torch.tensor([-400.0, -1.0]),
                torch.tensor([-1.0, -2.0]),
                torch.tensor([-1.0, -1.0]),
                torch.tensor([-1.0, -2.0]),
                1.0,
            ),
            "a margin of -399: log(sigmoid(x)) in two steps is log(0); "
            "use F.logsigmoid",
        )
    )
    return cases


def _answer_logprob(logits, labels):
    return sequence_logprobs(logits, labels)


def _labels(b, t, v, seed, n_prompt):
    """Labels (b, t): random token ids, -100 on the first n_prompt[i]
    positions of row i and on the padding after a random length."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, v, (b, t), generator=g)
    for i in range(b):
        end = int(torch.randint(n_prompt[i] + 1, t + 1, (1,), generator=g))
        labels[i, : n_prompt[i]] = IGNORE
        labels[i, end:] = IGNORE
    return labels


@exercise(
    "14.3",
    label="ex-align-logprob",
    name="my_answer_logprob",
    params=("logits", "labels"),
    reference=_answer_logprob,
)
def _cases_14_3():
    two = torch.tensor([[IGNORE, 1, 0]])
    cases = [
        Case(
            (
                torch.log(
                    torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]]])
                ),
                two,
            ),
            "the logits at t score the label at t + 1: log 0.5 + log 0.9",
        ),
        Case(
            (_randn(2, 5, 7, seed=1), torch.full((2, 5), IGNORE)),
            "no answer token counted: 0",
        ),
        Case(
            (_randn(1, 4, 6, seed=2), torch.tensor([[3, IGNORE, IGNORE, 5]])),
            "a label at position 0 has no position before it: not counted",
        ),
    ]
    for seed, (b, t, v) in enumerate(
        [(3, 8, 11), (4, 12, 50), (2, 6, 5), (1, 16, 100)], start=3
    ):
        n_prompt = [1 + (seed + i) % (t // 2) for i in range(b)]
        cases.append(
            Case(
                (_randn(b, t, v, seed=seed), _labels(b, t, v, seed, n_prompt)),
                f"{b} rows of {t} positions, vocabulary {v}, prompts and "
                "padding at -100",
            )
        )
    cases.append(
        Case(
            (
                _randn(2, 6, 9, seed=9, scale=200.0),
                _labels(2, 6, 9, 9, [2, 3]),
            ),
            "logits of scale 200: exp overflows float32; use log_softmax",
        )
    )
    return cases
