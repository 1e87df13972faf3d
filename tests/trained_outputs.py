"""Comparing notebook outputs that depend on trained weights.

A model trained for hundreds of steps ends up with different weights on a
different CPU: PyTorch picks vectorised kernels by CPU capability and MKL
picks code paths by processor, and training amplifies a 1e-7 rounding
difference into the second decimal of the loss. So the chapters' cells are
checked in three ways (cell tags):

- untagged: nbval compares the output exactly (after tests/nbval_sanitize.cfg);
- ``trained``: the text around the numbers is compared exactly (runs of
  spaces collapsed, since column padding follows the width of a number), and
  each number within the tolerance measured for it across kernel paths,
  thread counts and seeds (``tests/measure_spread.py`` writes
  ``tests/data/trained_tolerances.json``). A cell's metadata
  ``llmbook.mask`` is a regex for text that may differ too (which tokens
  rank first), replaced before comparing;
- ``sampled``: text sampled from a trained model. The same outputs (kinds and
  streams) must appear, none empty, and the lines matching the cell's
  ``llmbook.keep`` regex (headers) must be equal; the cell itself asserts
  what it can (stop tokens, lengths).

Cells tagged ``nbval-ignore-output`` must be ``timing`` (times, throughput,
progress bars) or check their own result with ``assert``
(tests/test_trained_outputs.py enforces this).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# LLMBOOK_TOLERANCES: another file, for the tests of this module itself
TOLERANCES = Path(
    os.environ.get(
        "LLMBOOK_TOLERANCES",
        ROOT / "tests" / "data" / "trained_tolerances.json",
    )
)

# A number as the chapters print it: 1,228,800  -2.28  24.07%  2.95e+13.
# Not a digit inside a word (bf16, x86) or after a decimal point.
NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?"
)
_SPACES = re.compile(r"[ \t]+")
_PADDED = re.compile(r"([(\[]) #")


def _texts(outputs: list[dict]) -> list[tuple[str, str]]:
    """(what, text) for every text that an output list shows, in order."""
    found = []
    for i, out in enumerate(outputs):
        kind = out.get("output_type")
        if kind == "stream":
            found.append(
                (f"output {i} ({out.get('name')})", _join(out["text"]))
            )
        elif kind in ("execute_result", "display_data"):
            for mime, value in sorted(out.get("data", {}).items()):
                if mime.startswith("image/"):
                    continue  # pixels are not compared (as in nbval)
                if isinstance(value, (str, list)):
                    found.append((f"output {i} ({mime})", _join(value)))
        elif kind == "error":
            found.append((f"output {i} (error)", out.get("ename", "")))
    return found


def _join(text) -> str:
    return "".join(text) if isinstance(text, list) else text


def signature(outputs: list[dict]) -> list[tuple]:
    """The kinds of outputs, which must be the same in every run."""
    return [
        (
            o.get("output_type"),
            o.get("name"),
            tuple(
                sorted(
                    k for k in o.get("data", {}) if not k.startswith("image/")
                )
            ),
        )
        for o in outputs
    ]


def value(token: str) -> float:
    return float(token.replace(",", "").rstrip("%"))


def _parts(token: str) -> tuple[str, str]:
    """(mantissa, exponent) of a printed number: ("2.5", "-21")."""
    mantissa, _, exponent = (
        token.replace(",", "").rstrip("%").lower().lstrip("+-").partition("e")
    )
    return mantissa, exponent


def decimals(token: str) -> int:
    """Digits after the mantissa's point: 2 for "4.25", 1 for "2.5e-21"."""
    return len(_parts(token)[0].partition(".")[2])


def unit(token: str) -> float:
    """The step of the last printed digit: 0.01 for "4.25", 1 for "600"."""
    return 10.0 ** (int(_parts(token)[1] or 0) - decimals(token))


def slack(token: str) -> float:
    """Float rounding allowed on top of a tolerance, relative to the number
    (so that a p-value of 1e-21 is checked too)."""
    return 1e-9 * max(unit(token), abs(value(token)))


def significant(x: float) -> float:
    """``x`` to 12 significant digits (not decimals: a spread of 1e-21)."""
    return float(f"{x:.12g}")


def split(text: str, mask: str | None = None) -> tuple[str, list[str]]:
    """(skeleton, numbers): the text with masked parts replaced by <...>,
    every number by #, and runs of spaces collapsed; and the numbers."""
    if mask:
        text = re.sub(mask, "<...>", text, flags=re.MULTILINE)
    numbers = NUMBER.findall(text)
    skeleton = _SPACES.sub(" ", NUMBER.sub("#", text)).strip()
    # padding inside a bracket, "( 7.7%" beside "(10.3%", is width too
    skeleton = _PADDED.sub(r"\1#", skeleton)
    return skeleton, numbers


def numbers_of(outputs: list[dict], mask: str | None = None) -> list[str]:
    return [n for _, text in _texts(outputs) for n in split(text, mask)[1]]


def compare_trained(
    stored: list[dict],
    new: list[dict],
    tolerance: list[float] | None,
    mask: str | None = None,
) -> list[str]:
    """Problems found comparing a ``trained`` cell's new outputs with the
    stored ones (empty: they agree)."""
    if signature(stored) != signature(new):
        return [
            f"the kinds of outputs differ: stored {signature(stored)}, "
            f"new {signature(new)}"
        ]
    problems, k = [], 0
    for (what, old_text), (_, new_text) in zip(_texts(stored), _texts(new)):
        old_skel, old_nums = split(old_text, mask)
        new_skel, new_nums = split(new_text, mask)
        if old_skel != new_skel or len(old_nums) != len(new_nums):
            problems.append(
                f"{what}: the text around the numbers differs\n"
                f"  stored: {old_text!r}\n  new:    {new_text!r}"
            )
            k += len(old_nums)
            continue
        for old, now in zip(old_nums, new_nums):
            if tolerance is None or k >= len(tolerance):
                problems.append(
                    f"{what}: no measured tolerance for number {k} ({old}); "
                    "run tests/measure_spread.py"
                )
            else:
                diff = abs(value(old) - value(now))
                if not diff <= tolerance[k] + slack(old):
                    problems.append(
                        f"{what}: number {k} is {now}, stored {old}: "
                        f"|difference| {diff:.4g} > tolerance {tolerance[k]:g}"
                    )
            k += 1
    if tolerance is not None and k != len(tolerance):
        problems.append(
            f"the cell prints {k} numbers but "
            f"{len(tolerance)} tolerances were measured for it; "
            "run tests/measure_spread.py again"
        )
    return problems


def compare_sampled(
    stored: list[dict], new: list[dict], keep: str | None = None
) -> list[str]:
    """Problems found checking a ``sampled`` cell's properties."""
    if signature(stored) != signature(new):
        return [
            f"the kinds of outputs differ: stored {signature(stored)}, "
            f"new {signature(new)}"
        ]
    problems = []
    for (what, old_text), (_, new_text) in zip(_texts(stored), _texts(new)):
        if not new_text.strip():
            problems.append(f"{what}: the sample is empty")
        if keep:
            pattern = re.compile(keep, re.MULTILINE)
            old_keep = pattern.findall(old_text)
            new_keep = pattern.findall(new_text)
            if old_keep != new_keep:
                problems.append(
                    f"{what}: lines matching {keep!r} differ: "
                    f"stored {old_keep}, new {new_keep}"
                )
    return problems


def load_tolerances(path: Path | None = None) -> dict:
    path = path or TOLERANCES
    if not path.exists():
        return {"notebooks": {}}
    return json.loads(path.read_text())


def tolerance_for(
    data: dict, notebook: str, cell_id: str
) -> list[float] | None:
    entry = data["notebooks"].get(notebook, {}).get(cell_id)
    return None if entry is None else entry["tolerance"]


def spread_of(values: list[str]) -> float:
    """The measured spread of one number: the range (largest minus smallest)
    of its values over all the runs, the stored outputs included. Not the
    distance to one reference run: the stored output and a reader's run are
    two draws from the same spread, and either may lie at its edge."""
    xs = [value(v) for v in values]
    return significant(max(xs) - min(xs))


def choose_tolerance(reference: str, spread: float) -> float:
    """The tolerance of one number from its measured spread (the range of
    its values over the runs): exact where no run differed, else 1.5 x the
    spread (the range of a few draws underestimates the range of all
    machines) plus one step of the last printed digit (rounding), rounded up
    to that step."""
    if spread == 0:
        return 0.0
    step = unit(reference)
    return significant(math.ceil((1.5 * spread + step) / step - 1e-9) * step)


def entry_of(runs: dict[str, list[str]]) -> dict:
    """The tolerance entry of one cell from its numbers in each run (a dict
    run name -> printed numbers, with a "reference" run)."""
    ref = runs["reference"]
    spread = [
        spread_of([nums[i] for nums in runs.values()]) for i in range(len(ref))
    ]
    return {
        "reference": ref,
        "variants": {n: v for n, v in runs.items() if n != "reference"},
        "spread": spread,
        "tolerance": [choose_tolerance(r, s) for r, s in zip(ref, spread)],
    }
