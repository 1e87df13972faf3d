"""Chapter 12: concept diagrams."""

from llmbook.generate import StaticCacheEngine, TextStream
from llmbook.serve.batcher import Batcher

from . import diagram
from .style import GREY, SMALL, arrow, box, canvas, code, grid, key, text

UP, DOWN = 2.05, 1.05  # the request's lane and the answer's lane


def _client(ax):
    """Who sends the request: OpenAI's client or the chat page."""
    y = (UP + DOWN) / 2
    c = box(ax, (0.42, y), 0.72, UP - DOWN + 0.7)
    text(ax, (0.42, y + 0.3), "client")
    text(ax, (0.42, y), "openai", size=SMALL, mono=True)
    text(ax, (0.42, y - 0.2), "or the chat\npage at /", size=SMALL, va="top")
    return c


def _app(ax, x):
    """The FastAPI app on the event loop: in, and back out."""
    text(
        ax, (x, UP + 0.55), "FastAPI app (event loop)", size=SMALL, color=GREY
    )
    inbound = box(ax, (x, UP), 1.45, 0.74)
    text(ax, (x, UP + 0.2), "POST /v1/completions", size=SMALL, mono=True)
    text(ax, (x, UP + 0.02), "/v1/chat/completions", size=SMALL, mono=True)
    text(ax, (x, UP - 0.2), "check the body, encode", size=SMALL)
    text(ax, (x, UP - 0.5), "400: bad input, 503: queue full", size=SMALL)
    outbound = box(ax, (x, DOWN), 1.45, 0.56)
    text(ax, (x, DOWN + 0.11), f"{code(TextStream)}:", size=SMALL, mono=True)
    text(ax, (x, DOWN - 0.11), "tokens to pieces of text", size=SMALL)
    text(
        ax,
        (x, DOWN - 0.45),
        "data: {...} ... data: [DONE]",
        size=SMALL,
        mono=True,
    )
    return inbound, outbound


def _batcher(ax, x):
    """The batcher's loop, on the thread that owns the model."""
    text(
        ax,
        (x, UP + 0.55),
        f"{code(Batcher)} thread (owns the model)",
        size=SMALL,
        color=GREY,
    )
    steps = [  # (what, the package's name for it)
        ("1 admit:", "prefill_row"),
        ("2 pick a token per row", ""),
        ("3 hand out:", "on_token"),
        ("4 decode:", "decode_rows"),
    ]
    boxes = []
    for i, (what, name) in enumerate(steps):
        y = UP - i * (UP - DOWN) / 2  # step 3 on the answer's lane
        boxes.append(box(ax, (x, y), 1.5, 0.36))
        text(ax, (x - 0.68, y), what, size=SMALL, ha="left")
        text(ax, (x + 0.68, y), name, size=SMALL, ha="right", mono=True)
    for a, b in zip(boxes, boxes[1:]):
        arrow(ax, a.bottom, b.top)
    # The loop: after the step, the next iteration admits again.
    arrow(ax, boxes[3].right, boxes[0].right, curve=0.35)
    text(
        ax,
        (x - 0.12, boxes[3].bottom[1] - 0.14),
        f"{code(StaticCacheEngine)}: every row, busy or not",
        size=SMALL,
    )
    return boxes


@diagram
def serving_flow():
    """A request's path: client, HTTP app, waiting queue, the batcher's
    loop, and its tokens streamed back as text."""
    fig, ax = canvas(6.0, 2.72)
    client = _client(ax)
    inbound, outbound = _app(ax, 1.9)
    steps = _batcher(ax, 4.85)
    # The queue of requests that wait for a free row; ours is the last.
    queue = grid(
        ax, (3.35, UP), 1, 3, 0.18, kinds=[["tensor", "tensor", "accent"]]
    )
    text(ax, (3.35, UP + 0.22), "waiting", size=SMALL, mono=True)
    arrow(ax, (client.right[0], UP), inbound.left, "JSON", side=0.1)
    arrow(ax, inbound.right, queue.left, "submit", side=0.1, mono=True)
    arrow(ax, queue.right, steps[0].left)
    arrow(
        ax, steps[2].left, outbound.right, "its tokens, as they come", side=0.1
    )
    arrow(ax, outbound.left, (client.right[0], DOWN), "SSE", side=0.1)
    return fig


# Eight requests, all waiting at step 0, and how many tokens each wants;
# four rows. Toy numbers.
WANTS = {"A": 3, "B": 7, "C": 4, "D": 5, "E": 2, "F": 6, "G": 3, "H": 4}
ROWS = 4
STEP = 0.35  # inches per decoding step
RH = 0.2  # inches per row


def _static():
    """Static batching: ROWS requests start together, and the next ones
    start when the longest of them is done. -> {name: (row, start)}."""
    out, t, names = {}, 0, list(WANTS)
    for i in range(0, len(names), ROWS):
        batch = names[i : i + ROWS]
        for row, name in enumerate(batch):
            out[name] = (row, t)
        t += max(WANTS[n] for n in batch)
    return out


def _continuous():
    """Batcher's loop: at every step, free rows (in order) take waiting
    requests; a request that got its last token frees its row for the
    next step. -> {name: (row, start)}."""
    out, free_at, waiting = {}, [0] * ROWS, list(WANTS)
    t = 0
    while waiting:
        for row in range(ROWS):
            if free_at[row] <= t and waiting:
                name = waiting.pop(0)
                out[name] = (row, t)
                free_at[row] = t + WANTS[name]
        t += 1
    return out


def _timeline(ax, x0, top, placed, name, accent):
    """Rows as lanes, steps to the right: each request a bar; idle rows
    (computed, not used) muted."""
    end = max(s + WANTS[n] for n, (_, s) in placed.items())
    text(ax, (x0, top + 0.16), name, ha="left")
    for row in range(ROWS):
        y = top - (row + 0.5) * RH
        text(ax, (x0 - 0.08, y), f"row {row}", size=SMALL, ha="right")
        busy = sorted((s, n) for n, (r, s) in placed.items() if r == row)
        t = 0
        for s, n in busy + [(end, None)]:
            if s > t:  # idle: the step runs this row anyway
                box(
                    ax,
                    (x0 + (t + s) / 2 * STEP, y),
                    (s - t) * STEP,
                    RH,
                    kind="muted",
                )
            if n is not None:
                w = WANTS[n] * STEP
                kind = "accent" if n == accent else "tensor"
                box(
                    ax,
                    (x0 + s * STEP + w / 2, y),
                    w,
                    RH,
                    n,
                    kind=kind,
                    size=SMALL,
                )
                t = s + WANTS[n]
    text(
        ax,
        (x0 + end * STEP + 0.08, top - ROWS * RH / 2),
        f"done after\n{end} steps",
        size=SMALL,
        ha="left",
    )
    return end


@diagram
def continuous_batching():
    """Static batching waits for a batch's longest request; continuous
    batching gives a freed row to the next request at the next step."""
    fig, ax = canvas(6.0, 2.75)
    x0 = 0.7
    a = _timeline(ax, x0, 2.45, _static(), "static batching", "E")
    b = _timeline(
        ax,
        x0,
        1.2,
        _continuous(),
        f"continuous batching ($\\mathtt{{{code(Batcher)}}}$)",
        "E",
    )
    # The step axis, shared.
    for t in range(0, max(a, b) + 1, 2):
        text(ax, (x0 + t * STEP, 0.24), str(t), size=SMALL)
    text(ax, (x0 + max(a, b) * STEP / 2, 0.06), "decoding step", size=SMALL)
    key(  # what a bar means
        ax,
        (2.3, 2.61),
        [
            ("tensor", "a request's tokens"),
            ("muted", "idle row, computed anyway"),
        ],
    )
    return fig
