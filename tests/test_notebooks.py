"""Every chapter's second run in CI (nbval's run of the `book` profile is
the first): top to bottom, outside the repository, from an installed wheel,
with the `gpu` profile's settings at a toy size on the CPU.

One run checks what two runs used to:
- the wheel: the package's files and data ship, and no chapter reads a file
  of the repository (the notebooks run in a folder of their own, with
  llmbook imported from the wheel, never from the checkout);
- the gpu branch: each chapter's `gpu` settings and the code they reach
  (the gpu presets, dropout, the gpu tokenizer and checkpoints), so that a
  typo there cannot hide until a reader with a GPU finds it. The chapters
  that train take max_steps, eval_iters and batch_size (two steps of 4
  windows run the same code as 3000 steps of 64), and those that time
  models at the gpu profile's sizes (attention over 8192 tokens, GPT-2
  small) take timing="smoke", which shrinks only the timed sizes.

The stored outputs of the `book` profile are checked by nbval (`pytest
--nbval`), which re-executes each notebook and compares. The `smoke`
profile's tables are checked for the same keys as the others in
tests/test_book.py.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))

# The gpu profile's settings at a size a CPU finishes in seconds.
TOY = {"max_steps": 2, "eval_iters": 2, "batch_size": 4}
GPU_PARAMS = {
    "05_attention": {"timing": "smoke"},
    "07_training": TOY,
    "08_generation": {**TOY, "timing": "smoke"},
    "09_fast_generation": {**TOY, "timing": "smoke"},
    "10_classification": TOY,
    "11_instruction_tuning": TOY,
    "12_serving": {**TOY, "timing": "smoke"},
    "13_open_models": {"max_steps": 2, "batch_size": 4, "timing": "smoke"},
    "14_preferences": TOY,
}


def params_for(notebook: Path) -> dict:
    return {"profile": "gpu", "device": "cpu"} | GPU_PARAMS.get(
        notebook.stem, {}
    )


def test_every_notebook_is_found():
    assert NOTEBOOKS, f"no notebooks in {BOOK}"


def test_the_toy_settings_name_real_parameters():
    """A parameter the notebook does not have would be injected and
    ignored: the run would then train at the gpu profile's full size."""
    for nb in NOTEBOOKS:
        cells = json.loads(nb.read_text())["cells"]
        (params,) = [
            c
            for c in cells
            if "parameters" in c.get("metadata", {}).get("tags", [])
        ]
        source = "".join(params["source"])
        for name in params_for(nb):
            assert f"\n{name} = " in f"\n{source}", (nb.name, name)


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
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(work / "dist"), str(source)],
        check=True,
    )
    (wheel,) = (work / "dist").glob("llmbook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "llmbook/train/book_band.json" in names  # package data ships
    assert "llmbook/serve/chat.html" in names
    assert not any(
        n.startswith(("book/", "tests/", "benchmarks/")) for n in names
    )
    venv = work / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(
        subprocess.run(
            [str(python), "-c", purelib],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--target", str(site)]
        + [str(wheel)],
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


def _second_run(python, notebooks, notebook: Path):
    """papermill in the wheel's environment (its kernel is that python),
    one thread. Returns (CompletedProcess, seconds)."""
    params = []
    for name, value in params_for(notebook).items():
        params += ["-p", name, str(value)]
    t0 = time.perf_counter()
    run = subprocess.run(
        [str(python), "-m", "papermill", notebook.name]
        + [f"out-{notebook.name}", *params]
        + ["--cwd", str(notebooks), "--no-progress-bar"],
        cwd=notebooks,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    return run, time.perf_counter() - t0


@pytest.fixture(scope="module")
def second_runs(wheel_env, request):
    """The runs of every selected notebook, started together, two at a time
    (one thread each, on a two-core machine); a test waits for its own.
    Nothing else runs meanwhile: the tests wait. {notebook name: future of
    (CompletedProcess, seconds)}."""
    python, notebooks = wheel_env
    selected = [
        item.callspec.params["notebook"]
        for item in request.session.items
        if getattr(item, "originalname", None)  # nbval's cells have none
        == "test_notebook_runs_from_a_wheel_with_the_gpu_settings"
    ]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    runs = {
        nb.name: pool.submit(_second_run, python, notebooks, nb)
        for nb in selected
    }
    yield runs
    pool.shutdown(cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_from_a_wheel_with_the_gpu_settings(
    notebook, wheel_env, second_runs, record_property
):
    _, notebooks = wheel_env
    run, seconds = second_runs[notebook.name].result()
    record_property("second_run_seconds", round(seconds, 1))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    out = json.loads((notebooks / f"out-{notebook.name}").read_text())
    errors = [
        o
        for c in out["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors[0]
    injected = [
        c
        for c in out["cells"]
        if "injected-parameters" in c.get("metadata", {}).get("tags", [])
    ]
    assert injected, "papermill injected no parameters"
    assert 'profile = "gpu"' in "".join(injected[0]["source"])
