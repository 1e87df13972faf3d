"""The GPT model: a configuration, the pieces of a block, and the model.

Read top to bottom:

1. ``GPTConfig``: every size and architectural choice, validated, with named
   presets (``PRESETS``: GPT-2 124M and 350M, the book's CPU model, a tiny
   model for tests).
2. The pieces: ``RMSNorm`` (LayerNorm comes from PyTorch), the ``MLP`` (GELU
   as in GPT-2, or SwiGLU as in LLaMA), the pre-norm ``Block``.
3. ``GPT``: token embeddings (+ learned positions, or RoPE inside attention),
   the blocks, a final norm and the language-model head, whose weight may be
   tied to the token embeddings. Next to it: GPT-2's initialisation,
   parameter counting, training FLOPs per token, the KV cache, and loading
   Hugging Face GPT-2 weights.

Two architectures come out of the switches: GPT-2 (learned positions,
LayerNorm, GELU, biases) and a modern one (RoPE, RMSNorm, SwiGLU, no biases,
as in LLaMA). The forward pass returns logits only; the loss lives in
``llmbook.train.loss``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmbook.attention import CausalSelfAttention, KVCache, precompute_rope
from llmbook.checks import (
    check_attention_mask,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_position_ids,
    check_token_ids,
)

# ---------------------------------------------------------------------------
# 1. Configuration
# ---------------------------------------------------------------------------

POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


@dataclass
class GPTConfig:
    """Sizes and architecture of a GPT. The defaults are GPT-2 124M.

    ``mlp_hidden=None`` becomes ``mlp_hidden_rule(mlp, n_embd)`` when the
    config is made (so ``dataclasses.replace(cfg, n_embd=...)`` keeps the old
    width unless given ``mlp_hidden=None`` too). Configs saved before these
    two fields existed load with their defaults, which are what those
    models used.
    """

    vocab_size: int = 50257  # number of token ids
    block_size: int = 1024  # longest sequence (context length)
    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads per block
    n_embd: int = 768  # channels of the residual stream (C)
    dropout: float = 0.0  # on attention weights, residual branches, embeddings
    bias: bool = True  # biases in Linear layers and LayerNorms
    positions: str = "learned"  # "learned" (GPT-2) or "rope" (LLaMA)
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (LLaMA)
    mlp: str = "gelu"  # "gelu" (GPT-2) or "swiglu" (LLaMA)
    tie_weights: bool = True  # LM head shares the token-embedding matrix
    mlp_hidden: int | None = None  # MLP hidden width H; None: mlp_hidden_rule
    rope_base: float = 10000.0  # RoPE's base (LLaMA 3: 500,000)

    def __post_init__(self):
        for name in (
            "vocab_size",
            "block_size",
            "n_layer",
            "n_head",
            "n_embd",
        ):
            check_int(name, getattr(self, name), low=1)
        check_choice("positions", self.positions, POSITIONS)
        check_choice("norm", self.norm, NORMS)
        check_choice("mlp", self.mlp, MLPS)
        check_bool("bias", self.bias)
        check_bool("tie_weights", self.tie_weights)
        if not 0.0 <= check_number("dropout", self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head "
                f"({self.n_head}): each head gets n_embd // n_head channels"
            )
        if self.positions == "rope" and self.head_size % 2:
            raise ValueError(
                f"RoPE needs an even head size, but n_embd // n_head = "
                f"{self.n_embd} // {self.n_head} = {self.head_size}; change "
                "n_embd or n_head"
            )
        if self.mlp_hidden is None:  # resolved now: a config states its sizes
            self.mlp_hidden = mlp_hidden_rule(self.mlp, self.n_embd)
        check_int("mlp_hidden", self.mlp_hidden, low=1)
        if check_number("rope_base", self.rope_base) <= 1:
            raise ValueError(
                f"rope_base must be a number > 1, got {self.rope_base}"
            )
        if self.positions != "rope" and self.rope_base != 10000.0:
            raise ValueError(
                f"rope_base={self.rope_base!r} has no effect with positions="
                f"{self.positions!r}; use positions='rope' or leave rope_base"
            )

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides) -> GPTConfig:
        """A named configuration from ``PRESETS``, with fields overridden,
        e.g. ``GPTConfig.preset("book", n_layer=6)``."""
        if name not in PRESETS:
            raise ValueError(
                f"unknown preset {name!r}; choose one of {list(PRESETS)}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(
                f"unknown GPTConfig field(s) {unknown}; fields are "
                f"{sorted(fields)}"
            )
        return cls(**{**PRESETS[name], **overrides})


def mlp_hidden_rule(mlp: str, n_embd: int) -> int:
    """The MLP's hidden width H when ``GPTConfig.mlp_hidden`` is None.

    GELU: 4 * n_embd (GPT-2), so the MLP has 2 matrices of 4 C^2 = 8 C^2.
    SwiGLU has three matrices (gate, up, down) of C x H, 3 C H; choosing
    H = 2/3 * 4 * C keeps the same 8 C^2 (Shazeer 2020; LLaMA). It is
    rounded to the nearest multiple of 64 (at least 64), which matrix
    kernels like: C = 256 gives H = 704, C = 768 gives 2048. Models trained
    elsewhere round otherwise (LLaMA-style 1344 for C = 512): set
    ``mlp_hidden`` to load them.
    """
    if mlp == "gelu":
        return 4 * n_embd
    return max(64, 64 * round(2 / 3 * 4 * n_embd / 64))


_GPT2 = dict(
    positions="learned",
    norm="layernorm",
    mlp="gelu",
    bias=True,
    tie_weights=True,
    vocab_size=50257,
    block_size=1024,
)

# The one place where the named sizes live.
PRESETS: dict[str, dict] = {
    # GPT-2 small, 124M parameters (Radford et al. 2019)
    "gpt2": dict(_GPT2, n_layer=12, n_head=12, n_embd=768),
    # GPT-2 medium, 350M
    "gpt2-medium": dict(_GPT2, n_layer=24, n_head=16, n_embd=1024),
    # The book's model: the modern (LLaMA) choices at the size that chapter
    # 5 trains on a laptop CPU (TrainConfig.preset("book") uses these sizes)
    "book": dict(
        positions="rope",
        norm="rmsnorm",
        mlp="swiglu",
        bias=False,
        tie_weights=True,
        vocab_size=2048,
        block_size=128,
        n_layer=4,
        n_head=4,
        n_embd=256,
    ),
    # For tests: milliseconds per forward pass
    "tiny": dict(
        _GPT2, vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32
    ),
}


# ---------------------------------------------------------------------------
# 2. The pieces of a block
# ---------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension (Zhang and Sennrich 2019).

    LayerNorm subtracts the mean, divides by the standard deviation, then
    scales and shifts; RMSNorm only divides by the root mean square and
    scales, which works as well and is cheaper. (B, T, C) -> (B, T, C).
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = x.pow(2).mean(dim=-1, keepdim=True)  # (B, T, 1): mean square
        return x * torch.rsqrt(ms + self.eps) * self.weight  # (B, T, C)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd)
    return nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)


class MLP(nn.Module):
    """The position-wise feed-forward network: (B, T, C) -> (B, T, C).

    gelu:   c_proj(gelu(c_fc(x)))            c_fc: C -> H (4C by default)
    swiglu: c_proj(silu(gate(x)) * up(x))    gate and up fused in c_fc:
                                             C -> 2H, H = config.mlp_hidden
    GELU uses GPT-2's tanh approximation.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.kind = config.mlp
        hidden = config.mlp_hidden
        n_out = 2 * hidden if self.kind == "swiglu" else hidden
        self.c_fc = nn.Linear(config.n_embd, n_out, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, 4C) for gelu, (B, T, 2H) for swiglu
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)  # (B, T, H) each
            h = F.silu(gate) * up  # (B, T, H): the gate decides what passes
        else:
            h = F.gelu(h, approximate="tanh")  # (B, T, 4C)
        return self.dropout(self.c_proj(h))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).

    Normalising the input of each branch, not the residual stream itself,
    leaves a clean path from the output back to the embeddings, which is why
    deep pre-norm stacks train without warm-up tricks (Xiong et al. 2020).
    """

    def __init__(self, config: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, kv_cache=None, mask=None, positions=None):
        x = x + self.attn(self.ln_1(x), rope, kv_cache, mask, positions)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


# ---------------------------------------------------------------------------
# 3. The model
# ---------------------------------------------------------------------------


class GPT(nn.Module):
    """A decoder-only transformer: token ids (B, T) -> logits (B, T, vocab)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(
                f"GPT needs a GPTConfig; got {type(config).__name__}"
            )
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.positions == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        else:
            self.wpe = None
            cos, sin = precompute_rope(
                config.head_size, config.block_size, config.rope_base
            )
            # not persistent: recomputed on load, absent from checkpoints
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config, i) for i in range(config.n_layer)
        )
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            # one matrix both maps ids to vectors and scores vectors against
            # ids (Press and Wolf 2017): fewer parameters, no loss in quality
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: each block adds two branches to the residual stream, so its
        # variance grows with 2 * n_layer; scale the branch outputs down
        std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx: (B, T) integer token ids -> logits (B, T, vocab_size).

        With ``kv_cache`` (from ``new_kv_cache``), idx holds the new tokens
        at positions ``kv_cache.pos ... kv_cache.pos + T - 1``; their keys and
        values are appended and ``kv_cache.pos`` advances by T.
        ``attention_mask`` and ``position_ids``: see ``hidden_states``.
        """
        h = self.hidden_states(idx, kv_cache, attention_mask, position_ids)
        return self.lm_head(h)  # (B, T, V)

    def hidden_states(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The forward pass without the LM head: idx (B, T) -> (B, T, C), the
        final norm's output. Training fuses the head with the loss on it.

        ``attention_mask``: (B, T_k) with T_k = cached + new positions, True
        (or 1) for real tokens and False (0) for padding, which no query
        attends to; or a (B, [nh,] T, T_k) boolean mask of what each query
        may attend to. Either is combined with causality. A padding mask
        also gives each row its own positions (its real tokens count from 0,
        as for the prompt alone), unless ``position_ids`` (B, T) are given.
        """
        cfg = self.config
        check_token_ids(idx, cfg.vocab_size, cfg.block_size, kv_cache)
        B, T = idx.shape
        offset = kv_cache.pos if kv_cache is not None else 0
        mask, pos = self._mask_and_positions(
            attention_mask, position_ids, B, T, offset
        )
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            if pos is None:  # (T,)
                pos = torch.arange(offset, offset + T, device=idx.device)
            x = x + self.wpe(pos)  # (B, T, C) + (T, C) or (B, T, C)
            rope, pos = None, None
        else:
            rope = (self.rope_cos, self.rope_sin)  # used inside attention
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, rope, kv_cache, mask, pos)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.ln_f(x)  # (B, T, C)

    def _mask_and_positions(self, attention_mask, position_ids, B, T, offset):
        """(mask for attention, broadcastable to (B, nh, T, T_k), or None;
        positions (B, T) or (T,), or None: offset .. offset + T - 1)."""
        mask, device = attention_mask, self.wte.weight.device
        if mask is not None:
            check_attention_mask(mask, B, T, offset + T)
            mask = mask.to(device) != 0
            if mask.dim() == 2:  # padding: (B, T_k), True at real tokens
                if position_ids is None:  # count each row's real tokens
                    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
                    position_ids = position_ids[:, -T:]  # (B, T)
                mask = mask[:, None, None, :]  # the same for heads, queries
            elif mask.dim() == 3:
                mask = mask[:, None]  # (B, 1, T, T_k): the same for heads
        if position_ids is not None:
            check_position_ids(position_ids, B, T, self.config.block_size)
            position_ids = position_ids.to(device)
        return mask, position_ids

    # -- running it ----------------------------------------------------------

    def new_kv_cache(
        self, batch_size: int, dtype: torch.dtype | None = None, device=None
    ) -> KVCache:
        """An empty cache for ``block_size`` positions, on the model's device
        and in its dtype unless told otherwise."""
        cfg = self.config
        w = self.wte.weight
        return KVCache(
            cfg.n_layer,
            batch_size,
            cfg.n_head,
            cfg.block_size,
            cfg.head_size,
            dtype=dtype or w.dtype,
            device=device or w.device,
        )

    def set_fast_attention(self, fast: bool = True) -> GPT:
        """Use the fused SDPA kernel (True) or the written-out attention."""
        for block in self.blocks:
            block.attn.fast = fast
        return self

    # -- counting -------------------------------------------------------------

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of parameters (a tied matrix counts once).

        ``non_embedding=True`` leaves out the lookup tables, which cost no
        FLOPs: the position embeddings, and the token embeddings unless they
        are tied to the LM head (then the matrix does a matmul and stays).
        That N is the one in the 6N of ``flops_per_token`` (as in nanoGPT).
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() dedups
        if non_embedding:
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward), PaLM appendix B:

            6 N  +  12 * n_layer * n_embd * T

        N = num_parameters(non_embedding=True). Each weight does one multiply
        and one add per token forward (2N) and twice that backward (4N). The
        attention scores QK^T and the weighted sum AV add 2 * 2 * T * C per
        layer forward, times 3 with the backward pass. T = seq_len (default
        block_size); the causal mask would halve that term, which the
        convention ignores.
        """
        cfg = self.config
        t = cfg.block_size if seq_len is None else seq_len
        n = self.num_parameters(non_embedding=True)
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * t

    # -- GPT-2 weights from Hugging Face --------------------------------------

    @classmethod
    def from_hf_gpt2(
        cls, state_dict_or_model, n_head: int | None = None
    ) -> GPT:
        """A GPT with the weights of a Hugging Face ``GPT2LMHeadModel`` (or
        ``GPT2Model``, or either's state dict).

        The sizes come from ``model.config``; from a bare state dict they
        are read off the shapes, except n_head, which shapes do not show:
        pass it, or it is taken as n_embd // 64 (every GPT-2 has 64-channel
        heads). HF's GPT-2 uses ``Conv1D`` layers that store weights as
        (in, out), the transpose of ``nn.Linear``'s (out, in).
        """
        hf_config = getattr(state_dict_or_model, "config", None)
        if isinstance(state_dict_or_model, nn.Module):
            sd = state_dict_or_model.state_dict()
        elif isinstance(state_dict_or_model, dict):
            sd = state_dict_or_model
        else:
            raise TypeError(
                "from_hf_gpt2 expects a transformers GPT2LMHeadModel/"
                "GPT2Model or its state_dict; got "
                f"{type(state_dict_or_model).__name__}"
            )
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
        if "wte.weight" not in sd:
            raise ValueError(
                "this does not look like a GPT-2 state dict: no 'wte.weight' "
                "(or 'transformer.wte.weight') key"
            )
        vocab_size, n_embd = sd["wte.weight"].shape
        block_size = sd["wpe.weight"].shape[0]
        n_layer = 1 + max(
            int(m.group(1)) for k in sd if (m := re.match(r"h\.(\d+)\.", k))
        )
        if n_head is None and hf_config is not None:
            n_head = hf_config.n_head
        elif n_head is None:
            if n_embd % 64:
                raise ValueError(
                    "cannot tell n_head from a state dict with "
                    f"n_embd={n_embd} (not a multiple of GPT-2's 64-channel "
                    "heads); pass n_head="
                )
            n_head = n_embd // 64
        if hf_config is not None:
            act = getattr(hf_config, "activation_function", "gelu_new")
            if act not in ("gelu_new", "gelu_pytorch_tanh"):
                raise ValueError(
                    f"unsupported activation {act!r}; GPT-2 uses "
                    "'gelu_new' (the tanh approximation)"
                )
        head = sd.get("lm_head.weight")
        tied = head is None or torch.equal(head, sd["wte.weight"])
        sizes = dict(
            vocab_size=vocab_size,
            block_size=block_size,
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
        )
        config = GPTConfig(**{**_GPT2, **sizes, "tie_weights": tied})
        model = cls(config)
        conv1d = (
            "attn.c_attn.weight",
            "attn.c_proj.weight",
            "mlp.c_fc.weight",
            "mlp.c_proj.weight",
        )
        ours = {}
        for k, v in sd.items():
            if k.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # HF's precomputed causal-mask buffers, not weights
            if k.startswith("h."):
                k = "blocks." + k[2:]
                if k.endswith(conv1d):
                    v = v.t()
            ours[k] = v
        if tied:
            ours.pop("lm_head.weight", None)
            ours["lm_head.weight"] = ours["wte.weight"]
        missing, unexpected = model.load_state_dict(ours, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"GPT-2 weights do not fit: missing {missing}, "
                f"unexpected {unexpected}"
            )
        return model

    @classmethod
    def from_pretrained(cls, name: str = "gpt2") -> GPT:
        """Download OpenAI's GPT-2 weights from the Hugging Face hub (needs
        internet and the ``transformers`` package) and load them."""
        try:
            from transformers import GPT2LMHeadModel
        except ImportError as e:
            raise ImportError(
                "from_pretrained needs the transformers package: "
                "pip install transformers"
            ) from e
        return cls.from_hf_gpt2(GPT2LMHeadModel.from_pretrained(name))
