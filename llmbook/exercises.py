"""Checks for the book's coding exercises: ``check("2.2", my_merge)``.

Each coding exercise asks for one function. ``check`` calls it on the same
inputs as the package's own implementation (random ones from fixed seeds,
then edge cases and, where the package refuses an input, that input too:
the reader's function must then raise ValueError or TypeError) and prints
one line when every case agrees. Otherwise it prints the first case that
failed: the input, what was expected, what came back and where the two
first differ (an index, a shape, a dtype). It never shows the solution.

A function that raises ``NotImplementedError`` on the first case (the stub
in the chapter) is "not attempted yet": ``check`` says so and does not fail,
so that the chapters run top to bottom before anyone has written a line.

``run_check`` returns a ``Result`` instead of printing, for the tests.
Nothing here needs trained weights, data files or a network.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "check",
    "run_check",
    "Result",
    "EXERCISES",
    "exercise_ids",
    "exercise_tokenizer",
    "buggy_train_step",
]


# ---------------------------------------------------------------------------
# Cases, results, and how two answers are compared


@dataclass
class Case:
    """One call: ``fn(*args)``; ``desc`` says what the case is about."""

    args: tuple
    desc: str = ""


@dataclass
class Raises:
    """What the package did with a bad input: raised ``kind: message``."""

    kind: str
    message: str


@dataclass
class Exercise:
    id: str  # "2.2": chapter, then the exercise's number in the chapter
    label: str  # the MyST label of the exercise directive
    name: str  # the function the reader writes
    params: tuple[str, ...]  # its parameters, to show the inputs by name
    reference: Callable  # the package's answer, same signature
    cases: Callable[[], list[Case]]
    rtol: float = 1e-5
    atol: float = 1e-6
    # observe(fn, args) -> what is compared; default: fn(*args). Exercises
    # whose function mutates state (a cache, a model) observe that state.
    observe: Callable | None = None


@dataclass
class Result:
    id: str
    passed: bool
    attempted: bool
    n_cases: int
    message: str = ""
    failed_case: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class _Got:
    value: Any = None
    error: BaseException | None = None


def _short(value: Any, limit: int = 240) -> str:
    """A one-line description of a value, in ASCII (the PDF's fonts)."""
    if hasattr(value, "_exercise_repr"):
        text = value._exercise_repr()
    elif isinstance(value, torch.Tensor):
        if value.numel() <= 16:
            v = value.tolist()
            if value.is_floating_point():
                v = _round(v)
            text = f"tensor({v}, dtype={str(value.dtype)[6:]})"
        else:
            text = (
                f"tensor of shape {tuple(value.shape)}, "
                f"dtype={str(value.dtype)[6:]}"
            )
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, Raises):
        text = f"raises {value.kind}: {value.message}"
    elif isinstance(value, dict) and any(
        isinstance(v, (torch.Tensor, list, tuple, float))
        for v in value.values()
    ):
        text = (
            "{"
            + ", ".join(
                f"{_short(k)}: {_short(v, limit)}" for k, v in value.items()
            )
            + "}"
        )
    elif isinstance(value, (list, tuple)) and any(
        isinstance(v, (torch.Tensor, list, tuple, float, type(None)))
        for v in value
    ):
        inner = ", ".join(_short(v, limit) for v in value)
        if isinstance(value, tuple):
            text = "(" + inner + ("," if len(value) == 1 else "") + ")"
        else:
            text = "[" + inner + "]"
    else:
        text = ascii(value)
    if len(text) > limit:
        text = text[: limit - 5] + " ..."
    return text


def _round(v):
    if isinstance(v, list):
        return [_round(x) for x in v]
    return round(v, 4) if math.isfinite(v) else v


def _index(t: torch.Tensor) -> tuple:
    return tuple(int(i) for i in t.tolist())


def _tensor_diff(exp, got, rtol, atol, path):
    """None, or (where, how) ``got`` differs from the tensor ``exp``."""
    if not isinstance(got, torch.Tensor):
        return path, f"expected a torch.Tensor, got {type(got).__name__}"
    if tuple(exp.shape) != tuple(got.shape):
        return path, (
            f"expected shape {tuple(exp.shape)}, got shape {tuple(got.shape)}"
        )
    exact = exp.dtype == torch.bool or not exp.is_floating_point()
    if exact:
        if got.dtype != exp.dtype:
            return path, f"expected dtype {exp.dtype}, got {got.dtype}"
        bad = (exp != got).nonzero()
        if len(bad):
            i = _index(bad[0])
            return f"{path}{list(i) if i else ''}", (
                f"expected {exp[i].item()}, got {got[i].item()} ({len(bad)} "
                f"of {exp.numel()} entries differ)"
            )
        return None
    if not got.is_floating_point():
        return path, f"expected a float tensor ({exp.dtype}), got {got.dtype}"
    g = got.detach().to(exp.dtype).cpu()
    e = exp.detach().cpu()
    close = torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if not bool(close.all()):
        bad = (~close).nonzero()
        i = _index(bad[0])
        return f"{path}{list(i) if i else ''}", (
            f"expected {e[i].item():.6g}, got {g[i].item():.6g} ({len(bad)} "
            f"of {e.numel()} entries differ)"
        )
    return None


def _diff(exp, got, rtol, atol) -> str | None:
    """None if ``got`` matches ``exp``, else where and how it first differs.
    Tensors are compared within ``rtol``/``atol``; everything else exactly.
    """
    found = _first_diff(exp, got, rtol, atol, "")
    if found is None:
        return None
    where, how = found
    return f"first difference at {where}: {how}" if where else how


def _first_diff(exp, got, rtol, atol, path):
    if isinstance(exp, torch.Tensor):
        return _tensor_diff(exp, got, rtol, atol, path)
    if (
        isinstance(got, torch.Tensor)
        and got.numel() == 1
        and not isinstance(exp, (list, tuple, dict))
    ):
        got = got.item()
    if isinstance(exp, bool) or exp is None:
        if got is not exp and got != exp:
            return path, f"expected {exp!r}, got {_short(got)}"
        return None
    if isinstance(exp, float):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return path, f"expected a number, got {type(got).__name__}"
        if not math.isclose(got, exp, rel_tol=rtol, abs_tol=atol) and not (
            math.isnan(exp) and math.isnan(got)
        ):
            return path, f"expected {exp:.6g}, got {got:.6g}"
        return None
    if isinstance(exp, int):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return path, f"expected an int, got {type(got).__name__}"
        if got != exp:
            return path, f"expected {exp:,}, got {got:,}"
        return None
    if isinstance(exp, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return path, (
                f"expected a {type(exp).__name__} of length "
                f"{len(exp)}, got {type(got).__name__}"
            )
        for i, (e, g) in enumerate(zip(exp, got)):
            found = _first_diff(e, g, rtol, atol, f"{path}[{i}]")
            if found:
                return found
        if len(exp) != len(got):
            return path, (
                f"expected length {len(exp)}, got length "
                f"{len(got)} (equal up to index "
                f"{min(len(exp), len(got))})"
            )
        return None
    if isinstance(exp, str):
        if not isinstance(got, str):
            return path, f"expected a str, got {type(got).__name__}"
        for i, (e, g) in enumerate(zip(exp, got)):
            if e != g:
                return f"{path}[{i}]", (
                    f"expected character {ascii(e)}, got {ascii(g)}"
                )
        if len(exp) != len(got):
            return path, (
                f"expected length {len(exp)}, got length "
                f"{len(got)} (equal up to index "
                f"{min(len(exp), len(got))})"
            )
        return None
    if isinstance(exp, dict):
        if not isinstance(got, dict):
            return path, f"expected a dict, got {type(got).__name__}"
        missing = [k for k in exp if k not in got]
        extra = [k for k in got if k not in exp]
        if missing:
            return path, (
                f"missing key {_short(missing[0])} (expected "
                f"{_short(exp[missing[0]])}; {len(missing)} "
                "missing)"
            )
        if extra:
            return path, (
                f"unexpected key {_short(extra[0])} (value "
                f"{_short(got[extra[0]])}; {len(extra)} extra)"
            )
        for k in exp:
            found = _first_diff(
                exp[k], got[k], rtol, atol, f"{path}[{_short(k)}]"
            )
            if found:
                return found
        return None
    if exp != got:
        return path, f"expected {_short(exp)}, got {_short(got)}"
    return None


def _call(fn, args, observe) -> _Got:
    args = copy.deepcopy(args)  # neither side may see the other's changes
    try:
        value = observe(fn, args) if observe else fn(*args)
    except Exception as e:  # noqa: BLE001 - any failure is reported
        return _Got(error=e)
    return _Got(value=value)


def _error_text(e: BaseException) -> str:
    text = (
        f"{type(e).__name__}: {e}".splitlines()[0]
        if str(e)
        else type(e).__name__
    )
    return text if len(text) < 200 else text[:195] + " ..."


def run_check(exercise_id: str, fn: Callable) -> Result:
    """Compare ``fn`` with the package on every case of the exercise."""
    ex = _get(exercise_id)
    fname = getattr(fn, "__name__", "your function")
    head = f"Exercise {ex.id} ({fname})"
    if not callable(fn):
        return Result(
            ex.id,
            False,
            True,
            0,
            f"{head}: expected a function, got {type(fn).__name__}",
        )
    cases = ex.cases()
    for n, case in enumerate(cases, start=1):
        exp = _call(ex.reference, case.args, ex.observe)
        if exp.error is not None and not isinstance(
            exp.error, (ValueError, TypeError)
        ):
            raise RuntimeError(
                f"the reference failed on case {n} of {ex.id}: {exp.error!r}"
            ) from exp.error
        got = _call(fn, case.args, ex.observe)
        if n == 1 and isinstance(got.error, NotImplementedError):
            return Result(
                ex.id,
                False,
                False,
                len(cases),
                f"{head}: not attempted yet.",
            )
        problem = None
        if exp.error is not None:  # a bad input: the reader must refuse it
            if got.error is None:
                problem = (
                    "expected: an error (ValueError or TypeError); "
                    f"the package raises {_error_text(exp.error)}\n"
                    f"  got:      returned {_short(got.value)}"
                )
            elif not isinstance(got.error, (ValueError, TypeError)):
                problem = (
                    "expected: ValueError or TypeError; the package "
                    f"raises {_error_text(exp.error)}\n"
                    f"  got:      {_error_text(got.error)}"
                )
        elif got.error is not None:
            problem = (
                f"expected: {_short(exp.value)}\n"
                f"  got:      raised {_error_text(got.error)}"
            )
        else:
            d = _diff(exp.value, got.value, ex.rtol, ex.atol)
            if d is not None:
                hint = ""
                if got.value is None:
                    hint = " (a missing return statement?)"
                problem = (
                    f"expected: {_short(exp.value)}\n"
                    f"  got:      {_short(got.value)}{hint}"
                )
                if (
                    not d.startswith("expected ")
                    or "shape" in d
                    or "type" in d
                    or " a " in d
                ):
                    problem += f"\n  {d}"
        if problem is not None:
            shown = ", ".join(
                f"{p}={_short(a, 120)}" for p, a in zip(ex.params, case.args)
            )
            what = f" [{case.desc}]" if case.desc else ""
            msg = (
                f"{head}: failed on case {n} of {len(cases)}{what}\n"
                f"  input:    {shown}\n  {problem}"
            )
            return Result(ex.id, False, True, len(cases), msg, n)
    return Result(
        ex.id,
        True,
        True,
        len(cases),
        f"{head}: passed all {len(cases)} cases.",
    )


def _one_thread(run):
    """Run with one torch thread: the cases are tiny, and two threads on a
    busy machine can be many times slower (OpenMP barriers)."""

    def wrapped(*args):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run(*args)
        finally:
            torch.set_num_threads(n)

    wrapped.__doc__ = run.__doc__
    wrapped.__name__ = run.__name__
    return wrapped


run_check = _one_thread(run_check)


def check(exercise_id: str, fn: Callable) -> None:
    """Check the reader's ``fn`` for exercise ``exercise_id`` ("2.2") and
    print the verdict: passed, not attempted yet, or the first failing case.
    """
    print(run_check(exercise_id, fn).message)


EXERCISES: dict[str, Exercise] = {}


def _register(ex: Exercise) -> Exercise:
    EXERCISES[ex.id] = ex
    return ex


def _get(exercise_id: str) -> Exercise:
    if exercise_id not in EXERCISES:
        raise KeyError(
            f"no exercise {exercise_id!r}; the checked ones are "
            f"{', '.join(EXERCISES)}"
        )
    return EXERCISES[exercise_id]


def exercise_ids() -> list[str]:
    return list(EXERCISES)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed: int, scale: float = 1.0, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype) * scale


# ---------------------------------------------------------------------------
# Chapter 1: what we will build


def _next_token_examples(ids, block_size):
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be an int, got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    ids = list(ids)
    return [
        (ids[max(0, t - block_size) : t], ids[t]) for t in range(1, len(ids))
    ]


def _cases_1_1():
    rng = random.Random(11)
    cases = [
        Case(([3, 1, 4, 1, 5], 3), "the chapter's kind of window"),
        Case(([7], 4), "one id: nothing to predict"),
        Case(([], 2), "no ids"),
        Case(([5, 6], 1), "block_size 1"),
    ]
    for _ in range(20):
        ids = [rng.randrange(50) for _ in range(rng.randrange(2, 14))]
        cases.append(Case((ids, rng.randrange(1, 8)), "random"))
    cases += [
        Case(([1, 2, 3], 0), "block_size 0"),
        Case(([1, 2, 3], -2), "negative block_size"),
    ]
    return cases


_register(
    Exercise(
        "1.1",
        "ex-pipeline-pairs",
        "next_token_examples",
        ("ids", "block_size"),
        _next_token_examples,
        _cases_1_1,
    )
)


def _byte_counts(text):
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    counts = [0] * 256
    for b in text.encode("utf-8"):
        counts[b] += 1
    return counts


def _cases_1_2():
    rng = random.Random(12)
    alphabet = "abc xyz,.\n" + "\u00e9\u00fc\u20ac\u4e2d\U0001f600"
    cases = [
        Case(("hello",), "ASCII"),
        Case(("",), "empty"),
        Case(("na\u00efve caf\u00e9",), "accented letters"),
        Case(("\u20ac",), "one character, three bytes"),
    ]
    for _ in range(16):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
        cases.append(Case((s,), "random"))
    cases += [Case((b"bytes",), "bytes, not str"), Case((42,), "an int")]
    return cases


_register(
    Exercise(
        "1.2",
        "ex-pipeline-bytes",
        "byte_counts",
        ("text",),
        _byte_counts,
        _cases_1_2,
    )
)


def _mean_nll(probs, targets):
    from llmbook.loss import cross_entropy

    if not isinstance(probs, torch.Tensor) or probs.ndim != 2:
        raise ValueError("probs must be a (N, V) tensor")
    return cross_entropy(torch.log(probs), targets).item()


def _cases_1_3():
    cases = [
        Case(
            (torch.full((4, 10), 0.1), torch.tensor([0, 3, 9, 3])),
            "uniform over 10 ids: ln 10",
        )
    ]
    for seed in range(12):
        n, v = 3 + seed % 5, 5 + 3 * seed
        logits = _randn(n, v, seed=seed, scale=1 + seed % 3)
        targets = torch.randint(v, (n,), generator=_gen(100 + seed))
        cases.append(Case((logits.softmax(-1), targets), f"seed {seed}"))
    p = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    cases += [
        Case((p, torch.tensor([0, 2])), "hand-made"),
        Case((p, torch.tensor([0, 1, 2])), "3 targets for 2 rows"),
    ]
    return cases


_register(
    Exercise(
        "1.3",
        "ex-pipeline-nll",
        "mean_nll",
        ("probs", "targets"),
        _mean_nll,
        _cases_1_3,
    )
)


# ---------------------------------------------------------------------------
# Chapter 2: tokenization


def _pair_counts(ids):
    counts: dict = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _bpe_step(ids, new_id):
    from llmbook.tokenizer import merge

    ids = list(ids)
    if len(ids) < 2:
        raise ValueError(f"need at least two ids to find a pair, got {ids}")
    counts = _pair_counts(ids)
    # ties: the greater pair wins (as train_bpe, for single-byte tokens)
    pair = max(counts, key=lambda p: (counts[p], p))
    return pair, merge(ids, pair, new_id)


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


_register(
    Exercise(
        "2.1",
        "ex-tok-step",
        "bpe_step",
        ("ids", "new_id"),
        _bpe_step,
        _cases_2_1,
    )
)

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
        from llmbook.tokenizer import Tokenizer, train_bpe

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


def _cases_2_2():
    import regex

    from llmbook.tokenizer import GPT2_PATTERN

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


_register(
    Exercise(
        "2.2",
        "ex-tok-encode",
        "encode_word",
        ("word", "merges"),
        _encode_word,
        _cases_2_2,
    )
)


class _Vocab(dict):
    """A vocabulary dict that describes itself briefly in messages."""

    def _exercise_repr(self):
        extra = {i: v for i, v in self.items() if i >= 256}
        return f"<256 bytes + {len(extra)} merged tokens: {_short(extra, 90)}>"

    def __deepcopy__(self, memo):
        return _Vocab(self)


def _decode(ids, vocab):
    from llmbook.tokenizer import Tokenizer

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


_register(
    Exercise(
        "2.3",
        "ex-tok-decode",
        "my_decode",
        ("ids", "vocab"),
        _decode,
        _cases_2_3,
    )
)


# ---------------------------------------------------------------------------
# Chapter 3: attention


def _causal_mask(t_q, t_k):
    from llmbook.attention import causal_mask

    for name, t in (("t_q", t_q), ("t_k", t_k)):
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"{name} must be a positive int, got {t!r}")
    if t_q > t_k:
        raise ValueError(f"more queries ({t_q}) than keys ({t_k})")
    return causal_mask(t_q, t_k)


def _cases_3_1():
    cases = [
        Case((4, 4), "square"),
        Case((1, 1), "one position"),
        Case((1, 6), "one new query after 5 cached keys"),
        Case((3, 7), "a chunk of 3 queries after 4 cached keys"),
    ]
    cases += [Case((t, t), "square") for t in (2, 5, 9)]
    cases += [Case((q, k), "T_q < T_k") for q, k in ((2, 3), (5, 8), (4, 9))]
    cases += [
        Case((5, 3), "more queries than keys"),
        Case((0, 3), "no queries"),
    ]
    return cases


_register(
    Exercise(
        "3.1",
        "ex-att-mask",
        "my_causal_mask",
        ("t_q", "t_k"),
        _causal_mask,
        _cases_3_1,
    )
)


def _attention(q, k, v):
    from llmbook.attention import causal_attention

    return causal_attention(q, k, v)


def _cases_3_2():
    cases = []
    shapes = [
        ((1, 1, 4, 8), 4),
        ((2, 3, 5, 4), 5),
        ((1, 2, 6, 16), 6),
        ((2, 2, 1, 8), 7),
        ((1, 4, 3, 8), 9),
        ((3, 1, 7, 2), 7),
    ]
    for seed, ((b, h, tq, d), tk) in enumerate(shapes):
        q = _randn(b, h, tq, d, seed=seed, scale=2.0)
        k = _randn(b, h, tk, d, seed=50 + seed, scale=2.0)
        v = _randn(b, h, tk, d, seed=90 + seed)
        what = "T_q == T_k" if tq == tk else "T_q < T_k: cached keys"
        cases.append(Case((q, k, v), f"{what}, head size {d}"))
    q = _randn(1, 1, 5, 4, seed=7)
    cases.append(
        Case(
            (q, _randn(1, 1, 3, 4, seed=8), _randn(1, 1, 3, 4, seed=9)),
            "more queries than keys",
        )
    )
    return cases


_register(
    Exercise(
        "3.2",
        "ex-att-sdpa",
        "my_attention",
        ("q", "k", "v"),
        _attention,
        _cases_3_2,
    )
)


def _split_heads(x, n_head):
    if x.ndim != 3:
        raise ValueError(f"x must be (B, T, C), got shape {tuple(x.shape)}")
    B, T, C = x.shape
    if C % n_head:
        raise ValueError(f"C={C} is not divisible by n_head={n_head}")
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)


def _cases_3_3():
    cases = []
    for seed, (b, t, c, h) in enumerate(
        [
            (1, 3, 8, 2),
            (2, 5, 12, 3),
            (2, 4, 16, 4),
            (1, 1, 6, 6),
            (3, 2, 8, 1),
            (2, 6, 12, 2),
        ]
    ):
        cases.append(Case((_randn(b, t, c, seed=seed), h), "random"))
    cases += [
        Case((_randn(2, 3, 10, seed=9), 4), "10 channels, 4 heads"),
        Case((_randn(3, 8, seed=9), 2), "no batch axis"),
    ]
    return cases


_register(
    Exercise(
        "3.3",
        "ex-att-split",
        "split_heads",
        ("x", "n_head"),
        _split_heads,
        _cases_3_3,
    )
)


def _merge_heads(y):
    if y.ndim != 4:
        raise ValueError(f"y must be (B, nh, T, hs), got {tuple(y.shape)}")
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)


def _cases_3_4():
    cases = []
    for seed, shape in enumerate(
        [
            (1, 2, 3, 4),
            (2, 3, 5, 4),
            (2, 4, 4, 4),
            (1, 6, 1, 1),
            (3, 1, 2, 8),
            (2, 2, 6, 6),
        ]
    ):
        cases.append(Case((_randn(*shape, seed=seed),), "random"))
    cases.append(Case((_randn(2, 3, 4, seed=9),), "3-D input"))
    return cases


_register(
    Exercise(
        "3.4", "ex-att-merge", "merge_heads", ("y",), _merge_heads, _cases_3_4
    )
)


# ---------------------------------------------------------------------------
# Chapter 4: the GPT model


def _rope(x, cos, sin, offset):
    from llmbook.attention import apply_rope

    return apply_rope(x, cos, sin, offset)


def _cases_4_1():
    from llmbook.attention import precompute_rope

    cases = []
    for seed, (shape, block, off) in enumerate(
        [
            ((1, 1, 4, 8), 8, 0),
            ((2, 3, 5, 4), 8, 0),
            ((1, 2, 3, 16), 16, 5),
            ((1, 1, 1, 8), 32, 31),
            ((2, 2, 6, 2), 6, 0),
            ((4, 8), 10, 2),
        ]
    ):
        cos, sin = precompute_rope(shape[-1], block)
        what = f"offset {off}" + (", (T, hs) only" if len(shape) == 2 else "")
        cases.append(Case((_randn(*shape, seed=seed), cos, sin, off), what))
    cos, sin = precompute_rope(8, 4)
    cases.append(
        Case(
            (_randn(1, 1, 3, 8, seed=9), cos, sin, 2),
            "positions past the end of the tables",
        )
    )
    return cases


_register(
    Exercise(
        "4.1",
        "ex-model-rope",
        "my_rope",
        ("x", "cos", "sin", "offset"),
        _rope,
        _cases_4_1,
    )
)


def _rmsnorm(x, weight, eps):
    from llmbook.model import RMSNorm

    norm = RMSNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def _cases_4_2():
    cases = []
    for seed, (shape, eps, scale) in enumerate(
        [
            ((2, 3, 8), 1e-5, 1.0),
            ((4, 16), 1e-5, 3.0),
            ((1, 1, 5), 1e-6, 1.0),
            ((2, 2, 2, 6), 1e-5, 0.5),
            ((3, 32), 0.1, 1.0),
        ]
    ):
        x = _randn(*shape, seed=seed, scale=scale) + 0.5 * seed
        w = 1 + _randn(shape[-1], seed=40 + seed, scale=0.3)
        cases.append(Case((x, w, eps), f"eps={eps}"))
    x = torch.full((2, 4), 1e-3)
    cases.append(Case((x, torch.ones(4), 1e-5), "tiny inputs: eps matters"))
    cases.append(Case((torch.zeros(1, 3), torch.ones(3), 1e-5), "all zeros"))
    return cases


_register(
    Exercise(
        "4.2",
        "ex-model-rmsnorm",
        "my_rmsnorm",
        ("x", "weight", "eps"),
        _rmsnorm,
        _cases_4_2,
    )
)


def _count_parameters(config):
    from llmbook.model import GPT

    with torch.device("meta"):  # shapes only: GPT-2 costs no memory
        return GPT(config).num_parameters()


def _cases_4_3():
    from llmbook.model import GPTConfig

    tiny = dict(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=8)
    cases = [
        Case((GPTConfig.preset("tiny"),), "tiny preset (GPT-2 style)"),
        Case((GPTConfig.preset("book"),), "book preset (LLaMA style)"),
        Case((GPTConfig.preset("gpt2"),), "GPT-2 small"),
    ]
    variants = [
        dict(tie_weights=False),
        dict(bias=False),
        dict(positions="rope"),
        dict(norm="rmsnorm"),
        dict(mlp="swiglu"),
        dict(mlp="swiglu", n_embd=96, n_head=4),
        dict(
            positions="rope",
            norm="rmsnorm",
            mlp="swiglu",
            bias=False,
            tie_weights=False,
        ),
    ]
    for v in variants:
        desc = ", ".join(f"{k}={val!r}" for k, val in v.items())
        cases.append(Case((GPTConfig(**{**tiny, **v}),), desc))
    cases.append(
        Case(
            (GPTConfig.preset("book", tie_weights=False),),
            "book preset, untied",
        )
    )
    return cases


_register(
    Exercise(
        "4.3",
        "ex-model-count",
        "count_parameters",
        ("config",),
        _count_parameters,
        _cases_4_3,
    )
)


# ---------------------------------------------------------------------------
# Appendix A: backpropagation by hand


def _softmax_backward(dout, p):
    from llmbook import manual_grad as mg

    return mg.softmax_backward(dout, p)


def _cases_a_1():
    cases = []
    for seed, shape in enumerate([(5,), (3, 4), (2, 3, 6), (1, 1), (4, 10)]):
        p = _randn(*shape, seed=seed, scale=2.0, dtype=torch.float64)
        p = p.softmax(-1)
        dout = _randn(*shape, seed=30 + seed, dtype=torch.float64)
        cases.append(Case((dout, p), "random"))
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    cases.append(
        Case(
            (torch.tensor([[1.0, -2.0, 3.0, 4.0]], dtype=torch.float64), p),
            "masked entries (p = 0)",
        )
    )
    return cases


_register(
    Exercise(
        "A.1",
        "ex-bp-softmax",
        "my_softmax_backward",
        ("dout", "p"),
        _softmax_backward,
        _cases_a_1,
        rtol=1e-7,
        atol=1e-9,
    )
)


def _layernorm_backward(dout, x, w, b, eps):
    from llmbook import manual_grad as mg

    _, cache = mg.layernorm_forward(x, w, b, eps)
    return mg.layernorm_backward(dout, cache)


def _cases_a_2():
    cases = []
    for seed, (shape, bias) in enumerate(
        [
            ((4, 6), True),
            ((2, 3, 8), True),
            ((5, 4), False),
            ((1, 1, 3), True),
            ((2, 2, 2, 5), False),
        ]
    ):
        c = shape[-1]
        x = _randn(*shape, seed=seed, scale=3.0, dtype=torch.float64) + seed
        w = 1 + _randn(c, seed=20 + seed, scale=0.5, dtype=torch.float64)
        b = _randn(c, seed=40 + seed, dtype=torch.float64) if bias else None
        dout = _randn(*shape, seed=60 + seed, dtype=torch.float64)
        cases.append(
            Case(
                (dout, x, w, b, 1e-5),
                "with bias" if bias else "no bias (b is None)",
            )
        )
    return cases


_register(
    Exercise(
        "A.2",
        "ex-bp-layernorm",
        "my_layernorm_backward",
        ("dout", "x", "w", "b", "eps"),
        _layernorm_backward,
        _cases_a_2,
        rtol=1e-7,
        atol=1e-9,
    )
)


def _linear_backward(dout, x, w):
    from llmbook import manual_grad as mg

    if x.shape[-1] != w.shape[1] or dout.shape[-1] != w.shape[0]:
        raise ValueError("shapes do not fit y = x @ w.T")
    _, cache = mg.linear_forward(x, w)
    dx, dw, _ = mg.linear_backward(dout, cache)
    return dx, dw


def _cases_a_3():
    cases = []
    for seed, (lead, n_in, n_out) in enumerate(
        [
            ((4,), 3, 5),
            ((2, 3), 4, 4),
            ((1,), 1, 1),
            ((2, 5), 6, 2),
            ((2, 2, 3), 3, 7),
        ]
    ):
        x = _randn(*lead, n_in, seed=seed, dtype=torch.float64)
        w = _randn(n_out, n_in, seed=20 + seed, dtype=torch.float64)
        dout = _randn(*lead, n_out, seed=40 + seed, dtype=torch.float64)
        cases.append(
            Case((dout, x, w), f"x {tuple(x.shape)}, w {tuple(w.shape)}")
        )
    cases.append(
        Case(
            (
                _randn(2, 3, seed=1, dtype=torch.float64),
                _randn(2, 4, seed=2, dtype=torch.float64),
                _randn(5, 4, seed=3, dtype=torch.float64),
            ),
            "dout has 3 features but w has 5 outputs",
        )
    )
    return cases


_register(
    Exercise(
        "A.3",
        "ex-bp-linear",
        "my_linear_backward",
        ("dout", "x", "w"),
        _linear_backward,
        _cases_a_3,
        rtol=1e-7,
        atol=1e-9,
    )
)


# ---------------------------------------------------------------------------
# Chapter 5: training


def _lr_at(step, lr, min_lr, warmup, max_steps):
    from llmbook.optim import lr_at

    return lr_at(
        step, lr=lr, min_lr=min_lr, warmup=warmup, max_steps=max_steps
    )


def _cases_5_1():
    cases = []
    for step in [0, 1, 9, 10, 11, 50, 99, 100, 150]:
        cases.append(Case((step, 1e-3, 1e-4, 10, 100), f"step {step}"))
    rng = random.Random(51)
    for _ in range(15):
        warmup = rng.randrange(1, 40)
        max_steps = warmup + rng.randrange(1, 200)
        step = rng.randrange(0, max_steps + 20)
        cases.append(Case((step, 3e-4, 3e-5, warmup, max_steps), "random"))
    cases.append(Case((5, 6e-4, 0.0, 5, 5), "warmup == max_steps"))
    return cases


_register(
    Exercise(
        "5.1",
        "ex-train-lr",
        "my_lr_at",
        ("step", "lr", "min_lr", "warmup", "max_steps"),
        _lr_at,
        _cases_5_1,
        rtol=1e-9,
        atol=1e-12,
    )
)


def _cross_entropy(logits, targets):
    from llmbook.loss import cross_entropy

    return cross_entropy(logits, targets)


def _cases_5_2():
    cases = []
    for seed, (lead, v, scale) in enumerate(
        [((4,), 10, 1.0), ((2, 3), 7, 2.0), ((1,), 2, 1.0), ((2, 5), 50, 5.0)]
    ):
        logits = _randn(*lead, v, seed=seed, scale=scale)
        targets = torch.randint(v, lead, generator=_gen(10 + seed))
        cases.append(Case((logits, targets), "random"))
    big = torch.tensor([[1000.0, 0.0, -1000.0], [50.0, 90.0, 89.0]])
    cases.append(Case((big, torch.tensor([0, 2])), "huge logits: no overflow"))
    wrong = torch.zeros(2, 4, dtype=torch.long)
    cases.append(
        Case((_randn(2, 3, 5, seed=4), wrong), "targets of the wrong shape")
    )
    return cases


_register(
    Exercise(
        "5.2",
        "ex-train-ce",
        "my_cross_entropy",
        ("logits", "targets"),
        _cross_entropy,
        _cases_5_2,
        rtol=1e-5,
        atol=1e-5,
    )
)


def _clip_grad_norm(params, max_norm):
    from llmbook.optim import clip_grad_norm

    return clip_grad_norm(params, max_norm)


class _Params(list):
    """Parameters with gradients; described by their shapes."""

    def _exercise_repr(self):
        shapes = [tuple(p.shape) for p in self]
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in self if p.grad is not None])
        )
        return f"{len(self)} parameters {shapes}, gradient norm {norm:.4g}"

    def __deepcopy__(self, memo):
        out = _Params()
        for p in self:
            q = p.detach().clone().requires_grad_(True)
            q.grad = None if p.grad is None else p.grad.clone()
            out.append(q)
        return out


def _observe_clip(fn, args):
    params = args[0]
    norm = fn(*args)
    return {
        "returned norm": norm,
        "gradients after": [p.grad for p in params if p.grad is not None],
    }


def _cases_5_3():
    def params(shapes, seed, scale):
        out = _Params()
        for i, s in enumerate(shapes):
            p = torch.zeros(s, requires_grad=True)
            p.grad = _randn(*s, seed=seed + i, scale=scale)
            out.append(p)
        return out

    return [
        Case((params([(3, 4), (4,)], 0, 1.0), 1.0), "norm above 1"),
        Case(
            (params([(3, 4), (4,)], 1, 0.05), 1.0),
            "norm below max_norm: unchanged",
        ),
        Case((params([(10,), (2, 2), (5, 1)], 2, 3.0), 0.5), "three tensors"),
        Case((params([(6,)], 3, 10.0), 5.0), "one tensor"),
        Case((params([(2, 8), (8,), (3,)], 4, 2.0), 2.0), "random"),
    ]


_register(
    Exercise(
        "5.3",
        "ex-train-clip",
        "my_clip_grad_norm",
        ("parameters", "max_norm"),
        _clip_grad_norm,
        _cases_5_3,
        observe=_observe_clip,
    )
)


def buggy_train_step(model, optimizer, x, y, lr):
    """One step of training, with a bug for exercise 5.4 to find."""
    from llmbook.loss import cross_entropy
    from llmbook.optim import clip_grad_norm

    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    clip_grad_norm(model.parameters(), 1.0)
    return loss.item()


def _train_step(model, optimizer, x, y, lr):
    from llmbook.loss import cross_entropy
    from llmbook.optim import clip_grad_norm

    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = cross_entropy(model(x), y)
    loss.backward()
    clip_grad_norm(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


class _Run:
    """A tiny model, its optimizer and four batches (built on demand)."""

    def __init__(self, seed):
        self.seed = seed

    def _exercise_repr(self):
        return (
            f"<tiny GPT (seed {self.seed}), AdamW lr 1e-2, four batches "
            "of (4, 16) ids; lr 1e-2, 1e-2, 5e-3, 1e-3>"
        )


def _observe_train(fn, args):
    from llmbook.model import GPT, GPTConfig
    from llmbook.optim import AdamW

    (run,) = args
    torch.manual_seed(run.seed)
    model = GPT(GPTConfig.preset("tiny"))
    optimizer = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    g = _gen(run.seed + 1)
    losses = []
    for lr in (1e-2, 1e-2, 5e-3, 1e-3):
        ids = torch.randint(64, (4, 17), generator=g)
        losses.append(fn(model, optimizer, ids[:, :-1], ids[:, 1:], lr))
    return {
        "losses of the four steps": losses,
        "weights after four steps": [
            p.detach().clone() for p in model.parameters()
        ],
    }


_register(
    Exercise(
        "5.4",
        "ex-train-bug",
        "my_train_step",
        ("run",),
        _train_step,
        lambda: [
            Case((_Run(0),), "tiny GPT, four steps"),
            Case((_Run(1),), "another seed"),
        ],
        rtol=1e-4,
        atol=1e-5,
        observe=_observe_train,
    )
)


# ---------------------------------------------------------------------------
# Chapter 6: generation


def _temperature(logits, temperature):
    from llmbook.generate import apply_temperature

    return apply_temperature(logits, temperature)


def _cases_6_1():
    cases = []
    for seed, t in enumerate([1.0, 0.5, 2.0, 0.1, 1.7]):
        cases.append(
            Case((_randn(2, 10, seed=seed, scale=3.0), t), f"temperature {t}")
        )
    cases.append(Case((_randn(5, seed=9), 3), "an int temperature"))
    cases += [
        Case(
            (_randn(5, seed=1), 0.0),
            "temperature 0 (greedy is a separate path)",
        ),
        Case((_randn(5, seed=1), -1.0), "negative temperature"),
        Case((_randn(5, seed=1), "hot"), "not a number"),
    ]
    return cases


_register(
    Exercise(
        "6.1",
        "ex-gen-temp",
        "my_temperature",
        ("logits", "temperature"),
        _temperature,
        _cases_6_1,
    )
)


def _top_k(logits, k):
    from llmbook.generate import top_k_filter

    return top_k_filter(logits, k)


def _cases_6_2():
    cases = []
    for seed, (shape, k) in enumerate(
        [((10,), 3), ((2, 8), 1), ((3, 20), 5), ((1, 6), 6), ((2, 5), 9)]
    ):
        cases.append(Case((_randn(*shape, seed=seed, scale=2.0), k), f"k={k}"))
    tied = torch.tensor([[3.0, 1.0, 3.0, 2.0, 2.0, 0.0]])
    cases.append(Case((tied, 3), "ties with the k-th largest are kept"))
    cases.append(Case((tied, 1), "two tied maxima"))
    cases += [Case((tied, 0), "k = 0"), Case((tied, 2.5), "a float k")]
    return cases


_register(
    Exercise(
        "6.2", "ex-gen-topk", "my_top_k", ("logits", "k"), _top_k, _cases_6_2
    )
)


def _top_p(logits, p):
    from llmbook.generate import top_p_filter

    return top_p_filter(logits, p)


def _cases_6_3():
    cases = []
    for seed, (shape, p) in enumerate(
        [
            ((10,), 0.9),
            ((2, 8), 0.5),
            ((3, 20), 0.95),
            ((1, 6), 0.3),
            ((2, 30), 0.75),
        ]
    ):
        cases.append(Case((_randn(*shape, seed=seed, scale=2.0), p), f"p={p}"))
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.1]])
    cases += [
        Case((probs.log(), 0.5), "the top token alone reaches p"),
        Case((probs.log(), 0.6), "p crossed by the second token"),
        Case((probs.log(), 1.0), "p = 1 keeps everything"),
        Case(
            (torch.tensor([[9.0, 0.0, 0.0]]), 0.2),
            "one very likely token, p below it",
        ),
    ]
    cases += [
        Case((probs.log(), 0.0), "p = 0"),
        Case((probs.log(), 1.5), "p > 1"),
    ]
    return cases


_register(
    Exercise(
        "6.3", "ex-gen-topp", "my_top_p", ("logits", "p"), _top_p, _cases_6_3
    )
)


def _kv_update(cache, layer, k, v):
    if cache.pos + k.size(-2) > cache.block_size:
        raise ValueError(
            f"the cache holds {cache.block_size} positions; {cache.pos} are "
            f"filled and {k.size(-2)} more do not fit"
        )
    return cache.update(layer, k, v)


def _observe_kv(fn, args):
    """Run the update, then look at what it returned and left in the cache:
    the filled positions of every layer, and ``pos``."""
    cache = args[0]
    end = cache.pos + args[2].size(-2)
    keys, values = fn(*args)
    filled = [
        (cache.k[i][:, :, :end].clone(), cache.v[i][:, :, :end].clone())
        for i in range(len(cache.k))
    ]
    return {
        "returned keys": keys,
        "returned values": values,
        "cache contents (layer, k/v)": filled,
        "cache.pos": cache.pos,
    }


def _cases_6_4():
    from llmbook.attention import KVCache

    def cache(n_layer, b, nh, block, hs, filled, seed):
        c = KVCache(n_layer, b, nh, block, hs)
        for i in range(n_layer):  # deterministic contents, even unused ones
            c.k[i].copy_(_randn(b, nh, block, hs, seed=seed + i))
            c.v[i].copy_(_randn(b, nh, block, hs, seed=seed + 10 + i))
        c.pos = filled
        return c

    cases = []
    for seed, (nl, b, nh, block, hs, pos, layer, t) in enumerate(
        [
            (1, 1, 1, 8, 4, 0, 0, 3),
            (2, 2, 2, 8, 4, 3, 1, 1),
            (3, 1, 2, 16, 8, 5, 2, 4),
            (2, 1, 1, 6, 2, 5, 0, 1),
            (2, 2, 3, 10, 4, 0, 1, 10),
        ]
    ):
        c = cache(nl, b, nh, block, hs, pos, 100 * seed)
        k = _randn(b, nh, t, hs, seed=7 + seed)
        v = _randn(b, nh, t, hs, seed=17 + seed)
        cases.append(
            Case((c, layer, k, v), f"{pos} filled, {t} new, layer {layer}")
        )
    c = cache(1, 1, 1, 4, 2, 3, 900)
    cases.append(
        Case(
            (c, 0, _randn(1, 1, 2, 2, seed=1), _randn(1, 1, 2, 2, seed=2)),
            "past block_size",
        )
    )
    return cases


_register(
    Exercise(
        "6.4",
        "ex-model-kv",
        "my_kv_update",
        ("cache", "layer", "k", "v"),
        _kv_update,
        _cases_6_4,
        observe=_observe_kv,
    )
)


# ---------------------------------------------------------------------------
# Chapter 7: making generation fast


def _quantize(w):
    from llmbook.quantize import quantize_per_channel

    return quantize_per_channel(w)


def _cases_7_1():
    cases = []
    for seed, shape in enumerate([(4, 8), (1, 16), (6, 3), (3, 32)]):
        w = _randn(*shape, seed=seed, scale=0.05)
        cases.append(Case((w,), f"a random {shape[0]}x{shape[1]} matrix"))
    outlier = _randn(2, 10, seed=7, scale=0.01)
    outlier[0, 3] = 1.0
    cases += [
        Case((outlier,), "one large weight sets its row's scale"),
        Case((torch.tensor([[0.0, 0.0], [0.5, -1.0]]),), "a row of zeros"),
        Case((torch.tensor([[-2.0, -0.5, -1.0]]),), "a negative row"),
        Case(
            (torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5]]),),
            "halves round to even, like torch.round",
        ),
        Case((_randn(5, seed=3),), "a vector, not a matrix"),
        Case((torch.ones(2, 3, dtype=torch.long),), "integer weights"),
        Case((torch.tensor([[1.0, float("nan")]]),), "a NaN weight"),
    ]
    return cases


_register(
    Exercise(
        "7.1",
        "ex-fast-quant",
        "my_quantize_per_channel",
        ("w",),
        _quantize,
        _cases_7_1,
        rtol=0.0,
        atol=0.0,
    )
)


def _greedy_accept(draft_tokens, target_logits):
    from llmbook.speculative import greedy_accept

    return greedy_accept(draft_tokens, target_logits)


def _one_hot_logits(best, vocab=6):
    """Target logits (B, k + 1, V) whose argmax is ``best`` (B, k + 1)."""
    best = torch.tensor(best)
    logits = _randn(*best.shape, vocab, seed=int(best.sum()), scale=0.1)
    return logits.scatter(-1, best[..., None], 5.0)


def _cases_7_2():
    cases = [
        Case(
            (torch.tensor([[1, 2, 3]]), _one_hot_logits([[1, 2, 3, 4]])),
            "every draft token kept, then the target's bonus token",
        ),
        Case(
            (torch.tensor([[1, 2, 3]]), _one_hot_logits([[5, 2, 3, 4]])),
            "the first draft token rejected",
        ),
        Case(
            (torch.tensor([[1, 2, 3]]), _one_hot_logits([[1, 2, 0, 4]])),
            "two kept, the third replaced",
        ),
        Case(
            (torch.tensor([[1, 5, 3]]), _one_hot_logits([[1, 2, 3, 4]])),
            "a later match after a mismatch does not count",
        ),
        Case(
            (
                torch.tensor([[0, 1], [2, 2], [4, 0]]),
                _one_hot_logits([[0, 1, 3], [2, 1, 0], [5, 0, 1]]),
            ),
            "a batch: each row keeps its own number",
        ),
        Case(
            (torch.tensor([[3]]), _one_hot_logits([[3, 1]])),
            "k = 1",
        ),
    ]
    g = _gen(11)
    logits = torch.randn(2, 5, 9, generator=g)
    draft = logits[:, :4].argmax(-1)
    draft[1, 2] = (draft[1, 2] + 1) % 9
    cases.append(Case((draft, logits), "random logits, B = 2, k = 4"))
    cases += [
        Case(
            (torch.tensor([[1, 2]]), _one_hot_logits([[1, 2]])),
            "target logits for k positions, not k + 1",
        ),
        Case(
            (torch.tensor([1, 2]), _one_hot_logits([[1, 2, 3]])), "1-D draft"
        ),
    ]
    return cases


_register(
    Exercise(
        "7.2",
        "ex-fast-greedy",
        "my_greedy_accept",
        ("draft_tokens", "target_logits"),
        _greedy_accept,
        _cases_7_2,
    )
)


def _tokens_per_round(alpha, k):
    from llmbook.speculative import expected_tokens_per_round

    return expected_tokens_per_round(alpha, k)


def _cases_7_3():
    cases = [
        Case((a, k), f"alpha {a}, k {k}")
        for a, k in [(0.5, 3), (0.8, 1), (0.9, 6), (0.25, 4), (0.6, 10)]
    ]
    cases += [
        Case((0.0, 4), "alpha 0: only the target's token"),
        Case((1.0, 5), "alpha 1: all k and the bonus token"),
        Case((1, 2), "alpha given as the int 1"),
        Case((1.5, 3), "alpha above 1"),
        Case((-0.1, 3), "negative alpha"),
        Case((0.5, 0), "k = 0"),
        Case((0.5, 2.0), "a float k"),
    ]
    return cases


_register(
    Exercise(
        "7.3",
        "ex-fast-round",
        "my_tokens_per_round",
        ("alpha", "k"),
        _tokens_per_round,
        _cases_7_3,
        rtol=1e-9,
        atol=1e-12,
    )
)


# ---------------------------------------------------------------------------
# Appendix D: a PyTorch primer


def _linear(x, weight, bias):
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[-1]} features in its last dimension; the "
            f"weight of shape {tuple(weight.shape)} expects {weight.shape[1]}"
        )
    return torch.nn.functional.linear(x, weight, bias)


def _cases_d_1():
    cases = []
    for seed, (lead, d_in, d_out) in enumerate(
        [((3,), 4, 2), ((2, 5), 3, 3), ((2, 3, 4), 6, 5), ((), 4, 4)]
    ):
        x = _randn(*lead, d_in, seed=seed)
        w = _randn(d_out, d_in, seed=10 + seed)
        b = _randn(d_out, seed=20 + seed)
        cases.append(Case((x, w, b), f"x {tuple(x.shape)}, W {(d_out, d_in)}"))
    cases.append(
        Case(
            (_randn(2, 3, seed=30), _randn(3, 3, seed=31), None),
            "no bias, square weight",
        )
    )
    cases.append(
        Case(
            (_randn(2, 5, seed=32), _randn(5, 3, seed=33), _randn(5, seed=34)),
            "x's features do not match the weight's inputs",
        )
    )
    return cases


_register(
    Exercise(
        "D.1",
        "ex-pt-linear",
        "my_linear",
        ("x", "weight", "bias"),
        _linear,
        _cases_d_1,
    )
)


def _broadcast_shape(a, b):
    try:
        return tuple(torch.broadcast_shapes(tuple(a), tuple(b)))
    except RuntimeError as e:
        raise ValueError(f"shapes {a} and {b} do not broadcast") from e


def _cases_d_2():
    pairs = [
        ((2, 3, 4), (4,)),
        ((5, 1), (1, 6)),
        ((3,), (2, 1, 3)),
        ((8, 1, 6, 1), (7, 1, 5)),
        ((1,), (1,)),
        ((4, 4), (4, 4)),
        ((), (2, 3)),
        ((2, 1), (3,)),
        ((3,), (4,)),
        ((2, 3), (3, 2)),
        ((5, 4, 3), (4, 1, 3)),
    ]
    return [Case(p, f"{p[0]} with {p[1]}") for p in pairs]


_register(
    Exercise(
        "D.2",
        "ex-pt-broadcast",
        "my_broadcast_shape",
        ("a", "b"),
        _broadcast_shape,
        _cases_d_2,
    )
)


def _softmax(x, dim):
    return torch.softmax(x, dim=dim)


def _cases_d_3():
    return [
        Case((_randn(3, 5, seed=1), -1), "(3, 5), last dim"),
        Case((_randn(3, 5, seed=2), 0), "(3, 5), dim 0"),
        Case((_randn(2, 3, 4, seed=3, scale=5.0), 1), "(2, 3, 4), dim 1"),
        Case((_randn(4, 6, seed=4) + 1000.0, -1), "logits near 1000"),
        Case((torch.tensor([[1000.0, 0.0, -1000.0]]), -1), "a spread of 2000"),
        Case((torch.zeros(2, 3), -1), "all equal"),
    ]


_register(
    Exercise(
        "D.3",
        "ex-pt-softmax",
        "my_softmax",
        ("x", "dim"),
        _softmax,
        _cases_d_3,
    )
)


def _sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)


def _observe_sgd(fn, args):
    """Run the step, then compare the parameters it left (and their
    gradients, which a step must not change)."""
    params = args[0]
    returned = fn(*args)
    return {
        "returned": returned,
        "parameters after the step": [p.detach().clone() for p in params],
        "their .grad after the step": [
            None if p.grad is None else p.grad.clone() for p in params
        ],
    }


def _cases_d_4():
    def params(shapes, seed, no_grad=()):
        out = []
        for i, shape in enumerate(shapes):
            p = _randn(*shape, seed=seed + i).requires_grad_(True)
            if i not in no_grad:
                p.grad = _randn(*shape, seed=seed + 50 + i)
            out.append(p)
        return out

    return [
        Case((params([(3,), (2, 2)], 0), 0.1), "two tensors, lr 0.1"),
        Case((params([(4, 3)], 10), 1.0), "lr 1"),
        Case(
            (params([(2,), (3,), (1, 2)], 20, no_grad=(1,)), 0.5),
            "the middle tensor has no gradient",
        ),
        Case((params([(5,)], 30), 0.0), "lr 0: nothing moves"),
    ]


_register(
    Exercise(
        "D.4",
        "ex-pt-sgd",
        "my_sgd_step",
        ("params", "lr"),
        _sgd_step,
        _cases_d_4,
        observe=_observe_sgd,
    )
)
