"""Chapter 13: today's open models."""

import dataclasses
import math

import torch

from llmbook.modern import (
    GroupedQueryAttention,
    MixtureOfExperts,
    ModernConfig,
    SwiGLU,
    balance_loss,
    interleave_rows,
    kv_cache_bytes,
    rope_frequencies,
    route,
    window_mask,
)
from llmbook.modern.config import LAYER_TYPES, ROPE_PAIRINGS

from . import diagram
from .ch06 import end_of
from .style import (
    FILL,
    GREY,
    INK,
    SMALL,
    arrow,
    box,
    canvas,
    code,
    grid,
    key,
    text,
)

WHITE = dict(facecolor="white", edgecolor="none", pad=1.0)  # text on muted


def field(name):
    """`name`, checked to be a setting of `ModernConfig` (a rename breaks
    the build instead of leaving a stale label)."""
    if name not in {f.name for f in dataclasses.fields(ModernConfig)}:
        raise ValueError(f"ModernConfig has no setting called {name!r}")
    return name


def _child(module, name):
    """`name`, checked to be an attribute of `module` (a rename breaks the
    build instead of leaving a stale label)."""
    getattr(module, name)
    return name


# ---------------------------------------------------------------------------
# grouped-query

N_HEAD = 8


def _ratio(n_kv_head):
    """The KV cache per position against multi-head attention's, as the
    package counts its bytes: '1×', '1/4', ..."""
    cache = [
        kv_cache_bytes(ModernConfig(n_head=N_HEAD, n_kv_head=n, n_embd=64), 1)
        for n in (n_kv_head, N_HEAD)
    ]
    r = math.gcd(*cache)
    a, b = cache[0] // r, cache[1] // r
    return "1×" if a == b else f"{a}/{b}"


def _heads_panel(ax, x, name, n_kv_head):
    """Query heads in a row; below them the key/value heads, each read by
    its group of n_head // n_kv_head query heads."""
    pitch, side, top, low = 0.21, 0.16, 1.9, 0.95
    g = ModernConfig(n_head=N_HEAD, n_kv_head=n_kv_head, n_embd=64).n_group
    text(ax, (x, 2.4), name)
    text(ax, (x, 2.13), f"{field('n_head')} = {N_HEAD}", SMALL, mono=True)
    queries = [
        box(
            ax,
            (x + (h - (N_HEAD - 1) / 2) * pitch, top),
            side,
            side,
            kind="tensor",
        )
        for h in range(N_HEAD)
    ]
    kv = []
    for j in range(n_kv_head):
        # under the middle of its group: query heads j*g .. (j+1)*g - 1
        group = queries[j * g : (j + 1) * g]
        xc = (group[0].x + group[-1].x) / 2
        kv.append(box(ax, (xc, low), side, side, kind="accent"))
    for h, q in enumerate(queries):  # head h reads key/value head h // g
        arrow(ax, q.bottom, kv[h // g].top, style="-", linewidth=0.8)
    text(
        ax,
        (x, low - 0.3),
        f"{field('n_kv_head')} = {n_kv_head}",
        SMALL,
        mono=True,
    )
    text(ax, (x, low - 0.55), f"KV cache per position: {_ratio(n_kv_head)}")


@diagram
def grouped_query():
    """Eight query heads reading eight, two or one key/value heads: the KV
    cache shrinks with the number of key/value heads."""
    fig, ax = canvas(6.0, 2.6)
    panels = [
        ("multi-head (MHA)", N_HEAD),
        ("grouped-query (GQA)", 2),
        ("multi-query (MQA)", 1),
    ]
    for i, (name, n_kv_head) in enumerate(panels):
        _heads_panel(ax, 1.0 + 2.0 * i, name, n_kv_head)
        if i:
            ax.plot([2.0 * i] * 2, [0.35, 2.5], color=GREY, lw=0.5)
    key(
        ax,
        (1.1, 0.12),
        [
            ("tensor", "query head"),
            ("accent", "key/value head: cached"),
        ],
    )
    return fig


# ---------------------------------------------------------------------------
# sliding-window

T_WINDOW, W = 10, 4
# Gemma 3's pattern: five sliding layers, then one full layer.
PATTERN = ModernConfig(
    n_layer=6, window=W, layer_types=("sliding",) * 5 + ("full",)
).layer_types


def _window_kinds(t, window):
    """Cell kinds of a t x t mask: seen (accent), causal but older than the
    window (tensor), future (muted), as `window_mask` decides."""
    pos = torch.arange(t)
    seen = window_mask(pos, pos, window)
    causal = window_mask(pos, pos, None)
    return [
        [
            "accent" if seen[i, j] else "tensor" if causal[i, j] else "muted"
            for j in range(t)
        ]
        for i in range(t)
    ]


def _layer_column(ax, x, top):
    """The layers as small masks, top to bottom, each named by its
    entry in `layer_types`."""
    assert set(PATTERN) <= set(LAYER_TYPES)
    t, cell, step = 6, 0.055, 0.41
    text(ax, (x + 0.2, top + 0.35), field("layer_types"), SMALL, mono=True)
    for i, kind in enumerate(PATTERN):
        y = top - i * step
        window = W if kind == "sliding" else None
        grid(ax, (x, y), t, t, cell, kinds=_window_kinds(t, window))
        text(ax, (x - 0.25, y), f"layer {i}", SMALL, color=GREY, ha="right")
        text(ax, (x + 0.25, y), f'"{kind}"', SMALL, mono=True, ha="left")


@diagram
def sliding_window():
    """A causal mask with a window of W keys, and a layer pattern that
    mixes sliding and full layers."""
    fig, ax = canvas(6.0, 3.3)
    cell, y = 0.2, 1.6
    g = grid(
        ax,
        (1.5, y),
        T_WINDOW,
        T_WINDOW,
        cell,
        kinds=_window_kinds(T_WINDOW, W),
    )
    x0, y0 = g.x - g.w / 2, g.y + g.h / 2
    for i in range(T_WINDOW):
        xy = (x0 - 0.08, y0 - (i + 0.5) * cell)
        text(ax, xy, str(i), SMALL, color=GREY, ha="right")
        text(ax, (x0 + (i + 0.5) * cell, y0 + 0.1), str(i), SMALL, color=GREY)
    text(ax, (g.x, y0 + 0.3), "key $j$", SMALL)
    text(ax, (x0 - 0.35, y), "query $i$", SMALL, rotation=90)
    # "window W = 4": the setting's name in mono, then the symbol
    text(ax, (g.x + 0.02, 3.12), field("window"), mono=True, ha="right")
    text(ax, (g.x + 0.1, 3.12), f"$W = {W}$", ha="left")
    below = y - g.h / 2
    text(ax, (g.x, below - 0.2), "query $i$ sees keys $i - W < j \\leq i$")
    ax.plot([2.78] * 2, [0.45, 3.2], color=GREY, lw=0.5)
    # The layer pattern, and why a window does not cap what a token hears.
    top = 2.7
    _layer_column(ax, 3.5, top)
    lines = [
        f"Gemma 3: {PATTERN.count('sliding')} sliding layers,",
        f"then {PATTERN.count('full')} full, repeated.",
        "A sliding layer's cache",
        "keeps $W - 1$ positions.",
        "",
        "Stacked, $L$ sliding layers",
        "still pass information",
        "up to $L(W - 1)$ positions",
        "back.",
    ]
    for i, s in enumerate(lines):
        text(ax, (4.45, top - 0.17 * i), s, SMALL, ha="left")
    key(
        ax,
        (0.15, 0.15),
        [
            ("accent", "in the window: seen"),
            ("tensor", "causal, but older than $W$: masked"),
            ("muted", "future: masked"),
        ],
    )
    return fig


# ---------------------------------------------------------------------------
# mixture-of-experts

N_EXPERT, K = 6, 2
ROUTER_LOGITS = [0.2, 1.6, -0.4, 0.5, 1.1, -0.8]  # toy scores of one token


def _moe_parts():
    """The router's attribute name, checked on a small MixtureOfExperts."""
    config = ModernConfig(
        n_embd=16,
        n_head=2,
        n_expert=N_EXPERT,
        n_expert_per_token=K,
    )
    moe = MixtureOfExperts(config)
    assert moe.k == K and len(moe.down) == N_EXPERT
    return _child(moe, "router")


def mixed(ax, xy, parts):
    """One line of small left-aligned text from `xy`, in parts: (string,
    whether it is code, in monospace)."""
    x, y = xy
    for s, mono in parts:
        t = text(ax, (x, y), s, SMALL, mono=mono, ha="left")
        x = end_of(t)


@diagram
def mixture_of_experts():
    """A router scores E experts for a token; the token goes through its
    top k, whose outputs are summed with renormalised weights."""
    router_name = _moe_parts()
    logits = torch.tensor([ROUTER_LOGITS])
    probs = torch.softmax(logits, dim=-1)[0]
    weights, ids = route(logits, K)  # (1, k) each, best first
    chosen = {int(e): float(w) for e, w in zip(ids[0], weights[0])}
    fig, ax = canvas(6.0, 3.1)
    xs = [2.4 + e * 0.6 for e in range(N_EXPERT)]
    base, tall = 2.05, 0.55  # the bars' baseline and the tallest bar
    text(
        ax,
        (0.1, 2.95),
        f"{code(MixtureOfExperts)}: one token's path",
        SMALL,
        mono=True,
        ha="left",
    )
    x = grid(ax, (0.35, 2.3), 1, 4, 0.13)
    text(ax, (x.x, 2.52), "$x$  $(C)$", SMALL)
    r = box(ax, (1.12, 2.3), 0.66, 0.5, kind="weight")
    text(ax, (r.x, r.y + 0.1), router_name, SMALL, mono=True)
    text(ax, (r.x, r.y - 0.1), "$C \\to E$", SMALL)
    arrow(ax, x.right, r.left)
    arrow(ax, r.right, (xs[0] - 0.28, r.y), "softmax", side=0.1)
    text(ax, ((xs[0] + xs[-1]) / 2, 2.95), "router probabilities $p_e$")
    peak = float(probs.max())
    for e, xe in enumerate(xs):
        kind = "accent" if e in chosen else "muted"
        h = tall * float(probs[e]) / peak
        box(ax, (xe, base + h / 2), 0.3, h, kind=kind)
        text(ax, (xe, base + h + 0.1), f"{float(probs[e]):.2f}", SMALL)
        text(ax, (xe, base - 0.11), str(e), SMALL, color=GREY)
    # x travels to the chosen experts only
    bus = 1.72
    last = max(xs[e] for e in chosen)
    ax.plot([x.x, x.x, last], [x.y - 0.08, bus, bus], color=INK, lw=1.0)
    ys = 1.3
    experts = {}
    for e, xe in enumerate(xs):
        kind = "accent" if e in chosen else "muted"
        experts[e] = box(ax, (xe, ys), 0.52, 0.38, kind=kind)
        text(
            ax,
            (xe, ys),
            code(SwiGLU),
            SMALL,
            mono=True,
            color="white" if e in chosen else GREY,
            bbox=None if e in chosen else WHITE,
        )
        if e in chosen:
            arrow(ax, (xe, bus), experts[e].top)
    text(ax, (xs[0] - 0.32, ys), "experts", SMALL, ha="right")
    # the weighted sum
    order = sorted(chosen, key=lambda e: -chosen[e])
    plus_x = (xs[order[0]] + xs[order[1]]) / 2
    total = box(ax, (plus_x, 0.45), 0.22, 0.22, "+")
    for n, e in enumerate(order, start=1):
        b = experts[e]
        left = b.x < plus_x
        arrow(ax, b.bottom, total.left if left else total.right)
        # the weight beside the arrow's start, on its outer side
        dx = -0.08 if left else 0.08
        text(
            ax,
            (b.x + dx, b.y - b.h / 2 - 0.17),
            f"$\\times\\, w_{n} = {chosen[e]:.2f}$",
            SMALL,
            ha="right" if left else "left",
        )
    y = grid(ax, (total.x + 0.6, total.y), 1, 4, 0.13)
    arrow(ax, total.right, y.left)
    text(ax, (y.x, y.y + 0.2), "$y$  $(C)$", SMALL)
    notes = [
        [(code(route), True), (": top-$k$ of the $p_e$,", False)],
        [("renormalised: $w_1 + w_2 = 1$", False)],
        [],
        [(f"$E = {N_EXPERT}$ experts: ", False), (field("n_expert"), True)],
        [
            (f"$k = {K}$ per token: ", False),
            (field("n_expert_per_token"), True),
        ],
        [(f"each token uses {K}/{N_EXPERT} of", False)],
        [("the expert parameters", False)],
    ]
    for i, parts in enumerate(notes):
        mixed(ax, (0.1, 1.5 - 0.17 * i), parts)
    for i, line in enumerate(["in training, it", "evens the load"]):
        mixed(ax, (4.95, 0.45 - 0.17 * i), [(line, False)])
    mixed(ax, (4.95, 0.62), [(code(balance_loss) + ":", True)])
    return fig


# ---------------------------------------------------------------------------
# rope-pairing

D_PAIR = 8  # channels of the drawn head


def _pairs(pairing):
    """The channel pairs (a, b) that RoPE rotates together."""
    if pairing == "half":
        return [(i, i + D_PAIR // 2) for i in range(D_PAIR // 2)]
    return [(2 * i, 2 * i + 1) for i in range(D_PAIR // 2)]


def _channel_row(ax, x, y, cell, pairing, above):
    """One head's channels, pair 0 accented, arcs joining the pairs."""
    pairs = _pairs(pairing)
    first = set(pairs[0])
    kinds = [["accent" if c in first else "tensor" for c in range(D_PAIR)]]
    labels = [[str(c) for c in range(D_PAIR)]]
    g = grid(ax, (x, y), 1, D_PAIR, cell, kinds=kinds, labels=labels)
    x0 = g.x - g.w / 2
    edge = y + cell / 2 if above else y - cell / 2
    for n, (a, b) in enumerate(pairs):
        start = (x0 + (a + 0.5) * cell, edge)
        end = (x0 + (b + 0.5) * cell, edge)
        arrow(
            ax,
            start,
            end,
            style="-",
            curve=(-0.45 if above else 0.9),
            color=FILL["accent"] if n == 0 else GREY,
            linewidth=1.4 if n == 0 else 0.8,
        )
    return g


@diagram
def rope_pairing():
    """Which channels RoPE rotates together: i with i + D/2 (half) or 2i
    with 2i + 1 (interleaved); a permutation of W_Q's and W_K's rows
    turns one into the other."""
    half, inter = ROPE_PAIRINGS
    assert (half, inter) == ("half", "interleaved")
    fig, ax = canvas(6.0, 2.45)
    x, cell, top, low = 3.0, 0.3, 1.7, 0.65
    rows = [
        (top, half, "Hugging Face", "pair $i$: $(i,\\ i + D/2)$", True),
        (low, inter, "Meta, RoFormer", "pair $i$: $(2i,\\ 2i + 1)$", False),
    ]
    grids = []
    for y, name, who, rule, above in rows:
        grids.append(_channel_row(ax, x, y, cell, name, above))
        right = 1.6
        text(ax, (right, y + 0.17), f'"{name}"', mono=True, ha="right")
        text(ax, (right, y - 0.02), who, SMALL, ha="right")
        text(ax, (right, y - 0.2), rule, SMALL, ha="right")
    text(ax, (1.6, 2.25), field("rope_pairing"), mono=True, ha="right")
    text(ax, (x, 2.25), "one head, $D = 8$ channels", SMALL)
    # interleave_rows: half's channel c is interleaved's channel perm[c]
    order = interleave_rows(torch.arange(float(D_PAIR))[:, None], 1)
    x0 = x - D_PAIR * cell / 2
    first = set(_pairs(half)[0])
    for new, old in enumerate(order[:, 0].long().tolist()):
        arrow(
            ax,
            (x0 + (old + 0.5) * cell, top - cell / 2),
            (x0 + (new + 0.5) * cell, low + cell / 2),
            color=FILL["accent"] if old in first else GREY,
            linestyle=(0, (2, 2)),
            linewidth=1.1 if old in first else 0.8,
        )
    notes = [
        (code(interleave_rows) + ":", dict(mono=True)),
        ("same model: the rows of", {}),
        ("$W_Q$ and $W_K$ permuted,", {}),
        ("head by head", {}),
    ]
    for i, (s, opts) in enumerate(notes):
        text(
            ax,
            (4.45, (top + low) / 2 + 0.25 - 0.17 * i),
            s,
            SMALL,
            ha="left",
            **opts,
        )
    return fig


# ---------------------------------------------------------------------------
# rope-scaling

# Llama 3.1's RoPE: head size 128, base 500 000, and its scaling.
LLAMA31 = dict(
    head_size=128,
    base=500000.0,
    scaling=dict(
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_block_size=8192,
    ),
)
LOG0, LOG1, X0, X1 = 0.6, 7.45, 0.75, 5.9  # axis: log10 wavelength, inches


def _x(wavelength):
    """Where a wavelength (positions per turn) is on the log axis."""
    t = (math.log10(wavelength) - LOG0) / (LOG1 - LOG0)
    return X0 + t * (X1 - X0)


def _span(ax, a, b, y, label, note=None, size=None):
    """A band of the axis: a bar from x a to x b, its name above."""
    arrow(ax, (a, y), (b, y), style="|-|", linewidth=0.8)
    text(
        ax, ((a + b) / 2, y + 0.16), label, **({"size": size} if size else {})
    )
    if note:
        text(ax, ((a + b) / 2, y - 0.16), note, SMALL)


@diagram
def rope_scaling():
    """Llama 3's scaling of RoPE's frequencies: short wavelengths kept,
    long ones slowed by `factor`, the ones between blended."""
    s = LLAMA31["scaling"]
    ModernConfig(rope_scaling=s)  # the keys the package reads
    theta = rope_frequencies(LLAMA31["head_size"], LLAMA31["base"])
    scaled = rope_frequencies(LLAMA31["head_size"], LLAMA31["base"], s)
    context = s["original_block_size"]
    short = context / s["high_freq_factor"]  # below: kept
    long = context / s["low_freq_factor"]  # above: divided by factor
    fig, ax = canvas(6.0, 2.95)
    axis_y, before, after, span = 1.15, 2.1, 1.35, 2.6
    # the axis, decades labelled, the two limits dashed through the bands
    arrow(ax, (X0 - 0.1, axis_y), (X1 + 0.05, axis_y))
    for k in range(1, 8):
        ax.plot([_x(10**k)] * 2, [axis_y - 0.04, axis_y], color=INK, lw=0.8)
        if 10**k < short / 3 or 10**k > long * 5:
            label = f"$10^{k}$" if k > 2 else f"{10**k}"
            text(ax, (_x(10**k), axis_y - 0.15), label, SMALL)
    for w in (short, long):
        ax.plot([_x(w)] * 2, [axis_y, span], color=GREY, lw=0.8, ls="--")
    for w, ha, dx in ((short, "right", -0.04), (long, "left", 0.04)):
        xy = (_x(w) + dx, axis_y - 0.15)
        text(ax, xy, f"{w:.0f}", SMALL, ha=ha)
    # the three bands
    _span(ax, X0, _x(short), span, "kept", "fast turns: nearby order")
    _span(ax, _x(short), _x(long), span, "blended", size=SMALL)
    _span(
        ax,
        _x(long),
        X1,
        span,
        f"$\\theta_i$ divided by factor ({s['factor']:.0f})",
        "slow turns: stretched to longer contexts",
    )
    # every 4th frequency of a head: its wavelength before and after
    for i in range(2, len(theta), 4):
        a = 2 * math.pi / float(theta[i])
        b = 2 * math.pi / float(scaled[i])
        moved = b > a * 1.01
        arrow(
            ax,
            (_x(a), before),
            (_x(b), after),
            color=FILL["accent"] if moved else INK,
            linewidth=1.3 if moved else 0.9,
        )
    text(ax, (X0 - 0.12, before), "original", SMALL, ha="right")
    text(ax, (X0 - 0.12, after), "scaled", SMALL, ha="right")
    text(
        ax,
        ((X0 + X1) / 2, 0.78),
        "wavelength $2\\pi / \\theta_i$: positions per turn (log scale)",
        SMALL,
    )
    keys = [("high", short), ("low", long)]
    for n, (which, w) in enumerate(keys):
        text(
            ax,
            ((X0 + X1) / 2, 0.53 - 0.17 * n),
            f"original_block_size / {which}_freq_factor = {w:.0f}",
            SMALL,
            mono=True,
        )
    base = f"{LLAMA31['base']:,.0f}".replace(",", " ")
    text(
        ax,
        ((X0 + X1) / 2, 0.14),
        f"Llama 3.1: head size {LLAMA31['head_size']}, base {base}; "
        f"every 4th of its {len(theta)} frequencies drawn",
        SMALL,
        color=GREY,
    )
    return fig


# ---------------------------------------------------------------------------
# qk-norm

S_GROW = 10  # the factor by which W_Q and W_K grow


def _qk_parts():
    """The names of the projections and norms, checked on a small
    GroupedQueryAttention with qk_norm=True."""
    attn = GroupedQueryAttention(
        ModernConfig(n_embd=16, n_head=2, **{field("qk_norm"): True})
    )
    return [_child(attn, n) for n in ("q_proj", "k_proj", "q_norm", "k_norm")]


def _score_growth(qk_norm):
    """How much one score q·k / sqrt(D) of head 0 grows when W_Q and W_K
    are multiplied by S_GROW, through the package's own layers. (RoPE, a
    rotation applied to both after the norms, leaves the factor as is.)"""
    scores = []
    for s in (1, S_GROW):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            config = ModernConfig(n_embd=32, n_head=2, qk_norm=qk_norm)
            attn = GroupedQueryAttention(config)
            x = torch.randn(2, config.n_embd)  # a query's and a key's token
        d = config.head_size
        with torch.no_grad():
            attn.q_proj.weight.mul_(s)
            attn.k_proj.weight.mul_(s)
            q = attn.q_proj(x[0]).view(config.n_head, d)[0]
            k = attn.k_proj(x[1]).view(config.n_kv_head, d)[0]
            if qk_norm:
                q, k = attn.q_norm(q), attn.k_norm(k)
        scores.append(float(q @ k) / math.sqrt(d))
    return scores[1] / scores[0]


def _broken(ax, x, y, w):
    """A break across a bar at height y: a white slanted gap, two lines."""
    a, b, t, gap = x - w / 2 - 0.04, x + w / 2 + 0.04, 0.05, 0.06
    ax.fill(
        [a, b, b, a],
        [y - t, y + t, y + t + gap, y - t + gap],
        color="white",
        zorder=2,
    )
    for dy in (0, gap):
        ax.plot([a, b], [y - t + dy, y + t + dy], color=INK, lw=0.8, zorder=2)


def _bars(ax, x, heights, growth, clip=None):
    """Two bars, s = 1 and s = S_GROW, on a baseline at y = 0.75; the
    second labelled with its growth, broken if taller than `clip`."""
    base, w = 0.75, 0.22
    for n, (s, h) in enumerate(zip((1, S_GROW), heights)):
        xb = x + (n - 0.5) * 0.42
        drawn = min(h, clip) if clip else h
        box(ax, (xb, base + drawn / 2), w, drawn, kind="tensor")
        if clip and h > clip:
            _broken(ax, xb, base + drawn - 0.22, w)
        text(ax, (xb, base - 0.12), f"$s = {s}$", SMALL)
        if n:
            text(ax, (xb, base + drawn + 0.12), f"×{growth:.0f}", SMALL)
    ax.plot([x - 0.42, x + 0.42], [base, base], color=INK, lw=0.8)


@diagram
def qk_norm():
    """One head's queries and keys normalised over their D channels before
    RoPE; then growing W_Q and W_K no longer grows the scores."""
    q_proj, k_proj, q_norm, k_norm = _qk_parts()
    without, with_norm = _score_growth(False), _score_growth(True)
    assert round(without) == S_GROW**2 and abs(with_norm - 1) < 1e-3
    fig, ax = canvas(6.0, 2.55)
    text(
        ax,
        (0.1, 2.38),
        f"{code(GroupedQueryAttention)}: one head",
        SMALL,
        mono=True,
        ha="left",
    )
    mid, rows = 1.3, [(1.8, "q", q_proj, q_norm), (0.8, "k", k_proj, k_norm)]
    x = grid(ax, (0.28, mid), 1, 4, 0.11)
    text(ax, (x.x, mid + 0.18), "$x$  $(C)$", SMALL)
    bus = 0.6
    ax.plot([x.x + x.w / 2, bus], [mid, mid], color=INK, lw=1.0)
    ax.plot([bus, bus], [rows[1][0], rows[0][0]], color=INK, lw=1.0)
    score = box(ax, (3.45, mid), 0.76, 0.5)
    text(ax, (score.x, mid + 0.1), "score", SMALL)
    text(ax, (score.x, mid - 0.1), "$q \\cdot k \\,/ \\sqrt{D}$", SMALL)
    for y, name, proj_name, norm_name in rows:
        proj = box(ax, (0.95, y), 0.56, 0.42, kind="weight")
        text(ax, (proj.x, y + 0.09), proj_name, SMALL, mono=True)
        text(ax, (proj.x, y - 0.1), f"$W_{name.upper()}$", SMALL)
        arrow(ax, (bus, y), proj.left)
        t = grid(ax, (1.52, y), 1, 4, 0.1)
        dy = 0.17 if name == "q" else -0.17
        text(ax, (t.x, y + dy), f"${name}$  $(D)$", SMALL)
        arrow(ax, proj.right, t.left)
        norm = box(ax, (2.1, y), 0.58, 0.34, kind="accent")
        text(ax, (norm.x, y), norm_name, SMALL, mono=True, color="white")
        arrow(ax, t.right, norm.left)
        rope = box(ax, (2.7, y), 0.42, 0.3, "RoPE", size=SMALL)
        arrow(ax, norm.right, rope.left)
        end = score.top if name == "q" else score.bottom
        arrow(ax, rope.right, (end[0] - 0.15, end[1]))
    for i, line in enumerate(
        ["RMSNorm over $D$:", "one scale per channel,", "shared by the heads"]
    ):
        text(ax, (2.1, mid + 0.17 - 0.17 * i), line, SMALL)
    # Right: one score as W_Q and W_K grow s times, without and with
    ax.plot([3.98] * 2, [0.2, 2.45], color=GREY, lw=0.5)
    left, right = 4.5, 5.42
    text(ax, ((left + right) / 2, 2.38), "$W_Q$, $W_K$ grown $s$ times", SMALL)
    panels = [
        (left, False, 0.16, without, ["scores grow", "as $s^2$"]),
        (right, True, 0.4, with_norm, ["scores do not", "grow with $s$"]),
    ]
    for x, flag, h, growth, notes in panels:
        text(ax, (x, 2.12), f"{field('qk_norm')}={flag}", SMALL, mono=True)
        _bars(ax, x, (h, h * growth), growth, clip=1.0)
        for i, line in enumerate(notes):
            text(ax, (x, 0.4 - 0.17 * i), line, SMALL)
    # the bound: after the norms |q|, |k| <= sqrt(D) times their largest
    # scale, so |q·k| / sqrt(D) <= sqrt(D) times the two scales
    bound = 1.45
    ax.plot(
        [right - 0.42, right + 0.42], [bound] * 2, color=GREY, lw=0.8, ls="--"
    )
    for i, line in enumerate(
        ["at most $\\sqrt{D}$ times", "the norms' scales"]
    ):
        text(ax, (right, bound + 0.3 - 0.16 * i), line, SMALL)
    return fig
