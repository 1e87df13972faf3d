"""llmbook: the code of *Build a Large Language Model from Scratch*.

Modules, in the order data flows through them. Each imports only modules
above it in this list (tests/test_imports.py checks it), so the package
reads top to bottom like the book:

- ``timing``      how often the chapters' timings repeat, and CI's switch
- ``data``        text and vocabularies from package registries; token arrays
- ``tokenizer``   byte-level BPE, trained from scratch, GPT-2 compatible
- ``attention``   causal self-attention, masks, RoPE, the KV cache
- ``model``       GPTConfig, transformer blocks, the GPT model
- ``loss``        cross-entropy, the fused LM-head loss, bits per byte
- ``optim``       AdamW, the learning-rate schedule, gradient clipping
- ``checkpoint``  saving a run, loading a trained model (training and
  generation both use it)
- ``generate``    sampling: greedy, temperature, top-k, top-p, streaming
- ``loop``        TrainConfig and its presets, the training loop, metrics
- ``runs``        the book's cached runs: the chapters' trained models
- ``train``       the training command line; every training name re-exported
- ``decode``      fast decoding: a static KV cache, one-pass prefill, compiled
- ``quantize``    smaller weights: bfloat16, int8 weight-only quantization
- ``speculative`` speculative decoding: a draft model guesses, the target
  checks
- ``lora``        LoRA from scratch: low-rank adapters, merging, checked
  against peft
- ``finetune_data`` labelled data from the plays, JSON-lines files
- ``finetune``    a classifier and an instruction follower from a pretrained
  GPT; the finetuning loop and command line
- ``manual_grad`` appendix A: backpropagation by hand, checked against autograd
- ``exercises``   appendix B: checks for the coding exercises
- ``bench_tokenizer``, ``bench_train``  the speed comparisons that the
  chapters run (``benchmarks/`` has their command lines)
"""

__version__ = "0.1.0"

# The order above, as data: tests/test_imports.py fails on an import of a
# module listed later than the importing one.
MODULE_ORDER = (
    "timing",
    "data",
    "tokenizer",
    "attention",
    "model",
    "loss",
    "optim",
    "checkpoint",
    "generate",
    "loop",
    "runs",
    "train",
    "decode",
    "quantize",
    "speculative",
    "lora",
    "finetune_data",
    "finetune",
    "manual_grad",
    "exercises",
    "bench_tokenizer",
    "bench_train",
)
