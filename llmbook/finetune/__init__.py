"""Part IV, finetuning: a classifier and an instruction follower from a
pretrained GPT, fully or with LoRA.

- ``data``      labelled examples from the plays, JSON-lines files
- ``lora``      LoRA from scratch: low-rank adapters, merging (checked
                against peft)
- ``classify``  ``Classifier``: a head on the last real token; accuracy with
                a Wilson interval; ``ClassifyTask`` (chapter 10)
- ``instruct``  the instruction format, special tokens, the response-only
                loss, exact match; ``InstructTask`` (chapter 11)
- ``finetuner`` ``finetune``: the finetuning run, resumable, for both tasks
- ``cli``       ``python -m llmbook.finetune``

Every public name is imported from here: ``from llmbook.finetune import
Classifier, finetune``.
"""

from llmbook.finetune.classify import (
    TRAIN_CHOICES,
    Classifier,
    ClassifyTask,
    FinetuneError,
    evaluate_classifier,
    freeze,
    pad,
    predict,
    wilson_interval,
)
from llmbook.finetune.data import (
    FIELDS,
    INSTRUCTIONS,
    ORDER_LABELS,
    PLAY_TITLES,
    DataFormatError,
    Speech,
    all_speeches,
    build_datasets,
    classification_examples,
    instruction_examples,
    order_examples,
    passages,
    read_jsonl,
    shuffle_words,
    speeches,
    split_examples,
    split_plays,
    write_jsonl,
)
from llmbook.finetune.finetuner import (
    TASKS,
    FinetuneConfig,
    Finetuner,
    FinetuneResult,
    build_model,
    encode_examples,
    finetune,
    load_finetuned,
    run_dir,
)
from llmbook.finetune.instruct import (
    END,
    IGNORE,
    INSTRUCTION,
    RESPONSE,
    SPECIAL_TOKENS,
    InstructTask,
    add_special_tokens,
    encode_instruction,
    exact_match,
    format_instruction,
    generate_answers,
    instruction_batch,
    instruction_loss,
    resize_vocab,
)
from llmbook.finetune.lora import (
    LORA_PARAMS,
    LoRALinear,
    apply_lora,
    count_parameters,
    load_lora_state_dict,
    lora_layers,
    lora_state_dict,
    merge_lora,
    optimizer_state_bytes,
    unload_lora,
    unmerge_lora,
)

__all__ = [
    "PLAY_TITLES",
    "FIELDS",
    "DataFormatError",
    "Speech",
    "split_plays",
    "speeches",
    "all_speeches",
    "passages",
    "classification_examples",
    "INSTRUCTIONS",
    "ORDER_LABELS",
    "instruction_examples",
    "order_examples",
    "split_examples",
    "write_jsonl",
    "build_datasets",
    "read_jsonl",
    "shuffle_words",
    "LORA_PARAMS",
    "LoRALinear",
    "apply_lora",
    "lora_layers",
    "merge_lora",
    "unmerge_lora",
    "unload_lora",
    "lora_state_dict",
    "load_lora_state_dict",
    "count_parameters",
    "optimizer_state_bytes",
    "TRAIN_CHOICES",
    "FinetuneError",
    "Classifier",
    "freeze",
    "pad",
    "wilson_interval",
    "predict",
    "evaluate_classifier",
    "ClassifyTask",
    "IGNORE",
    "INSTRUCTION",
    "RESPONSE",
    "END",
    "SPECIAL_TOKENS",
    "add_special_tokens",
    "resize_vocab",
    "format_instruction",
    "encode_instruction",
    "instruction_batch",
    "instruction_loss",
    "generate_answers",
    "exact_match",
    "InstructTask",
    "TASKS",
    "FinetuneConfig",
    "FinetuneResult",
    "encode_examples",
    "build_model",
    "Finetuner",
    "finetune",
    "load_finetuned",
    "run_dir",
]
