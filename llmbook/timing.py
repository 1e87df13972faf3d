"""Timing: how many times the book's measurements repeat, and CI's switch.

A timing on a shared machine is noisy, so the chapters repeat each
measurement and print a median (or the best). Those cells' outputs are
timings, which the tests do not compare; CI only needs them to run. With
``LLMBOOK_QUICK_TIMING=1`` in the environment (.ci/run sets it),
``repeats(n)`` is 1 instead of ``n``: each measurement is taken once, and
the cells print the same lines with noisier numbers. Nothing that does not
depend on the clock changes.
"""

from __future__ import annotations

import os

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
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"repeats must be a positive int, got {n!r}")
    return 1 if quick_timing() else n
