"""Byte-level BPE, trained from scratch, token for token compatible with GPT-2.

The module reads in the order the ideas build on each other:

1. bytes: text is UTF-8 encoded, so the 256 byte values are the first 256
   tokens and any string can be encoded (no unknown token);
2. the regex split: GPT-2's pattern cuts text into pre-tokens (words with
   their leading space, numbers, punctuation runs, whitespace); merges never
   cross a pre-token boundary;
3. special tokens: the text is first split on them, so they are never
   broken into pieces and no merge crosses them;
4. merges: ``train_bpe`` learns them, ``Tokenizer`` applies them in the
   order learned (the lowest rank first);
5. GPT-2 and tiktoken: ``Tokenizer.from_gpt2`` recovers GPT-2's merges from
   its ranks; ``Tokenizer.to_tiktoken`` exports any tokenizer for speed.

Save format (``save``/``load``, ``to_json``/``from_json``): one JSON object,
human readable, from which the vocabulary is rebuilt exactly::

    {
      "format": "llmbook-bpe",
      "version": 1,
      "pattern": "'s|'t|'re|...",              (the pre-tokenizer regex)
      "special_tokens": {"<|endoftext|>": 4095},
      "vocab": {
        "0": "\\x00",                          (one token per line)
        ...
        "97": "a",
        ...
        "256": " t",
        ...
      },
      "merges": [
        [" ", "t"],                            (in the order learned)
        ["h", "e"],
        ...
      ]
    }

Tokens are byte strings, shown as text: printable ASCII bytes stand for
themselves and every other byte (and the backslash) is written ``\\xHH``,
so ``b" the"`` reads ``" the"`` and ``b"\\xe2\\x80"`` reads ``"\\xe2\\x80"``.
"""

from __future__ import annotations

import functools
import heapq
import json
import operator
import os
import re as _re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import regex

# GPT-2's pre-tokenizer (from its encoder.py): contractions, letters with an
# optional leading space, digits, other symbols, then whitespace. The
# `\s+(?!\S)` branch leaves the last space of a run to start the next word.
GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
    r"""|\s+(?!\S)|\s+"""
)
EOT = "<|endoftext|>"
FORMAT, VERSION = "llmbook-bpe", 1


# ---------------------------------------------------------------------------
# Reading text, and cutting it into pieces that merges never cross


def read_text(source: str | os.PathLike) -> str:
    """``source`` is the text itself (a ``str``) or a path (``os.PathLike``,
    e.g. ``pathlib.Path``) to a UTF-8 file."""
    if isinstance(source, str):
        if "\n" not in source and len(source) < 4096 and _is_file(source):
            raise ValueError(
                f"{source!r} is the name of a file, not text; to train on "
                f"its contents pass pathlib.Path({source!r})"
            )
        return source
    if isinstance(source, os.PathLike):
        data = Path(source).read_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{source} is not UTF-8 text (byte 0x{data[e.start]:02x} at "
                f"offset {e.start}); convert it to UTF-8 first"
            ) from None
    raise TypeError(
        f"source must be a str (the text) or a pathlib.Path to a UTF-8 "
        f"file, not {type(source).__name__}"
    )


def _is_file(name: str) -> bool:
    try:
        return Path(name).is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False


def special_regex(special_tokens: Iterable[str]) -> regex.Pattern | None:
    """A regex that finds the special tokens; at one position the longest
    wins (alternatives are tried longest first)."""
    tokens = sorted(set(special_tokens), key=lambda t: (-len(t), t))
    if not tokens:
        return None
    # The group makes `split` keep the special tokens.
    return regex.compile("(" + "|".join(regex.escape(t) for t in tokens) + ")")


def split_special(text: str, special: regex.Pattern | None) -> list[str]:
    """``text`` cut at the special tokens: ordinary text at even indices,
    special tokens at odd indices."""
    if special is None:
        return [text]
    return special.split(text)


# ---------------------------------------------------------------------------
# Training


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids``, left to right
    (``aaa`` with the pair ``aa`` becomes ``[aa, a]``)."""
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _descending(token: bytes) -> tuple[int, ...]:
    # A key that sorts byte strings from the greatest to the smallest: each
    # byte inverted, and an end marker (256) above every byte so that a
    # prefix sorts after the longer string (b"ab" > b"a").
    return (*(255 - c for c in token), 256)


def train_bpe(
    source: str | os.PathLike,
    vocab_size: int,
    special_tokens: Iterable[str] = (),
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Learn byte-level BPE merges on ``source`` (text, or a path to a UTF-8
    file; see ``read_text``).

    Returns ``(vocab, merges)``: ``vocab`` maps ids to byte strings (ids
    0..255 are the single bytes, then one id per merge, then the special
    tokens); ``merges`` lists the merged pairs in the order learned.
    ``vocab_size`` counts all of them. Each step merges the most frequent
    adjacent pair; ties go to the lexicographically greater pair of byte
    strings. Training stops early if no pair is left to merge.

    Counts are kept per distinct pre-token with its frequency, and updated
    after each merge only for the words that contain the merged pair (an
    index pair -> words), so no step recounts the corpus.
    """
    special_tokens = list(dict.fromkeys(special_tokens))
    if any(not isinstance(t, str) or not t for t in special_tokens):
        raise ValueError("special tokens must be non-empty strings")
    if not isinstance(vocab_size, int) or vocab_size < 256 + len(
        special_tokens
    ):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must be at least 256 "
            f"(the single bytes) + {len(special_tokens)} special tokens = "
            f"{256 + len(special_tokens)}"
        )
    text = read_text(source)
    if not text:
        raise ValueError("the training text is empty; give some text to learn")
    pieces = split_special(text, special_regex(special_tokens))
    word_counts = Counter()
    pretokenize = regex.compile(GPT2_PATTERN).findall
    for piece in pieces[::2]:
        word_counts.update(pretokenize(piece))

    # One entry per distinct word: its current token ids and its frequency.
    words = [list(w.encode("utf-8")) for w in word_counts]
    freqs = list(word_counts.values())
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            counts[pair] += f
            where[pair].add(wi)

    vocab = {i: bytes([i]) for i in range(256)}
    merges: list[tuple[bytes, bytes]] = []

    def entry(pair):  # the heap's order: higher count, then greater pair
        a, b = pair
        return (
            -counts[pair],
            _descending(vocab[a]) + _descending(vocab[b]),
            pair,
        )

    heap = [entry(p) for p in counts]
    heapq.heapify(heap)
    n_merges = vocab_size - 256 - len(special_tokens)
    while len(merges) < n_merges and heap:
        neg, key, pair = heapq.heappop(heap)
        count = counts.get(pair, 0)
        if count != -neg:  # stale: the count fell since it was pushed
            if count > 0:
                heapq.heappush(heap, (-count, key, pair))
            continue
        new_id = 256 + len(merges)
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        merges.append((vocab[pair[0]], vocab[pair[1]]))
        born = set()
        for wi in where.pop(pair):
            old = words[wi]
            new = merge(old, pair, new_id)
            if len(new) == len(old):  # the index is lazy too: pair long gone
                continue
            f = freqs[wi]
            for p in zip(old, old[1:]):
                counts[p] -= f
            for p in zip(new, new[1:]):
                counts[p] += f
                where[p].add(wi)
                if new_id in p:
                    born.add(p)
            words[wi] = new
        del counts[pair]
        # Only pairs with the new token gained counts; the others fell and
        # are corrected lazily when they reach the top of the heap.
        for p in born:
            heapq.heappush(heap, entry(p))
    for token in special_tokens:
        vocab[len(vocab)] = token.encode("utf-8")
    return vocab, merges


# ---------------------------------------------------------------------------
# Encoding and decoding


def _escape(token: bytes) -> str:
    return "".join(
        chr(c) if 32 <= c < 127 and c != 92 else f"\\x{c:02x}" for c in token
    )


def _unescape(text: str) -> bytes:
    parts = _re.split(r"\\x([0-9a-f]{2})", text)
    out = bytearray()
    for i, part in enumerate(parts):
        out += bytes([int(part, 16)]) if i % 2 else part.encode("ascii")
    return bytes(out)


class Tokenizer:
    """Encode text to token ids and back with byte-level BPE merges.

    ``vocab`` maps ids to byte strings and must hold the 256 single bytes and
    every merge's result; ``merges`` are ``(left, right)`` byte strings in
    rank order. ``special_tokens`` (strings) are matched before anything
    else and never split; at one position the longest wins. Their ids are
    looked up in ``vocab`` (among the ids no merge produces) or appended.
    Text that merely looks like a special token that was not given is
    ordinary text.
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: Iterable[tuple[bytes, bytes]],
        special_tokens: Iterable[str] | None = None,
        pattern: str = GPT2_PATTERN,
    ):
        self.vocab = dict(vocab)
        self.merges = [(bytes(a), bytes(b)) for a, b in merges]
        self.pattern = pattern
        ids_of = {}
        for i, token in self.vocab.items():
            ids_of.setdefault(token, i)
        missing = [b for b in range(256) if bytes([b]) not in ids_of]
        if missing:
            raise ValueError(
                f"vocab lacks single-byte tokens {missing[:5]}...; a "
                "byte-level vocabulary needs all 256 bytes"
            )
        self._byte_ids = [ids_of[bytes([b])] for b in range(256)]
        # (left id, right id) -> (rank, merged id)
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            if a not in ids_of or b not in ids_of or a + b not in ids_of:
                raise ValueError(
                    f"merge {rank} ({_escape(a)!r}, {_escape(b)!r}) uses or "
                    "makes a token that is not in vocab"
                )
            self._ranks[ids_of[a], ids_of[b]] = (rank, ids_of[a + b])
        ordinary = {*self._byte_ids, *(m for _, m in self._ranks.values())}
        spare = {t: i for i, t in self.vocab.items() if i not in ordinary}
        self.special_tokens: dict[str, int] = {}
        for token in dict.fromkeys(special_tokens or ()):
            if not isinstance(token, str) or not token:
                raise ValueError("special tokens must be non-empty strings")
            i = spare.get(token.encode("utf-8"))
            if i is None:
                i = max(self.vocab) + 1
                self.vocab[i] = token.encode("utf-8")
            self.special_tokens[token] = i
        self._special = special_regex(self.special_tokens)
        self._split = regex.compile(pattern).findall
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ids are usually 0..vocab_size-1)."""
        return max(self.vocab) + 1

    @property
    def eot_id(self) -> int | None:
        """The id of ``<|endoftext|>`` if it is a special token, else None."""
        return self.special_tokens.get(EOT)

    def _encode_word(self, word: str) -> list[int]:
        """The ids of one pre-token: its bytes, then the merges in the order
        they were learned, each applied wherever its pair occurs."""
        ranks = self._ranks  # (left, right) -> (rank, merged id)
        ids = [self._byte_ids[b] for b in word.encode("utf-8")]
        while len(ids) > 1:
            pairs = [p for p in zip(ids, ids[1:]) if p in ranks]
            if not pairs:
                break
            pair = min(pairs, key=ranks.__getitem__)  # the earliest merge
            ids = merge(ids, pair, ranks[pair][1])
        if len(self._cache) < 1 << 17:  # bounded, for endless streams
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: special tokens first, then GPT-2's regex
        split, then the merges within each pre-token."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}")
        ids: list[int] = []
        cache = self._cache  # a word's ids, once computed
        for i, piece in enumerate(split_special(text, self._special)):
            if i % 2:
                ids.append(self.special_tokens[piece])
                continue
            for word in self._split(piece):
                word_ids = cache.get(word)
                if word_ids is None:
                    word_ids = self._encode_word(word)
                ids += word_ids
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of ``ids`` (ints, or anything ``operator.index`` takes:
        NumPy integers, 0-d integer tensors)."""
        ids = list(ids)
        vocab = self.vocab
        try:
            return b"".join([vocab[i] for i in ids])
        except (KeyError, TypeError):
            ids = [operator.index(i) for i in ids]
        for i in ids:
            if i not in vocab:
                raise ValueError(
                    f"token id {i} is not in the vocabulary (ids go from 0 to "
                    f"{self.vocab_size - 1})"
                )
        return b"".join([vocab[i] for i in ids])

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; bytes that are not valid UTF-8 (a character
        cut between tokens) become U+FFFD, as in GPT-2."""
        return self.decode_bytes(list(ids)).decode("utf-8", errors="replace")

    # -- streaming ---------------------------------------------------------

    def _safe_cut(self, buf: str) -> int:
        """A position ``c`` such that the ids of ``buf[:c]`` are a prefix of
        the ids of ``buf + anything``; 0 if none is known yet."""
        longest = max(map(len, self.special_tokens), default=1)
        limit = len(buf) - (longest - 1)  # a special starting here is whole
        start = 0
        if self._special is not None:
            for m in self._special.finditer(buf):
                if m.start() < limit:
                    start = m.end()
        # Inside the ordinary text after the last special token, cut before a
        # pre-token whose predecessor ends in a non-space (a trailing space
        # run would change when more text comes) and which is far enough
        # from the end that more text cannot change it ('l -> 'll).
        spans = [
            m.span() for m in regex.finditer(self.pattern, buf, pos=start)
        ]
        for (_, e0), (s1, _) in zip(spans[-3::-1], spans[-2::-1]):
            if s1 + 3 < limit and not buf[e0 - 1].isspace():
                return s1
        return start

    stream_buffer = 1 << 16  # characters encode_iterable gathers at least

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """The ids of ``"".join(iterable)``, streamed: e.g. a file handle,
        read line by line with bounded memory (open it with ``newline=""``
        to keep ``"\r\n"`` as it is)."""
        parts, n, size = [], 0, self.stream_buffer
        for chunk in iterable:
            parts.append(chunk)
            n += len(chunk)
            if n >= size:
                buf = "".join(parts)
                cut = self._safe_cut(buf)
                if cut:
                    yield from self.encode(buf[:cut])
                    size = self.stream_buffer
                else:  # no safe cut yet (e.g. a long run of spaces)
                    size = 2 * len(buf)
                parts, n = [buf[cut:]], len(buf) - cut
        yield from self.encode("".join(parts))

    # -- saving and loading ------------------------------------------------

    def to_json(self) -> str:
        """The tokenizer as a JSON string (the module docstring shows it)."""
        special_ids = set(self.special_tokens.values())
        vocab = [
            f"    {json.dumps(str(i))}: {json.dumps(_escape(t))}"
            for i, t in sorted(self.vocab.items())
            if i not in special_ids
        ]
        merges = [
            f"    {json.dumps([_escape(a), _escape(b)])}"
            for a, b in self.merges
        ]
        # One token or merge per line: easy to read, grep and diff.
        return (
            f'{{\n  "format": "{FORMAT}",\n  "version": {VERSION},\n'
            f'  "pattern": {json.dumps(self.pattern)},\n'
            f'  "special_tokens": {json.dumps(self.special_tokens)},\n'
            '  "vocab": {\n' + ",\n".join(vocab) + "\n  },\n"
            '  "merges": [\n' + ",\n".join(merges) + "\n  ]\n}\n"
        )

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        try:
            obj = json.loads(text)
            ok = obj.get("format") == FORMAT
        except (json.JSONDecodeError, AttributeError):
            ok = False
        if not ok:
            raise ValueError(
                f"not an {FORMAT} tokenizer (JSON with format={FORMAT!r})"
            )
        if obj["version"] != VERSION:
            raise ValueError(
                f"tokenizer file version {obj['version']} is not supported "
                f"(this llmbook reads version {VERSION})"
            )
        vocab = {int(i): _unescape(t) for i, t in obj["vocab"].items()}
        vocab.update(
            {i: t.encode("utf-8") for t, i in obj["special_tokens"].items()}
        )
        merges = [(_unescape(a), _unescape(b)) for a, b in obj["merges"]]
        return cls(vocab, merges, list(obj["special_tokens"]), obj["pattern"])

    def save(self, path: str | os.PathLike) -> None:
        from llmbook.data import atomic_write

        with atomic_write(Path(path), "w") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    # -- GPT-2 and tiktoken --------------------------------------------------

    @classmethod
    def from_gpt2(cls) -> Tokenizer:
        """GPT-2's tokenizer, from its ranks in the data directory
        (offline)."""
        vocab, merges = _gpt2_vocab_and_merges()
        return cls(vocab, merges, special_tokens=[EOT])

    def to_tiktoken(self, name: str = "llmbook"):
        """A ``tiktoken.Encoding`` with the same ids, for speed.

        tiktoken ranks byte strings, not pairs: a token's rank is its id, so
        this needs ids that grow with merge order (true of ``train_bpe`` and
        of GPT-2) and no two tokens with the same bytes.
        """
        import tiktoken

        special_ids = set(self.special_tokens.values())
        ranks = {t: i for i, t in self.vocab.items() if i not in special_ids}
        if len(ranks) != len(self.vocab) - len(special_ids):
            raise ValueError(
                "to_tiktoken needs distinct byte strings per token"
            )
        merged = [m for _, m in sorted(self._ranks.values())]
        if merged != sorted(merged) or min(merged, default=256) < max(
            self._byte_ids
        ):
            raise ValueError(
                "to_tiktoken needs merged ids that increase with merge order, "
                "above the byte ids"
            )
        return tiktoken.Encoding(
            name,
            pat_str=self.pattern,
            mergeable_ranks=ranks,
            special_tokens=dict(self.special_tokens),
        )


@functools.lru_cache(maxsize=1)
def _gpt2_vocab_and_merges():
    """GPT-2's ranks are byte strings; its merge pairs are recovered as in
    ``llmbook.data.gpt2_data_gym_files``: a token's pair is what BPE, with
    only the lower ranks, splits it into."""
    from llmbook.data import gpt2_ranks_path, load_ranks

    ranks = load_ranks(gpt2_ranks_path())
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            r, i = min(
                (ranks.get(parts[i] + parts[i + 1], rank), i)
                for i in range(len(parts) - 1)
            )
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        merges.append(tuple(parts))
    vocab = {r: t for t, r in ranks.items()}
    vocab[len(vocab)] = EOT.encode()
    return vocab, merges


# ---------------------------------------------------------------------------
# The book's tokenizer

# the sizes of the models that the profiles train (TrainConfig's presets)
BOOK_VOCAB_SIZES = {"smoke": 512, "book": 2048, "gpu": 4096}


def book_tokenizer(
    profile: str = "book", vocab_size: int | None = None
) -> Tokenizer:
    """The book's BPE, trained on the nine-play Shakespeare corpus with
    ``<|endoftext|>`` as special token (vocab 2048 for "book", 4096 for
    "gpu", 512 for "smoke", or ``vocab_size``). Cached in
    ``data_dir()/tokenizers/``, with a record of the corpus and the code
    that trained it: a change to either trains it again."""
    from llmbook.data import (
        atomic_write,
        data_dir,
        record,
        sha256_of,
        shakespeare_path,
        source_hashes,
        stale,
    )

    if profile not in BOOK_VOCAB_SIZES:
        raise ValueError(
            f"unknown profile {profile!r}; use one of "
            f"{sorted(BOOK_VOCAB_SIZES)}"
        )
    size = vocab_size or BOOK_VOCAB_SIZES[profile]
    path = data_dir() / "tokenizers" / f"shakespeare-bpe-{size}.json"
    key_path = path.with_suffix(".key.json")
    corpus = shakespeare_path()
    key = {
        "settings": {"vocab_size": size, "special_tokens": [EOT]},
        "data": sha256_of(corpus),
        "code": source_hashes("tokenizer"),
    }
    reason = stale(key_path, key)
    if path.exists() and reason is None:
        try:
            return Tokenizer.load(path)
        except (ValueError, KeyError):  # damaged or foreign: train again
            reason = f"{path.name} is not a tokenizer file"
    if path.exists():
        print(
            f"llmbook: training the book's tokenizer again: {reason}",
            file=sys.stderr,
        )
    vocab, merges = train_bpe(corpus, size, special_tokens=[EOT])
    tokenizer = Tokenizer(vocab, merges, special_tokens=[EOT])
    with atomic_write(path, "w") as f:
        f.write(tokenizer.to_json())
    record(key_path, key)
    return tokenizer
