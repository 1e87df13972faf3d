import pytest

from llmbook.timing import QUICK_TIMING, quick_timing, repeats


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
    with pytest.raises(ValueError, match="positive int"):
        repeats(n)
