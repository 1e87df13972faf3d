"""Smaller weights: bfloat16, and int8 weight-only quantization.

Generating one token at batch 1 reads every weight of the model once and
does two floating-point operations with it (a multiply and an add): far too
little arithmetic to keep a processor busy, so the speed is set by how fast
the weights stream from memory. Halving the bytes of the weights can nearly
double the speed. Two ways, both written here:

- **bfloat16**: the same 8 exponent bits as float32 and 7 mantissa bits
  instead of 23, so every number keeps its range and loses precision
  (about 3 significant digits). ``to_bfloat16`` is one cast of the whole
  model; the activations are then bfloat16 too.
- **int8, weight-only, per output channel**: each row ``w`` of a weight
  matrix (one output channel) is stored as 8-bit integers ``q`` and one
  float scale ``s = max|w| / 127``, with ``w ~ q * s``. The rounding error
  of every weight is at most ``s / 2``. Activations stay in floating point;
  only the stored weights shrink, 4x against float32. ``quantize_int8``
  swaps every ``nn.Linear`` of a GPT for an ``Int8Linear`` (and the tied
  embedding/LM-head matrix for one shared int8 table), so the quantized
  model still runs through every engine of ``llmbook.generate`` and the
  evaluation of ``llmbook.train`` unchanged.

Which kernel computes ``x @ (q * s)^T`` matters more than the format: a
kernel that first expands ``q`` to floats in memory reads and writes more
bytes than the float32 matmul it replaces. ``Int8Linear`` uses PyTorch's
``aten._weight_int8pack_mm`` where it exists for the activations' dtype (a
CPU kernel that converts int8 to float in registers, row by row, and
multiplies by the scale at the end), and the plain
``F.linear(x, q.to(x.dtype)) * s`` everywhere else (under ``torch.compile``
that line becomes one fused loop). Nothing here assumes it is faster:
``llmbook.bench.generate`` measures it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from llmbook.model import GPT

__all__ = [
    "quantize_per_channel",
    "dequantize",
    "Int8Linear",
    "Int8Embedding",
    "quantize_int8",
    "to_bfloat16",
    "weight_bytes",
    "model_bytes",
    "INT8_KERNELS",
]

# "int8pack": aten._weight_int8pack_mm; "dequant": F.linear on q.to(x.dtype)
INT8_KERNELS = ("auto", "int8pack", "dequant")


def quantize_per_channel(w: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 quantization of each row of ``w`` (out, in).

    Returns ``q`` (out, in) int8 in [-127, 127] and ``scale`` (out,) in
    ``w``'s dtype (float32 for float32), with ``w ~ q * scale[:, None]``
    and ``|w - q * scale| <= scale / 2`` element by element (for bfloat16,
    to within the rounding of ``w`` itself). A row of zeros
    gets scale 1 (and q = 0), so nothing divides by zero. -128 is never
    used: the range stays symmetric, so -w quantizes to -q.
    """
    if not isinstance(w, Tensor) or w.dim() != 2:
        raise ValueError(
            "quantize_per_channel needs a 2-D weight matrix (out, in); got "
            f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}"
        )
    if not w.dtype.is_floating_point:
        raise TypeError(f"weights must be floating point, got {w.dtype}")
    if not torch.isfinite(w).all():
        raise ValueError("weights contain inf or NaN: nothing to quantize")
    w32 = w.detach().float()
    amax = w32.abs().amax(dim=1)  # (out,): the largest weight of each row
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))  # (out,)
    # round the scale to the dtype it is stored in first, and quantize with
    # that: the bound then holds for the scale that dequantizes (bf16)
    scale = scale.to(w.dtype)
    q = torch.round(w32 / scale.float()[:, None]).clamp_(-127, 127)
    return q.to(torch.int8), scale


def dequantize(q: Tensor, scale: Tensor) -> Tensor:
    """``q * scale`` row by row: (out, in) in ``scale``'s dtype."""
    return q.to(scale.dtype) * scale[:, None]


def _pick_kernel(kernel: str, x: Tensor) -> str:
    if kernel != "auto":
        return kernel
    # _weight_int8pack_mm exists for CPU (and CUDA/MPS) with bf16/fp16/fp32
    # activations; measured on CPU it is fast only for bf16 (see benchmark)
    ok = x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cpu"
    return "int8pack" if ok else "dequant"


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights and float32/bfloat16 scales:
    (..., in) -> (..., out). Built from a Linear with ``from_linear``.

    ``kernel``: "int8pack" (``aten._weight_int8pack_mm``), "dequant"
    (``F.linear(x, q.to(x.dtype)) * scale``), or "auto" (int8pack for
    bfloat16/float16 activations on CPU, dequant otherwise).
    """

    def __init__(
        self,
        q: Tensor,
        scale: Tensor,
        bias: Tensor | None = None,
        kernel: str = "auto",
    ):
        super().__init__()
        if kernel not in INT8_KERNELS:
            raise ValueError(
                f"unknown kernel {kernel!r}; choose one of {INT8_KERNELS}"
            )
        if q.dtype != torch.int8 or q.dim() != 2:
            raise ValueError(
                f"q must be a 2-D int8 tensor; got {q.dtype} {tuple(q.shape)}"
            )
        if scale.shape != (q.size(0),):
            raise ValueError(
                f"scale must have shape ({q.size(0)},), one per "
                f"output channel; got {tuple(scale.shape)}"
            )
        self.register_buffer("q", q)  # (out, in) int8
        self.register_buffer("scale", scale)  # (out,)
        self.register_buffer("bias", bias)  # (out,) or None
        self.kernel = kernel
        self.in_features, self.out_features = q.size(1), q.size(0)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, kernel: str = "auto"
    ) -> Int8Linear:
        q, scale = quantize_per_channel(linear.weight)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, scale, bias, kernel)

    @property
    def weight(self) -> Tensor:
        """The weights this layer stands for, dequantized (a new tensor)."""
        return dequantize(self.q, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale.to(x.dtype)
        if _pick_kernel(self.kernel, x) == "int8pack":
            x2 = x.reshape(-1, x.size(-1))  # (M, in): the kernel wants 2-D
            y = torch.ops.aten._weight_int8pack_mm(x2, self.q, scale)
            y = y.view(*x.shape[:-1], self.out_features)  # (..., out)
        else:
            y = F.linear(x, self.q.to(x.dtype)) * scale  # (..., out)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features="
            f"{self.out_features}, bias={self.bias is not None}, "
            f"kernel={self.kernel!r}"
        )


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows with one scale per row: a
    lookup returns ``q[idx] * scale[idx]``, (B, T) -> (B, T, C). Shares
    ``q`` and ``scale`` with the tied LM head (``Int8Linear``), whose output
    channels are exactly the table's rows."""

    def __init__(self, head: Int8Linear, dtype: torch.dtype):
        super().__init__()
        self.head = [head]  # a list: not a submodule, no second state entry
        self.dtype = dtype

    @property
    def weight(self) -> Tensor:
        """The table, dequantized (a new tensor)."""
        return dequantize(self.head[0].q, self.head[0].scale).to(self.dtype)

    def forward(self, idx: Tensor) -> Tensor:
        head = self.head[0]
        rows = head.q[idx].to(self.dtype)  # (B, T, C)
        return rows * head.scale.to(self.dtype)[idx].unsqueeze(-1)


def quantize_int8(
    model: GPT, kernel: str = "auto", skip: tuple[str, ...] = ()
) -> GPT:
    """A copy of ``model`` whose ``nn.Linear`` layers (attention, MLP, the
    LM head) hold int8 weights with per-output-channel scales.

    With tied weights the embedding and the LM head keep sharing one int8
    table. Norms, biases and (untied) position embeddings stay in the
    model's float dtype: they are a tiny share of the bytes. ``skip``:
    names of Linear layers to leave in floating point (e.g. ``("lm_head",)``).
    The original model is not changed.
    """
    if not isinstance(model, GPT):
        raise TypeError(
            f"quantize_int8 needs a GPT; got {type(model).__name__}"
        )
    if kernel not in INT8_KERNELS:
        raise ValueError(
            f"unknown kernel {kernel!r}; choose one of {INT8_KERNELS}"
        )
    tied = model.lm_head.weight is model.wte.weight
    out = copy.deepcopy(model).eval()
    dtype = out.wte.weight.dtype
    for name, module in list(out.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full not in skip:
                setattr(
                    module, child_name, Int8Linear.from_linear(child, kernel)
                )
    if tied and "lm_head" not in skip:
        out.wte = Int8Embedding(out.lm_head, dtype)
    return out


def to_bfloat16(model: GPT) -> GPT:
    """A copy of ``model`` with every parameter and buffer in bfloat16
    (activations follow: the model then computes in bfloat16). The RoPE
    tables stay float32; attention casts them to the activations' dtype."""
    if not isinstance(model, GPT):
        raise TypeError(f"to_bfloat16 needs a GPT; got {type(model).__name__}")
    out = copy.deepcopy(model).eval()
    rope = {n: b for n, b in out.named_buffers() if n.startswith("rope_")}
    out.to(torch.bfloat16)
    for n, b in rope.items():
        setattr(out, n, b)
    return out


def _unique_tensors(model: nn.Module):
    seen = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            yield t


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, a shared tensor once (the
    memory footprint of the weights; RoPE tables included)."""
    return sum(t.numel() * t.element_size() for t in _unique_tensors(model))


def weight_bytes(model: GPT) -> int:
    """Bytes that one decoding step must read: every matrix that multiplies
    the new token's vector (attention, MLP, LM head), with norms and
    biases. Embedding tables are left out: a lookup reads one row. (A tied
    embedding is read as the LM head.) This is the numerator of the
    bandwidth roofline: tokens/s <= bandwidth / weight_bytes at batch 1."""
    skip = set()
    if model.wpe is not None:
        skip.add(id(model.wpe.weight))
    head = (
        model.lm_head.weight if isinstance(model.lm_head, nn.Linear) else None
    )  # (an Int8Linear's .weight would dequantize it all)
    if isinstance(model.wte, nn.Embedding) and model.wte.weight is not head:
        skip.add(id(model.wte.weight))  # untied: only a lookup
    total = 0
    for n, t in model.named_buffers():
        if n.startswith("rope_"):
            skip.add(id(t))
    for t in _unique_tensors(model):
        if id(t) not in skip:
            total += t.numel() * t.element_size()
    return total
