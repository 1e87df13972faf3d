"""The book's concept diagrams, as code.

Each diagram is a function that returns a matplotlib figure, registered
with `@diagram` in the module of its chapter. The build
(book/_ext/diagrams_build.py) draws every one into book/figures/ as SVG
(website) and PDF (PDF) before Sphinx reads the chapters, which show them
with a MyST figure directive:

    ```{figure} figures/kv-cache.*
    :name: fig-kv-cache
    :alt: What the figure shows, in words, for a reader who cannot see it.

    The caption.
    ```

A function `kv_cache` draws `figures/kv-cache.*`, shown as `fig-kv-cache`.
The style (shapes, fills, fonts, sizes) lives in `style`.
"""

import importlib

DIAGRAMS = {}  # file stem -> function drawing it
CHAPTERS = {}  # file stem -> the module (chapter) that draws it

# One module per chapter or appendix, in book order.
MODULES = [
    "ch01",
    "ch02",
    "ch03",
    "ch04",
    "ch05",
    "ch06",
    "ch07",
    "ch08",
    "ch09",
    "ch10",
    "ch11",
    "ch12",
    "ch13",
    "ch14",
    "appendix_a",
    "appendix_c",
    "appendix_d",
]


def diagram(fn):
    """Register `fn` as the diagram `figures/<name with hyphens>.*`."""
    stem = fn.__name__.replace("_", "-")
    if stem in DIAGRAMS:
        raise ValueError(f"two diagrams are called {stem!r}")
    DIAGRAMS[stem] = fn
    CHAPTERS[stem] = fn.__module__.rsplit(".", 1)[-1]
    return fn


for _name in MODULES:
    importlib.import_module(f"{__name__}.{_name}")
