"""Measure how much the chapters' trained-weight outputs vary, and write the
tolerances that the notebook tests use.

Every notebook with cells tagged ``trained`` is run with papermill under
several variants of the machine: other kernel paths (ATEN_CPU_CAPABILITY,
MKL_CBWR, as another CPU would pick), one thread instead of two, and other
seeds. Each variant gets a data directory of its own, so it trains its own
model from scratch. Then, for every number that a ``trained`` cell prints,
the spread is the range of its values over the runs (the stored outputs
included) and the tolerance follows from it
(``trained_outputs.choose_tolerance``).

    python tests/measure_spread.py run --work DIR [--only NAME ...] [--jobs 2]
        [--notebooks 08_generation ...]
    python tests/measure_spread.py collect --work DIR
    python tests/measure_spread.py retolerate

``retolerate`` computes every spread and tolerance again from the runs the
file records, without running anything (after a change of the rule).

``run`` takes about ten minutes per variant on two cores (``--jobs 2`` runs
two one-thread variants at once). ``collect`` writes
``tests/data/trained_tolerances.json`` and the training chapter's expected
band, ``llmbook/train/book_band.json`` (used by ``llmbook.train.check_run``).
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

import nbformat
import trained_outputs as TO
from nbval.plugin import coalesce_streams

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
BAND = ROOT / "llmbook" / "train" / "book_band.json"
# The training chapter's loss table: its cell, and the columns it prints.
TABLE = ("07_training", "ff34fd0e")

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
    "mkl-avx2": dict(
        env={"MKL_CBWR": "AVX2"},
        params={},
        what="MKL's AVX2 code path instead of AVX-512",
    ),
    "seed-1": dict(env={}, params={"seed": 1}, what="training seed 1"),
    "seed-2": dict(env={}, params={"seed": 2}, what="training seed 2"),
}


# Parameters every variant of a notebook runs with, on top of its own:
# chapter 9 times GPT-2 small's shape, which no trained cell depends on
# (the timed sizes are separate from the trained model's settings), so the
# variants time tiny models instead and finish minutes sooner.
NOTEBOOK_PARAMS = {"09_fast_generation": {"timing": "smoke"}}


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


ABOUT = (
    "Tolerances of the numbers printed by notebook cells tagged "
    "'trained', measured by tests/measure_spread.py. For each number: "
    "reference = its value in the reference run; variants = its value "
    "in each other run (the stored outputs included); spread = the "
    "range of its values over all runs (max - min); tolerance = 0 "
    "where no run differed, else 1.5 x spread + one step of the last "
    "printed digit, rounded up to that step."
)


def run_variant(name: str, work: Path, only: list[str] | None = None) -> str:
    spec = VARIANTS[name]
    out = work / name
    (out / "data").mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "LLMBOOK_DATA_DIR": str(out / "data"),
        # torch.compile's cache of its own: two variants compiling the same
        # graph at once into one cache crash each other's kernels
        "TORCHINDUCTOR_CACHE_DIR": str(out / "inductor"),
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
        settings = {**NOTEBOOK_PARAMS.get(nb.stem, {}), **spec["params"]}
        for key, val in settings.items():
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
    """The code cells by id, their streams merged as nbval merges them
    before comparing (papermill stores a cell's prints in pieces, the
    committed notebooks in one)."""
    nb = nbformat.read(path, as_version=4)
    return {
        c.get("id"): {**c, "outputs": coalesce_streams(c["outputs"])}
        for c in nb.cells
        if c.cell_type == "code"
    }


def machine() -> str:
    """This machine in words: its CPU's name, the vector and matrix units
    PyTorch's kernels choose between, its cores, and torch's version."""
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name":
                name = val.strip()
            elif key.strip() == "flags":
                flags = set(val.split())
    units = [
        u
        for u, flag in [("AVX-512", "avx512f"), ("AMX", "amx_bf16")]
        if flag in flags
    ] or ["no AVX-512"]
    return (
        f"{name} ({', '.join(units)}), {os.cpu_count()} cores, torch "
        f"{__import__('torch').__version__}"
    )


def numbers_by_run(runs: dict, nb: str, cid: str, mask: str | None) -> dict:
    """{run name: the numbers cell ``cid`` printed in that run}, after
    checking that every run printed text of the reference's shape."""
    ref = runs["reference"][cid]["outputs"]
    ref_sig = TO.signature(ref)
    ref_skel = [TO.split(t, mask)[0] for _, t in TO._texts(ref)]
    values = {}
    for n, cells in runs.items():
        outs = cells[cid]["outputs"]
        skel = [TO.split(t, mask)[0] for _, t in TO._texts(outs)]
        if TO.signature(outs) != ref_sig or skel != ref_skel:
            sys.exit(
                f"{nb} cell {cid}: run {n!r} prints text of another shape "
                "than the reference; the cell cannot be compared number by "
                "number (mask the varying text, or tag it 'sampled')"
            )
        values[n] = TO.numbers_of(outs, mask)
    return values


def _trained_cells(cells: dict):
    for cid, cell in cells.items():
        if "trained" in cell["metadata"].get("tags", []):
            yield cid, cell["metadata"].get("llmbook", {}).get("mask")


def collect(work: Path) -> dict:
    """The tolerances of every notebook run in ``work``; notebooks not run
    there keep what was measured before (their tolerances computed again)."""
    ran = [n for n in VARIANTS if (work / n).is_dir()]
    if "reference" not in ran:
        sys.exit(f"no reference run in {work}: run 'run --only reference'")
    data = retolerate_all(TO.load_tolerances())
    data.setdefault("variants", {})
    data.setdefault("runs_by_notebook", {})
    for nb in trained_notebooks():
        committed = _cells(nb)
        runs = {
            n: _cells(work / n / nb.name)
            for n in ran
            if (work / n / nb.name).exists()
        }
        if "reference" not in runs:
            print(f"{nb.stem}: no runs in {work}; keeping what was measured")
            continue
        # the stored outputs: the same machine with two threads, which
        # rounds differently from one thread here
        runs[STORED] = committed
        data["notebooks"][nb.stem] = {
            cid: TO.entry_of(numbers_by_run(runs, nb.stem, cid, mask))
            for cid, mask in _trained_cells(committed)
        }
        data["runs_by_notebook"][nb.stem] = {
            "measured": datetime.date.today().isoformat(),
            "machine": machine(),
            "runs": list(runs),
        }
        for n in ran:
            data["variants"][n] = VARIANTS[n]["what"] + " (1 thread)"
        data["variants"][STORED] = (
            "the stored outputs: the measuring machine's own kernels with "
            "2 threads"
        )
    save(data)
    return data


def add(name: str, what: str, notebooks: list[Path]) -> dict:
    """Notebooks executed elsewhere (another machine: ``papermill NB OUT -p
    profile book``) added as run ``name`` of their trained cells."""
    data = TO.load_tolerances()
    for path in notebooks:
        nb = path.stem
        entries = data["notebooks"].get(nb)
        if not entries:
            sys.exit(f"{nb}: nothing measured yet; run and collect first")
        cells = _cells(path)
        committed = _cells(BOOK / path.name)
        for cid, mask in _trained_cells(committed):
            entry = entries[cid]
            have = {"reference": committed, name: cells}
            # the shape check against the stored cell, the values recorded
            values = numbers_by_run(have, nb, cid, mask)
            entries[cid] = TO.entry_of(
                {
                    "reference": entry["reference"],
                    **entry["variants"],
                    name: values[name],
                }
            )
        data["runs_by_notebook"][nb]["runs"].append(name)
        data["runs_by_notebook"][nb].setdefault("added", {})[name] = (
            f"{datetime.date.today().isoformat()}, {machine()}"
        )
    data["variants"][name] = what
    save(data, band_when=json.loads(BAND.read_text()))
    return data


def save(data: dict, band_when: dict | None = None) -> None:
    """Write the tolerance file and the training chapter's band from it
    (the band dated ``band_when``'s date and machine, if given)."""
    TO.TOLERANCES.parent.mkdir(parents=True, exist_ok=True)
    TO.TOLERANCES.write_text(json.dumps(data, indent=1) + "\n")
    write_band(data, when=band_when)


def retolerate_all(data: dict) -> dict:
    """``data`` with the current rule applied to every notebook's recorded
    runs."""
    data["about"] = ABOUT
    data["notebooks"] = {
        nb: retolerate(entries)
        for nb, entries in data.get("notebooks", {}).items()
    }
    return data


def retolerate(entries: dict) -> dict:
    """Entries measured before, their spreads and tolerances computed again
    from their recorded runs (after a change of the rule)."""
    return {
        cid: TO.entry_of({"reference": e["reference"], **e["variants"]})
        for cid, e in entries.items()
    }


def write_band(data: dict, when: dict | None = None) -> None:
    """The training chapter's expected validation curve: the reference run's
    values and their tolerances, from the loss table (12 rows of step, train
    loss, val loss, val bits/byte; then whole-split loss, perplexity, bpb)."""
    entry = data["notebooks"][TABLE[0]][TABLE[1]]
    run = data["runs_by_notebook"][TABLE[0]]
    ref = [TO.value(v) for v in entry["reference"]]
    tol = entry["tolerance"]
    rows = (len(ref) - 3) // 4
    band = {
        "about": "Expected validation loss of TrainConfig.preset('book') on "
        "the nine plays, float32, measured by "
        "tests/measure_spread.py: reference +- tolerance.",
        "measured": (when or run)["measured"],
        "machine": (when or run)["machine"],
        # only the runs behind this band: a run added to another chapter
        # does not change the package's file
        "variants": {n: data["variants"][n] for n in run["runs"]},
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
    ap.add_argument("command", choices=["run", "collect", "retolerate", "add"])
    ap.add_argument("--name", help="add: the run's name")
    ap.add_argument("--what", help="add: what the run was, in words")
    ap.add_argument("executed", nargs="*", type=Path, help="add: notebooks")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--notebooks",
        nargs="*",
        help="run only these (names without .ipynb); a variant's "
        "trained model is reused from its data directory",
    )
    args = ap.parse_args(argv)
    if args.command == "retolerate":
        # the band keeps its own date and machine: the training chapter's
        save(
            retolerate_all(TO.load_tolerances()),
            band_when=json.loads(BAND.read_text()),
        )
        return 0
    if args.command == "add":
        if not (args.name and args.what and args.executed):
            ap.error("add needs --name, --what and executed notebooks")
        add(args.name, args.what, args.executed)
        return 0
    if args.work is None:
        ap.error(f"{args.command} needs --work DIR")
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
