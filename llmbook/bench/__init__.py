"""Side-by-side speed comparisons: our code against the references, in one
process, contenders alternating (``llmbook.timing.alternate``), medians.

In book order; each is ``python -m llmbook.bench.<name>`` (``--help`` lists
its flags; ``benchmarks/<name>.py`` runs the same):

- ``tokenizer`` (chapter 2): BPE training time, ``train_bpe`` against
  Hugging Face ``tokenizers``' trainer, and encoding speed (MB/s), our
  ``Tokenizer.encode`` (cold and warm cache) and its ``to_tiktoken()``
  export against tiktoken's GPT-2 and ``tokenizers``' GPT-2.
  ``python -m llmbook.bench.tokenizer [--quick]``
- ``attention`` (chapter 5): forward + backward of our written-out and our
  fused (SDPA) attention against Hugging Face's GPT2Attention (eager and
  SDPA), same weights, then of a whole GPT-2-shaped model against
  GPT2LMHeadModel; milliseconds and the largest output difference.
  ``python -m llmbook.bench.attention [--threads N] [--repeats 7]
  [--batch 8] [--seq 256] [--n-embd 256] [--n-head 4]``
- ``train`` (chapter 7): training tokens/s, our GPT + our AdamW against
  GPT2LMHeadModel + torch.optim.AdamW at the same shape, and the MFU of
  both and of the book's model.
  ``python -m llmbook.bench.train [--threads 2 1] [--steps 3]
  [--repeats 5]``
- ``generate`` (chapter 9): tokens/s of greedy generation, Hugging Face's
  ``generate`` against ``llmbook.generate.generate`` and
  ``StaticCacheEngine`` in fp32, bf16 and int8 (eager and compiled), set
  against the memory-bandwidth roofline; the quality cost of each
  precision; batches of prompts of different lengths; a profile of one
  decoding step.
  ``python -m llmbook.bench.generate [--new-tokens 128]
  [--prompt-tokens 32] [--repeats 3] [--threads N] [--batches 1 4 16]
  [--no-compile] [--no-cache-repeats 0] [--no-quality] [--no-profile]``
- ``modern`` (chapter 13): ``ModernLM`` against Hugging Face's Llama and
  Qwen3-MoE with the same weights: forward + backward, and batch-1 greedy
  decoding with each side's cache; milliseconds, ratios and the largest
  logit difference.
  ``python -m llmbook.bench.modern [--threads N] [--repeats 5]
  [--batch 8] [--seq 128] [--new-tokens 64] [--context 512]``

Chapters 2 and 7 run a short version in the notebook
(``llmbook.bench.tokenizer.encode_table``, ``llmbook.bench.train.run``).
The Hugging Face packages (``transformers``, ``tokenizers``) are benchmark
dependencies, not the package's: each module imports them where it uses
them.
"""
