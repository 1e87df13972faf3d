"""The time table at the end of .ci/run: each notebook's seconds under nbval
(against the budget its metadata states, which the README's table lists)
and in its second run, then each step of CI.

    python .ci/times.py DIR    # DIR: steps.tsv and pytest.json of .ci/run
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def budgets() -> dict[str, int]:
    out = {}
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        meta = json.loads(nb.read_text())["metadata"].get("llmbook", {})
        out[nb.stem] = meta.get("budget_seconds")
    return out


def main(folder: Path) -> None:
    steps = [
        line.split("\t")
        for line in (folder / "steps.tsv").read_text().splitlines()
    ]
    starts = [(name, int(t)) for name, t in steps]
    pytest = json.loads((folder / "pytest.json").read_text())
    limits = budgets()

    print("\nWhere the time went (seconds, this machine)")
    print(f"{'notebook':24} {'nbval':>7} {'budget':>7} {'second run':>11}")
    total = {"nbval": 0.0, "second": 0.0}
    for stem, t in pytest["notebooks"].items():
        limit = limits.get(stem)
        over = "  over budget" if limit and t["nbval"] > limit else ""
        shown = str(limit) if limit else "-"
        print(
            f"{stem:24} {t['nbval']:7.0f} {shown:>7} {t['second']:11.0f}"
            + over
        )
        for k in total:
            total[k] += t[k]
    print(
        f"{'all notebooks':24} {total['nbval']:7.0f} {'':7} "
        f"{total['second']:11.0f}"
    )
    print(f"{'unit tests':24} {pytest['unit']:7.0f}")
    print(f"{'pytest, wall clock':24} {pytest['wall']:7.0f}")
    print()
    print(f"{'step':10} {'seconds':>8}")
    for (name, t0), (_, t1) in zip(starts, starts[1:]):
        print(f"{name:10} {t1 - t0:8d}")
    print(f"{'total':10} {starts[-1][1] - starts[0][1]:8d}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
