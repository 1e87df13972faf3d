"""llmbook.tokenizer against tiktoken's GPT-2, a naive BPE trainer, and itself
through save/load, streaming and tiktoken export."""

import json
from collections import Counter

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from llmbook import data
from llmbook.tokenizer import (
    EOT,
    GPT2_PATTERN,
    Tokenizer,
    book_tokenizer,
    train_bpe,
)

# Everything GPT-2's regex and byte fallback have to get right.
ADVERSARIAL = (
    "Hello, I am building an LLM.\n"
    "emoji: \U0001f600\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d"
    "\U0001f467 flags \U0001f1eb\U0001f1f7\n"
    "CJK: \u4f60\u597d\uff0c\u4e16\u754c \u65e5\u672c\u8a9e\u306e\u30c6\u30ad"
    "\u30b9\u30c8 \ud55c\uad6d\uc5b4\n"
    "combining: e\u0301 a\u0308 n\u0303\u0303 Z\u0351\u0352\u0353 \u00e9\n"
    "rtl: \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 "
    "\u202eabc\u202c\n"
    "spaces:  two   three    four\t\ttabs \n\n\n  \n \r\n\r\n"
    "contractions: it's don't we're they've I'm you'll he'd "
    "IT'S DON'T WE'RE THEY'VE I'M YOU'LL HE'D 'S 'll'll ''s\n"
    "digits: 0 12 345 6789 3.14159 1,000,000 \u0661\u0662\u0663 \u00bd\n"
    "special <|endoftext|> and again<|endoftext|><|endoftext|>end"
    " <|endoftext <|endoftext|\n"
    "odd: \x00\x01\x7f \u00a0nbsp \ufeffbom \U0010ffff trailing   "
)


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    data.use_local_tiktoken()
    import tiktoken

    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="module")
def gpt2():
    return Tokenizer.from_gpt2()


@pytest.fixture(scope="module")
def corpus():
    return data.load_shakespeare()


@pytest.fixture(scope="module")
def small(corpus):
    """A small tokenizer trained on the first 100 kB (about a second)."""
    vocab, merges = train_bpe(corpus[:100_000], 600, special_tokens=[EOT])
    return Tokenizer(vocab, merges, special_tokens=[EOT])


# ---------------------------------------------------------------------------
# GPT-2, token for token


def test_known_sentence(gpt2):
    # The ids GPT-2's own tokenizer gives (FACTS.md).
    ids = [15496, 11, 314, 716, 2615, 281, 27140, 44, 13]
    assert gpt2.encode("Hello, I am building an LLM.") == ids
    assert gpt2.vocab_size == 50257 and gpt2.eot_id == 50256


def test_gpt2_adversarial(gpt2, tiktoken_gpt2):
    expected = tiktoken_gpt2.encode(ADVERSARIAL, allowed_special={EOT})
    assert gpt2.encode(ADVERSARIAL) == expected
    assert gpt2.decode(expected) == ADVERSARIAL
    assert expected.count(gpt2.eot_id) == 3


def test_gpt2_special_looking_text_is_plain_without_special(
    gpt2, tiktoken_gpt2
):
    plain = Tokenizer(gpt2.vocab, gpt2.merges)  # no special tokens
    expected = tiktoken_gpt2.encode(ADVERSARIAL, disallowed_special=())
    assert plain.encode(ADVERSARIAL) == expected
    assert gpt2.eot_id not in expected and plain.eot_id is None


@pytest.mark.slow
def test_gpt2_whole_corpus(gpt2, tiktoken_gpt2, corpus):
    expected = tiktoken_gpt2.encode(corpus)
    ours = gpt2.encode(corpus)
    assert len(ours) == len(expected) and ours == expected


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_gpt2_random_text(gpt2, tiktoken_gpt2, text):
    # Hypothesis also draws string constants from the code under test, so
    # "<|endoftext|>" turns up: ours reads it as the special token, as
    # tiktoken does when special tokens are allowed.
    ids = gpt2.encode(text)
    assert ids == tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2.decode(ids) == text


def test_invalid_utf8_decodes_to_replacement(gpt2, tiktoken_gpt2):
    ids = gpt2.encode("\U0001f600")  # four bytes, several tokens
    assert len(ids) > 1
    assert gpt2.decode(ids[:1]) == tiktoken_gpt2.decode(ids[:1])
    assert "\ufffd" in gpt2.decode(ids[:1])
    assert gpt2.decode_bytes(ids) == "\U0001f600".encode()


# ---------------------------------------------------------------------------
# Training


def naive_train(text, vocab_size, special_tokens=()):
    """BPE as the textbook states it: recount every pair after each merge."""
    pieces = [text]
    if special_tokens:
        alternatives = "|".join(regex.escape(t) for t in special_tokens)
        pieces = regex.split(alternatives, text)
    words = Counter(w for p in pieces for w in regex.findall(GPT2_PATTERN, p))
    seqs = {w: [bytes([b]) for b in w.encode()] for w in words}
    merges = []
    while len(merges) < vocab_size - 256 - len(special_tokens):
        counts = Counter()
        for w, f in words.items():
            for pair in zip(seqs[w], seqs[w][1:]):
                counts[pair] += f
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], p))
        merges.append(best)
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    return merges


def test_train_matches_naive_trainer(corpus):
    text = corpus[200_000:220_000] + EOT + "aaaa aaaaa  \n\n zzz"
    vocab, merges = train_bpe(text, 420, special_tokens=[EOT])
    assert merges == naive_train(text, 420, [EOT])
    assert len(vocab) == 420 and vocab[419] == EOT.encode()
    assert all(vocab[256 + i] == a + b for i, (a, b) in enumerate(merges))


def test_toy_merges_and_tie_break():
    # "ab", " cd": every pair occurs once; the greatest pair wins the tie
    # (b"c" > b"a" > b" "), then again among (a, b) and (" ", "cd").
    vocab, merges = train_bpe("ab cd", 258)
    assert merges == [(b"c", b"d"), (b"a", b"b")]
    assert vocab[257] == b"ab"
    # Counts decide first: "aa" occurs 3 times in "aaaa" (overlapping).
    _, merges = train_bpe("aaaa zb", 257)
    assert merges == [(b"a", b"a")]


def test_training_stops_when_nothing_is_left_to_merge():
    vocab, merges = train_bpe("abc", 1000)
    assert merges == [(b"b", b"c"), (b"a", b"bc")]
    assert len(vocab) == 258


def test_no_merge_crosses_special_tokens():
    text = "ab<|endoftext|>ab<|endoftext|>ab<|endoftext|>"
    _, merges = train_bpe(text, 300, special_tokens=[EOT])
    assert merges == [(b"a", b"b")]


def test_training_is_deterministic_and_reads_paths(tmp_path, corpus):
    text = corpus[:30_000]
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    assert train_bpe(text, 400) == train_bpe(path, 400)


def test_training_errors(tmp_path):
    with pytest.raises(
        ValueError, match=r"vocab_size=257 is too small.* = 258"
    ):
        train_bpe("hello", 257, special_tokens=["<|a|>", "<|b|>", "<|b|>"])
    with pytest.raises(ValueError, match=r"vocab_size=255 is too small"):
        train_bpe("hello", 255)
    with pytest.raises(ValueError, match="training text is empty"):
        train_bpe("", 300)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(
        ValueError, match=r"latin1.txt is not UTF-8.*0xe9 at offset 3"
    ):
        train_bpe(bad, 300)
    with pytest.raises(TypeError, match="source must be a str"):
        train_bpe(b"bytes", 300)
    with pytest.raises(ValueError, match="non-empty strings"):
        train_bpe("hello", 300, special_tokens=[""])


# ---------------------------------------------------------------------------
# A trained tokenizer


def test_trained_round_trip_and_tiktoken_export(small, corpus):
    text = corpus[100_000:200_000] + ADVERSARIAL
    ids = small.encode(text)
    assert small.decode(ids) == text
    assert small.to_tiktoken().encode(text, allowed_special="all") == ids
    assert small.vocab_size == 600 and small.eot_id == 599


@pytest.mark.slow
def test_book_sized_tokenizer_agrees_with_tiktoken_export(corpus):
    tok = Tokenizer(*train_bpe(corpus, 4096, special_tokens=[EOT]), [EOT])
    assert tok.to_tiktoken().encode(corpus) == tok.encode(corpus)


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200) | st.text()
)
def test_trained_random_text(small, text):
    ids = small.encode(text)
    assert small.decode(ids) == text
    assert small.to_tiktoken().encode(text, allowed_special="all") == ids


PIECES = [
    "a",
    " ",
    "b",
    "\n",
    "'",
    "l",
    "<|end",
    "oftext|>",
    EOT,
    "ll",
    "  x",
    "\u00e9",
    "s",
    "7",
    "\t",
    "ve",
    "!",
    "\u0301",
]


@given(st.lists(st.sampled_from(PIECES), max_size=60), st.integers(1, 8))
def test_encode_iterable_any_chunking(small, pieces, n):
    text = "".join(pieces)
    chunks = [text[i : i + n] for i in range(0, len(text), n)]
    assert list(small.encode_iterable(chunks)) == small.encode(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES), max_size=80),
    st.integers(1, 8),
    st.data(),
)
def test_encode_iterable_cuts_safely(small, pieces, n, draw):
    text = "".join(pieces)
    prefix = text[: draw.draw(st.integers(0, len(text)))]
    cut = small._safe_cut(prefix)
    assert small.encode(text) == small.encode(text[:cut]) + small.encode(
        text[cut:]
    )
    tok = Tokenizer(small.vocab, small.merges, special_tokens=[EOT, "<|end"])
    tok.stream_buffer = 4  # cut as often as possible
    chunks = [text[i : i + n] for i in range(0, len(text), n)]
    assert list(tok.encode_iterable(chunks)) == tok.encode(text)


def test_encode_iterable_on_a_file(small, corpus, tmp_path):
    text = (corpus[:150_000] + EOT + ADVERSARIAL) * 2
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    # newline="" keeps "\r\n" as it is in the file (the text has some).
    with open(path, encoding="utf-8", newline="") as f:
        streamed = list(small.encode_iterable(f))
    assert streamed == small.encode(text)


def test_special_tokens_never_split_and_longest_wins(small):
    vocab, merges = small.vocab, small.merges
    tok = Tokenizer(vocab, merges, special_tokens=["<|a|>", "<|a|><|b|>", EOT])
    a, ab = tok.special_tokens["<|a|>"], tok.special_tokens["<|a|><|b|>"]
    assert tok.encode("x<|a|><|b|><|a|>") == [*tok.encode("x"), ab, a]
    assert tok.eot_id == 599 and {a, ab} == {600, 601}
    assert tok.decode([ab, a]) == "<|a|><|b|><|a|>"
    plain = Tokenizer(vocab, merges)
    assert (
        plain.decode(plain.encode(EOT)) == EOT and len(plain.encode(EOT)) > 1
    )


def test_decode_and_encode_errors(small):
    with pytest.raises(
        ValueError, match=r"id 600 is not in the vocabulary.*0 to 599"
    ):
        small.decode([1, 600])
    with pytest.raises(
        ValueError, match=r"token id -1 is not in the vocabulary"
    ):
        small.decode([-1])
    with pytest.raises(
        TypeError, match="'float' object cannot be interpreted"
    ):
        small.decode([1.5])
    np = pytest.importorskip("numpy")
    assert small.decode(np.array([72, 105])) == "Hi"
    with pytest.raises(TypeError, match="encode takes a str, not bytes"):
        small.encode(b"abc")
    with pytest.raises(ValueError, match="not in vocab"):
        Tokenizer({i: bytes([i]) for i in range(256)}, [(b"a", b"b")])
    with pytest.raises(ValueError, match="all 256 bytes"):
        Tokenizer({0: b"a"}, [])


# ---------------------------------------------------------------------------
# Saving and loading


def test_save_load_round_trip(small, tmp_path):
    path = tmp_path / "tok.json"
    small.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.vocab == small.vocab and loaded.merges == small.merges
    assert loaded.special_tokens == small.special_tokens
    assert Tokenizer.from_json(small.to_json()).encode(
        ADVERSARIAL
    ) == small.encode(ADVERSARIAL)
    obj = json.loads(path.read_text())  # human readable: " t" is shown as is
    assert obj["merges"][0] == [" ", "t"] and obj["vocab"]["92"] == "\\x5c"
    assert obj["special_tokens"] == {EOT: 599}


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="not an llmbook-bpe tokenizer"):
        Tokenizer.from_json('{"vocab": {}}')
    with pytest.raises(ValueError, match="not an llmbook-bpe tokenizer"):
        Tokenizer.from_json("not json")
    with pytest.raises(ValueError, match="version 9 is not supported"):
        Tokenizer.from_json('{"format": "llmbook-bpe", "version": 9}')


def test_gpt2_exports_to_tiktoken(gpt2, tiktoken_gpt2):
    enc = gpt2.to_tiktoken("gpt2-copy")
    assert enc.encode(
        ADVERSARIAL, allowed_special="all"
    ) == tiktoken_gpt2.encode(ADVERSARIAL, allowed_special="all")
    assert enc.n_vocab == 50257


# ---------------------------------------------------------------------------
# The book's tokenizer


@pytest.mark.slow
def test_book_tokenizer_is_cached_and_deterministic(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    (root / "shakespeare.txt").symlink_to(data.shakespeare_path())
    monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
    tok = book_tokenizer("smoke", vocab_size=300)
    path = root / "tokenizers" / "shakespeare-bpe-300.json"
    assert path.exists() and tok.vocab_size == 300 and tok.eot_id == 299
    first = path.read_text()
    assert book_tokenizer("smoke", vocab_size=300).merges == tok.merges
    path.unlink()
    book_tokenizer("smoke", vocab_size=300)
    assert path.read_text() == first
    path.write_text(
        '{"format": "something else"}'
    )  # stale or foreign: retrain
    assert book_tokenizer("smoke", vocab_size=300).merges == tok.merges
    assert path.read_text() == first
    with pytest.raises(ValueError, match="unknown profile 'large'"):
        book_tokenizer("large")


def test_a_file_name_given_as_text_is_refused(tmp_path, monkeypatch):
    (tmp_path / "corpus.txt").write_text("to be or not to be " * 50)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"pass pathlib.Path\('corpus.txt'\)"):
        train_bpe("corpus.txt", 260)
    # the contents, through a Path, train as before
    vocab, merges = train_bpe(tmp_path / "corpus.txt", 260)
    assert len(merges) == 4
    # a short text that is not the name of a file is text
    assert len(train_bpe("corpus of mine", 258)[1]) == 2
