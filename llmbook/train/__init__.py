"""Part III (with generation), training: the loss, the optimizer, the loop,
the book's runs.

- ``config``   ``TrainConfig`` and its presets, ``pick_device``,
               ``autocast_context``
- ``loss``     ``cross_entropy``, ``LinearCrossEntropy`` (the fused LM-head
               loss), ``LanguageModelLoss``, ``bits_per_byte``
- ``optim``    ``param_groups``, ``AdamW``, ``lr_at`` (warmup and cosine),
               ``clip_grad_norm``
- ``metrics``  one JSON line per step; ``plot_metrics``
- ``trainer``  ``Trainer``: the loop every trainer shares (pretraining,
               finetuning, later DPO or GRPO), in named steps
- ``pretrain`` pretraining: ``train``, ``Pretrainer``, ``evaluate``
- ``runs``     the book's cached runs: ``book_run``, ``book_checkpoint``,
               ``draft_checkpoint``, ``check_run``
- ``cli``      ``python -m llmbook.train``

Every public name is imported from here: ``from llmbook.train import
TrainConfig, train``. (Checkpoints, which generation reads too, are
``llmbook.checkpoint``.)
"""

from llmbook.train.config import (
    TRAIN_PRESETS,
    TrainConfig,
    autocast_context,
    pick_device,
)
from llmbook.train.loss import (
    LanguageModelLoss,
    LinearCrossEntropy,
    bits_per_byte,
    cross_entropy,
)
from llmbook.train.metrics import plot_metrics
from llmbook.train.optim import AdamW, clip_grad_norm, lr_at, param_groups
from llmbook.train.pretrain import (
    Pretrainer,
    TrainResult,
    estimate_loss,
    evaluate,
    get_tokenizer,
    train,
)
from llmbook.train.runs import (
    DRAFT_PRESETS,
    RunCheck,
    book_checkpoint,
    book_run,
    check_run,
    checkpoint_dir,
    draft_checkpoint,
    draft_config,
    expected_band,
)
from llmbook.train.trainer import Schedule, Trainer, TrainingDiverged

__all__ = [
    "TRAIN_PRESETS",
    "TrainConfig",
    "autocast_context",
    "pick_device",
    "cross_entropy",
    "LinearCrossEntropy",
    "LanguageModelLoss",
    "bits_per_byte",
    "param_groups",
    "AdamW",
    "lr_at",
    "clip_grad_norm",
    "plot_metrics",
    "Schedule",
    "Trainer",
    "TrainingDiverged",
    "TrainResult",
    "Pretrainer",
    "estimate_loss",
    "evaluate",
    "get_tokenizer",
    "train",
    "DRAFT_PRESETS",
    "RunCheck",
    "book_checkpoint",
    "book_run",
    "check_run",
    "checkpoint_dir",
    "draft_checkpoint",
    "draft_config",
    "expected_band",
]
