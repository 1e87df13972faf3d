"""The package is a one-way line: each module imports only modules listed
before it in ``llmbook.MODULE_ORDER`` (documented in llmbook/__init__.py),
so there is no import cycle and the code reads in the book's order.

Every import counts, also those inside functions (an import put off until a
call still makes the two modules depend on each other)."""

import ast
from pathlib import Path

import llmbook

PACKAGE = Path(llmbook.__file__).parent


def modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def imported_modules(name: str) -> dict[str, int]:
    """The llmbook modules that ``llmbook/<name>.py`` imports: {module: the
    first line that imports it}."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(), f"{name}.py")
    found: dict[str, int] = {}

    def add(dotted: str, line: int) -> None:
        parts = dotted.split(".")
        if parts[0] == "llmbook" and len(parts) > 1:
            found.setdefault(parts[1], line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from .x import y
                base = "llmbook" + ("." + node.module if node.module else "")
            else:
                base = node.module or ""
            if base == "llmbook":  # from llmbook import data, tokenizer
                for alias in node.names:
                    add(f"llmbook.{alias.name}", node.lineno)
            else:
                add(base, node.lineno)
    found.pop(name, None)
    return found


def graph() -> dict[str, dict[str, int]]:
    return {m: imported_modules(m) for m in modules()}


def test_every_module_has_a_place_in_the_order():
    order = llmbook.MODULE_ORDER
    assert len(set(order)) == len(order), "MODULE_ORDER lists a module twice"
    unlisted = sorted(set(modules()) - set(order))
    assert not unlisted, (
        f"llmbook/{unlisted[0]}.py is not in MODULE_ORDER: add it to the list "
        "and the docstring in llmbook/__init__.py, after every module it "
        "imports"
    )
    for name in order:  # the docstring names each module, in the same order
        assert f"``{name}``" in llmbook.__doc__, name


def test_no_import_cycles():
    edges = graph()
    state: dict[str, str] = {}  # "open" while on the path, then "done"

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for dep in edges.get(m, {}):
            if state.get(dep) == "open":
                cycle = (
                    path[path.index(dep) :] + [m, dep]
                    if dep in path
                    else [m, dep]
                )
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [m])
        state[m] = "done"

    for m in edges:
        if m not in state:
            visit(m, [])


def test_imports_only_go_to_earlier_modules():
    rank = {m: i for i, m in enumerate(llmbook.MODULE_ORDER)}
    backward = [
        f"llmbook/{m}.py:{line} imports {dep}, which comes after it in "
        "MODULE_ORDER"
        for m, deps in graph().items()
        if m in rank
        for dep, line in sorted(deps.items(), key=lambda kv: kv[1])
        if dep not in rank or rank[dep] > rank[m]
    ]
    assert not backward, "\n".join(backward)


def test_the_checker_sees_every_kind_of_import(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text(
        "import llmbook.b\nfrom llmbook import c\nfrom llmbook.d import x\n"
        "from . import e\nfrom .f import y\nimport os\n"
        "def late():\n    import llmbook.g as G\n"
    )
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert sorted(imported_modules("a")) == ["b", "c", "d", "e", "f", "g"]
