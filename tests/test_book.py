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


# What a reader of the PDF or the website must not see: the build's
# bookkeeping (glue calls, the per-profile size tables), stderr, paths of the
# machine that ran a notebook, notes meant for the authors.
MACHINE_PATH = re.compile(
    r"/root/|/home/|/Users/|/tmp/|\.cache/llmbook|[A-Z]:\\"
)
INTERNAL_NOTE = re.compile(r"\b(FACTS|TODO|FIXME|XXX)\b")


def _profile_tables(source: str) -> bool:
    """Whether the code builds a dict keyed by the profile names."""
    return any(
        isinstance(node, ast.Dict)
        and {"smoke", "book"}
        <= {k.value for k in node.keys if isinstance(k, ast.Constant)}
        for node in ast.walk(ast.parse(source))
    )


def _shown_text(output: dict) -> str:
    if output["output_type"] == "stream":
        return "".join(output["text"])
    data = output.get("data", {})
    return "".join(
        "".join(v) if isinstance(v, list) else v
        for k, v in data.items()
        if k.startswith("text/")
    )


def rendered_problems(nb: dict) -> list[str]:
    problems = []
    for i, cell in enumerate(nb["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        if "remove-cell" in tags:
            continue
        source = "".join(cell["source"])
        where = f"cell {i} ({cell.get('id')})"
        if INTERNAL_NOTE.search(source):
            problems.append(f"{where}: an internal note in what is shown")
        if cell["cell_type"] != "code":
            continue
        if "remove-input" not in tags:
            if "glue(" in source or "myst_nb" in source:
                problems.append(f"{where}: shows glue bookkeeping")
            if _profile_tables(source):
                problems.append(f"{where}: shows a per-profile table")
        if "remove-output" in tags:
            continue
        for out in cell.get("outputs", []):
            if out.get("name") == "stderr":
                problems.append(f"{where}: stores stderr")
            text = _shown_text(out)
            if MACHINE_PATH.search(text):
                problems.append(f"{where}: shows a machine path")
            if INTERNAL_NOTE.search(text):
                problems.append(f"{where}: an internal note in an output")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_what_the_reader_sees_is_the_book(path):
    problems = rendered_problems(json.loads(path.read_text()))
    assert not problems, "\n".join(problems)


def test_the_rendered_cell_check_finds_what_it_looks_for():
    def code(source, outputs=(), tags=()):
        return {
            "cell_type": "code",
            "metadata": {"tags": list(tags)},
            "source": source,
            "outputs": list(outputs),
        }

    stderr = {"output_type": "stream", "name": "stderr", "text": "warn\n"}
    path = {
        "output_type": "stream",
        "name": "stdout",
        "text": "saved /home/ann/.cache/llmbook/x\n",
    }
    table = 'cfg = {"smoke": 1, "book": 2, "gpu": 3}[profile]'
    bad = {
        "cells": [
            code('glue("x", 1, display=False)'),
            code(table),
            code("print(1)", [stderr]),
            code("print(1)", [path]),
            code("x = 1  # TODO: measure again"),
        ]
    }
    assert len(rendered_problems(bad)) == 5
    hidden = {
        "cells": [
            code('glue("x", 1, display=False)', tags=["remove-cell"]),
            code(table, tags=["remove-input"]),
            code("print(1)", [stderr], tags=["remove-output"]),
            code("print(1)", [path], tags=["remove-cell"]),
        ]
    }
    assert rendered_problems(hidden) == []


# Symbols that the notation table (book/intro.md) replaced: papers' names
# for the model width and the head size, and T for a temperature. A chapter
# may name a paper's symbol once, in a sentence that says it is the paper's.
RETIRED = re.compile(
    r"d_\\text\{(?:model|head)\}|d_k\b|n_h\b|/\s*T\b|\^\{1/T\}"
)
MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$", re.S)


def test_the_chapters_follow_the_notation_table():
    table = (ROOT / "book" / "intro.md").read_text()
    assert "## Notation" in table
    for symbol in ["$B$", "$T$", "$C$", "$H$", "$D$", "$V$", "$N$", r"$\tau$"]:
        assert f"* - {symbol}\n" in table, f"the table lacks {symbol}"
    problems = []
    for path in NOTEBOOKS:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] != "markdown":
                continue
            text = "".join(cell["source"])
            for math in MATH.findall(text):
                if RETIRED.search(math) and "paper" not in text:
                    problems.append(f"{path.stem} cell {i}: {math.strip()}")
    assert not problems, "\n".join(problems)


GLUED = "application/papermill.record/text/plain"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_glued_values_render_as_numbers_not_reprs(path):
    """A glued NumPy or torch scalar is stored as its repr, and the book
    printed "np.float64(0.881)" where the prose meant 0.881: glue Python
    numbers (float(x), x.item())."""
    bad = []
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get(GLUED, "")
            if re.match(r"(np|numpy)\.\w+\(|tensor\(", text):
                name = out["metadata"]["scrapbook"]["name"]
                bad.append(f"{name} = {text}")
    assert not bad, "glued reprs: " + ", ".join(bad)
