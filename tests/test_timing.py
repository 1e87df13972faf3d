import time

import pytest

from llmbook.timing import QUICK_TIMING, alternate, quick_timing, repeats


def test_repeats_are_the_chapters_unless_ci_asks_for_one(monkeypatch):
    monkeypatch.delenv(QUICK_TIMING, raising=False)
    assert not quick_timing() and repeats(5) == 5
    monkeypatch.setenv(QUICK_TIMING, "0")
    assert repeats(3) == 3
    monkeypatch.setenv(QUICK_TIMING, "1")
    assert quick_timing() and repeats(5) == 1 and repeats(1) == 1


@pytest.mark.parametrize("value", ["yes", "true", "2", " 1"])
def test_a_value_other_than_0_or_1_is_refused(monkeypatch, value):
    monkeypatch.setenv(QUICK_TIMING, value)
    with pytest.raises(ValueError, match="set it to 1"):
        repeats(3)


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "3"])
def test_repeats_must_be_a_positive_int(n):
    with pytest.raises((TypeError, ValueError), match="must be an int >= 1"):
        repeats(n)


def test_alternate_interleaves_the_contenders_after_the_warmup():
    calls = []
    contenders = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = alternate(contenders, repeats=3, warmup=2)
    assert calls == list("abc") * 5  # 2 warm-up rounds, then 3 timed
    assert list(times) == ["a", "b", "c"]
    for seconds in times.values():
        assert len(seconds) == 3 and all(s >= 0 for s in seconds)


def test_alternate_times_each_call_and_keeps_the_last_outputs():
    rounds = iter(range(100))
    outputs = {}
    times = alternate(
        {"slow": lambda: time.sleep(0.02), "count": lambda: next(rounds)},
        repeats=2,
        warmup=0,
        outputs=outputs,
    )
    assert min(times["slow"]) >= 0.015 > max(times["count"])
    assert outputs == {"slow": None, "count": 1}


@pytest.mark.parametrize(
    "contenders, repeats, warmup, message",
    [
        ({}, 3, 1, "non-empty mapping"),
        ([lambda: 0], 3, 1, "non-empty mapping"),
        ({"a": 42}, 3, 1, "contender 'a' is 42, not a function"),
        ({"a": lambda: 0}, 0, 1, "repeats must be an int >= 1, got 0"),
        ({"a": lambda: 0}, True, 1, "repeats must be an int >= 1"),
        ({"a": lambda: 0}, 2.0, 1, "repeats must be an int >= 1"),
        (
            {"a": lambda: 0},
            3,
            -1,
            r"warmup \(untimed rounds\) must be an int >= 0",
        ),
    ],
)
def test_alternate_refuses_bad_input(contenders, repeats, warmup, message):
    with pytest.raises((TypeError, ValueError), match=message):
        alternate(contenders, repeats, warmup)
