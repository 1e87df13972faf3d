"""Code cells fit the page: no line longer than the book's column.

A longer line gets a horizontal scrollbar on the website and is wrapped in
the middle of a token in the PDF. The limit is the book's convention (PEP 8's
79 characters), which the website's code column and the PDF's monospace line
both hold at their default sizes.
"""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
MAX_WIDTH = 79


def long_lines(path):
    """(cell index, line number, width, line) for every line over MAX_WIDTH."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    found = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        for number, line in enumerate(source.splitlines(), start=1):
            # Tabs would widen on screen; count characters as displayed.
            width = len(line.expandtabs(4))
            if width > MAX_WIDTH:
                found.append((index, number, width, line))
    return found


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under book/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_lines_fit_the_column(path):
    found = long_lines(path)
    report = "\n".join(
        f"  {path.name} cell {index} line {number} ({width} chars): {line}"
        for index, number, width, line in found
    )
    if found:
        pytest.fail(
            f"{len(found)} code line(s) longer than {MAX_WIDTH} characters "
            "(cell = index in the notebook's cell list, from 0; line from 1):"
            f"\n{report}",
            pytrace=False,
        )
