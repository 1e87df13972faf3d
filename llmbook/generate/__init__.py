"""Part III (with training), generation: from a trained model to text,
and fast.

One engine (``engine.Engine``): prompts in (one, or several of any lengths),
new tokens out (``list[int]``, or one list per prompt), every setting in one
``SamplingParams`` checked once. Behind it, three ways to run the model:

- ``sampling``     temperature, top-k, top-p, ``sample_next``,
                   ``SamplingParams``
- ``prompts``      the prompt/return contract, left padding
- ``engine``       the loop every engine shares: stop tokens, streaming
- ``reference``    ``Reference``, ``generate``, ``stream``: the model's own
                   forward pass, a KV cache that grows (chapter 8)
- ``text``         ``TextStream``: token ids to text without split characters
- ``static``       ``StaticCacheEngine``: a static cache, one-pass prefill,
                   a compiled step (chapter 9)
- ``quantize``     bfloat16 and int8 weights (chapter 9)
- ``speculative``  ``SpeculativeEngine``: a draft proposes, the target
                   verifies (chapter 9)
- ``cli``          ``python -m llmbook.generate``

Every public name is imported from here: ``from llmbook.generate import
generate, SamplingParams``.
"""

from llmbook.generate.engine import Engine
from llmbook.generate.prompts import Prompts
from llmbook.generate.quantize import (
    INT8_KERNELS,
    Int8Embedding,
    Int8Linear,
    dequantize,
    model_bytes,
    quantize_int8,
    quantize_per_channel,
    to_bfloat16,
    weight_bytes,
)
from llmbook.generate.reference import Reference, generate, stream
from llmbook.generate.sampling import (
    SamplingParams,
    apply_temperature,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from llmbook.generate.speculative import (
    SpeculativeEngine,
    SpeculativeStats,
    expected_tokens_per_round,
    greedy_accept,
    probabilities,
    speculative_accept,
)
from llmbook.generate.static import StaticCacheEngine, measure_bandwidth
from llmbook.generate.text import TextStream

__all__ = [
    "Engine",
    "Prompts",
    "SamplingParams",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_next",
    "Reference",
    "generate",
    "stream",
    "TextStream",
    "StaticCacheEngine",
    "measure_bandwidth",
    "INT8_KERNELS",
    "Int8Embedding",
    "Int8Linear",
    "dequantize",
    "model_bytes",
    "quantize_int8",
    "quantize_per_channel",
    "to_bfloat16",
    "weight_bytes",
    "SpeculativeEngine",
    "SpeculativeStats",
    "expected_tokens_per_round",
    "greedy_accept",
    "probabilities",
    "speculative_accept",
]
