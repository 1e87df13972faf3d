"""Checks for the book's coding exercises: ``check("2.2", my_merge)``.

Each coding exercise asks for one function. ``check`` calls it on the same
inputs as the package's own implementation (random ones from fixed seeds,
then edge cases and, where the package refuses an input, that input too:
the reader's function must then raise ValueError or TypeError) and prints
one line when every case agrees. Otherwise it prints the first case that
failed: the input, what was expected, what came back and where the two
first differ (an index, a shape, a dtype). It never shows the solution.

A function that raises ``NotImplementedError`` on the first case (the stub
in the chapter) is "not attempted yet": ``check`` says so and does not fail,
so that the chapters run top to bottom before anyone has written a line.

``run_check`` returns a ``Result`` instead of printing, for the tests.
Nothing here needs trained weights, data files or a network.

The package is one module per chapter, registered by a decorator::

    harness.py      cases, the comparison of two answers, ``run_check`` and
                    ``check``, the registry and its ``exercise`` decorator
    ch1.py ... ch9.py, ch13.py, ch14.py, appendix_a.py, appendix_d.py
                    each chapter's references (the package's answers) and
                    the functions that build its cases

A new chapter's exercises go in a new module (``ch13.py``): it imports the
harness and the llmbook modules it checks against (never this package, which
imports it), decorates each cases function with ``@exercise("13.1",
label=..., name=..., params=..., reference=...)``, and is imported below, at
its place in the book.
"""

from llmbook.exercises.harness import (
    EXERCISES,
    Result,
    check,
    exercise_ids,
    run_check,
)

# isort: off
# Importing a chapter's module registers its exercises, so the order of
# these imports is the order of EXERCISES: the book's, in which appendix A
# (backpropagation by hand) is read after chapter 6.
from llmbook.exercises import ch1, ch2, ch3, ch4, ch5, ch6  # noqa: F401
from llmbook.exercises import appendix_a  # noqa: F401
from llmbook.exercises import ch7, ch8, ch9  # noqa: F401
from llmbook.exercises import appendix_d  # noqa: F401
from llmbook.exercises import ch13, ch14  # noqa: F401

# isort: on
from llmbook.exercises.ch2 import exercise_tokenizer
from llmbook.exercises.ch7 import buggy_train_step

__all__ = [
    "check",
    "run_check",
    "Result",
    "EXERCISES",
    "exercise_ids",
    "exercise_tokenizer",
    "buggy_train_step",
]
