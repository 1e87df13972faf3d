"""The checks of chapter 5's exercises (attention): the causal mask,
causal attention itself, and splitting the channels into heads and merging
them back."""

from llmbook.attention import causal_attention, causal_mask
from llmbook.exercises.harness import Case, _randn, exercise


def _causal_mask(t_q, t_k):
    for name, t in (("t_q", t_q), ("t_k", t_k)):
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"{name} must be a positive int, got {t!r}")
    if t_q > t_k:
        raise ValueError(f"more queries ({t_q}) than keys ({t_k})")
    return causal_mask(t_q, t_k)


@exercise(
    "5.1",
    label="ex-att-mask",
    name="my_causal_mask",
    params=("t_q", "t_k"),
    reference=_causal_mask,
)
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


def _attention(q, k, v):
    return causal_attention(q, k, v)


@exercise(
    "5.2",
    label="ex-att-sdpa",
    name="my_attention",
    params=("q", "k", "v"),
    reference=_attention,
)
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


def _split_heads(x, n_head):
    if x.ndim != 3:
        raise ValueError(f"x must be (B, T, C), got shape {tuple(x.shape)}")
    B, T, C = x.shape
    if C % n_head:
        raise ValueError(f"C={C} is not divisible by n_head={n_head}")
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)


@exercise(
    "5.3",
    label="ex-att-split",
    name="split_heads",
    params=("x", "n_head"),
    reference=_split_heads,
)
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


def _merge_heads(y):
    if y.ndim != 4:
        raise ValueError(f"y must be (B, nh, T, hs), got {tuple(y.shape)}")
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)


@exercise(
    "5.4",
    label="ex-att-merge",
    name="merge_heads",
    params=("y",),
    reference=_merge_heads,
)
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
