"""Every chapter runs top to bottom with the seconds-long "smoke" profile.

The stored outputs of the "book" profile are checked separately by nbval
(`pytest --nbval`), which re-executes each notebook and compares.
"""

from pathlib import Path

import papermill
import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


def test_every_notebook_is_found():
    assert NOTEBOOKS, f"no notebooks in {BOOK}"


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_smoke_profile(notebook, tmp_path):
    papermill.execute_notebook(
        str(notebook),
        str(tmp_path / notebook.name),
        parameters={"profile": "smoke"},
        kernel_name="python3",
        cwd=str(BOOK),
        progress_bar=False,
    )
