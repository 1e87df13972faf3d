"""llmbook.ngram: counting against brute force, probabilities against
NLTK's nltk.lm (add-k as Lidstone/Laplace, Kneser-Ney as
KneserNeyInterpolated) on every n-gram of a held-out text, the book's
split against prepare_tokens, and every bad input's message."""

import math
from collections import Counter
from itertools import chain

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.lm import KneserNeyInterpolated, Laplace, Lidstone, Vocabulary
from nltk.util import ngrams

from llmbook import data, ngram
from llmbook.tokenizer import book_tokenizer

TEXT = data.load_shakespeare()[:2500]
HELD_OUT = data.load_shakespeare()[40_000:40_300]


def ids_of(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8).astype(np.int64)


def brute_counts(ids, order, V):
    """Counter of the k-grams (tuples, padding = V) ending at each token."""
    x = [V] * (order - 1) + list(ids)
    grams = Counter()
    for t in range(order - 1, len(x)):
        for k in range(1, order + 1):
            grams[tuple(x[t - k + 1 : t + 1])] += 1
    return grams


def gram_tuple(counts, k, g):
    """The symbols of gram ``g`` of level ``k``, from the keys."""
    base, out = counts.vocab_size + 1, []
    for level in range(k, 0, -1):
        key = int(counts.keys[level][g])
        out.append(key % base)
        g = key // base
    return tuple(reversed(out))


# ---------------------------------------------------------------------------
# Counting


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_counts_are_those_of_brute_force(order):
    ids = ids_of(TEXT[:400])
    c = ngram.count_ngrams(ids, order, 128)
    want = brute_counts(ids, order, 128)
    got = Counter()
    for k in range(1, order + 1):
        for g, n in enumerate(c.counts[k]):
            if n:
                got[gram_tuple(c, k, g)] = int(n)
    assert got == want
    assert c.n_tokens == len(ids) == c.counts[0][0]


def test_continuation_counts_and_totals_by_brute_force():
    ids = ids_of(TEXT[:600])
    order, V = 4, 128
    c = ngram.count_ngrams(ids, order, V)
    grams = brute_counts(ids, order, V)
    for k in range(1, order + 1):
        for g in range(len(c.keys[k])):
            gram = gram_tuple(c, k, g)
            if k < order:  # N1+(. g): distinct symbols before g
                before = {
                    s[0] for s in grams if len(s) == k + 1 and s[1:] == gram
                }
                assert c.continuations[k][g] == len(before)
        for h in range(len(c.keys[k - 1])):
            ctx = gram_tuple(c, k - 1, h) if k > 1 else ()
            after = {
                s: n for s, n in grams.items() if len(s) == k and s[:-1] == ctx
            }
            assert c.totals[k][h] == sum(after.values())
            assert c.followers[k][h] == len(after)


def test_gram_ids_find_the_training_grams_and_mark_the_others():
    ids = ids_of(TEXT)
    c = ngram.count_ngrams(ids, 3, 128)
    held = ids_of(HELD_OUT)
    grams = ngram.gram_ids(c, held)
    assert grams.shape == (4, len(held))
    assert (grams[0] == 0).all()
    x = [128, 128] + list(held)
    for t in range(len(held)):
        for k in (1, 2, 3):
            g = grams[k, t]
            gram = tuple(x[t + 2 - k + 1 : t + 3])
            if g >= 0:
                assert gram_tuple(c, k, g) == gram
            else:
                assert gram not in brute_counts(ids, 3, 128)
    share = ngram.unseen_share(c, held, 3)
    assert share == pytest.approx((grams[3] < 0).mean())
    assert 0 < share < 1
    assert ngram.unseen_share(c, ids, 3) == 0.0  # its own text: all seen


# ---------------------------------------------------------------------------
# Probabilities: equal to NLTK's, and distributions


def nltk_model(kind, train, order, V, **kw):
    """NLTK's model fit on the same k-grams (k = 1 ... order, each padded
    on the left with k - 1 "<s>"), over the symbols 0 ... V - 1 as strings
    plus "<s>" (NLTK adds "<UNK>" itself)."""
    seq = [str(i) for i in train]
    grams = chain.from_iterable(
        ngrams(seq, k, pad_left=True, left_pad_symbol="<s>")
        for k in range(1, order + 1)
    )
    vocab = Vocabulary([str(i) for i in range(V)] + ["<s>"])
    lm = kind(order=order, vocabulary=vocab, **kw)
    lm.fit([list(grams)])
    return lm


def nltk_probs(lm, held, order):
    x = ["<s>"] * (order - 1) + [str(i) for i in held]
    return np.array(
        [
            lm.score(x[t + order - 1], x[t : t + order - 1])
            for t in range(len(held))
        ]
    )


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("discount", [0.1, 0.75])
def test_kneser_ney_equals_nltk(order, discount):
    """NLTK's bottom level is N1+(. w) / N1+(. .), with no uniform floor:
    uniform=False. Every n-gram of a held-out text, to float rounding."""
    train, held = ids_of(TEXT), ids_of(HELD_OUT)
    lm = nltk_model(
        KneserNeyInterpolated, train, order, 128, discount=discount
    )
    c = ngram.count_ngrams(train, order, 128)
    ours = ngram.NgramModel(c, order, discount=discount, uniform=False)
    np.testing.assert_allclose(
        np.exp(ours.logprobs(held)), nltk_probs(lm, held, order), rtol=1e-12
    )


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("k", [1.0, 0.5, 0.01])
def test_add_k_equals_nltk_lidstone(order, k):
    """NLTK's vocabulary holds "<s>" and "<UNK>" besides the V symbols: its
    add-k spreads k over V + 2 symbols, so ours gets that vocab_size."""
    train, held = ids_of(TEXT), ids_of(HELD_OUT)
    if k == 1.0:
        lm = nltk_model(Laplace, train, order, 128)
    else:
        lm = nltk_model(Lidstone, train, order, 128, gamma=k)
    assert len(lm.vocab) == 130
    c = ngram.count_ngrams(train, order, 128)
    ours = ngram.NgramModel(c, order, "add-k", k=k, vocab_size=len(lm.vocab))
    np.testing.assert_allclose(
        np.exp(ours.logprobs(held)), nltk_probs(lm, held, order), rtol=1e-12
    )


def test_token_ids_and_a_symbol_never_seen_as_nltk():
    """Ids above 255 (a tokenizer's), and a held-out symbol that training
    never saw: NLTK's Kneser-Ney gives it 0, and so do we (uniform=False);
    with the uniform floor (the book's model) it gets a little mass."""
    rng = np.random.default_rng(0)
    V = 600
    train = rng.choice(np.arange(256, 300), size=800)
    held = np.concatenate([rng.choice(np.arange(256, 300), 50), [555, 256]])
    lm = nltk_model(KneserNeyInterpolated, train, 3, V, discount=0.75)
    theirs = nltk_probs(lm, held, 3)
    ours = ngram.NgramModel(ngram.count_ngrams(train, 3, V), 3, uniform=False)
    np.testing.assert_allclose(np.exp(ours.logprobs(held)), theirs, rtol=1e-12)
    assert theirs[-2] == 0.0
    floor = ngram.NgramModel(ngram.count_ngrams(train, 3, V), 3)
    assert 0 < np.exp(floor.logprobs(held))[-2] < 1e-3


@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney"])
@pytest.mark.parametrize("order", [1, 2, 4])
def test_probs_is_a_distribution_and_agrees_with_logprobs(smoothing, order):
    train, held = ids_of(TEXT), ids_of(HELD_OUT[:60])
    c = ngram.count_ngrams(train, 4, 128)
    m = ngram.NgramModel(c, order, smoothing, k=0.1)
    lp = m.logprobs(held)
    for t in range(len(held)):
        p = m.probs(held[:t])
        assert p.shape == (128,) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert math.log(p[held[t]]) == pytest.approx(lp[t], abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=60),
    st.lists(st.integers(0, 5), min_size=0, max_size=8),
    st.integers(1, 5),
    st.floats(0.0, 1.0),
)
def test_kneser_ney_sums_to_one_after_any_context(train, context, order, d):
    c = ngram.count_ngrams(train, order, 6)
    p = ngram.NgramModel(c, order, discount=d).probs(context)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert (p >= 0).all()
    if d > 1e-100:  # smaller ones leave unseen tokens a mass that underflows
        assert (p > 0).all()


def test_orders_share_one_count_table():
    """Counting to order 5 and using order 3 gives the order-3 model."""
    train, held = ids_of(TEXT), ids_of(HELD_OUT)
    big, small = (
        ngram.count_ngrams(train, 5, 128),
        ngram.count_ngrams(train, 3, 128),
    )
    for smoothing in ngram.SMOOTHINGS:
        a = ngram.NgramModel(big, 3, smoothing).logprobs(held)
        b = ngram.NgramModel(small, 3, smoothing).logprobs(held)
        np.testing.assert_allclose(a, b, rtol=1e-13)
    bits = ngram.bits_by_order(big, held, len(held), [1, 3, 5])
    one = ngram.bits_per_byte(
        ngram.NgramModel(big, 3).logprobs(held), len(held)
    )
    assert bits[1] == pytest.approx(one, rel=1e-13)


def test_sampling_is_seeded_and_follows_the_counts():
    c = ngram.count_ngrams(ids_of(TEXT), 4, 128)
    m = ngram.NgramModel(c, 4)
    a = m.sample(80, seed=1, context=ids_of("\n"))
    assert a == m.sample(80, seed=1, context=ids_of("\n"))
    assert a != m.sample(80, seed=2, context=ids_of("\n"))
    assert len(a) == 80 and all(0 <= i < 128 for i in a)
    assert m.sample(0, seed=1) == []
    # a context seen once, continued with probability close to 1
    unigram = ngram.NgramModel(c, 1, "add-k", k=1e-9)
    drawn = Counter(unigram.sample(3000, seed=3))
    top = Counter(ids_of(TEXT)).most_common(1)[0][0]
    assert drawn.most_common(1)[0][0] == top


# ---------------------------------------------------------------------------
# Bits per byte, the book's split, the baselines


def test_bits_per_byte():
    assert ngram.bits_per_byte(np.log([0.5] * 8), 8) == pytest.approx(1.0)
    assert ngram.bits_per_byte(np.log([0.25] * 4), 2) == pytest.approx(4.0)
    assert ngram.bits_per_byte([], 3) == 0.0
    assert ngram.bits_per_byte([-math.inf], 3) == math.inf


def test_the_split_is_the_training_chapters(tmp_path):
    """The same texts, and the same token ids, as prepare_tokens writes for
    the training chapter's GPT."""
    train, val = ngram.corpus_split()
    tok = book_tokenizer("smoke")
    meta = data.prepare_tokens(data.shakespeare_path(), tok, tmp_path)
    assert meta["val"]["bytes"] == len(val) and meta["train"]["bytes"] == len(
        train
    )
    tr, va, V = ngram.encode_split(train, val, "token", "smoke")
    assert V == tok.vocab_size == 512
    np.testing.assert_array_equal(va, data.load_tokens(tmp_path, "val"))
    np.testing.assert_array_equal(tr, data.load_tokens(tmp_path, "train"))
    ctr, cva, cV = ngram.encode_split(train, val, "character")
    assert cV == 256 and bytes(cva.astype(np.uint8)) == val
    assert len(ctr) == len(train)


def test_baselines_on_a_small_text(tmp_path):
    path = tmp_path / "plays.txt"
    path.write_text(data.load_shakespeare()[:60_000])
    rows = ngram.baselines("smoke", text_path=path)
    assert [(r["level"], r["smoothing"]) for r in rows] == [
        ("character", "add-k"),
        ("character", "kneser-ney"),
        ("token", "add-k"),
        ("token", "kneser-ney"),
    ]
    for r in rows:
        assert 1 <= r["order"] <= ngram.BASELINE_ORDERS[r["level"]]
        assert 1.0 < r["bits_per_byte"] < 8.0
    best = {(r["level"], r["smoothing"]): r["bits_per_byte"] for r in rows}
    assert best["character", "kneser-ney"] < best["character", "add-k"]


# ---------------------------------------------------------------------------
# Bad input: what was wrong and what to do


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: ngram.count_ngrams([1, 2], 0, 5),
            ValueError,
            "order must be",
        ),
        (
            lambda: ngram.count_ngrams([1, 2], 2, 0),
            ValueError,
            "vocab_size must",
        ),
        (lambda: ngram.count_ngrams([1, 9], 2, 5), ValueError, "holds id 9"),
        (
            lambda: ngram.count_ngrams([-1], 2, 5),
            ValueError,
            "outside the vocab",
        ),
        (lambda: ngram.count_ngrams([], 2, 5), ValueError, "nothing to count"),
        (lambda: ngram.count_ngrams([[1, 2]], 2, 5), ValueError, "1-D"),
        (
            lambda: ngram.count_ngrams([0.5, 1.0], 2, 5),
            TypeError,
            "encode text",
        ),
        (lambda: ngram.count_ngrams("abc", 2, 5), ValueError, "1-D"),
        (lambda: ngram.NgramModel([1, 2]), TypeError, "count_ngrams"),
        (lambda: ngram.bits_per_byte([0.5], 1), ValueError, "np.log"),
        (lambda: ngram.bits_per_byte([-1.0], 0), ValueError, "n_bytes"),
        (lambda: ngram.bits_per_byte([[-1.0]], 1), ValueError, "1-D"),
        (lambda: ngram.corpus_split(val_fraction=1), ValueError, "exclusive"),
        (lambda: ngram.encode_split(b"", b"", "word"), ValueError, "level"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_bad_model_settings():
    c = ngram.count_ngrams([1, 2, 3], 3, 5)
    with pytest.raises(ValueError, match=r"order must be an int in \[1, 3\]"):
        ngram.NgramModel(c, 4)
    with pytest.raises(ValueError, match="unknown smoothing 'laplace'"):
        ngram.NgramModel(c, smoothing="laplace")
    with pytest.raises(ValueError, match="k must be > 0 for add-k"):
        ngram.NgramModel(c, smoothing="add-k", k=0)
    with pytest.raises(
        ValueError, match=r"discount must be a number in \[0, 1\]"
    ):
        ngram.NgramModel(c, discount=1.5)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 5"):
        ngram.NgramModel(c, smoothing="add-k", vocab_size=4)
    m = ngram.NgramModel(c)
    with pytest.raises(ValueError, match="holds id 7"):
        m.probs([7])
    with pytest.raises(ValueError, match="n_tokens must be"):
        m.sample(-1, seed=0)
    with pytest.raises(ValueError, match=r"order must be an int in \[1, 3\]"):
        ngram.gram_ids(c, [1], order=4)
    assert "kneser-ney" in repr(m) and "order=3" in repr(m)
    assert m.logprobs([]).shape == (0,)


# ---------------------------------------------------------------------------
# The exercises (imported here: their registry is built on import)


def test_the_addk_reference_is_the_packages_add_k():
    from llmbook.exercises.ch3 import addk_probs, bigram_counts

    text = TEXT.encode()
    c = ngram.count_ngrams(ids_of(TEXT), 2, 128)
    m = ngram.NgramModel(c, 2, "add-k", k=0.3)
    table = addk_probs(bigram_counts(text, 128), 0.3)
    for h in sorted(set(text))[:20]:
        np.testing.assert_allclose(table[h].numpy(), m.probs([h]), rtol=1e-12)


def _planted():
    def addk_no_k_in_denominator(counts, k):
        if k <= 0 or counts.ndim != 2 or (counts < 0).any():
            raise ValueError
        c = counts.double()
        return (c + k) / (c.sum(1, keepdim=True) + k)

    def addk_columns(counts, k):  # normalises over contexts, not symbols
        if k <= 0 or counts.ndim != 2 or (counts < 0).any():
            raise ValueError
        c = counts.double() + k
        return c / c.sum(0, keepdim=True)

    def addk_no_checks(counts, k):
        c = counts.double()
        return (c + k) / (c.sum(-1, keepdim=True) + k * c.shape[-1])

    def bpb_nats(logprobs, n_bytes):  # forgets ln 2
        if n_bytes < 1 or (logprobs > 0).any():
            raise ValueError
        return float(-logprobs.sum() / n_bytes)

    def bpb_per_token(logprobs, n_bytes):  # divides by tokens
        if n_bytes < 1 or (logprobs > 0).any():
            raise ValueError
        return float(-logprobs.sum() / math.log(2) / max(len(logprobs), 1))

    def bpb_no_checks(logprobs, n_bytes):
        return float(-logprobs.sum() / math.log(2) / max(n_bytes, 1))

    def unseen_distinct(train, val, n):  # counts each new n-gram once
        if n < 1 or len(val) < n:
            raise ValueError
        seen = {tuple(train[i : i + n]) for i in range(len(train) - n + 1)}
        grams = {tuple(val[i : i + n]) for i in range(len(val) - n + 1)}
        return sum(g not in seen for g in grams) / len(grams)

    def unseen_last_window_lost(train, val, n):  # range(len - n)
        if n < 1 or len(val) <= n:
            raise ValueError
        seen = {tuple(train[i : i + n]) for i in range(len(train) - n)}
        grams = [tuple(val[i : i + n]) for i in range(len(val) - n)]
        return sum(g not in seen for g in grams) / len(grams)

    def unseen_no_checks(train, val, n):
        seen = {tuple(train[i : i + n]) for i in range(len(train) - n + 1)}
        grams = [tuple(val[i : i + n]) for i in range(len(val) - n + 1)]
        return sum(g not in seen for g in grams) / max(len(grams), 1)

    return [
        ("3.1", addk_no_k_in_denominator),
        ("3.1", addk_columns),
        ("3.1", addk_no_checks),
        ("3.2", bpb_nats),
        ("3.2", bpb_per_token),
        ("3.2", bpb_no_checks),
        ("3.3", unseen_distinct),
        ("3.3", unseen_last_window_lost),
        ("3.3", unseen_no_checks),
    ]


def test_the_checks_pass_a_solution_and_catch_planted_mistakes():
    from llmbook.exercises import EXERCISES, run_check

    assert EXERCISES["3.1"].name == "my_addk_probs"

    def my_addk_probs(counts, k):
        if counts.ndim != 2 or counts.is_floating_point():
            raise ValueError("counts: a 2-D integer tensor")
        if (counts < 0).any() or k <= 0:
            raise ValueError("counts >= 0 and k > 0")
        c = counts.to(torch.float64)
        return (c + k) / (c.sum(1, keepdim=True) + k * c.shape[1])

    def my_bits_per_byte(logprobs, n_bytes):
        if n_bytes < 1 or (logprobs > 0).any():
            raise ValueError("n_bytes >= 1 and log-probabilities <= 0")
        return float(-logprobs.sum() / math.log(2) / n_bytes)

    assert run_check("3.1", my_addk_probs).passed
    assert run_check("3.2", my_bits_per_byte).passed
    for exercise_id, wrong in _planted():
        result = run_check(exercise_id, wrong)
        assert not result.passed, wrong.__name__
        assert "input:" in result.message and "expected" in result.message
