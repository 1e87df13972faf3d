"""Learning from preferences and rewards (the chapter after instruction
finetuning): DPO on pairs of answers, GRPO on groups of sampled answers
that code grades.

- ``objectives``  log-probabilities of answers, DPO's loss, GRPO's
                  advantages, KL estimate and clipped loss (checked
                  against TRL)
- ``rollouts``    answers sampled in groups, rewards from code, preference
                  pairs
- ``trainers``    ``DPOTrainer`` and ``GRPOTrainer``: the training loop of
                  ``llmbook.train`` with their batches and losses

Every public name is imported from here: ``from llmbook.align import
dpo_loss``.
"""

from llmbook.align.objectives import (
    DPOLoss,
    dpo_loss,
    group_advantages,
    grpo_loss,
    kl_penalty,
    sequence_logprobs,
    token_logprobs,
)
from llmbook.align.rollouts import (
    Answer,
    answer_batch,
    exact_reward,
    preference_pairs,
    prompt_ids,
    sample_groups,
)
from llmbook.align.trainers import (
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
)

__all__ = [
    "Answer",
    "DPOConfig",
    "DPOTrainer",
    "GRPOConfig",
    "GRPOTrainer",
    "answer_batch",
    "exact_reward",
    "preference_pairs",
    "prompt_ids",
    "sample_groups",
    "DPOLoss",
    "dpo_loss",
    "group_advantages",
    "grpo_loss",
    "kl_penalty",
    "sequence_logprobs",
    "token_logprobs",
]
