"""Loading Llama, Qwen3 and Qwen3-MoE checkpoints into ``ModernLM``.

``from_hf`` takes a Hugging Face ``transformers`` model, or a local
directory in the Hub's format (``config.json`` and ``*.safetensors``, as
``save_pretrained`` writes and the Hub serves); ``from_hub`` downloads such
a directory first (readers with internet; the tests use local ones).
``config_from_hf`` reads the sizes and switches from the Hugging Face
config; ``convert_state_dict`` renames the weights. Experts are accepted in
both layouts: one matrix per expert, as checkpoints store them
(``experts.3.gate_proj.weight``), or stacked, as ``transformers`` holds
them in memory (``experts.gate_up_proj``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from llmbook.modern.config import ModernConfig
from llmbook.modern.model import ModernLM
from llmbook.modern.rope import interleave_rows

__all__ = [
    "FAMILIES",
    "config_from_hf",
    "convert_state_dict",
    "from_hf",
    "from_hub",
]

FAMILIES = ("llama", "mistral", "qwen3", "qwen3_moe")

_RENAMES = [  # Hugging Face name (after "model.") -> ModernLM name
    (r"embed_tokens\.", "wte."),
    (r"norm\.", "norm_f."),
    (r"layers\.(\d+)\.input_layernorm\.", r"blocks.\1.norm1."),
    (r"layers\.(\d+)\.post_attention_layernorm\.", r"blocks.\1.norm2."),
    (r"layers\.(\d+)\.self_attn\.", r"blocks.\1.attn."),
    (r"layers\.(\d+)\.mlp\.(gate|up|down)_proj\.", r"blocks.\1.mlp.\2."),
    (r"layers\.(\d+)\.mlp\.gate\.weight", r"blocks.\1.mlp.router.weight"),
    (r"layers\.(\d+)\.mlp\.experts\.gate_up_proj", r"blocks.\1.mlp.gate_up"),
    (r"layers\.(\d+)\.mlp\.experts\.down_proj", r"blocks.\1.mlp.down"),
]
_EXPERT = re.compile(
    r"layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight"
)


def _get(hf, name, default=None):
    value = getattr(hf, name, default)
    return default if value is None else value


def _rope(hf) -> tuple[float, dict | None]:
    params = _get(hf, "rope_parameters", {}) or {}
    base = params.get("rope_theta", _get(hf, "rope_theta", 10000.0))
    kind = params.get("rope_type", "default")
    if kind == "default":
        return base, None
    if kind != "llama3":
        raise ValueError(
            f"RoPE type {kind!r} is not supported; ModernLM implements the "
            "default and Llama 3's scaling"
        )
    scaling = {
        "factor": params["factor"],
        "low_freq_factor": params["low_freq_factor"],
        "high_freq_factor": params["high_freq_factor"],
        "original_block_size": params["original_max_position_embeddings"],
    }
    return base, scaling


def _window(hf, family: str, n_layer: int):
    window = _get(hf, "sliding_window")
    if family == "llama" or window is None:
        return None, None
    types = _get(hf, "layer_types")
    if types is None:  # Mistral, Qwen3-MoE: every layer
        return window, ("sliding",) * n_layer
    kinds = tuple(t.removesuffix("_attention") for t in types)
    return window, kinds


def _check_supported(hf, family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(
            f"model type {family!r} is not supported; supported: {FAMILIES}"
        )
    if _get(hf, "mlp_bias", False):
        raise ValueError("MLP biases (mlp_bias=True) are not supported")
    if (
        _get(hf, "mlp_only_layers", [])
        or _get(hf, "decoder_sparse_step", 1) > 1
    ):
        raise ValueError(
            "dense layers between mixture-of-experts layers "
            "(mlp_only_layers, decoder_sparse_step > 1) are not supported"
        )
    if _get(hf, "hidden_act", "silu") != "silu":
        raise ValueError(f"activation {hf.hidden_act!r} is not SwiGLU's silu")


def config_from_hf(hf, block_size: int | None = None, **overrides):
    """A ``ModernConfig`` from a ``transformers`` config.
    ``block_size`` (default: the model's ``max_position_embeddings``)
    sizes the RoPE tables; lower it to save memory."""
    family = _get(hf, "model_type")
    _check_supported(hf, family)
    base, scaling = _rope(hf)
    n_layer = hf.num_hidden_layers
    window, layer_types = _window(hf, family, n_layer)
    fields = dict(
        vocab_size=hf.vocab_size,
        block_size=block_size or hf.max_position_embeddings,
        n_layer=n_layer,
        n_embd=hf.hidden_size,
        n_head=hf.num_attention_heads,
        n_kv_head=_get(hf, "num_key_value_heads", hf.num_attention_heads),
        head_size=_get(hf, "head_dim"),
        mlp_hidden=hf.intermediate_size,
        norm_eps=hf.rms_norm_eps,
        qk_norm=family.startswith("qwen3"),
        rope_base=base,
        rope_scaling=scaling,
        window=window,
        layer_types=layer_types,
        tie_weights=bool(_get(hf, "tie_word_embeddings", False)),
        attn_bias=bool(_get(hf, "attention_bias", False)),
    )
    if family == "qwen3_moe":
        fields.update(
            n_expert=hf.num_experts,
            n_expert_per_token=hf.num_experts_per_tok,
            expert_hidden=hf.moe_intermediate_size,
            norm_topk=bool(hf.norm_topk_prob),
        )
    return ModernConfig(**{**fields, **overrides})


def convert_state_dict(sd: dict, config: ModernConfig) -> dict:
    """Hugging Face weight names and layouts -> ``ModernLM``'s."""
    out, experts = {}, {}
    for name, tensor in sd.items():
        if name == "lm_head.weight":
            out[name] = tensor
            continue
        name = name.removeprefix("model.")
        if m := _EXPERT.fullmatch(name):
            layer, e, part = int(m[1]), int(m[2]), m[3]
            experts.setdefault(layer, {}).setdefault(part, {})[e] = tensor
            continue
        for pattern, new in _RENAMES:
            if re.match(pattern, name):
                name = re.sub(pattern, new, name, count=1)
                break
        else:
            if not name.endswith("rotary_emb.inv_freq"):
                raise ValueError(f"unexpected weight {name!r}")
            continue
        out[name] = tensor
    for layer, parts in experts.items():
        stack = {p: [parts[p][e] for e in sorted(parts[p])] for p in parts}
        gate_up = [torch.cat(t) for t in zip(stack["gate"], stack["up"])]
        out[f"blocks.{layer}.mlp.gate_up"] = torch.stack(gate_up)
        out[f"blocks.{layer}.mlp.down"] = torch.stack(stack["down"])
    if config.tie_weights:  # one matrix, stored once in tied checkpoints
        out["lm_head.weight"] = out["wte.weight"]
    if config.rope_pairing == "interleaved":
        _interleave(out, config)
    return out


def _interleave(sd: dict, config: ModernConfig) -> None:
    """Reorder q and k (and their norms) for interleaved RoPE pairs."""
    heads = {"q": config.n_head, "k": config.n_kv_head}
    for name in list(sd):
        m = re.search(r"attn\.(q|k)_(proj|norm)\.(weight|bias)$", name)
        if m is None:
            continue
        t = sd[name]
        n = heads[m[1]] if m[2] == "proj" else 1
        flat = t.unsqueeze(-1) if t.dim() == 1 else t
        sd[name] = interleave_rows(flat, n).reshape(t.shape)


def _read_dir(path: Path) -> tuple[dict, dict]:
    """The config (read by ``transformers``, which fills in each family's
    defaults) and every *.safetensors file of a checkpoint folder."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{path} has no config.json; pass a folder in the Hugging Face "
            "format (what save_pretrained writes, or a Hub snapshot)"
        )
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path} has no *.safetensors weights")
    sd = {}
    for f in files:
        sd.update(load_file(f))
    return AutoConfig.from_pretrained(path), sd


def from_hf(source, block_size: int | None = None, **overrides) -> ModernLM:
    """A ``ModernLM`` with the weights of a ``transformers`` model, or of
    a local Hugging Face checkpoint folder. ``overrides`` change config
    fields that do not alter the function computed (``rope_pairing``)."""
    if isinstance(source, (str, Path)):
        hf_config, sd = _read_dir(Path(source))
    elif isinstance(source, torch.nn.Module) and hasattr(source, "config"):
        hf_config, sd = source.config, source.state_dict()
    else:
        raise TypeError(
            "from_hf expects a transformers model or a checkpoint folder; "
            f"got {type(source).__name__}"
        )
    config = config_from_hf(hf_config, block_size, **overrides)
    model = ModernLM(config)
    missing, unexpected = model.load_state_dict(
        convert_state_dict(sd, config), strict=False
    )
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()


def from_hub(repo_id: str, block_size: int | None = None, **overrides):
    """Download ``repo_id`` from the Hugging Face Hub (for example
    "Qwen/Qwen3-0.6B" or "meta-llama/Llama-3.2-1B", which needs a token
    and accepted licence) and load it with ``from_hf``."""
    from huggingface_hub import snapshot_download

    path = snapshot_download(
        repo_id, allow_patterns=["config.json", "*.safetensors"]
    )
    return from_hf(path, block_size, **overrides)
