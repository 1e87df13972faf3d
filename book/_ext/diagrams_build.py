"""Draw the concept diagrams (book/diagrams) before Sphinx reads the book.

Sphinx picks each figure's file when it reads a chapter (`figures/x.*`:
SVG for the website, PDF for LaTeX), so the files must exist before then:
they are drawn at `builder-inited` into book/figures/, which git ignores.
A stamp of the hash of the drawing code and of the package (labels read
names and numbers from it) skips the drawing when neither changed.

Also a command line, to look at diagrams while drawing them:

    .venv/bin/python book/_ext/diagrams_build.py [--png DIR] [NAME ...]
"""

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

BOOK = Path(__file__).resolve().parent.parent
SOURCE = BOOK / "diagrams"
OUT = BOOK / "figures"


def load():
    """The book/diagrams package (its DIAGRAMS registry, its style)."""
    name = "book_diagrams"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, SOURCE / "__init__.py", submodule_search_locations=[str(SOURCE)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def source_hash() -> str:
    """The drawing code and the package it reads names and numbers from:
    a change to either draws the diagrams again."""
    h = hashlib.sha256()
    package = BOOK.parent / "llmbook"
    for path in sorted(SOURCE.glob("*.py")) + sorted(package.rglob("*.py")):
        name = path.relative_to(BOOK.parent).as_posix()
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def build(out: Path = OUT, names=None) -> list[str]:
    """Draw the diagrams `names` (all by default) into `out` as .svg and
    .pdf; return the stems drawn. Each file appears whole or not at all."""
    diagrams = load()
    names = list(diagrams.DIAGRAMS) if names is None else names
    unknown = sorted(set(names) - set(diagrams.DIAGRAMS))
    if unknown:
        raise SystemExit(
            f"no diagram called {unknown}; known: {sorted(diagrams.DIAGRAMS)}"
        )
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        for stem in names:
            diagrams.style.save(diagrams.DIAGRAMS[stem](), f"{tmp}/{stem}")
            for ext in ("svg", "pdf"):
                os.replace(f"{tmp}/{stem}.{ext}", out / f"{stem}.{ext}")
    return names


def build_if_changed(out: Path = OUT) -> bool:
    stamp = out / ".source-sha256"
    digest = source_hash()
    if stamp.exists() and stamp.read_text() == digest:
        return False
    if out.exists():
        shutil.rmtree(out)  # no drawing of a diagram that no longer exists
    build(out)
    stamp.write_text(digest)
    return True


def _on_builder_inited(app):
    if build_if_changed():
        print(f"diagrams: drew {len(load().DIAGRAMS)} into {OUT}")


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="diagrams to draw (all)")
    parser.add_argument("--png", type=Path, help="also write PNGs here")
    args = parser.parse_args()
    drawn = build(names=args.names or None)
    if args.png:
        import subprocess

        args.png.mkdir(parents=True, exist_ok=True)
        for stem in drawn:
            subprocess.run(
                [
                    "pdftoppm",
                    "-png",
                    "-r",
                    "110",
                    "-singlefile",
                    OUT / f"{stem}.pdf",
                    args.png / stem,
                ],
                check=True,
            )
    print("\n".join(str(OUT / f"{s}.svg") for s in drawn))
