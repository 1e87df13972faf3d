"""The lint setup agrees with itself: CI (.ci/run), the pre-commit hooks
and requirements.txt use one ruff version, and the settings CI relies on
are in pyproject.toml. (The lint itself runs in CI and in pre-commit.)"""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pinned_ruff() -> str:
    text = (ROOT / "requirements.txt").read_text()
    match = re.search(r"^ruff==(\S+)$", text, re.M)
    assert match, "requirements.txt must pin ruff exactly (ruff==X.Y.Z)"
    return match.group(1)


def test_pre_commit_uses_the_pinned_ruff():
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    versions = set(re.findall(r"ruff==([\w.]+)", config))
    assert versions == {pinned_ruff()}, (
        f"pre-commit uses ruff {sorted(versions)}, requirements.txt pins "
        f"{pinned_ruff()}: keep them equal"
    )
    assert "ruff check" in config and "ruff format --check" in config


def test_ci_runs_the_same_checks():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/ruff check llmbook tests benchmarks book" in ci
    assert ".venv/bin/ruff format --check llmbook tests benchmarks" in ci


def test_ruff_settings_match_the_book():
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 79  # the book's code width
    assert "*.ipynb" in ruff["format"]["exclude"]  # notebooks: check only
