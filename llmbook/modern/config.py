"""``ModernConfig``: the switches that separate today's open models from
GPT-2, each defaulting to what the book's model does.

- ``n_kv_head``: grouped-query attention. Key/value heads shared by groups of
  query heads; ``n_head`` is multi-head attention, 1 is multi-query.
- ``head_size``: set on its own, as Qwen3 does (n_head * head_size need not
  equal n_embd).
- ``qk_norm``: RMSNorm on each head's queries and keys before RoPE (Qwen3,
  OLMo 2, Gemma 3), which keeps attention logits from growing.
- ``rope_base``, ``rope_scaling``, ``rope_pairing``: RoPE's base, Llama 3's
  frequency scaling for long contexts, and which channels form a rotated
  pair ("half": i with i + hs/2, as Hugging Face stores checkpoints;
  "interleaved": 2i with 2i + 1, as Meta's code and RoFormer do).
- ``window`` and ``layer_types``: sliding-window attention, in every layer
  or in a pattern of "sliding" and "full" layers (Mistral, Gemma 3).
- ``n_expert``, ``n_expert_per_token``, ``expert_hidden``,
  ``norm_topk``: a mixture-of-experts MLP (Qwen3-MoE, Mixtral).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmbook.checks import check_bool, check_choice, check_int, check_number
from llmbook.model import mlp_hidden_rule

__all__ = ["LAYER_TYPES", "PUBLISHED", "ModernConfig", "ROPE_PAIRINGS"]

ROPE_PAIRINGS = ("half", "interleaved")
LAYER_TYPES = ("full", "sliding")
_SCALING_KEYS = {
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_block_size",
}


@dataclass
class ModernConfig:
    """Sizes and architecture of a Llama/Qwen-style decoder. The defaults
    are the book's model (``GPTConfig.preset("book")``) in this form."""

    vocab_size: int = 2048
    block_size: int = 128  # longest sequence (RoPE tables cover it)
    n_layer: int = 4
    n_embd: int = 256  # C
    n_head: int = 4  # query heads
    n_kv_head: int | None = None  # key/value heads; None: n_head (MHA)
    head_size: int | None = None  # None: n_embd // n_head
    mlp_hidden: int | None = None  # dense SwiGLU width; None: the book's rule
    norm_eps: float = 1e-5
    qk_norm: bool = False
    rope_base: float = 10000.0
    rope_scaling: dict | None = None  # Llama 3: factor, low/high_freq_factor,
    #                                   original_block_size
    rope_pairing: str = "half"
    window: int | None = None  # sliding window: keys a query sees, itself too
    layer_types: tuple[str, ...] | None = None  # None: all "sliding" if window
    n_expert: int = 0  # 0: a dense MLP in every block
    n_expert_per_token: int = 2  # k of top-k routing
    expert_hidden: int | None = None  # each expert's width; None: mlp_hidden
    norm_topk: bool = True  # renormalise the k chosen router weights
    tie_weights: bool = True  # LM head shares the embedding matrix
    attn_bias: bool = False  # biases on q, k, v (Qwen2 has them)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_embd"):
            check_int(name, getattr(self, name), low=1)
        check_int("n_head", self.n_head, low=1)
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        check_int("n_kv_head", self.n_kv_head, low=1)
        if self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_head ({self.n_head}) must be a multiple of n_kv_head "
                f"({self.n_kv_head}): each key/value head serves a group of "
                f"n_head // n_kv_head query heads"
            )
        if self.head_size is None:
            if self.n_embd % self.n_head:
                raise ValueError(
                    f"n_embd ({self.n_embd}) is not divisible by n_head "
                    f"({self.n_head}); set head_size explicitly"
                )
            self.head_size = self.n_embd // self.n_head
        check_int("head_size", self.head_size, low=2)
        if self.head_size % 2:
            raise ValueError(
                f"RoPE rotates channel pairs, so head_size must be even; "
                f"got {self.head_size}"
            )
        if self.mlp_hidden is None:
            self.mlp_hidden = mlp_hidden_rule("swiglu", self.n_embd)
        check_int("mlp_hidden", self.mlp_hidden, low=1)
        if not check_number("norm_eps", self.norm_eps) > 0:
            raise ValueError(f"norm_eps must be > 0; got {self.norm_eps}")
        if check_number("rope_base", self.rope_base) <= 1:
            raise ValueError(f"rope_base must be > 1; got {self.rope_base}")
        check_choice("rope_pairing", self.rope_pairing, ROPE_PAIRINGS)
        for name in ("qk_norm", "norm_topk", "tie_weights", "attn_bias"):
            check_bool(name, getattr(self, name))
        self._check_scaling()
        self._check_window()
        self._check_experts()

    def _check_scaling(self) -> None:
        if self.rope_scaling is None:
            return
        if (
            not isinstance(self.rope_scaling, dict)
            or set(self.rope_scaling) != _SCALING_KEYS
        ):
            raise ValueError(
                f"rope_scaling must be a dict with exactly the keys "
                f"{sorted(_SCALING_KEYS)} (Llama 3's scaling); got "
                f"{self.rope_scaling!r}"
            )
        s = self.rope_scaling
        if not (s["factor"] >= 1 and 0 < s["low_freq_factor"]):
            raise ValueError(
                f"rope_scaling needs factor >= 1 and low_freq_factor > 0; "
                f"got {s!r}"
            )
        if not s["high_freq_factor"] > s["low_freq_factor"]:
            raise ValueError(
                "rope_scaling's high_freq_factor must exceed its "
                f"low_freq_factor; got {s!r}"
            )

    def _check_window(self) -> None:
        if self.window is not None:
            check_int("window", self.window, low=1)
        if self.layer_types is None:
            kind = "full" if self.window is None else "sliding"
            self.layer_types = (kind,) * self.n_layer
        self.layer_types = tuple(self.layer_types)
        if len(self.layer_types) != self.n_layer:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries but the "
                f"model has n_layer = {self.n_layer} layers"
            )
        for kind in self.layer_types:
            check_choice("layer_types entry", kind, LAYER_TYPES)
        if "sliding" in self.layer_types and self.window is None:
            raise ValueError(
                "layer_types has 'sliding' layers but window is None; "
                "set window to the number of keys a query may see"
            )

    def _check_experts(self) -> None:
        check_int("n_expert", self.n_expert, low=0)
        if self.n_expert == 0:
            return
        check_int("n_expert_per_token", self.n_expert_per_token, low=1)
        if self.n_expert_per_token > self.n_expert:
            raise ValueError(
                f"n_expert_per_token ({self.n_expert_per_token}) cannot "
                f"exceed n_expert ({self.n_expert})"
            )
        if self.expert_hidden is None:
            self.expert_hidden = self.mlp_hidden
        check_int("expert_hidden", self.expert_hidden, low=1)

    @classmethod
    def published(cls, name: str, **overrides) -> ModernConfig:
        """A released model's architecture from ``PUBLISHED`` (its
        ``config.json`` on the Hugging Face Hub), fields overridden."""
        if name not in PUBLISHED:
            raise ValueError(
                f"unknown model {name!r}; choose one of {list(PUBLISHED)}"
            )
        return cls(**{**PUBLISHED[name], **overrides})

    @property
    def n_group(self) -> int:
        """Query heads per key/value head."""
        return self.n_head // self.n_kv_head


# Released models, as their config.json files on the Hugging Face Hub
# describe them (max_position_embeddings as block_size).
PUBLISHED: dict[str, dict] = {
    # meta-llama/Llama-3.1-8B: GQA with 8 key/value heads, RoPE scaled x8
    "llama-3.1-8b": dict(
        vocab_size=128256,
        block_size=131072,
        n_layer=32,
        n_embd=4096,
        n_head=32,
        n_kv_head=8,
        mlp_hidden=14336,
        rope_base=500000.0,
        rope_scaling=dict(
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_block_size=8192,
        ),
        tie_weights=False,
    ),
    # mistralai/Mistral-7B-v0.1: a sliding window of 4096 in every layer
    "mistral-7b-v0.1": dict(
        vocab_size=32000,
        block_size=32768,
        n_layer=32,
        n_embd=4096,
        n_head=32,
        n_kv_head=8,
        mlp_hidden=14336,
        window=4096,
        tie_weights=False,
    ),
    # Qwen/Qwen3-0.6B: QK norm, heads of 128 wider than n_embd / n_head
    "qwen3-0.6b": dict(
        vocab_size=151936,
        block_size=40960,
        n_layer=28,
        n_embd=1024,
        n_head=16,
        n_kv_head=8,
        head_size=128,
        mlp_hidden=3072,
        norm_eps=1e-6,
        qk_norm=True,
        rope_base=1000000.0,
        tie_weights=True,
    ),
    # Qwen/Qwen3-30B-A3B: 128 experts, 8 per token
    "qwen3-30b-a3b": dict(
        vocab_size=151936,
        block_size=40960,
        n_layer=48,
        n_embd=2048,
        n_head=32,
        n_kv_head=4,
        head_size=128,
        mlp_hidden=6144,
        norm_eps=1e-6,
        qk_norm=True,
        rope_base=1000000.0,
        n_expert=128,
        n_expert_per_token=8,
        expert_hidden=768,
        tie_weights=False,
    ),
}
