"""llmbook: the code of *Build a Large Language Model from Scratch*.

The package is laid out like the book. The first modules are flat, one idea
each; from training on, each part of the book is a subpackage, whose
``__init__`` is the one place its public names are imported from
(``from llmbook.train import TrainConfig``)::

    llmbook/
      checks.py       argument checks, one shape for every message
      timing.py       how often the chapters' timings repeat; one timer
      data.py         text and vocabularies from package registries; token
                      arrays; atomic writes; cache keys
      tokenizer.py    byte-level BPE, trained from scratch, GPT-2 compatible
      ngram.py        language models by counting: n-grams, smoothing, the
                      baseline in bits per byte
      autograd/       automatic differentiation from scratch: a scalar
                      engine, then a tensor engine on NumPy
      attention.py    causal self-attention, masks, RoPE, the KV cache
      model.py        GPTConfig, transformer blocks, the GPT model
      checkpoint.py   a model and its tokenizer on disk (training writes,
                      generation and finetuning read)
      manual_grad/    appendix A: backpropagation by hand (layers, a GPT,
                      the autograd views)
      generate/       Part III: sampling, the generation engine (reference,
                      static cache, speculative), quantization, the CLI
      train/          Part III: loss, optimizer, the training loop, the
                      book's cached runs, the CLI
      finetune/       Part IV: labelled data, LoRA, classification,
                      instructions, the finetuning run, the CLI
      align/          learning from preferences and rewards: DPO's loss,
                      GRPO's advantages and clipped objective (checked
                      against TRL)
      serve/          Part V: an OpenAI-compatible HTTP server with continuous
                      batching, a chat page, the CLI
      modern/         Part VI: today's open models (Llama 3, Qwen3,
                      Qwen3-MoE): grouped-query and sliding-window
                      attention, mixtures of experts, Hugging Face loaders
      exercises/      appendix B: the checks of the coding exercises, one
                      module per chapter
      bench/          side-by-side speed comparisons against the references

``generate/`` comes before ``train/`` although the book trains first:
training prints samples as it goes, so the loop uses the engine, and
nothing in generation needs the training code.

Where the next chapters' code goes: today's open models are ``modern/``
(its blocks beside chapter 6's ``GPT``, which ``ModernLM.from_gpt`` proves
equal); the DPO and GRPO objectives are ``align/``, whose trainers will use
``train/``'s loop.

Each module imports only modules listed before it in ``MODULE_ORDER``
(tests/test_imports.py checks it, for every import, also those inside
functions), so there is no import cycle and the code reads in the book's
order. A package's ``__init__`` comes after its modules.
"""

__version__ = "0.2.0"

# The order above, as data (dotted names under llmbook; a package's modules
# are contiguous, its __init__ after them, its command line last).
MODULE_ORDER = (
    "checks",
    "timing",
    "data",
    "tokenizer",
    "ngram",
    "autograd.scalar",
    "autograd.tensor",
    "autograd",
    "attention",
    "model",
    "checkpoint",
    "manual_grad.layers",
    "manual_grad.model",
    "manual_grad.functions",
    "manual_grad",
    "generate.sampling",
    "generate.prompts",
    "generate.engine",
    "generate.reference",
    "generate.text",
    "generate.static",
    "generate.quantize",
    "generate.speculative",
    "generate",
    "generate.cli",
    "generate.__main__",
    "train.config",
    "train.loss",
    "train.optim",
    "train.metrics",
    "train.trainer",
    "train.pretrain",
    "train.runs",
    "train",
    "train.cli",
    "train.__main__",
    "finetune.data",
    "finetune.lora",
    "finetune.classify",
    "finetune.instruct",
    "finetune.finetuner",
    "finetune",
    "finetune.cli",
    "finetune.__main__",
    "align.objectives",
    "align.rollouts",
    "align.trainers",
    "align",
    "serve.batcher",
    "serve.app",
    "serve.cli",
    "serve",
    "serve.__main__",
    "modern.config",
    "modern.rope",
    "modern.attention",
    "modern.moe",
    "modern.model",
    "modern.hf",
    "modern.experiments",
    "modern",
    "exercises.harness",
    "exercises.ch1",
    "exercises.ch2",
    "exercises.ch3",
    "exercises.ch4",
    "exercises.ch5",
    "exercises.ch6",
    "exercises.appendix_a",
    "exercises.ch7",
    "exercises.ch8",
    "exercises.ch9",
    "exercises.appendix_d",
    "exercises.ch13",
    "exercises.ch14",
    "exercises",
    "bench.tokenizer",
    "bench.attention",
    "bench.train",
    "bench.generate",
    "bench.modern",
    "bench",
)
