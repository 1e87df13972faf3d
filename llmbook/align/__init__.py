"""Learning from preferences and rewards (the chapter after instruction
finetuning): DPO on pairs of answers, GRPO on groups of sampled answers
that code grades.

- ``objectives``  log-probabilities of answers, DPO's loss, GRPO's
                  advantages, KL estimate and clipped loss (checked
                  against TRL)

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

__all__ = [
    "DPOLoss",
    "dpo_loss",
    "group_advantages",
    "grpo_loss",
    "kl_penalty",
    "sequence_logprobs",
    "token_logprobs",
]
