"""The rules for notebook cells that depend on trained weights
(tests/trained_outputs.py), checked on the chapters' stored outputs: every
cell nbval ignores is accounted for, every ``trained`` cell has measured
tolerances, and a stored number moved by more than its tolerance fails."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import trained_outputs as TO
from nbval.plugin import coalesce_streams

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def code_cells():
    """(notebook, cell) with the cell's streams merged as nbval merges them
    before comparing (a cell that prints, glues and prints again)."""
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell["cell_type"] == "code":
                cell["outputs"] = coalesce_streams(cell["outputs"])
                yield path.stem, cell


def tagged(tag):
    return [
        (nb, c)
        for nb, c in code_cells()
        if tag in c["metadata"].get("tags", [])
    ]


IGNORED = tagged("nbval-ignore-output")
TRAINED = tagged("trained")
SAMPLED = tagged("sampled")
DATA = TO.load_tolerances()


def ids(cases):
    return [f"{nb}:{c['id']}" for nb, c in cases]


@pytest.mark.parametrize("nb, cell", IGNORED, ids=ids(IGNORED))
def test_every_cell_nbval_ignores_is_timing_or_checks_itself(nb, cell):
    source = "".join(cell["source"])
    tags = cell["metadata"]["tags"]
    assert "timing" in tags or re.search(r"^\s*assert\b", source, re.M), (
        f"{nb} cell {cell['id']} is ignored by nbval without a reason: tag "
        "it 'timing' (times, throughput, progress) or assert its result in "
        "the cell, or use 'trained'/'sampled'"
    )
    assert not {"trained", "sampled"} & set(tags), (
        "a trained/sampled cell must not also be ignored by nbval"
    )


def test_the_lists_of_special_cells():
    """What nbval does not compare exactly, per notebook (printed with -s,
    and kept from vanishing: the training chapters have such cells)."""
    for kind, cases in [
        ("ignored", IGNORED),
        ("trained", TRAINED),
        ("sampled", SAMPLED),
    ]:
        print(kind, ids(cases))
    assert {nb for nb, _ in TRAINED} >= {"07_training", "08_generation"}
    assert {nb for nb, _ in SAMPLED} >= {"07_training", "08_generation"}


@pytest.mark.parametrize("nb, cell", TRAINED, ids=ids(TRAINED))
def test_trained_cell_has_measured_tolerances(nb, cell):
    entry = DATA["notebooks"].get(nb, {}).get(cell["id"])
    assert entry, (
        f"{nb} cell {cell['id']} has no measured tolerances; "
        "run tests/measure_spread.py"
    )
    mask = cell["metadata"].get("llmbook", {}).get("mask")
    stored = TO.numbers_of(cell["outputs"], mask)
    assert len(stored) == len(entry["tolerance"]) == len(entry["spread"])
    runs = [entry["reference"], *entry["variants"].values()]
    for k, (now, ref, tol, spread) in enumerate(
        zip(stored, entry["reference"], entry["tolerance"], entry["spread"])
    ):
        # the rule, applied to the runs the file records
        assert spread == TO.spread_of([r[k] for r in runs])
        assert tol == TO.choose_tolerance(ref, spread)
        for r in runs:  # every measured run is inside, seen from the stored
            assert abs(TO.value(now) - TO.value(r[k])) <= tol + TO.slack(
                ref
            ), f"number {k}: stored {now}, a measured run {r[k]}"


def _retype(outputs, k, delta, decimals=0, mask=None):
    """outputs with the k-th number (over all texts, outside the parts that
    ``mask`` matches) moved by delta, printed with at least ``decimals``
    decimals."""
    outputs = json.loads(json.dumps(outputs))
    seen = 0
    for out in outputs:
        fields = (
            [("text", out)]
            if out["output_type"] == "stream"
            else [
                (m, out["data"])
                for m in sorted(out.get("data", {}))
                if not m.startswith("image/")
            ]
        )
        for key, holder in fields:
            text = TO._join(holder[key])
            hidden = (
                [m.span() for m in re.finditer(mask, text, re.M)]
                if (mask)
                else []
            )
            found = [
                m
                for m in TO.NUMBER.finditer(text)
                if not any(a <= m.start() < b for a, b in hidden)
            ]
            if seen + len(found) > k:
                m = found[k - seen]
                token = m.group()
                decimals = max(decimals, TO.decimals(token))
                if "e" in token.lower():  # 2.5e-21: all the digits of the
                    # moved value, whose exponent may be another
                    new = f"{TO.value(token) + delta:.12e}"
                else:
                    new = f"{TO.value(token) + delta:.{decimals}f}"
                holder[key] = (
                    text[: m.start()]
                    + new
                    + ("%" if token.endswith("%") else "")
                    + text[m.end() :]
                )
                return outputs
            seen += len(found)
    raise IndexError(k)


@pytest.mark.parametrize("nb, cell", TRAINED, ids=ids(TRAINED))
def test_a_stored_number_moved_past_its_tolerance_fails(nb, cell):
    entry = DATA["notebooks"].get(nb, {}).get(cell["id"])
    if not entry:
        pytest.skip("no tolerances (the test above fails)")
    mask = cell["metadata"].get("llmbook", {}).get("mask")
    tol = entry["tolerance"]
    ref = entry["reference"]
    stored = cell["outputs"]
    assert TO.compare_trained(stored, stored, tol, mask) == []
    for k in range(len(tol)):
        step = TO.unit(ref[k])
        digits = TO.decimals(ref[k])
        # past the tolerance by two printed digits, and by more than the
        # float slack where the tolerance dwarfs the number (a p-value)
        bad = _retype(stored, k, tol[k] * (1 + 1e-6) + 2 * step, digits, mask)
        problems = TO.compare_trained(bad, stored, tol, mask)
        assert problems and f"number {k} " in problems[0], (k, problems)
        if tol[k] >= step:
            ok = _retype(stored, k, tol[k] - step / 2, digits + 1, mask)
            assert TO.compare_trained(ok, stored, tol, mask) == []


def test_numbers_and_text_as_printed():
    skel, nums = TO.split(
        "step  600: loss 4.25, 24.07% of 1,228,800; bf16 -2.28 2.95e+13"
    )
    assert nums == ["600", "4.25", "24.07%", "1,228,800", "-2.28", "2.95e+13"]
    assert skel == "step #: loss #, # of #; bf16 # #"
    assert [TO.unit(n) for n in nums] == [1, 0.01, 0.01, 1, 0.01, 1e11]
    assert TO.value("24.07%") == 24.07 and TO.value("1,228,800") == 1228800
    assert TO.split(" 24.07%  ' not'\n  3.86%  ','", r"(?<=%)  .*$") == (
        "#<...>\n #<...>",
        ["24.07%", "3.86%"],
    )
    # column padding is not text, also after an opening bracket
    assert TO.split("( 7.7%-17.8%)")[0] == TO.split("(10.3%-21.3%)")[0]
    assert TO.choose_tolerance("4.25", 0.0) == 0
    assert TO.choose_tolerance("4.25", 0.02) == 0.04  # 1.5 x 0.02 + 0.01
    # the spread is the range over all runs, not the distance to one
    assert TO.spread_of(["4.23", "4.27", "4.20"]) == 0.07
    assert TO.spread_of(["25.2%", "10.5%"]) == 14.7
    assert TO.spread_of(["600", "600"]) == 0


def stream(text):
    return [{"output_type": "stream", "name": "stdout", "text": text}]


def test_trained_comparison():
    assert (
        TO.compare_trained(stream("loss 4.25"), stream("loss 4.27"), [0.05])
        == []
    )
    assert (
        "tolerance 0.01"
        in TO.compare_trained(
            stream("loss 4.25"), stream("loss 4.27"), [0.01]
        )[0]
    )
    assert (
        "text around"
        in TO.compare_trained(
            stream("loss 4.25"), stream("gain 4.25"), [0.05]
        )[0]
    )
    assert (
        "no measured tolerance"
        in TO.compare_trained(stream("loss 4.25"), stream("loss 4.25"), None)[
            0
        ]
    )
    assert (
        "measured for it"
        in TO.compare_trained(
            stream("loss 4.25"), stream("loss 4.25"), [0.1, 0.1]
        )[-1]
    )
    assert "kinds of outputs" in TO.compare_trained(stream("a"), [], [])[0]
    # column padding follows the width of a number
    assert (
        TO.compare_trained(stream("  9.50 x"), stream(" 10.50 x"), [1.5]) == []
    )


def test_sampled_comparison():
    assert (
        TO.compare_sampled(
            stream("--- a\nxyz"), stream("--- a\nabc"), r"^--- .*$"
        )
        == []
    )
    assert (
        "differ"
        in TO.compare_sampled(
            stream("--- a\nxyz"), stream("--- b\nabc"), r"^--- .*$"
        )[0]
    )
    assert "empty" in TO.compare_sampled(stream("x"), stream("\n"))[0]


NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": 1,
            "id": "c1",
            "metadata": {"tags": ["trained"]},
            "outputs": [
                {
                    "name": "stdout",
                    "output_type": "stream",
                    "text": ["loss STORED\n"],
                }
            ],
            "source": ['print("loss 4.25")'],
        }
    ],
    "metadata": {
        "kernelspec": {
            "display_name": "Python 3",
            "language": "python",
            "name": "python3",
        }
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.mark.slow
@pytest.mark.parametrize("stored, passes", [("4.27", True), ("4.40", False)])
def test_nbval_applies_the_tolerance(tmp_path, stored, passes):
    """End to end: pytest --nbval with this project's options accepts a
    stored number within its tolerance and fails one beyond it."""
    nb = json.loads(json.dumps(NOTEBOOK).replace("STORED", stored))
    (tmp_path / "tiny.ipynb").write_text(json.dumps(nb))
    tolerances = tmp_path / "tol.json"
    tolerances.write_text(
        json.dumps({"notebooks": {"tiny": {"c1": {"tolerance": [0.05]}}}})
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(ROOT),
            str(tmp_path / "tiny.ipynb"),
        ],
        env={**os.environ, "LLMBOOK_TOLERANCES": str(tolerances)},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert (run.returncode == 0) == passes, run.stdout[-3000:]
    if not passes:
        assert "|difference| 0.15 > tolerance 0.05" in run.stdout
