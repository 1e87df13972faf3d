"""LoRA from scratch: finetune a few low-rank matrices, freeze the rest.

Finetuning every weight of a GPT needs, besides the weights, their
gradients and two AdamW moments each: four copies of the model. LoRA (Hu et
al. 2021) freezes a pretrained ``nn.Linear`` (weight W, shape (out, in)) and
learns only a low-rank update of it:

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T

with A of shape (r, in) and B of shape (out, r), r much smaller than in and
out. The update B A has the shape of W but only r * (in + out) parameters.
B starts at zero, so the wrapped model starts equal to the pretrained one;
A starts random (kaiming-uniform, as ``nn.Linear``), otherwise the gradient
of B, which is proportional to A x, would be zero too and nothing would
learn. alpha / r keeps the size of the update about the same when r
changes, so a learning rate found for one rank works for another.

After training, B A * (alpha / r) can be added into W once (``merge``):
the model is then a plain GPT again, with no extra cost per token.

``tests/test_lora.py`` proves this file equal to Hugging Face ``peft``:
same logits, same gradients of every A and B, same trainable parameters,
same merged weights, on the same tiny GPT.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from llmbook.checks import check_int

LORA_PARAMS = ("lora_A", "lora_B")


class LoRALinear(nn.Module):
    """y = base(x) + (dropout(x) @ A.T @ B.T) * (alpha / r); base frozen.

    x: (..., in_features) -> y: (..., out_features). ``lora_A``: (r, in),
    ``lora_B``: (out, r). ``merged``: whether B A * scaling is currently
    added into ``base.weight``; the forward pass is then ``base`` alone (so
    A and B get no gradient while merged: unmerge before training on).
    """

    def __init__(
        self,
        base: nn.Linear,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"LoRALinear wraps an nn.Linear; got {type(base).__name__}"
            )
        check_int("LoRA rank r", r, low=1)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        w = base.weight  # (out, in)
        kw = {"device": w.device, "dtype": w.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **kw))
        # nn.Linear's own init (and peft's default): U(-1/sqrt(in), 1/sqrt(in))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # p = 0 needs no mask: Identity keeps eval and train paths identical
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., out)
        if self.merged:
            return y
        # two thin matmuls, (..., in) -> (..., r) -> (..., out), never the
        # (out, in) matrix B A: that is what makes LoRA cheap while training
        h = F.linear(self.dropout(x), self.lora_A)  # (..., r)
        return y + F.linear(h, self.lora_B) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update B A * scaling, (out, in): what merging adds to W."""
        return (self.lora_B @ self.lora_A) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """W += B A * scaling, in place. Idempotent: a merged layer stays
        as it is (adding the update twice would be a silent error)."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W -= B A * scaling: the inverse of ``merge`` up to float
        rounding (W + d - d is W only to within an ulp of W + d)."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    # whole dotted components: "attn.c_proj" matches blocks.0.attn.c_proj,
    # not blocks.0.mlp.c_proj (peft's rule for a list of target modules)
    return any(name == t or name.endswith("." + t) for t in targets)


def _patterns(names) -> list[str]:
    """Layer names with block numbers folded: blocks.{i}.attn.c_attn."""
    return sorted({re.sub(r"\.\d+\.", ".{i}.", n) for n in names})


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: tuple[str, ...] = ("attn.c_attn", "attn.c_proj"),
    trainable: tuple[str, ...] = (),
) -> list[str]:
    """Wrap every nn.Linear whose qualified name ends with one of `targets`
    in a LoRALinear; freeze every other parameter except those whose name
    starts with one of `trainable` (e.g. a classification head "head.");
    return the wrapped names. In place, like peft's ``get_peft_model``."""
    # one name or several, as a tuple (str.startswith needs one)
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    trainable = (
        (trainable,) if isinstance(trainable, str) else tuple(trainable)
    )
    check_int("LoRA rank r", r, low=1)
    if not 0.0 <= dropout < 1.0:  # checked before any layer is wrapped
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError(
            "LoRA is already applied to this model; apply it once (to "
            "change r or targets, start again from the pretrained model)"
        )
    linears = {
        n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    chosen = [n for n in linears if _matches(n, targets)]
    if not chosen:
        raise ValueError(
            f"no nn.Linear in the model matches targets {list(targets)}; "
            f"its Linear layers are {_patterns(linears)}"
        )
    # a weight shared with another parameter (the LM head tied to the token
    # embedding) has two roles: merging B A into it would change the other
    names_of: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(n)
    for n in chosen:
        shared = names_of[id(linears[n].weight)]
        if len(shared) > 1:
            others = [s for s in shared if s != f"{n}.weight"]
            raise ValueError(
                f"cannot apply LoRA to {n!r}: its weight is tied to "
                f"{others} (the same tensor), so merging B A into it would "
                "change the token embeddings too; leave it out of targets, "
                "or build the model with tie_weights=False"
            )
    # every name of a tied tensor counts: "lm_head." reaches the shared wte
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    unused = [t for t in trainable if not any(n.startswith(t) for n in names)]
    if unused:
        raise ValueError(
            f"trainable prefix(es) {unused} match no parameter; the model's "
            f"parameters are {_patterns(names)}"
        )
    for n in chosen:
        parent, _, child = n.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, LoRALinear(linears[n], r, alpha, dropout))
    keep = {
        id(p)
        for n, p in model.named_parameters(remove_duplicate=False)
        if n.rpartition(".")[2] in LORA_PARAMS or n.startswith(trainable)
    }
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return chosen


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """{qualified name: LoRALinear} of a model that apply_lora wrapped."""
    return {
        n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)
    }


def merge_lora(model: nn.Module) -> None:
    """Merge every LoRALinear: forward passes then cost what the base's do."""
    for m in lora_layers(model).values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo ``merge_lora`` (up to float rounding), e.g. to train on."""
    for m in lora_layers(model).values():
        m.unmerge()


def unload_lora(model: nn.Module) -> list[str]:
    """Merge and put each base nn.Linear back in place of its LoRALinear:
    the model's state dict then has its original keys (a plain checkpoint).
    The base parameters stay as they are (frozen). Returns the names."""
    layers = lora_layers(model)
    for n, m in layers.items():
        m.merge()
        parent, _, child = n.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, m.base)
    return list(layers)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the lora_A / lora_B tensors: all an adapter file needs, a few
    per cent of the model (the base comes from the pretrained checkpoint)."""
    return {
        k: v
        for k, v in model.state_dict().items()
        if k.rpartition(".")[2] in LORA_PARAMS
    }


def load_lora_state_dict(model: nn.Module, state: dict) -> None:
    """Copy A and B from ``state`` (from ``lora_state_dict``) into a model
    that ``apply_lora`` wrapped the same way. Every key must match."""
    own = lora_state_dict(model)
    if not own:
        raise ValueError("the model has no LoRA layers: call apply_lora first")
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(
            f"LoRA state dict does not fit the model: missing keys "
            f"{missing[:4]}{' ...' if len(missing) > 4 else ''}, unexpected "
            f"keys {extra[:4]}{' ...' if len(extra) > 4 else ''} (were the "
            "same targets and model used?)"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(
                f"{k}: shape {tuple(v.shape)} in the state dict, "
                f"{tuple(own[k].shape)} in the model (a different r?)"
            )
    if any(m.merged for m in lora_layers(model).values()):
        # the merged W holds the old B A: new A, B would not match it
        raise ValueError("unmerge the model before loading LoRA weights")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied matrix counts once."""
    params = list(model.parameters())  # parameters() drops duplicates
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return trainable, sum(p.numel() for p in params)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer's state (call after a step:
    state is created lazily). fp32 AdamW keeps two moments per trainable
    parameter, 2 x 4 bytes each, plus a 4-byte step counter per tensor;
    frozen parameters get no state at all, which is LoRA's saving."""
    return sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if torch.is_tensor(t)
    )
