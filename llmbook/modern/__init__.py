"""Part VI, today's open models: the parts that separate Llama 3, Qwen3 and
Qwen3-MoE from GPT-2, and loaders proven equal to Hugging Face's.

- ``config``     ``ModernConfig``: grouped-query attention, QK norm, RoPE's
                 base, scaling and pairing, sliding windows, experts
- ``rope``       ``rope_frequencies`` (Llama 3 scaling), ``apply_rope``
                 (both pairings), ``interleave_rows``
- ``attention``  ``GroupedQueryAttention``, ``window_mask``,
                 ``ModernCache``, ``kv_cache_bytes``
- ``moe``        ``SwiGLU``, ``MixtureOfExperts``, ``route``,
                 ``balance_loss``
- ``model``      ``ModernLM``
- ``hf``         ``from_hf``, ``from_hub``, ``config_from_hf``,
                 ``convert_state_dict``
"""

from llmbook.modern.attention import (
    GroupedQueryAttention,
    ModernCache,
    kv_cache_bytes,
    window_mask,
)
from llmbook.modern.config import ModernConfig
from llmbook.modern.hf import (
    config_from_hf,
    convert_state_dict,
    from_hf,
    from_hub,
)
from llmbook.modern.model import ModernBlock, ModernLM
from llmbook.modern.moe import MixtureOfExperts, SwiGLU, balance_loss, route
from llmbook.modern.rope import (
    apply_rope,
    interleave_rows,
    rope_frequencies,
    rope_tables,
)

__all__ = [
    "GroupedQueryAttention",
    "MixtureOfExperts",
    "ModernBlock",
    "ModernCache",
    "ModernConfig",
    "ModernLM",
    "SwiGLU",
    "apply_rope",
    "balance_loss",
    "config_from_hf",
    "convert_state_dict",
    "from_hf",
    "from_hub",
    "interleave_rows",
    "kv_cache_bytes",
    "route",
    "rope_frequencies",
    "rope_tables",
    "window_mask",
]
