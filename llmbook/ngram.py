"""Language models by counting: n-gram models, smoothed, in bits per byte.

An n-gram model predicts the next token from the ``n - 1`` tokens before it,
with probabilities read off counts of the training text. The module builds
it in four steps:

1. counting: ``count_ngrams`` counts every k-gram of a text, for every
   ``k`` up to the order, at once, with NumPy. Each k-gram gets an id: its
   parent (the k-gram without its last token) and its last token make one
   integer key, and ``np.unique`` numbers the keys. The ids stay below the
   text's length however long the grams get, so nothing overflows, and a new
   text's grams are found by binary search (``gram_ids``);
2. smoothing: ``NgramModel`` turns counts into probabilities, with add-k
   (Lidstone) smoothing or interpolated Kneser-Ney, the definitions of NLTK's
   ``nltk.lm.Lidstone`` and ``nltk.lm.KneserNeyInterpolated`` (the tests
   compare the two to float rounding);
3. evaluation: ``NgramModel.logprobs`` gives the log-probability of every
   token of a text, vectorised over positions; ``bits_per_byte`` turns them
   into the unit in which models with different tokenizers compare;
4. the baseline: ``corpus_split`` and ``baselines`` evaluate character- and
   token-level models on the book's validation text, the one the training
   chapter evaluates its GPT on.

Every sequence starts after ``order - 1`` padding symbols, the id
``vocab_size`` (one past the vocabulary): the first tokens of a text are
predicted from "start of text", never from another text. Padding is only
ever context: the models give probabilities to the ``vocab_size`` real
symbols, so no token is ever unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llmbook.checks import check_choice, check_int, check_number
from llmbook.data import _split_point, read_text_bytes, shakespeare_path
from llmbook.tokenizer import book_tokenizer

SMOOTHINGS = ("add-k", "kneser-ney")


# ---------------------------------------------------------------------------
# Counting


def _check_ids(name: str, ids, vocab_size: int) -> np.ndarray:
    """``ids`` as a 1-D int64 array of symbols in [0, vocab_size)."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D sequence of token ids, got shape "
            f"{arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must hold integer token ids, got dtype {arr.dtype}; "
            "encode text first (list(text.encode()) for bytes)"
        )
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        bad = arr[(arr < 0) | (arr >= vocab_size)][0]
        raise ValueError(
            f"{name} holds id {bad}, outside the vocabulary [0, "
            f"{vocab_size}); use a vocab_size that covers every id"
        )
    return arr


def _padded(ids: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    """``order - 1`` padding symbols (id ``vocab_size``), then ``ids``."""
    return np.concatenate([np.full(order - 1, vocab_size, np.int64), ids])


@dataclass(frozen=True)
class NgramCounts:
    """The counts of every k-gram of a training text, k = 1 ... ``order``.

    Level k holds the distinct k-grams, numbered 0, 1, ...; level 0 is the
    empty gram (id 0), the parent of every 1-gram. Arrays per level ``k``:

    - ``keys[k]`` (n_k,): sorted, ``parent id * (V + 1) + last symbol``;
    - ``counts[k]`` (n_k,): how often the k-gram ends at a token of the
      text (a k-gram of padding only has count 0: it is only a context);
    - ``totals[k]`` (n_{k-1},): the count of everything after a (k-1)-gram,
      c(h .), and ``followers[k]`` (n_{k-1},): how many distinct symbols
      follow it, N1+(h .);
    - for k < order, Kneser-Ney's continuation counts: ``continuations[k]``
      (n_k,), N1+(. g), the number of distinct symbols seen before g, and
      ``continuation_totals[k]`` (n_{k-1},), N1+(. h .), their sum over the
      k-grams that extend h.
    """

    vocab_size: int
    order: int
    n_tokens: int
    keys: tuple
    counts: tuple
    totals: tuple
    followers: tuple
    continuations: tuple
    continuation_totals: tuple


def _per_parent(keys, values, n_parents, base):
    """Sum ``values`` over the grams that share a parent: (n_parents,)."""
    return np.bincount(keys // base, weights=values, minlength=n_parents)


def count_ngrams(ids, order: int, vocab_size: int) -> NgramCounts:
    """Count every k-gram of ``ids`` (a 1-D sequence of ids in
    [0, vocab_size)), k = 1 ... ``order``, after ``order - 1`` padding
    symbols. One pass per level: O(order * len(ids) * log len(ids))."""
    check_int("order", order, 1)
    check_int("vocab_size", vocab_size, 1)
    ids = _check_ids("ids", ids, vocab_size)
    if not len(ids):
        raise ValueError("ids is empty: there is nothing to count")
    x = _padded(ids, order, vocab_size)
    base, real = vocab_size + 1, slice(order - 1, None)
    gram = np.zeros(len(x), np.int64)  # ids of the grams ending at each p
    keys = [np.zeros(1, np.int64)]  # level 0: the empty gram, id 0
    counts, suffix = [np.array([len(ids)])], [None]
    for k in range(1, order + 1):
        # the k-gram ending at p extends the (k-1)-gram ending at p - 1
        key = gram[k - 2 : -1] * base + x[k - 1 :] if k > 1 else x
        level, inverse = np.unique(key, return_inverse=True)
        prev, gram = gram, np.full(len(x), -1, np.int64)
        gram[k - 1 :] = inverse
        # the gram one level down ending at the same p: the suffix of g
        suf = np.empty(len(level), np.int64)
        suf[gram[k - 1 :]] = prev[k - 1 :] if k > 1 else 0
        keys.append(level)
        counts.append(np.bincount(gram[real], minlength=len(level)))
        suffix.append(suf)
    return NgramCounts(
        vocab_size,
        order,
        len(ids),
        tuple(keys),
        tuple(counts),
        *_context_tables(keys, counts, suffix, base),
    )


def _context_tables(keys, counts, suffix, base):
    """What smoothing needs besides the counts, per level k: the totals
    c(h .) and followers N1+(h .) of each context h, and (k < order) the
    continuation counts N1+(. g) and their totals N1+(. h .)."""
    order = len(keys) - 1
    totals, followers, conts, cont_totals = [None], [None], [None], [None]
    for k in range(1, order + 1):
        n_parents = len(keys[k - 1])
        seen = (counts[k] > 0).astype(np.int64)
        totals.append(_per_parent(keys[k], counts[k], n_parents, base))
        followers.append(_per_parent(keys[k], seen, n_parents, base))
        if k < order:  # N1+(. g): the distinct grams one longer ending in g
            above = suffix[k + 1][counts[k + 1] > 0]
            cont = np.bincount(above, minlength=len(keys[k]))
            conts.append(cont)
            cont_totals.append(_per_parent(keys[k], cont, n_parents, base))
    return (
        tuple(totals),
        tuple(followers),
        tuple(conts),
        tuple(cont_totals),
    )


def _find(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The index of each ``query`` key in the sorted ``keys``, or -1."""
    at = np.searchsorted(keys, query)
    at = np.minimum(at, len(keys) - 1)
    return np.where(keys[at] == query, at, -1)


def gram_ids(counts: NgramCounts, ids, order: int | None = None):
    """The ids of the grams of a new text in the training counts:
    (order + 1, len(ids)) int64, row k the k-gram that ends at each token
    (after the padding), -1 where it never occurred in training. Row 0 is
    the empty gram (0)."""
    order = counts.order if order is None else order
    check_int("order", order, 1, counts.order)
    V = counts.vocab_size
    x = _padded(_check_ids("ids", ids, V), counts.order, V)
    out = np.zeros((order + 1, len(x)), np.int64)
    for k in range(1, order + 1):
        parent = np.full(len(x), -1, np.int64)
        parent[1:] = out[k - 1, :-1] if k > 1 else 0
        if k == 1:
            parent[0] = 0
        key = np.where(parent >= 0, parent * (V + 1) + x, -1)
        out[k] = np.where(parent >= 0, _find(counts.keys[k], key), -1)
    return out[:, counts.order - 1 :]


def unseen_share(counts: NgramCounts, ids, order: int) -> float:
    """The share of the ``order``-grams of ``ids`` (one ending at each
    token, after the padding) that never occur in the training counts."""
    grams = gram_ids(counts, ids, order)[order]
    return float((grams < 0).mean()) if grams.size else 0.0


# ---------------------------------------------------------------------------
# Smoothing: probabilities from counts


class NgramModel:
    """An n-gram model of order ``order`` (at most ``counts.order``): the
    next token's distribution given the ``order - 1`` tokens before it.

    ``smoothing="add-k"`` (Lidstone; Laplace for k = 1):
    p(w | h) = (c(h w) + k) / (c(h .) + k V), with V = ``vocab_size``, the
    counts' vocabulary by default (only add-k reads ``vocab_size``: NLTK's
    Lidstone counts its ``<UNK>`` in V, so a comparison passes its size).

    ``smoothing="kneser-ney"``: interpolated Kneser-Ney with one absolute
    ``discount`` d, defined as NLTK's ``KneserNeyInterpolated``:
    p_k(w | h) = max(a(h w) - d, 0) / t(h) + d N1+(h .) / t(h) p_{k-1}(w | h')
    where h' is h without its first token, a and t are the counts c(h w),
    c(h .) at the highest order and the continuation counts N1+(. h w),
    N1+(. h .) below it, and a context never seen (t = 0) leaves p_{k-1}
    unchanged. At the bottom, p_1 mixes the same way with the uniform
    distribution 1/V (``uniform=True``); NLTK instead stops at the
    undiscounted N1+(. w) / N1+(. .) (``uniform=False``), which gives 0 to a
    symbol never seen after another. NLTK's default discount is 0.1; the
    usual value, and ours, is 0.75.
    """

    def __init__(
        self,
        counts: NgramCounts,
        order: int | None = None,
        smoothing: str = "kneser-ney",
        k: float = 1.0,
        discount: float = 0.75,
        uniform: bool = True,
        vocab_size: int | None = None,
    ):
        if not isinstance(counts, NgramCounts):
            raise TypeError(
                "counts must be the NgramCounts of count_ngrams(ids, order, "
                f"vocab_size), got {type(counts).__name__}"
            )
        self.counts = counts
        self.order = counts.order if order is None else order
        check_int("order", self.order, 1, counts.order)
        check_choice("smoothing", smoothing, SMOOTHINGS)
        self.smoothing = smoothing
        self.k = check_number("k", k, 0)
        if smoothing == "add-k" and k == 0:
            raise ValueError(
                "k must be > 0 for add-k smoothing: with k = 0 an unseen "
                "n-gram has probability 0 and the loss is infinite"
            )
        self.discount = check_number("discount", discount, 0, 1)
        self.uniform = bool(uniform)
        V = counts.vocab_size if vocab_size is None else vocab_size
        self.vocab_size = check_int("vocab_size", V, counts.vocab_size)

    def __repr__(self):
        what = (
            f"k={self.k}"
            if self.smoothing == "add-k"
            else f"discount={self.discount}"
        )
        return (
            f"NgramModel(order={self.order}, {self.smoothing}, {what}, "
            f"V={self.counts.vocab_size})"
        )

    def _probs(self, gram, parent):
        """p(w | h) for arrays of grams: ``gram[k]`` the id of the k-gram
        (h w) cut to its last k tokens, ``parent[k]`` that of its context;
        -1 where unseen. Rows k = 0 ... order; the result has their shape."""
        c, n = self.counts, self.order

        def at(table, ids):  # table[ids], 0 where the id is -1 (unseen)
            return np.where(ids >= 0, table[np.maximum(ids, 0)], 0)

        if self.smoothing == "add-k":
            hits, total = at(c.counts[n], gram[n]), at(c.totals[n], parent[n])
            return (hits + self.k) / (total + self.k * self.vocab_size)
        d = self.discount
        p = np.full(np.shape(gram[n]), 1.0 / c.vocab_size)
        for k in range(1, n + 1):
            top = k == n  # raw counts at the model's order, else N1+
            hits = at(c.counts[k] if top else c.continuations[k], gram[k])
            total = at(
                c.totals[k] if top else c.continuation_totals[k], parent[k]
            )
            if k == 1 and not self.uniform:  # NLTK: no discount, no floor
                p = hits / total
                continue
            seen = total > 0
            t = np.where(seen, total, 1)
            mixed = np.maximum(hits - d, 0) / t
            mixed += d * at(c.followers[k], parent[k]) / t * p
            p = np.where(seen, mixed, p)
        return p

    def logprobs(self, ids, grams=None) -> np.ndarray:
        """The natural log-probability of each token of ``ids`` given the
        ``order - 1`` before it (padding before the first): (len(ids),).
        ``grams``: ``gram_ids(self.counts, ids)``, if already computed."""
        if grams is None:
            grams = gram_ids(self.counts, ids, self.order)
        grams = grams[: self.order + 1]
        if grams.shape[1] == 0:
            return np.zeros(0)
        # the context of the token at t is the gram one shorter at t - 1;
        # before the first token, the grams of padding only
        parent = np.empty_like(grams)
        parent[0], parent[1:, 1:] = 0, grams[:-1, :-1]
        parent[1:, 0] = self._pad_grams()[:-1]
        with np.errstate(divide="ignore"):
            return np.log(self._probs(grams, parent))

    def _pad_grams(self) -> np.ndarray:
        """The ids of the grams of padding only, k = 0 ... order."""
        V = self.counts.vocab_size
        return np.array(
            [self._gram_of([V] * k) for k in range(self.order + 1)]
        )

    def _gram_of(self, symbols) -> int:
        """The id of the gram ``symbols`` in the counts, or -1."""
        g, V = 0, self.counts.vocab_size
        for k, s in enumerate(symbols, start=1):
            key = np.array([g * (V + 1) + s])
            g = int(_find(self.counts.keys[k], key)[0])
            if g < 0:
                break
        return g

    def probs(self, context=()) -> np.ndarray:
        """The distribution of the next token after ``context`` (ids; only
        its last ``order - 1`` count, padding before a short one): (V,)."""
        V, n = self.counts.vocab_size, self.order
        ctx = _padded(_check_ids("context", context, V), n, V)
        ctx = ctx[len(ctx) - (n - 1) :]  # the last n - 1, padding included
        gram = np.full((n + 1, V), -1, np.int64)
        parent = np.zeros(n + 1, np.int64)
        for k in range(1, n + 1):  # h: the context's last k - 1 symbols
            parent[k] = (
                self._gram_of(ctx[len(ctx) - (k - 1) :]) if k > 1 else 0
            )
            if parent[k] >= 0:
                keys = parent[k] * (V + 1) + np.arange(V)
                gram[k] = _find(self.counts.keys[k], keys)
        return self._probs(gram, parent[:, None])

    def sample(self, n_tokens: int, seed: int, context=()) -> list[int]:
        """``n_tokens`` ids drawn one at a time after ``context``, from a
        NumPy generator seeded with ``seed``: the same ids on every run."""
        check_int("n_tokens", n_tokens, 0)
        check_int("seed", seed, 0)
        rng = np.random.default_rng(seed)
        out = list(_check_ids("context", context, self.counts.vocab_size))
        start = len(out)
        for _ in range(n_tokens):
            cdf = np.cumsum(self.probs(out[len(out) - (self.order - 1) :]))
            out.append(
                int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
            )
        return out[start:]


# ---------------------------------------------------------------------------
# Evaluation in bits per byte


def bits_per_byte(logprobs, n_bytes: int) -> float:
    """The cost of a text in bits per byte: minus the sum of its tokens'
    natural log-probabilities, in bits (divided by ln 2), over its bytes."""
    check_int("n_bytes", n_bytes, 1)
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.ndim != 1:
        raise ValueError(
            f"logprobs must be 1-D, one per token, got shape {lp.shape}"
        )
    if np.any(lp > 0) or np.any(np.isnan(lp)):
        raise ValueError(
            "logprobs must be log-probabilities (<= 0, natural log); got "
            "a positive value or NaN: pass np.log(p), not p or -log p"
        )
    return float(-lp.sum() / math.log(2) / n_bytes)


def corpus_split(text_path=None, val_fraction: float = 0.1):
    """The bytes of the training and the validation text: the last
    ``val_fraction`` of the corpus (the book's nine plays by default),
    split where ``llmbook.data.prepare_tokens`` splits it, so that the
    models here and the training chapter's GPT see the same texts."""
    check_number("val_fraction", val_fraction, 0, 1)
    if val_fraction in (0, 1):
        raise ValueError(
            "val_fraction must be between 0 and 1 (exclusive), got "
            f"{val_fraction}"
        )
    raw = read_text_bytes(text_path or shakespeare_path())
    cut = _split_point(raw, val_fraction)
    return raw[:cut], raw[cut:]


LEVELS = ("character", "token")


def encode_split(train: bytes, val: bytes, level: str, profile="book"):
    """``(train_ids, val_ids, vocab_size)``: the texts as bytes (V = 256:
    every byte is a symbol, so no character is ever unknown) or as the
    book's tokens (``book_tokenizer(profile)``, V its vocabulary), each
    text encoded on its own as ``prepare_tokens`` does."""
    check_choice("level", level, LEVELS)
    if level == "character":
        return (
            np.frombuffer(train, np.uint8).astype(np.int64),
            np.frombuffer(val, np.uint8).astype(np.int64),
            256,
        )
    tok = book_tokenizer(profile)
    enc = tok.to_tiktoken()  # the same ids as tok.encode, faster

    def encode(b):
        return np.array(enc.encode(b.decode(), allowed_special="all"))

    return encode(train), encode(val), tok.vocab_size


def bits_by_order(
    counts: NgramCounts, val_ids, n_bytes: int, orders, **model
) -> list[float]:
    """Bits per byte of ``val_ids`` under ``NgramModel(counts, n, **model)``
    for each order n of ``orders``; the grams are looked up once."""
    grams = gram_ids(counts, val_ids)
    return [
        bits_per_byte(
            NgramModel(counts, n, **model).logprobs(val_ids, grams), n_bytes
        )
        for n in orders
    ]


# The baselines' settings: k and the discount are the chapter's (add-k's k
# about the best of 1, 0.1, 0.01 and 0.001 on this validation text).
BASELINE_ORDERS = {"character": 8, "token": 6}
BASELINE_MODELS = {
    "add-k": dict(smoothing="add-k", k=0.01),
    "kneser-ney": dict(smoothing="kneser-ney", discount=0.75),
}


def baselines(profile: str = "book", text_path=None) -> list[dict]:
    """The best n-gram models of the book's validation text, in a few
    seconds: for each level and smoothing, the order (1 ... 8 for
    characters, 1 ... 6 for tokens) with the fewest bits per byte. Rows:
    ``{"level", "smoothing", "order", "bits_per_byte"}``."""
    train, val = corpus_split(text_path)
    rows = []
    for level, max_order in BASELINE_ORDERS.items():
        tr, va, V = encode_split(train, val, level, profile)
        counts = count_ngrams(tr, max_order, V)
        orders = range(1, max_order + 1)
        for name, model in BASELINE_MODELS.items():
            bits = bits_by_order(counts, va, len(val), orders, **model)
            best = int(np.argmin(bits))
            rows.append(
                dict(
                    level=level,
                    smoothing=name,
                    order=orders[best],
                    bits_per_byte=bits[best],
                )
            )
    return rows
