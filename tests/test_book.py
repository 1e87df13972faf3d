"""The book's conventions, checked on the stored notebooks and the toc."""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    listed = toc_files()
    for nb in NOTEBOOKS:
        assert f"book/{nb.stem}" in listed, (
            f"{nb.name} is missing from _toc.yml"
        )
    for entry in listed:
        assert any(
            (ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")
        ), f"_toc.yml lists {entry}, which does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first_tags = code[0].get("metadata", {}).get("tags", [])
    assert "parameters" in first_tags, (
        "the first code cell must be tagged 'parameters'"
    )
    params = "".join(code[0]["source"])
    assert "profile" in params and "device" in params
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        "stored outputs must come from one top-to-bottom run"
    )
    for cell in code:
        for out in cell["outputs"]:
            assert out["output_type"] != "error", "a stored output is an error"
            text = "".join(out.get("text", []))
            assert "Traceback" not in text
            # A progress bar stores every update behind a carriage return;
            # the PDF would print each as a line. Keep what a live notebook
            # shows (nbconvert's CoalesceStreamsPreprocessor does this).
            assert "\r" not in text, (
                "a stored stream still holds carriage returns"
            )
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


PROFILES = {"smoke", "book", "gpu"}


def profile_tables(source: str) -> list[tuple[int, dict[str, set]]]:
    """Each dict literal of a cell keyed by the three profiles, with the
    keys of each profile's settings: (line, {profile: keys}); settings that
    are not a dict(...) call or a literal dict are left out."""
    tables = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Dict):
            continue
        names = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        if set(names) != PROFILES or len(names) != len(node.keys):
            continue
        keys = {}
        for name, value in zip(names, node.values):
            if (
                isinstance(value, ast.Call)
                and getattr(value.func, "id", None) == "dict"
            ):
                keys[name] = {k.arg for k in value.keywords}
            elif isinstance(value, ast.Dict):
                keys[name] = {
                    k.value for k in value.keys if isinstance(k, ast.Constant)
                }
        tables.append((node.lineno, keys))
    return tables


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_profile_has_the_same_settings(path):
    """CI runs each chapter as printed (book) and with the gpu settings
    (tests/test_notebooks.py), never the smoke profile: a setting that the
    smoke table lacks, or names differently, is caught here instead."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        for line, keys in profile_tables("".join(cell["source"])):
            if len(keys) == len(PROFILES):
                assert keys["smoke"] == keys["book"] == keys["gpu"], (
                    f"{path.name}, cell {cell.get('id')}, line {line}: the "
                    f"profiles' settings differ: {keys}"
                )


def readme_budgets() -> dict[str, int]:
    """The README's budget table: {"01": 60, ..., "A": 60} in seconds."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| Chapter | Budget |") :].split("\n\n")[0]
    rows = re.findall(r"^\| (\w+) [^|]+\| (\d+) min \|$", table, re.M)
    return {
        (f"{int(n):02d}" if n.isdigit() else n): int(m) * 60 for n, m in rows
    }


def test_every_chapter_states_its_budget_and_the_readme_lists_it():
    listed = readme_budgets()
    for nb in NOTEBOOKS:
        meta = json.loads(nb.read_text())["metadata"].get("llmbook", {})
        budget = meta.get("budget_seconds")
        assert isinstance(budget, int) and budget > 0, (
            f"{nb.name}: state the book profile's time budget on 2 cores "
            'in its metadata, "llmbook": {"budget_seconds": ...}'
        )
        number = nb.stem.split("_")[0]
        assert listed.get(number) == budget, (
            f"{nb.name}: budget {budget} s, README's table: "
            f"{listed.get(number)}"
        )
    assert len(listed) == len(NOTEBOOKS)
