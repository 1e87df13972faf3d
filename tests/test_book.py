"""The book's conventions, checked on the stored notebooks and the toc."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    listed = toc_files()
    for nb in NOTEBOOKS:
        assert f"book/{nb.stem}" in listed, (
            f"{nb.name} is missing from _toc.yml"
        )
    for entry in listed:
        assert any(
            (ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")
        ), f"_toc.yml lists {entry}, which does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first_tags = code[0].get("metadata", {}).get("tags", [])
    assert "parameters" in first_tags, (
        "the first code cell must be tagged 'parameters'"
    )
    params = "".join(code[0]["source"])
    assert "profile" in params and "device" in params
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        "stored outputs must come from one top-to-bottom run"
    )
    for cell in code:
        for out in cell["outputs"]:
            assert out["output_type"] != "error", "a stored output is an error"
            text = "".join(out.get("text", []))
            assert "Traceback" not in text
            # A progress bar stores every update behind a carriage return;
            # the PDF would print each as a line. Keep what a live notebook
            # shows (nbconvert's CoalesceStreamsPreprocessor does this).
            assert "\r" not in text, (
                "a stored stream still holds carriage returns"
            )
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
