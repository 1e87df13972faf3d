"""llmbook: the code of *Build a Large Language Model from Scratch*.

Modules, in the order data flows through them:

- ``data``       text and vocabularies from package registries; token arrays
- ``tokenizer``  byte-level BPE, trained from scratch, GPT-2 compatible
- ``attention``  causal self-attention, RoPE, the KV cache
- ``model``      GPTConfig, transformer blocks, the GPT model
- ``train``      loss, AdamW, schedule, training loop, checkpoints
- ``generate``   sampling: greedy, temperature, top-k, top-p, streaming
"""

__version__ = "0.1.0"
