"""pytest plugin: nbval compares ``trained`` and ``sampled`` cells by the
rules of ``trained_outputs`` instead of exactly (loaded with ``-p`` in
pyproject.toml). The cells still run in nbval's kernel, in order, once."""

from __future__ import annotations

from pathlib import Path

import trained_outputs as TO


def _checker(item, kind: str, data: dict):
    cell = item.cell
    options = cell.metadata.get("llmbook", {})
    notebook = Path(str(item.fspath)).stem
    cell_id = cell.get("id")

    def compare_outputs(test, ref, skip_compare=None):
        if kind == "trained":
            problems = TO.compare_trained(
                ref,
                test,
                TO.tolerance_for(data, notebook, cell_id),
                options.get("mask"),
            )
        else:
            problems = TO.compare_sampled(ref, test, options.get("keep"))
        item.comparison_traceback = [
            f"{kind} cell {cell_id} of {notebook}:",
            *problems,
        ]
        return not problems

    return compare_outputs


def pytest_collection_modifyitems(session, config, items):
    data = None
    for item in items:
        if type(item).__name__ != "IPyNbCell":
            continue
        tags = item.cell.metadata.get("tags", [])
        for kind in ("trained", "sampled"):
            if kind in tags:
                data = data if data is not None else TO.load_tolerances()
                item.compare_outputs = _checker(item, kind, data)
