"""The harness of the exercise checks: cases, comparison, the registry.

An exercise is one function the reader writes. Its chapter's module (``ch2``
for "2.2") registers it with the ``exercise`` decorator, on the function
that builds its cases; ``run_check`` then calls the reader's function and
the package's own (the ``reference``) on every case and compares the two
answers: tensors within ``rtol``/``atol``, everything else exactly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# ---------------------------------------------------------------------------
# Cases, results, and how two answers are compared


@dataclass
class Case:
    """One call: ``fn(*args)``; ``desc`` says what the case is about."""

    args: tuple
    desc: str = ""


@dataclass
class Raises:
    """What the package did with a bad input: raised ``kind: message``."""

    kind: str
    message: str


@dataclass
class Exercise:
    id: str  # "2.2": chapter, then the exercise's number in the chapter
    label: str  # the MyST label of the exercise directive
    name: str  # the function the reader writes
    params: tuple[str, ...]  # its parameters, to show the inputs by name
    reference: Callable  # the package's answer, same signature
    cases: Callable[[], list[Case]]
    rtol: float = 1e-5
    atol: float = 1e-6
    # observe(fn, args) -> what is compared; default: fn(*args). Exercises
    # whose function mutates state (a cache, a model) observe that state.
    observe: Callable | None = None


@dataclass
class Result:
    id: str
    passed: bool
    attempted: bool
    n_cases: int
    message: str = ""
    failed_case: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class _Got:
    value: Any = None
    error: BaseException | None = None


def _short(value: Any, limit: int = 240) -> str:
    """A one-line description of a value, in ASCII (the PDF's fonts)."""
    if hasattr(value, "_exercise_repr"):
        text = value._exercise_repr()
    elif isinstance(value, torch.Tensor):
        if value.numel() <= 16:
            v = value.tolist()
            if value.is_floating_point():
                v = _round(v)
            text = f"tensor({v}, dtype={str(value.dtype)[6:]})"
        else:
            text = (
                f"tensor of shape {tuple(value.shape)}, "
                f"dtype={str(value.dtype)[6:]}"
            )
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, Raises):
        text = f"raises {value.kind}: {value.message}"
    elif isinstance(value, dict) and any(
        isinstance(v, (torch.Tensor, list, tuple, float))
        for v in value.values()
    ):
        text = (
            "{"
            + ", ".join(
                f"{_short(k)}: {_short(v, limit)}" for k, v in value.items()
            )
            + "}"
        )
    elif isinstance(value, (list, tuple)) and any(
        isinstance(v, (torch.Tensor, list, tuple, float, type(None)))
        for v in value
    ):
        inner = ", ".join(_short(v, limit) for v in value)
        if isinstance(value, tuple):
            text = "(" + inner + ("," if len(value) == 1 else "") + ")"
        else:
            text = "[" + inner + "]"
    else:
        text = ascii(value)
    if len(text) > limit:
        text = text[: limit - 5] + " ..."
    return text


def _round(v):
    if isinstance(v, list):
        return [_round(x) for x in v]
    return round(v, 4) if math.isfinite(v) else v


def _index(t: torch.Tensor) -> tuple:
    return tuple(int(i) for i in t.tolist())


def _tensor_diff(exp, got, rtol, atol, path):
    """None, or (where, how) ``got`` differs from the tensor ``exp``."""
    if not isinstance(got, torch.Tensor):
        return path, f"expected a torch.Tensor, got {type(got).__name__}"
    if tuple(exp.shape) != tuple(got.shape):
        return path, (
            f"expected shape {tuple(exp.shape)}, got shape {tuple(got.shape)}"
        )
    exact = exp.dtype == torch.bool or not exp.is_floating_point()
    if exact:
        if got.dtype != exp.dtype:
            return path, f"expected dtype {exp.dtype}, got {got.dtype}"
        bad = (exp != got).nonzero()
        if len(bad):
            i = _index(bad[0])
            return f"{path}{list(i) if i else ''}", (
                f"expected {exp[i].item()}, got {got[i].item()} ({len(bad)} "
                f"of {exp.numel()} entries differ)"
            )
        return None
    if not got.is_floating_point():
        return path, f"expected a float tensor ({exp.dtype}), got {got.dtype}"
    g = got.detach().to(exp.dtype).cpu()
    e = exp.detach().cpu()
    close = torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if not bool(close.all()):
        bad = (~close).nonzero()
        i = _index(bad[0])
        return f"{path}{list(i) if i else ''}", (
            f"expected {e[i].item():.6g}, got {g[i].item():.6g} ({len(bad)} "
            f"of {e.numel()} entries differ)"
        )
    return None


def _diff(exp, got, rtol, atol) -> str | None:
    """None if ``got`` matches ``exp``, else where and how it first differs.
    Tensors are compared within ``rtol``/``atol``; everything else exactly.
    """
    found = _first_diff(exp, got, rtol, atol, "")
    if found is None:
        return None
    where, how = found
    return f"first difference at {where}: {how}" if where else how


def _first_diff(exp, got, rtol, atol, path):
    """None, or (where, how) ``got`` first differs from ``exp``."""
    if isinstance(exp, torch.Tensor):
        return _tensor_diff(exp, got, rtol, atol, path)
    if (
        isinstance(got, torch.Tensor)
        and got.numel() == 1
        and not isinstance(exp, (list, tuple, dict))
    ):
        got = got.item()
    if isinstance(exp, bool) or exp is None:
        if got is not exp and got != exp:
            return path, f"expected {exp!r}, got {_short(got)}"
        return None
    if isinstance(exp, float):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return path, f"expected a number, got {type(got).__name__}"
        if not math.isclose(got, exp, rel_tol=rtol, abs_tol=atol) and not (
            math.isnan(exp) and math.isnan(got)
        ):
            return path, f"expected {exp:.6g}, got {got:.6g}"
        return None
    if isinstance(exp, int):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return path, f"expected an int, got {type(got).__name__}"
        if got != exp:
            return path, f"expected {exp:,}, got {got:,}"
        return None
    if isinstance(exp, (list, tuple)):
        return _sequence_diff(exp, got, rtol, atol, path)
    if isinstance(exp, str):
        return _str_diff(exp, got, path)
    if isinstance(exp, dict):
        return _dict_diff(exp, got, rtol, atol, path)
    if exp != got:
        return path, f"expected {_short(exp)}, got {_short(got)}"
    return None


def _length_diff(exp, got, path):
    """None, or where and how two sequences equal so far differ in length."""
    if len(exp) != len(got):
        return path, (
            f"expected length {len(exp)}, got length "
            f"{len(got)} (equal up to index "
            f"{min(len(exp), len(got))})"
        )
    return None


def _sequence_diff(exp, got, rtol, atol, path):
    if not isinstance(got, (list, tuple)):
        return path, (
            f"expected a {type(exp).__name__} of length "
            f"{len(exp)}, got {type(got).__name__}"
        )
    for i, (e, g) in enumerate(zip(exp, got)):
        found = _first_diff(e, g, rtol, atol, f"{path}[{i}]")
        if found:
            return found
    return _length_diff(exp, got, path)


def _str_diff(exp, got, path):
    if not isinstance(got, str):
        return path, f"expected a str, got {type(got).__name__}"
    for i, (e, g) in enumerate(zip(exp, got)):
        if e != g:
            return f"{path}[{i}]", (
                f"expected character {ascii(e)}, got {ascii(g)}"
            )
    return _length_diff(exp, got, path)


def _dict_diff(exp, got, rtol, atol, path):
    if not isinstance(got, dict):
        return path, f"expected a dict, got {type(got).__name__}"
    missing = [k for k in exp if k not in got]
    extra = [k for k in got if k not in exp]
    if missing:
        return path, (
            f"missing key {_short(missing[0])} (expected "
            f"{_short(exp[missing[0]])}; {len(missing)} "
            "missing)"
        )
    if extra:
        return path, (
            f"unexpected key {_short(extra[0])} (value "
            f"{_short(got[extra[0]])}; {len(extra)} extra)"
        )
    for k in exp:
        found = _first_diff(exp[k], got[k], rtol, atol, f"{path}[{_short(k)}]")
        if found:
            return found
    return None


# ---------------------------------------------------------------------------
# Running the cases


def _call(fn, args, observe) -> _Got:
    args = copy.deepcopy(args)  # neither side may see the other's changes
    try:
        value = observe(fn, args) if observe else fn(*args)
    except Exception as e:  # noqa: BLE001 - any failure is reported
        return _Got(error=e)
    return _Got(value=value)


def _error_text(e: BaseException) -> str:
    text = (
        f"{type(e).__name__}: {e}".splitlines()[0]
        if str(e)
        else type(e).__name__
    )
    return text if len(text) < 200 else text[:195] + " ..."


def _problem(ex: Exercise, exp: _Got, got: _Got) -> str | None:
    """None if the reader's answer ``got`` agrees with the package's
    ``exp``, else the "expected: ... got: ..." lines of the message."""
    if exp.error is not None:  # a bad input: the reader must refuse it
        if got.error is None:
            return (
                "expected: an error (ValueError or TypeError); "
                f"the package raises {_error_text(exp.error)}\n"
                f"  got:      returned {_short(got.value)}"
            )
        if not isinstance(got.error, (ValueError, TypeError)):
            return (
                "expected: ValueError or TypeError; the package "
                f"raises {_error_text(exp.error)}\n"
                f"  got:      {_error_text(got.error)}"
            )
        return None
    if got.error is not None:
        return (
            f"expected: {_short(exp.value)}\n"
            f"  got:      raised {_error_text(got.error)}"
        )
    d = _diff(exp.value, got.value, ex.rtol, ex.atol)
    if d is None:
        return None
    hint = ""
    if got.value is None:
        hint = " (a missing return statement?)"
    problem = (
        f"expected: {_short(exp.value)}\n  got:      {_short(got.value)}{hint}"
    )
    # a plain "expected 3, got 4" repeats the two lines above: say where
    # only when it adds something (a position, a shape, a type)
    if (
        not d.startswith("expected ")
        or "shape" in d
        or "type" in d
        or " a " in d
    ):
        problem += f"\n  {d}"
    return problem


def _one_thread(run):
    """Run with one torch thread: the cases are tiny, and two threads on a
    busy machine can be many times slower (OpenMP barriers)."""

    def wrapped(*args):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run(*args)
        finally:
            torch.set_num_threads(n)

    wrapped.__doc__ = run.__doc__
    wrapped.__name__ = run.__name__
    return wrapped


@_one_thread
def run_check(exercise_id: str, fn: Callable) -> Result:
    """Compare ``fn`` with the package on every case of the exercise."""
    ex = _get(exercise_id)
    fname = getattr(fn, "__name__", "your function")
    head = f"Exercise {ex.id} ({fname})"
    if not callable(fn):
        return Result(
            ex.id,
            False,
            True,
            0,
            f"{head}: expected a function, got {type(fn).__name__}",
        )
    cases = ex.cases()
    for n, case in enumerate(cases, start=1):
        exp = _call(ex.reference, case.args, ex.observe)
        if exp.error is not None and not isinstance(
            exp.error, (ValueError, TypeError)
        ):
            raise RuntimeError(
                f"the reference failed on case {n} of {ex.id}: {exp.error!r}"
            ) from exp.error
        got = _call(fn, case.args, ex.observe)
        if n == 1 and isinstance(got.error, NotImplementedError):
            return Result(
                ex.id,
                False,
                False,
                len(cases),
                f"{head}: not attempted yet.",
            )
        problem = _problem(ex, exp, got)
        if problem is not None:
            shown = ", ".join(
                f"{p}={_short(a, 120)}" for p, a in zip(ex.params, case.args)
            )
            what = f" [{case.desc}]" if case.desc else ""
            msg = (
                f"{head}: failed on case {n} of {len(cases)}{what}\n"
                f"  input:    {shown}\n  {problem}"
            )
            return Result(ex.id, False, True, len(cases), msg, n)
    return Result(
        ex.id,
        True,
        True,
        len(cases),
        f"{head}: passed all {len(cases)} cases.",
    )


def check(exercise_id: str, fn: Callable) -> None:
    """Check the reader's ``fn`` for exercise ``exercise_id`` ("2.2") and
    print the verdict: passed, not attempted yet, or the first failing case.
    """
    print(run_check(exercise_id, fn).message)


# ---------------------------------------------------------------------------
# The registry


# Filled as the chapters' modules are imported, so in the order that
# llmbook/exercises/__init__.py imports them: the book's.
EXERCISES: dict[str, Exercise] = {}


def exercise(
    exercise_id: str,
    *,
    label: str,
    name: str,
    params: tuple[str, ...],
    reference: Callable,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    observe: Callable | None = None,
) -> Callable[[Callable[[], list[Case]]], Callable[[], list[Case]]]:
    """Register the decorated function as the cases of exercise
    ``exercise_id``; it is returned unchanged. The other arguments are the
    fields of ``Exercise``."""

    def register(cases: Callable[[], list[Case]]):
        if exercise_id in EXERCISES:
            raise ValueError(f"exercise {exercise_id!r} is registered twice")
        EXERCISES[exercise_id] = Exercise(
            exercise_id,
            label,
            name,
            params,
            reference,
            cases,
            rtol=rtol,
            atol=atol,
            observe=observe,
        )
        return cases

    return register


def _get(exercise_id: str) -> Exercise:
    if exercise_id not in EXERCISES:
        raise KeyError(
            f"no exercise {exercise_id!r}; the checked ones are "
            f"{', '.join(EXERCISES)}"
        )
    return EXERCISES[exercise_id]


def exercise_ids() -> list[str]:
    return list(EXERCISES)


# ---------------------------------------------------------------------------
# Inputs from fixed seeds: every run of a check sees the same cases


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed: int, scale: float = 1.0, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype) * scale
