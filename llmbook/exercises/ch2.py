"""The checks of chapter 2's exercises (tokenization): one step of BPE,
encoding a word with a small tokenizer's merges, and decoding ids to text.

``exercise_tokenizer`` is that small tokenizer; the chapter imports it (from
``llmbook.exercises``) to give the reader the merges to encode with."""

import random

import regex

from llmbook.exercises.harness import Case, _short, exercise
from llmbook.tokenizer import GPT2_PATTERN, Tokenizer, merge, train_bpe


def _pair_counts(ids):
    counts: dict = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _bpe_step(ids, new_id):
    ids = list(ids)
    if len(ids) < 2:
        raise ValueError(f"need at least two ids to find a pair, got {ids}")
    counts = _pair_counts(ids)
    # ties: the greater pair wins (as train_bpe, for single-byte tokens)
    pair = max(counts, key=lambda p: (counts[p], p))
    return pair, merge(ids, pair, new_id)


@exercise(
    "2.1",
    label="ex-tok-step",
    name="bpe_step",
    params=("ids", "new_id"),
    reference=_bpe_step,
)
def _cases_2_1():
    rng = random.Random(21)
    cases = [
        Case((list(b"aaabdaaabac"), 256), "the chapter's toy string"),
        Case(([1, 2, 3, 4], 256), "every pair once: the greatest wins"),
        Case(([5, 5, 5], 256), "aaa: one merge, not two"),
        Case(([2, 1, 1, 2], 256), "a tie: (2, 1) beats (1, 2)"),
    ]
    for _ in range(25):
        ids = [rng.randrange(5) for _ in range(rng.randrange(2, 30))]
        cases.append(Case((ids, 256 + rng.randrange(20)), "random"))
    cases += [Case(([7], 256), "one id: no pair"), Case(([], 256), "empty")]
    return cases


# A small tokenizer for the encoding exercise: 60 merges learned on a few
# lines, so that the merges interact (later ones build on earlier ones).
_TOY_TEXT = (
    "the theatre then thought that the thing there was theirs; "
    "other authors gathered at the hearth, and the thin throng thanked "
    "them. Then three thousand thrushes thronged the thorn thicket.\n"
    "Whether the weather be fine, or whether the weather be not, "
    "we'll weather the weather, whatever the weather, whether we like "
    "it or not. Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u20ac100.\n"
)


class _Merges(dict):
    """The merges of the toy tokenizer, described briefly in messages."""

    def _exercise_repr(self):
        return f"<the {len(self)} merges of exercise_tokenizer()>"

    def __deepcopy__(self, memo):
        return _Merges(self)


_toy = {}


def exercise_tokenizer():
    """The exercise's tokenizer: ``(tokenizer, merges)``, where ``merges``
    maps ``(left id, right id)`` to the merged id, in the order learned."""
    if not _toy:
        vocab, merges = train_bpe(_TOY_TEXT, 256 + 60)
        tok = Tokenizer(vocab, merges)
        ids_of = {b: i for i, b in vocab.items()}
        _toy["tok"] = tok
        _toy["merges"] = _Merges(
            ((ids_of[a], ids_of[b]), ids_of[a + b]) for a, b in merges
        )
    return _toy["tok"], _Merges(_toy["merges"])


def _encode_word(word, merges):
    tok, known = exercise_tokenizer()
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    if dict(merges) != dict(known):
        raise ValueError("the check only knows exercise_tokenizer's merges")
    return tok.encode(word)


@exercise(
    "2.2",
    label="ex-tok-encode",
    name="encode_word",
    params=("word", "merges"),
    reference=_encode_word,
)
def _cases_2_2():
    _, merges = exercise_tokenizer()
    words = [
        " the",
        "the",
        " weather",
        " whether",
        "thethe",
        " theatre",
        " thistle",
        " thrush",
        " r\u00e9sum\u00e9",
        " x",
        "",
        "a",
        " hearth",
        " northern",
        " whatever",
        " thanks",
    ]
    rng = random.Random(22)
    pieces = ["th", "e", "er", "a", "w", "h", "t", "o", "r", "n", "at"]
    for _ in range(20):
        words.append(
            " "
            + "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 7)))
        )
    split = regex.compile(GPT2_PATTERN).findall
    assert all(len(split(w)) <= 1 for w in words)  # each one pre-token
    cases = [Case((w, merges), "") for w in words]
    cases.append(Case((b" the", merges), "bytes, not str"))
    return cases


class _Vocab(dict):
    """A vocabulary dict that describes itself briefly in messages."""

    def _exercise_repr(self):
        extra = {i: v for i, v in self.items() if i >= 256}
        return f"<256 bytes + {len(extra)} merged tokens: {_short(extra, 90)}>"

    def __deepcopy__(self, memo):
        return _Vocab(self)


def _decode(ids, vocab):
    tok = Tokenizer(dict(vocab), [], {})
    return tok.decode(ids)


def _exercise_vocab():
    v = _Vocab({i: bytes([i]) for i in range(256)})
    for i, tok in enumerate(
        [
            b"th",
            b"the",
            b" the",
            "\u20ac".encode()[:2],
            b"\xe2",
            b"e\xcc",
            b"\x81",
        ]
    ):
        v[256 + i] = tok
    return v


@exercise(
    "2.3",
    label="ex-tok-decode",
    name="my_decode",
    params=("ids", "vocab"),
    reference=_decode,
)
def _cases_2_3():
    rng = random.Random(24)
    v = _exercise_vocab()
    euro = list("\u20ac".encode())
    cases = [
        Case((list(b"hello"), v), "bytes only"),
        Case(([256, 101], v), "th + e"),
        Case(([258, 32, 257], v), "merged tokens"),
        Case((euro, v), "a 3-byte character, one byte per token"),
        Case(([259, euro[2]], v), "a character split across tokens"),
        Case(([259], v), "half a character: U+FFFD"),
        Case(([], v), "no ids"),
    ]
    for _ in range(15):
        ids = [
            rng.choice([*range(32, 127), *range(256, 263), 0xE2, 0x82, 0xAC])
            for _ in range(rng.randrange(1, 12))
        ]
        cases.append(Case((ids, v), "random"))
    cases += [
        Case(([104, 999], v), "an id outside the vocabulary"),
        Case(([104, -1], v), "a negative id"),
    ]
    return cases
