"""llmbook.train.runs: the book's cached runs are keyed by everything that made
them (settings, corpus, code, library versions), an interrupted run still
resumes, and check_run tells a normal run from an odd one."""

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

import llmbook.data as D
import llmbook.train.runs as runs
import llmbook.train.trainer as trainer
from llmbook.tokenizer import book_tokenizer
from llmbook.train import TrainConfig


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Checkpoints in a temporary directory, the corpus as fetched."""
    monkeypatch.setattr(
        runs, "checkpoint_dir", lambda profile: tmp_path / profile
    )
    return tmp_path


def stamp(path):
    return path.stat().st_mtime_ns


@pytest.mark.slow
def test_an_unchanged_tree_reuses_the_cache(cache, capsys):
    path = runs.book_checkpoint("smoke")
    before = stamp(path)
    capsys.readouterr()
    assert runs.book_checkpoint("smoke") == path
    assert stamp(path) == before
    assert "again" not in capsys.readouterr().err
    key = json.loads((cache / "smoke" / runs.KEY_FILE).read_text())
    assert set(key) == {"settings", "data", "code", "torch", "numpy", "device"}
    assert set(key["code"]) == set(runs.TRAINING_MODULES)
    assert key["data"] == D.sha256_of(D.shakespeare_path())


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, said",
    [
        ("code", "llmbook/model.py changed"),
        ("torch", f"torch {torch.__version__} -> 0.0-edited changed"),
        ("seed", "settings changed"),
    ],
)
def test_a_change_to_what_made_the_model_retrains(
    cache, capsys, monkeypatch, change, said
):
    path = runs.book_checkpoint("smoke")
    before = stamp(path)
    capsys.readouterr()
    overrides = {}
    if change == "code":  # as if llmbook/model.py had been edited
        real = D.source_hashes
        monkeypatch.setattr(
            runs, "source_hashes", lambda *m: {**real(*m), "model": "edited"}
        )
    elif change == "torch":
        monkeypatch.setattr(runs.torch, "__version__", "0.0-edited")
    else:
        overrides = {"seed": 1}
    assert runs.book_checkpoint("smoke", **overrides) == path
    assert stamp(path) != before
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line says why
    assert f"training the smoke model again: {said}" in err
    saved = torch.load(path, weights_only=True)["train_config"]
    assert saved["seed"] == overrides.get("seed", 1337)


@pytest.mark.slow
def test_an_interrupted_run_resumes_where_it_stopped(cache, monkeypatch):
    real_save = trainer.save_checkpoint
    calls = []

    def save_then_die(*args, **kwargs):
        calls.append(kwargs["step"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed before the second checkpoint
        real_save(*args, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        runs.book_run("smoke", progress=False, checkpoint_interval=10)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    said = []
    resumed = runs.book_run(
        "smoke", progress=False, log=said.append, checkpoint_interval=10
    )
    assert any("at step 10" in s for s in said), said
    shutil.rmtree(cache / "smoke")
    fresh = runs.book_run("smoke", progress=False, checkpoint_interval=10)
    assert [r["train_loss"] for r in resumed.history] == [
        r["train_loss"] for r in fresh.history
    ]


def test_token_arrays_are_encoded_again_when_the_code_changes(
    tmp_path, monkeypatch, capsys
):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question\n" * 50)
    tok = book_tokenizer("smoke")
    D.prepare_tokens(text, tok, tmp_path / "tokens")
    capsys.readouterr()
    D.prepare_tokens(text, tok, tmp_path / "tokens")
    assert capsys.readouterr().err == ""  # unchanged: reused
    real = D.source_hashes
    monkeypatch.setattr(
        D, "source_hashes", lambda *m: {**real(*m), "tokenizer": "edited"}
    )
    D.prepare_tokens(text, tok, tmp_path / "tokens")
    assert "encoding t.txt again" in capsys.readouterr().err
    meta = json.loads((tmp_path / "tokens" / "meta.json").read_text())
    assert meta["code"]["tokenizer"] == "edited"


def test_the_book_tokenizer_is_trained_again_when_its_code_changes(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    real_corpus = D.shakespeare_path
    monkeypatch.setattr(
        D, "shakespeare_path", lambda complete=False: real_corpus(complete)
    )
    first = book_tokenizer("smoke", vocab_size=300)
    key_path = tmp_path / "tokenizers" / "shakespeare-bpe-300.key.json"
    assert json.loads(key_path.read_text())["settings"]["vocab_size"] == 300
    assert book_tokenizer("smoke", vocab_size=300).merges == first.merges
    assert capsys.readouterr().err == ""
    real = D.source_hashes
    monkeypatch.setattr(
        D, "source_hashes", lambda *m: {**real(*m), "tokenizer": "edited"}
    )
    book_tokenizer("smoke", vocab_size=300)
    assert "llmbook/tokenizer.py changed" in capsys.readouterr().err


def test_the_code_fingerprint_ignores_comments_and_docs_only(
    tmp_path, monkeypatch
):
    pkg = tmp_path / "llmbook"
    pkg.mkdir()
    monkeypatch.setattr(D, "__file__", str(pkg / "data.py"))
    code = 'def f(x):\n    """Twice x."""\n    return 2 * x  # why\n'
    (pkg / "m.py").write_text(code)
    before = D.source_hashes("m")["m"]
    (pkg / "m.py").write_text(
        'def f(x):\n    """Double."""\n\n    return 2*x\n'
    )
    assert D.source_hashes("m")["m"] == before
    (pkg / "m.py").write_text(code.replace("2 * x", "3 * x"))
    assert D.source_hashes("m")["m"] != before


def test_stale_names_what_changed(tmp_path):
    key = {
        "settings": {"a": 1},
        "code": {"model": "x", "loss": "y"},
        "torch": "2.13.0",
    }
    path = tmp_path / "key.json"
    assert D.stale(path, key) == "there is no record of what made it"
    D.record(path, key)
    assert D.stale(path, key) is None
    assert (
        D.stale(path, {**key, "code": {"model": "z", "loss": "y"}})
        == "llmbook/model.py changed"
    )
    assert (
        D.stale(path, {**key, "torch": "2.14.0"})
        == "torch 2.13.0 -> 2.14.0 changed"
    )
    path.write_text("{not json")
    assert "unreadable" in D.stale(path, key)


# -- is my run normal? --------------------------------------------------------

BAND = {
    "steps": [50, 100],
    "val_loss": [5.0, 4.5],
    "val_loss_tolerance": [0.1, 0.1],
    "final_val_loss": 4.4,
    "final_val_loss_tolerance": 0.05,
}


def result(losses, final, **settings):
    history = [{"step": s, "val_loss": v} for s, v in zip((50, 100), losses)]
    return SimpleNamespace(
        config=TrainConfig.preset("book", **settings),
        history=history,
        val_loss=final,
    )


def test_check_run_inside_the_band():
    check = runs.check_run(result([5.05, 4.41], 4.42, seed=7), BAND)
    assert check.ok
    assert check.message == (
        "normal: the validation loss is inside the "
        "expected band at all 2 evaluations and at the end "
        "(expected there: 4.40 +- 0.05 nats per token)"
    )
    # printed, it fits the book's code column, every word kept
    lines = str(check).splitlines()
    assert len(lines) == 2 and max(map(len, lines)) <= 79
    assert " ".join(lines) == check.message


def test_check_run_outside_the_band_says_where_and_why():
    check = runs.check_run(result([5.3, 4.9], 4.8), BAND)
    assert not check.ok
    assert "outside the expected band at 3 of 3 points" in check.message
    assert "step 50: 5.30 (expected 5.00 +- 0.10)" in check.message
    assert "other data or another tokenizer" in check.message
    nan = runs.check_run(result([5.0, math.nan], 4.4), BAND)
    assert "diverged" in nan.message
    low = runs.check_run(result([4.5, 4.0], 4.0), BAND)
    assert "leaking" in low.message


def test_check_run_refuses_other_settings():
    check = runs.check_run(result([5.0, 4.5], 4.4, lr=1e-2), BAND)
    assert not check.ok
    assert "lr=0.01 (book: 0.003)" in check.message


def test_the_measured_band_is_shipped_with_the_package():
    band = runs.expected_band()
    assert band["steps"] == list(range(50, 601, 50))
    assert len(band["val_loss"]) == len(band["val_loss_tolerance"]) == 12
    assert all(t > 0 for t in band["val_loss_tolerance"])
    assert band["runs"], "the band records the runs it was measured on"
