"""The book's concept diagrams: what book/diagrams draws and where the
chapters show it (for tests/test_figures.py and the browser test)."""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"

# ```{figure} figures/kv-cache.*   then :option: lines, a blank line, and
# the caption, up to the closing fence.
FIGURE = re.compile(
    r"^```\{figure\}[ \t]+(?P<path>\S+)[ \t]*\n"
    r"(?P<options>(?::[\w-]+:[^\n]*\n)*)"
    r"(?P<caption>.*?)^```[ \t]*$",
    re.M | re.S,
)
NUMREF = re.compile(r"\{numref\}`(?:[^`<]*<)?(fig-[\w-]+)>?`")


def load_diagrams():
    """book/diagrams, loaded the way the build loads it."""
    sys.path.insert(0, str(BOOK / "_ext"))
    try:
        import diagrams_build
    finally:
        sys.path.pop(0)
    return diagrams_build, diagrams_build.load()


def markdown(path: Path) -> str:
    """The markdown a page shows: a notebook's markdown cells, or a page."""
    if path.suffix != ".ipynb":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    return "\n\n".join(
        "".join(c["source"]) for c in cells if c["cell_type"] == "markdown"
    )


def figures(path: Path) -> list[dict]:
    """Every figure directive of a page: path, options, caption."""
    found = []
    for m in FIGURE.finditer(markdown(path)):
        options = dict(
            re.match(r":([\w-]+):\s*(.*)", line).groups()
            for line in m["options"].splitlines()
        )
        found.append(
            {
                "path": m["path"],
                "name": options.get("name", ""),
                "alt": options.get("alt", ""),
                "caption": m["caption"].strip(),
            }
        )
    return found


def references(path: Path) -> set[str]:
    return set(NUMREF.findall(markdown(path)))
