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
    """Every module of the package as a dotted name under llmbook: "model",
    "train.trainer", and "train" for llmbook/train/__init__.py."""
    names = []
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            names.append(".".join(parts))
    return sorted(names)


def source(name: str) -> Path:
    path = PACKAGE.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(name: str) -> dict[str, int]:
    """The llmbook modules that module ``name`` imports: {dotted module:
    the first line that imports it}. ``from llmbook.train import x`` is an
    import of the package ``train`` (its __init__), unless ``x`` is a
    module of it."""
    tree = ast.parse(source(name).read_text(), str(source(name)))
    known = set(modules())
    package = name if source(name).name == "__init__.py" else ""
    package = package or ".".join(name.split(".")[:-1])
    found: dict[str, int] = {}

    def add(dotted: str, line: int) -> None:
        parts = dotted.split(".")
        if parts[0] == "llmbook" and len(parts) > 1:
            found.setdefault(".".join(parts[1:]), line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from .x import y
                up = package.split(".") if package else []
                up = up[: len(up) - (node.level - 1)]
                base = ".".join(
                    ["llmbook", *up] + ([node.module] if node.module else [])
                )
            else:
                base = node.module or ""
            for alias in node.names:  # from llmbook.train import loop
                sub = f"{base}.{alias.name}"
                if sub.removeprefix("llmbook.") in known:
                    add(sub, node.lineno)
                    break
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
        f"llmbook module {unlisted[0]} is not in MODULE_ORDER: add it to "
        "the list in llmbook/__init__.py, after every module it imports"
    )
    stale = sorted(set(order) - set(modules()))
    assert not stale, f"MODULE_ORDER lists {stale}, which do not exist"
    for name in order:  # the tree in the docstring shows each top module
        top = name.split(".")[0]
        shown = f"{top}/" if "." in name or (PACKAGE / top).is_dir() else top
        assert f"{shown}" in llmbook.__doc__, name


def test_a_package_is_one_block_of_the_order():
    groups = [m.split(".")[0] for m in llmbook.MODULE_ORDER]
    seen: list[str] = []
    for g in groups:
        if seen and seen[-1] == g:
            continue
        assert g not in seen, (
            f"the modules of {g}/ are not contiguous in MODULE_ORDER"
        )
        seen.append(g)


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
        f"{source(m).relative_to(PACKAGE.parent)}:{line} imports {dep}, "
        "which comes after it in MODULE_ORDER"
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
        "from llmbook.p import q\nfrom llmbook.p.q import z\n"
    )
    for m in "bcdefg":
        (tmp_path / f"{m}.py").write_text("")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "__init__.py").write_text("from .q import z\n")
    (tmp_path / "p" / "q.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    want = ["b", "c", "d", "e", "f", "g", "p.q"]
    assert sorted(imported_modules("a")) == want
    assert sorted(imported_modules("p")) == ["p.q"]


PARTS = ("generate", "train", "finetune", "serve")


def test_every_public_name_has_one_home():
    """A part's package lists its public names (__all__); each is defined
    in exactly one of its modules, and no two parts share a name."""
    import importlib

    seen: dict[str, str] = {}
    for part in PARTS:
        package = importlib.import_module(f"llmbook.{part}")
        for name in package.__all__:
            obj = getattr(package, name)
            home = getattr(obj, "__module__", None)
            if home is not None and home.startswith("llmbook."):
                assert home.startswith(f"llmbook.{part}."), (
                    f"llmbook.{part} exports {name} from {home}: import "
                    "it from its own part instead"
                )
            assert name not in seen, f"{name} is in {seen[name]} and {part}"
            seen[name] = part


def test_the_chapters_import_public_names_from_the_parts():
    """Notebooks import a part's names from the part (``from llmbook.train
    import TrainConfig``), never from one of its modules."""
    import json
    import re

    book = PACKAGE.parent / "book"
    pattern = re.compile(
        r"^\s*from llmbook\.(" + "|".join(PARTS) + r")\.(\w+) import",
        re.MULTILINE,
    )
    found = []
    for path in sorted(book.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                found += [
                    f"{path.name}: {m.group(0).strip()}"
                    for m in pattern.finditer(source)
                ]
    assert not found, "\n".join(found)
