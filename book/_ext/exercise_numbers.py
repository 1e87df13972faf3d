"""Exercise numbers as the checks call them: "2.3" in a chapter, "A.1" in
appendix A, on the website and in the PDF alike; figures of the appendices
numbered the same way ("Figure A.1"; the PDF's are set in _config.yml's
preamble).

sphinx-exercise numbers exercises with Sphinx's figure numbers. Two things
make those differ from the ids that ``llmbook.exercises.check`` uses:

- the appendices are not numbered, so their exercises would be plain 1, 2,
  ...; here they get the appendix's letter (the first letter of the file
  name, ``A_backprop``), as in ``check("A.1", ...)``;
- for the PDF, sphinx-jupyterbook-latex sets ``numfig_secnum_depth = 2``
  (for chapter-numbered equations), which makes exercise 1 of chapter 2's
  twelfth section "2.12.1"; every exercise sits in its chapter's one
  Exercises section, so chapter and position are enough: "2.1".
"""

import re

from sphinx.builders.latex import LaTeXBuilder

APPENDIX = re.compile(r"(?:^|/)([A-Z])_[^/]*$")


def _renumber(app, env):
    latex = isinstance(app.builder, LaTeXBuilder)
    for docname, numbers in env.toc_fignumbers.items():
        appendix = APPENDIX.search(docname)
        for kind in ("exercise", "figure"):
            if numbers.get(kind):
                _renumber_kind(numbers[kind], appendix, latex and kind)
    return []


def _renumber_kind(numbered, appendix, latex_kind):
    # unnumbered documents share one counter, so appendix C's first
    # exercise (or figure) would follow appendix A's last: count each from 1
    single = sorted(
        (number, label)
        for label, number in numbered.items()
        if len(number) == 1
    )
    position = {label: k for k, (_, label) in enumerate(single, 1)}
    for label, number in numbered.items():
        if appendix and len(number) == 1:
            numbered[label] = (appendix.group(1), position[label])
        elif latex_kind == "exercise" and len(number) == 3:
            numbered[label] = (number[0], number[2])


def setup(app):
    # after Sphinx's toctree collector has assigned the numbers (priority 500)
    app.connect("env-get-updated", _renumber, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
