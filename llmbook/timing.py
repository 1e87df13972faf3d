"""Timing: how many times the book's measurements repeat, and CI's switch.

A timing on a shared machine is noisy, so the chapters repeat each
measurement and print a median (or the best). Those cells' outputs are
timings, which the tests do not compare; CI only needs them to run. With
``LLMBOOK_QUICK_TIMING=1`` in the environment (.ci/run sets it),
``repeats(n)`` is 1 instead of ``n``: each measurement is taken once, and
the cells print the same lines with noisier numbers. Nothing that does not
depend on the clock changes.

Two timers: ``median_seconds`` for one function, and ``alternate`` for
several contenders compared in one process (the benchmarks in
``llmbook.bench``), which interleaves them so that whatever else the
machine is doing slows them all alike.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping

from llmbook.checks import check_int

QUICK_TIMING = "LLMBOOK_QUICK_TIMING"


def quick_timing() -> bool:
    """Whether ``LLMBOOK_QUICK_TIMING=1`` is set ("0" or unset: no)."""
    value = os.environ.get(QUICK_TIMING, "0")
    if value not in ("0", "1"):
        raise ValueError(
            f"{QUICK_TIMING}={value!r}: set it to 1 (each timing taken "
            "once, as in CI) or 0 (the chapters' repeats), or unset it"
        )
    return value == "1"


def repeats(n: int) -> int:
    """``n``, the times a measurement is repeated for a steady median; 1
    under CI's ``LLMBOOK_QUICK_TIMING=1``."""
    check_int("repeats", n, low=1)
    return 1 if quick_timing() else n


def median_seconds(f: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``f()`` over ``repeats`` calls, after one
    call to warm up (page faults, thread pools, lazy initialisation)."""
    return statistics.median(alternate({"f": f}, repeats, warmup=1)["f"])


def alternate(
    contenders: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    *,
    outputs: dict[str, object] | None = None,
) -> dict[str, list[float]]:
    """Time contenders in alternation: ``{name: [seconds of each call]}``.

    Each round calls every contender once, in the mapping's order; there
    are ``warmup`` untimed rounds, then ``repeats`` timed ones. A burst of
    load from elsewhere on the machine then slows every contender in the
    rounds it hits, instead of all the calls of one. Reduce the lists as
    the comparison needs (``statistics.median``, ``min``). ``outputs``, if
    given, receives each contender's last return value (to check that the
    contenders agree).
    """
    if not isinstance(contenders, Mapping) or not contenders:
        raise ValueError(
            "contenders must be a non-empty mapping of name -> function "
            f"of no arguments, got {contenders!r}"
        )
    for name, f in contenders.items():
        if not callable(f):
            raise ValueError(
                f"contender {name!r} is {f!r}, not a function of no arguments"
            )
    check_int("repeats", repeats, low=1)
    check_int("warmup (untimed rounds)", warmup, low=0)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(warmup + repeats):
        for name, f in contenders.items():
            t0 = time.perf_counter()
            out = f()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
            if outputs is not None:
                outputs[name] = out
    return times
