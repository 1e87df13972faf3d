"""Token arrays on disk (llmbook.data): prepare_tokens, load_tokens,
get_batch."""

import json
import os

import numpy as np
import pytest
import torch

from llmbook.data import (
    batch_at,
    get_batch,
    load_tokens,
    prepare_tokens,
    random_offsets,
)
from llmbook.tokenizer import Tokenizer, train_bpe

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n" * 40
) + "Caf\u00e9 na\u00efve \u2014 fin.\n"


@pytest.fixture(scope="module")
def tokenizer():
    vocab, merges = train_bpe(TEXT, 300, special_tokens=["<|endoftext|>"])
    return Tokenizer(vocab, merges, special_tokens=["<|endoftext|>"])


class WideTokenizer:
    """Byte ids shifted past 65,536: a vocabulary that needs uint32."""

    vocab_size = 70_000

    def encode(self, text):
        return [b + 65_600 for b in text.encode()]

    def to_json(self):
        return '{"wide": true}'


def write(tmp_path, text, name="corpus.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def test_prepare_tokens_round_trips_and_counts(tmp_path, tokenizer):
    src = write(tmp_path, TEXT)
    meta = prepare_tokens(src, tokenizer, tmp_path / "tok")
    raw = TEXT.encode()
    assert meta["train"]["bytes"] + meta["val"]["bytes"] == len(raw)
    # the last 10% of the bytes (to a character boundary) is validation
    assert meta["val"]["bytes"] == pytest.approx(0.1 * len(raw), abs=4)
    train, val = (
        load_tokens(tmp_path / "tok", "train"),
        load_tokens(tmp_path / "tok", "val"),
    )
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    assert (
        len(train) == meta["train"]["tokens"]
        and len(val) == meta["val"]["tokens"]
    )
    assert (
        tokenizer.decode(train.tolist()) + tokenizer.decode(val.tolist())
        == TEXT
    )
    assert train.tolist() == tokenizer.encode(
        raw[: meta["train"]["bytes"]].decode()
    )
    saved = json.loads((tmp_path / "tok" / "meta.json").read_text())
    assert Tokenizer.from_json(saved["tokenizer"]).encode(
        "speak"
    ) == tokenizer.encode("speak")
    assert saved["source_sha256"] == meta["source_sha256"]


def test_split_lands_on_a_character_boundary(tmp_path, tokenizer):
    text = "\u00e9" * 101  # two bytes each: 10% of 202 bytes = 20.2
    meta = prepare_tokens(write(tmp_path, text), tokenizer, tmp_path / "t")
    assert meta["train"]["bytes"] % 2 == 0


def test_prepare_tokens_skips_work_when_meta_matches(tmp_path, tokenizer):
    src = write(tmp_path, TEXT)
    prepare_tokens(src, tokenizer, tmp_path / "tok")
    stamp = os.stat(tmp_path / "tok" / "train.bin").st_mtime_ns
    prepare_tokens(src, tokenizer, tmp_path / "tok")
    assert os.stat(tmp_path / "tok" / "train.bin").st_mtime_ns == stamp
    src.write_text(TEXT + "More.\n")  # a changed source is encoded again
    meta = prepare_tokens(src, tokenizer, tmp_path / "tok")
    assert (
        meta["train"]["bytes"] + meta["val"]["bytes"] == len(TEXT.encode()) + 6
    )


def test_uint32_when_the_vocabulary_does_not_fit_uint16(tmp_path):
    meta = prepare_tokens(
        write(tmp_path, TEXT), WideTokenizer(), tmp_path / "w"
    )
    arr = load_tokens(tmp_path / "w", "train")
    assert meta["dtype"] == "uint32" and arr.dtype == np.uint32
    assert int(arr.max()) >= 65_600


def test_bad_data_files(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="does not exist"):
        prepare_tokens(tmp_path / "nope.txt", tokenizer, tmp_path / "t")
    with pytest.raises(ValueError, match="is empty"):
        prepare_tokens(write(tmp_path, "\n  \n"), tokenizer, tmp_path / "t")
    with pytest.raises(ValueError, match="not UTF-8"):
        prepare_tokens(
            write(tmp_path, b"\xff\xfeabc" * 10), tokenizer, tmp_path / "t"
        )
    with pytest.raises(ValueError, match="val_fraction"):
        prepare_tokens(write(tmp_path, TEXT), tokenizer, tmp_path / "t", 1.5)
    with pytest.raises(ValueError, match="prepare_tokens"):
        load_tokens(tmp_path / "missing", "train")
    prepare_tokens(write(tmp_path, TEXT), tokenizer, tmp_path / "t")
    with pytest.raises(ValueError, match="split"):
        load_tokens(tmp_path / "t", "test")


def test_get_batch_shifts_targets_by_one():
    arr = np.arange(1000, dtype=np.uint16)
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(arr, 4, 16, "cpu", g)  # (B, T), (B, T)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)
    assert int(x.max()) < 1000 and int(y.max()) <= 999


def test_get_batch_is_reproducible_with_a_generator():
    arr = np.arange(500, dtype=np.uint16)
    a = get_batch(arr, 3, 8, generator=torch.Generator().manual_seed(7))
    b = get_batch(arr, 3, 8, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    x, y = batch_at(arr, [0, 491], 8)
    assert x[1, -1] == 498 and y[1, -1] == 499  # the last window fits


def test_get_batch_errors():
    arr = np.arange(10, dtype=np.uint16)
    with pytest.raises(ValueError, match="fewer than one block"):
        get_batch(arr, 2, 10)
    with pytest.raises(ValueError, match="positive"):
        get_batch(arr, 0, 4)
    assert random_offsets(11, 5, 10).tolist() == [0] * 5
