"""pytest plugin (``-p ci_times`` in pyproject.toml): where the suite's time
went, for the table that .ci/run prints at its end.

With ``LLMBOOK_CI_TIMES=path.json`` set, pytest writes, when the session
ends::

    {"wall": seconds of the whole session,
     "unit": seconds of every test that is not a notebook's run,
     "notebooks": {stem: {"nbval": s, "second": s}}}

``nbval`` is the sum of a notebook's cells under nbval (setup, which starts
its kernel, call and teardown); ``second`` is what its second run took
(tests/test_notebooks.py records it; they run two at a time, so their sum
is more than the time the suite spent on them).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path

from llmbook.data import atomic_write

ENV = "LLMBOOK_CI_TIMES"
SECOND_RUN = "test_notebook_runs_from_a_wheel_with_the_gpu_settings"


class Times:
    def __init__(self, path: Path):
        self.path = path
        self.start = time.perf_counter()
        self.unit = 0.0
        self.notebooks = defaultdict(lambda: {"nbval": 0.0, "second": 0.0})

    def pytest_runtest_logreport(self, report):
        path, _, name = report.nodeid.partition("::")
        if path.endswith(".ipynb"):
            self.notebooks[Path(path).stem]["nbval"] += report.duration
        elif name.startswith(SECOND_RUN + "["):
            stem = name[len(SECOND_RUN) + 1 : -1]
            if report.when == "call":  # the teardown's report repeats it
                seconds = dict(report.user_properties).get(
                    "second_run_seconds", 0.0
                )
                self.notebooks[stem]["second"] += seconds
        else:
            self.unit += report.duration

    def pytest_sessionfinish(self, session):
        data = {
            "wall": round(time.perf_counter() - self.start, 1),
            "unit": round(self.unit, 1),
            "notebooks": {
                stem: {k: round(v, 1) for k, v in t.items()}
                for stem, t in sorted(self.notebooks.items())
            },
        }
        with atomic_write(self.path, "w") as f:
            f.write(json.dumps(data, indent=1) + "\n")


def pytest_configure(config):
    path = os.environ.get(ENV)
    if path:
        config.pluginmanager.register(Times(Path(path)), "llmbook-ci-times")
