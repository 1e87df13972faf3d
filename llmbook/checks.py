"""Checks of arguments, in one place, so that the code they guard reads like
the idea it implements and every message has the same shape.

Each check raises at once, naming the argument, what it must be and what it
got: ``TypeError`` for a value of the wrong kind, ``ValueError`` for one out
of range. ``bool`` is not accepted as a number (``True`` is an int to
Python, and never the number of layers anyone meant).

The model's inputs have their own checks here too (``check_token_ids``,
``check_attention_mask``, ``check_position_ids``), so that ``GPT.forward``
is the forward pass and nothing else.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap

import torch
from torch import Tensor

__all__ = [
    "check_int",
    "check_number",
    "check_choice",
    "check_bool",
    "check_token_ids",
    "check_attention_mask",
    "check_position_ids",
    "parse_settings",
    "settings_help",
]


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def check_int(
    name: str, value, low: int | None = None, high: int | None = None
) -> int:
    """``value`` must be an int in ``[low, high]`` (None: no bound)."""
    want = f"{name} must be an int{_range(low, high)}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(want)
    if (low is not None and value < low) or (
        high is not None and value > high
    ):
        raise ValueError(want)
    return value


def check_number(
    name: str, value, low: float | None = None, high: float | None = None
) -> float:
    """``value`` must be a finite real number (int or float) in
    ``[low, high]``."""
    want = f"{name} must be a number{_range(low, high)}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(want)
    if (
        not math.isfinite(value)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        raise ValueError(want)
    return value


def check_choice(name: str, value, allowed) -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ValueError(
            f"unknown {name} {value!r}; choose one of {tuple(allowed)}"
        )


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


# ---------------------------------------------------------------------------
# The model's inputs


def check_token_ids(idx, vocab_size: int, block_size: int, kv_cache=None):
    """``idx``: a (B, T) integer tensor of ids in [0, vocab_size), T in
    [1, block_size], or with a ``kv_cache`` T more positions than it holds
    that still fit, for the batch size it was made for."""
    if not isinstance(idx, Tensor):
        raise TypeError(
            "idx must be a torch.Tensor of token ids; got "
            f"{type(idx).__name__} (wrap it: torch.tensor([ids]))"
        )
    if (
        idx.dtype.is_floating_point
        or idx.dtype.is_complex
        or (idx.dtype == torch.bool)
    ):
        raise TypeError(
            "idx must hold integer token ids (torch.long), got "
            f"{idx.dtype}; pass token ids from a tokenizer, or convert "
            "with idx.long()"
        )
    if idx.ndim != 2:
        raise ValueError(
            f"idx must have shape (B, T), got {tuple(idx.shape)}; for one "
            "sequence add a batch dimension with idx.unsqueeze(0)"
        )
    B, T = idx.shape
    if T == 0:
        raise ValueError("idx is empty (T = 0): give at least one token")
    if kv_cache is None and T > block_size:
        raise ValueError(
            f"sequence length {T} exceeds block_size {block_size}; "
            f"crop the input, e.g. idx[:, -{block_size}:]"
        )
    if kv_cache is not None:
        if kv_cache.pos + T > kv_cache.block_size:
            raise ValueError(
                f"KV cache overflow: it holds {kv_cache.pos} positions "
                f"and {T} more would exceed block_size "
                f"{kv_cache.block_size}; call kv_cache.reset() and start "
                "again from a cropped context"
            )
        if kv_cache.batch_size != B:
            raise ValueError(
                f"idx has batch size {B} but the KV cache was made for "
                f"{kv_cache.batch_size}; use model.new_kv_cache({B})"
            )
    if torch.compiler.is_compiling():
        return  # reading values would break the compiled graph
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"token id {bad} is out of range for vocab_size "
            f"{vocab_size} (ids must be 0 .. {vocab_size - 1}); "
            "was the text encoded with a different tokenizer?"
        )


def check_attention_mask(mask, B: int, T: int, t_k: int) -> None:
    """``mask``: a boolean (or 0/1 integer) tensor, (B, T_k) for padding
    or (B, [nh,] T, T_k) for what each query may see (B may be 1)."""
    if not isinstance(mask, Tensor) or mask.dtype.is_floating_point:
        raise TypeError(
            "attention_mask must be a boolean (or 0/1 integer) "
            "tensor, True = a real token / may attend"
        )
    if mask.dim() == 2:
        if tuple(mask.shape) != (B, t_k):
            raise ValueError(
                f"a padding mask is (B, cached + new positions) = "
                f"({B}, {t_k}); got {tuple(mask.shape)}"
            )
    elif mask.dim() in (3, 4):
        if tuple(mask.shape[-2:]) != (T, t_k) or mask.size(0) not in (1, B):
            raise ValueError(
                "an attention mask is (B, [nh,] T, T_k) = "
                f"({B}, .., {T}, {t_k}); got {tuple(mask.shape)}"
            )
    else:
        raise ValueError(
            "attention_mask must be (B, T_k) (padding) or "
            f"(B, [nh,] T, T_k); got shape {tuple(mask.shape)}"
        )


def check_position_ids(pos, B: int, T: int, block_size: int) -> None:
    """``pos``: integer positions (B, T) or (T,) in [0, block_size)."""
    if (
        not isinstance(pos, Tensor)
        or pos.dtype.is_floating_point
        or pos.dtype == torch.bool
    ):
        raise TypeError("position_ids must be an integer tensor")
    if tuple(pos.shape) not in ((B, T), (T,)):
        raise ValueError(
            f"position_ids must be (B, T) = ({B}, {T}) or (T,); got "
            f"{tuple(pos.shape)}"
        )
    lo, hi = int(pos.min()), int(pos.max())
    if not 0 <= lo <= hi < block_size:
        raise ValueError(
            f"position_ids must be in 0 .. block_size - 1 = "
            f"{block_size - 1}; got {lo} .. {hi}"
        )


# ---------------------------------------------------------------------------
# Settings from the command line: every program's --set KEY=VALUE


def parse_settings(items: list[str], cls, exclude=()) -> dict:
    """``key=value`` strings -> overrides of the fields of the dataclass
    ``cls``, each value converted to its field's type (bool: true/false/1/0;
    a list: comma-separated)."""
    fields = {
        f.name: f for f in dataclasses.fields(cls) if f.name not in exclude
    }
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set takes key=value, got {item!r}")
        if key not in fields:
            raise ValueError(
                f"unknown setting {key!r}; settings are {sorted(fields)}"
            )
        kind = fields[key].type  # "int | None", "float", "list[str]"
        kind = kind if isinstance(kind, str) else kind.__name__
        try:
            if kind.startswith("bool"):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out[key] = value.lower() in ("true", "1")
            elif kind.startswith("int"):
                out[key] = int(value)
            elif kind.startswith("float"):
                out[key] = float(value)
            elif kind.startswith("list"):
                out[key] = [v.strip() for v in value.split(",") if v.strip()]
            else:
                out[key] = value
        except ValueError:
            name = kind.split(" ")[0]
            raise ValueError(
                f"setting {key}={value!r} is not a valid {name}"
            ) from None
    return out


def settings_help(values, exclude=(), title="--set KEY=VALUE") -> str:
    """The fields of the dataclass instance ``values``, ``key=value`` each,
    wrapped for a program's --help."""
    items = [
        f"{f.name}={getattr(values, f.name)!r}"
        for f in dataclasses.fields(values)
        if f.name not in exclude
    ]
    body = textwrap.fill(
        ", ".join(items), 78, initial_indent="  ", subsequent_indent="  "
    )
    return f"settings ({title}):\n{body}"
