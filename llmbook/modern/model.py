"""``ModernLM``: a decoder in the form Llama 3, Qwen3 and Qwen3-MoE share,
built from the parts in this package.

Per block: x + attn(norm(x)), then x + mlp(norm(x)), with RMSNorm,
grouped-query attention (optionally QK-normalised, optionally windowed)
with RoPE, and a SwiGLU MLP or a mixture of experts. Then a final RMSNorm
and the LM head. It differs from chapter 6's ``GPT`` (book preset) only by
the switches of ``ModernConfig``; ``from_gpt`` proves it, by giving the
same logits as a ``GPT``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from llmbook.checks import check_attention_mask, check_token_ids
from llmbook.model import RMSNorm
from llmbook.modern.attention import GroupedQueryAttention, ModernCache
from llmbook.modern.config import ModernConfig
from llmbook.modern.moe import MixtureOfExperts, SwiGLU, balance_loss
from llmbook.modern.rope import rope_frequencies, rope_tables

__all__ = ["ModernBlock", "ModernLM"]


class ModernBlock(nn.Module):
    def __init__(self, config: ModernConfig, layer_idx: int):
        super().__init__()
        self.norm1 = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.attn = GroupedQueryAttention(config, layer_idx)
        self.norm2 = RMSNorm(config.n_embd, eps=config.norm_eps)
        if config.n_expert:
            self.mlp = MixtureOfExperts(config)
        else:
            self.mlp = SwiGLU(config.n_embd, config.mlp_hidden)

    def forward(self, x, cos, sin, pos, cache=None, real=None):
        x = x + self.attn(self.norm1(x), cos, sin, pos, cache, real)
        return x + self.mlp(self.norm2(x))  # (B, T, C)


class ModernLM(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab_size)."""

    def __init__(self, config: ModernConfig):
        super().__init__()
        if not isinstance(config, ModernConfig):
            raise TypeError(
                f"ModernLM needs a ModernConfig; got {type(config).__name__}"
            )
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(
            ModernBlock(config, i) for i in range(config.n_layer)
        )
        self.norm_f = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        theta = rope_frequencies(
            config.head_size, config.rope_base, config.rope_scaling
        )
        cos, sin = rope_tables(theta, config.block_size)  # (block, hs/2)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(
        self,
        idx: torch.Tensor,
        kv_cache: ModernCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx: (B, T) token ids -> logits (B, T, vocab_size). With
        ``kv_cache`` they follow the ``kv_cache.pos`` positions it holds.
        ``attention_mask`` (B, cached + T), True at real tokens: rows
        padded on the left, whose positions count from their first real
        token (as in ``GPT.forward``, which ``llmbook.generate`` uses)."""
        start = kv_cache.pos if kv_cache is not None else 0
        check_token_ids(idx, self.config.vocab_size, self.config.block_size)
        B, T = idx.shape
        if start + T > self.config.block_size:
            raise ValueError(
                f"positions {start}..{start + T - 1} exceed block_size "
                f"{self.config.block_size}"
            )
        slots = torch.arange(start, start + T, device=idx.device)  # (T,)
        real = None
        if attention_mask is None:
            cos, sin = self.rope_cos[slots], self.rope_sin[slots]  # (T, hs/2)
        else:
            real = self._padding(attention_mask, B, start + T)  # (B, T_k)
            pos = (real.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]  # (B, T)
            cos = self.rope_cos[pos][:, None]  # (B, 1, T, hs/2): every head
            sin = self.rope_sin[pos][:, None]
        x = self.wte(idx)  # (B, T, C)
        for block in self.blocks:
            x = block(x, cos, sin, slots, kv_cache, real)
        if kv_cache is not None:
            kv_cache.length += T
        return self.lm_head(self.norm_f(x))  # (B, T, vocab_size)

    def _padding(self, mask, B: int, t_k: int) -> torch.Tensor:
        check_attention_mask(mask, B, t_k, t_k)
        if mask.dim() != 2:
            raise ValueError(
                "ModernLM takes a padding mask (B, cached + new positions) "
                f"only; got shape {tuple(mask.shape)}"
            )
        return mask.to(self.wte.weight.device) != 0

    def new_kv_cache(self, batch_size: int = 1, **_) -> ModernCache:
        """An empty cache, for ``llmbook.generate`` (its buffers take the
        batch size of the first tokens stored)."""
        return ModernCache(self.config)

    def balance_loss(self) -> torch.Tensor:
        """Mean load-balancing loss of the MoE layers in the last forward
        pass (0 for a dense model)."""
        losses = [
            balance_loss(b.mlp.last_logits, b.mlp.k)
            for b in self.blocks
            if isinstance(b.mlp, MixtureOfExperts)
        ]
        if not losses:
            return torch.zeros(())
        return torch.stack(losses).mean()

    def n_params(self, active: bool = False) -> int:
        """Parameters, the tied LM head counted once. ``active``: those one
        token uses (k of the E experts of each MoE layer)."""
        total = sum(p.numel() for p in self.parameters())
        if active:
            for b in self.blocks:
                if isinstance(b.mlp, MixtureOfExperts):
                    unused = len(b.mlp.down) - b.mlp.k
                    per_expert = (
                        b.mlp.gate_up[0].numel() + b.mlp.down[0].numel()
                    )
                    total -= unused * per_expert
        return total

    @classmethod
    def from_gpt(cls, gpt) -> ModernLM:
        """The same function as a chapter 6 ``GPT`` with the modern
        switches (RoPE, RMSNorm, SwiGLU, no biases): its weights, split
        into the separate projections Llama and Qwen store."""
        g = gpt.config
        if (g.positions, g.norm, g.mlp, g.bias) != (
            "rope",
            "rmsnorm",
            "swiglu",
            False,
        ):
            raise ValueError(
                "from_gpt needs a GPT with positions='rope', norm='rmsnorm', "
                f"mlp='swiglu', bias=False; got {g.positions!r}, {g.norm!r}, "
                f"{g.mlp!r}, bias={g.bias}"
            )
        config = ModernConfig(
            vocab_size=g.vocab_size,
            block_size=g.block_size,
            n_layer=g.n_layer,
            n_embd=g.n_embd,
            n_head=g.n_head,
            mlp_hidden=g.mlp_hidden,
            rope_base=g.rope_base,
            tie_weights=g.tie_weights,
        )
        sd = {
            "wte.weight": gpt.wte.weight,
            "lm_head.weight": gpt.lm_head.weight,
        }
        sd["norm_f.weight"] = gpt.ln_f.weight
        for i, b in enumerate(gpt.blocks):
            q, k, v = b.attn.c_attn.weight.chunk(3)  # (C, C) each
            gate, up = b.mlp.c_fc.weight.chunk(2)  # (H, C) each
            for name, w in dict(
                norm1=b.ln_1.weight,
                norm2=b.ln_2.weight,
                **{"attn.q_proj": q, "attn.k_proj": k, "attn.v_proj": v},
                **{"attn.o_proj": b.attn.c_proj.weight},
                **{
                    "mlp.gate": gate,
                    "mlp.up": up,
                    "mlp.down": b.mlp.c_proj.weight,
                },
            ).items():
                sd[f"blocks.{i}.{name}.weight"] = w
        model = cls(config)
        model.load_state_dict(sd)
        return model.eval()
