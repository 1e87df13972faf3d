"""Measure how much the chapters' trained-weight outputs vary, and write the
tolerances that the notebook tests use.

Every notebook with cells tagged ``trained`` is run with papermill under
several variants of the machine: other kernel paths (ATEN_CPU_CAPABILITY,
MKL_CBWR, as another CPU would pick), one thread instead of two, and other
seeds. Each variant gets a data directory of its own, so it trains its own
model from scratch. Then, for every number that a ``trained`` cell prints,
the spread is the largest |variant - reference| over the runs and the
tolerance follows from it (``trained_outputs.choose_tolerance``).

    python tests/measure_spread.py run --work DIR [--only NAME ...] [--jobs 2]
        [--notebooks 06_generation ...]
    python tests/measure_spread.py collect --work DIR

``run`` takes about ten minutes per variant on two cores (``--jobs 2`` runs
two one-thread variants at once). ``collect`` writes
``tests/data/trained_tolerances.json`` and the training chapter's expected
band, ``llmbook/book_band.json`` (used by ``llmbook.train.check_run``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import trained_outputs as TO

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
BAND = ROOT / "llmbook" / "book_band.json"
# The training chapter's loss table: its cell, and the columns it prints.
TABLE = ("05_training", "ff34fd0e")

# Every variant runs with one thread, so that two can share two cores; the
# notebooks' stored outputs (two threads) count as one more run.
STORED = "stored-2-threads"
VARIANTS = {
    "reference": dict(env={}, params={}, what="this machine's own kernels"),
    "avx2": dict(
        env={"ATEN_CPU_CAPABILITY": "avx2"},
        params={},
        what="PyTorch's AVX2 kernels instead of AVX-512",
    ),
    "mkl-compatible": dict(
        env={"MKL_CBWR": "COMPATIBLE"},
        params={},
        what="MKL's processor-independent code path",
    ),
    "avx2+mkl-compatible": dict(
        env={"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
        params={},
        what="both of the above",
    ),
    "seed-1": dict(env={}, params={"seed": 1}, what="training seed 1"),
    "seed-2": dict(env={}, params={"seed": 2}, what="training seed 2"),
}


def trained_notebooks() -> list[Path]:
    found = []
    for path in sorted(BOOK.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        if any(
            "trained" in c.get("metadata", {}).get("tags", [])
            for c in nb["cells"]
        ):
            found.append(path)
    return found


def run_variant(name: str, work: Path, only: list[str] | None = None) -> str:
    spec = VARIANTS[name]
    out = work / name
    (out / "data").mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "LLMBOOK_DATA_DIR": str(out / "data"),
        **spec["env"],
    }
    py = sys.executable
    subprocess.run(
        [py, "-m", "llmbook.data", "fetch"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for nb in trained_notebooks():
        if only and nb.stem not in only:
            continue
        params = ["-p", "profile", "book"]
        for key, val in spec["params"].items():
            params += ["-p", key, str(val)]
        with open(out / f"{nb.stem}.log", "w") as log:
            subprocess.run(
                [
                    py,
                    "-m",
                    "papermill",
                    str(nb),
                    str(out / nb.name),
                    *params,
                    "--cwd",
                    str(BOOK),
                    "-k",
                    "python3",
                    "--no-progress-bar",
                ],
                env=env,
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    return name


def _cells(path: Path) -> dict:
    nb = json.loads(path.read_text())
    return {c.get("id"): c for c in nb["cells"] if c["cell_type"] == "code"}


def collect(work: Path) -> dict:
    ran = [n for n in VARIANTS if (work / n).is_dir()]
    if "reference" not in ran:
        sys.exit(f"no reference run in {work}: run 'run --only reference'")
    data = {
        "about": (
            "Tolerances of the numbers printed by notebook cells tagged "
            "'trained', measured by tests/measure_spread.py. For each number: "
            "reference = its value in the reference run; variants = its value "
            "in each other run; spread = max |variant - reference|; tolerance "
            "= 0 where no run differed, else 1.5 x spread + one step of the "
            "last printed digit, rounded up to that step."
        ),
        "measured": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch "
        f"{__import__('torch').__version__}",
        "variants": {
            **{n: VARIANTS[n]["what"] + " (1 thread)" for n in ran},
            STORED: "the stored outputs: this machine's own kernels "
            "with 2 threads",
        },
        "notebooks": {},
    }
    previous = TO.load_tolerances()["notebooks"]
    for nb in trained_notebooks():
        committed = _cells(nb)
        runs = {
            n: _cells(work / n / nb.name)
            for n in ran
            if (work / n / nb.name).exists()
        }
        # the stored outputs: the same machine with two threads, which
        # rounds differently from one thread here
        runs[STORED] = committed
        if "reference" not in runs:
            print(
                f"{nb.stem}: no runs in {work}; keeping what was measured "
                "before, if anything"
            )
            if nb.stem in previous:
                data["notebooks"][nb.stem] = previous[nb.stem]
            continue
        entries = {}
        for cid, cell in committed.items():
            if "trained" not in cell["metadata"].get("tags", []):
                continue
            mask = cell["metadata"].get("llmbook", {}).get("mask")
            ref = runs["reference"][cid]["outputs"]
            ref_sig = TO.signature(ref)
            ref_skel = [TO.split(t, mask)[0] for _, t in TO._texts(ref)]
            ref_nums = TO.numbers_of(ref, mask)
            values = {}
            for n, cells in runs.items():
                outs = cells[cid]["outputs"]
                skel = [TO.split(t, mask)[0] for _, t in TO._texts(outs)]
                if TO.signature(outs) != ref_sig or skel != ref_skel:
                    sys.exit(
                        f"{nb.stem} cell {cid}: run {n!r} prints text "
                        "of another shape than the reference; the cell "
                        "cannot be compared number by number (mask the "
                        "varying text, or tag it 'sampled')"
                    )
                values[n] = TO.numbers_of(outs, mask)
            spread = [
                max(abs(TO.value(v[i]) - TO.value(r)) for v in values.values())
                for i, r in enumerate(ref_nums)
            ]
            entries[cid] = {
                "reference": ref_nums,
                "variants": {
                    n: v for n, v in values.items() if n != "reference"
                },
                "spread": [round(s, 12) for s in spread],
                "tolerance": [
                    TO.choose_tolerance(r, s) for r, s in zip(ref_nums, spread)
                ],
            }
        data["notebooks"][nb.stem] = entries
    TO.TOLERANCES.parent.mkdir(parents=True, exist_ok=True)
    TO.TOLERANCES.write_text(json.dumps(data, indent=1) + "\n")
    write_band(data)
    return data


def write_band(data: dict) -> None:
    """The training chapter's expected validation curve: the reference run's
    values and their tolerances, from the loss table (12 rows of step, train
    loss, val loss, val bits/byte; then whole-split loss, perplexity, bpb)."""
    entry = data["notebooks"][TABLE[0]][TABLE[1]]
    ref = [TO.value(v) for v in entry["reference"]]
    tol = entry["tolerance"]
    rows = (len(ref) - 3) // 4
    band = {
        "about": "Expected validation loss of TrainConfig.preset('book') on "
        "the nine plays, float32, measured by "
        "tests/measure_spread.py: reference +- tolerance.",
        "measured": data["measured"],
        "machine": data["machine"],
        "variants": data["variants"],
        "steps": [int(ref[4 * i]) for i in range(rows)],
        "val_loss": [ref[4 * i + 2] for i in range(rows)],
        "val_loss_tolerance": [tol[4 * i + 2] for i in range(rows)],
        "runs": {
            n: [TO.value(v[4 * i + 2]) for i in range(rows)]
            for n, v in entry["variants"].items()
        },
        "final_val_loss": ref[4 * rows],
        "final_val_loss_tolerance": tol[4 * rows],
        "final_val_bpb": ref[4 * rows + 2],
        "final_val_bpb_tolerance": tol[4 * rows + 2],
    }
    BAND.write_text(json.dumps(band, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["run", "collect"])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--notebooks",
        nargs="*",
        help="run only these (names without .ipynb); a variant's "
        "trained model is reused from its data directory",
    )
    args = ap.parse_args(argv)
    if args.command == "collect":
        collect(args.work)
        return 0
    names = args.only or list(VARIANTS)
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        for name in pool.map(
            lambda n: run_variant(n, args.work, args.notebooks), names
        ):
            print(f"{name}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
