"""Every chapter runs top to bottom outside the repository, from an installed
wheel, with the seconds-long "smoke" profile; and with the "gpu" profile's
settings (on the CPU, a couple of training steps), so that a typo in a
chapter's gpu branch cannot hide until a reader with a GPU finds it.

The stored outputs of the "book" profile are checked separately by nbval
(`pytest --nbval`), which re-executes each notebook and compares.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import papermill
import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


def test_every_notebook_is_found():
    assert NOTEBOOKS, f"no notebooks in {BOOK}"


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A virtual environment outside the checkout with llmbook installed
    from a freshly built wheel. Its other packages are this environment's
    (a .pth file points at them; .pth files there are not run, so the
    editable install of llmbook is invisible), which saves installing a
    second copy of torch."""
    work = tmp_path_factory.mktemp("wheel")
    assert ROOT not in work.parents
    source = work / "source"  # a copy: building writes build/ next to it
    shutil.copytree(
        ROOT / "llmbook",
        source / "llmbook",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(work / "dist"),
            str(source),
        ],
        check=True,
    )
    (wheel,) = (work / "dist").glob("llmbook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "llmbook/book_band.json" in names  # package data ships
    assert not any(
        n.startswith(("book/", "tests/", "benchmarks/")) for n in names
    )
    venv = work / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [
                str(python),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    (site / "_llmbook_test_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    where = subprocess.run(
        [str(python), "-c", "import llmbook; print(llmbook.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
    ).stdout.strip()
    assert Path(where).is_relative_to(site), where
    notebooks = work / "notebooks"
    notebooks.mkdir()
    for nb in NOTEBOOKS:
        shutil.copy(nb, notebooks / nb.name)
    return python, notebooks


def _smoke_run(python, notebooks, name):
    """papermill in the wheel's environment (its kernel is that python),
    one thread: two of these run at once on a two-core machine."""
    return subprocess.run(
        [
            str(python),
            "-m",
            "papermill",
            name,
            f"out-{name}",
            "-p",
            "profile",
            "smoke",
            "--cwd",
            str(notebooks),
            "--no-progress-bar",
        ],
        cwd=notebooks,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def wheel_runs(wheel_env, request):
    """The smoke runs of every selected notebook, started together two at
    a time (they are seconds of mostly single-threaded start-up each); a
    test waits for its own. {notebook name: future of CompletedProcess}."""
    python, notebooks = wheel_env
    selected = [
        item.callspec.params["notebook"].name
        for item in request.session.items
        if getattr(item, "originalname", None)  # nbval's cells have none
        == "test_notebook_runs_from_an_installed_wheel"
    ]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    runs = {n: pool.submit(_smoke_run, python, notebooks, n) for n in selected}
    yield runs
    pool.shutdown(cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_from_an_installed_wheel(
    notebook, wheel_env, wheel_runs
):
    _, notebooks = wheel_env
    out = notebooks / f"out-{notebook.name}"
    run = wheel_runs[notebook.name].result()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    cells = json.loads(out.read_text())["cells"]
    assert all(
        o.get("output_type") != "error"
        for c in cells
        for o in c.get("outputs", [])
    )


# The gpu profile's settings on the CPU, at a size a CPU finishes in
# seconds: the chapters that train take max_steps, eval_iters and
# batch_size parameters (two steps of 4 windows and two evaluation batches
# run the same code as 3000 steps of 64 and 20 batches: the gpu model's
# evaluation alone took minutes on the CPU, two steps of 64 windows a
# minute and a half), and those that time models at the gpu
# profile's sizes (up to 8192 tokens of attention, GPT-2 small) take
# timing="smoke", which shrinks only the timed sizes.
GPU_PARAMS = {
    "03_attention": {"timing": "smoke"},
    "05_training": {"max_steps": 2, "eval_iters": 2, "batch_size": 4},
    "06_generation": {
        "max_steps": 2,
        "eval_iters": 2,
        "batch_size": 4,
        "timing": "smoke",
    },
    "07_fast_generation": {
        "max_steps": 2,
        "eval_iters": 2,
        "batch_size": 4,
        "timing": "smoke",
    },
    "08_classification": {"max_steps": 2, "eval_iters": 2, "batch_size": 4},
    "09_instruction_tuning": {
        "max_steps": 2,
        "eval_iters": 2,
        "batch_size": 4,
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_the_gpu_settings(notebook, tmp_path):
    params = {"profile": "gpu", "device": "cpu"}
    params.update(GPU_PARAMS.get(notebook.stem, {}))
    papermill.execute_notebook(
        str(notebook),
        str(tmp_path / notebook.name),
        parameters=params,
        kernel_name="python3",
        cwd=str(BOOK),
        progress_bar=False,
    )
