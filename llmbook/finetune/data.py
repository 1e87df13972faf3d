"""Data for finetuning: labelled examples built from the plays, and the
JSON-lines files that carry them.

Labels come from the text itself, not from a model or a person:

1. ``speeches``: each play cut into speeches (who speaks, which lines),
   stage directions, act and scene headings removed.
2. ``classification_examples``: passages of a few lines of dialogue with
   the speaker names removed, labelled with the play they come from;
   ``order_examples``: the same passages, as they are or with their words
   shuffled (``shuffle_words``), a task that counting tokens cannot do.
3. ``instruction_examples``: questions about a line whose answers code
   can check by exact match: its first word, the punctuation mark it ends
   with, whether it says thou or you, which play it is from.
4. ``split_examples`` (train / validation / test, once, with a fixed seed,
   the same share of every class in each part), ``write_jsonl`` (atomic;
   returns the file's sha256, size and class counts) and ``read_jsonl``,
   which names the file and line of whatever is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llmbook.data import BOOK_PLAYS, atomic_write, load_shakespeare

# The label of each play: its title as readers know it.
PLAY_TITLES = {
    "coriolanus": "Coriolanus",
    "hamlet": "Hamlet",
    "macbeth": "Macbeth",
    "romeo_and_juliet": "Romeo and Juliet",
    "julius_caesar": "Julius Caesar",
    "midsummer_nights_dream": "A Midsummer Night's Dream",
    "tempest": "The Tempest",
    "twelfth_night": "Twelfth Night",
    "merchant_of_venice": "The Merchant of Venice",
}

# The fields of a JSON-lines example, per task: {field: required}.
FIELDS = {
    "classify": {"text": True, "label": True},
    "instruct": {"instruction": True, "input": False, "output": True},
}


class DataFormatError(ValueError):
    """An example file is wrong; the message names the file and line."""


# ---------------------------------------------------------------------------
# 1. Plays, cut into speeches


@dataclass(frozen=True)
class Speech:
    play: str  # a key of PLAY_TITLES
    speaker: str  # as the text prints it, without the final period
    lines: tuple[str, ...]  # the spoken lines, stripped, no stage directions
    scene: int  # a counter over the play's scene headings


def split_plays(text: str | None = None) -> dict[str, str]:
    """The nine-play corpus (``load_shakespeare()``) cut back into its
    plays, in ``BOOK_PLAYS`` order: each play opens with its title, a blank
    line and "by William Shakespeare"."""
    text = load_shakespeare() if text is None else text
    lines = text.split("\n")
    starts = [
        i - 2 for i, x in enumerate(lines) if x == "by William Shakespeare"
    ]
    if len(starts) != len(BOOK_PLAYS):
        raise ValueError(
            f"expected {len(BOOK_PLAYS)} plays, found {len(starts)} title "
            "pages; is this the book's nine-play corpus?"
        )
    ends = starts[1:] + [len(lines)]
    return {
        name: "\n".join(lines[a:b])
        for name, a, b in zip(BOOK_PLAYS, starts, ends)
    }


# "FIRST CITIZEN." / "Ham." / "1 Clown." / "Lady Capulet." / "HERMIA"
_SPEAKER = re.compile(r"^(?:\d )?[A-Z][A-Za-z' -]{0,30}\.?$")
_HEADING = re.compile(r"^(?:ACT|Act|SCENE|Scene)\b")
_DIRECTION = re.compile(r"[\[{][^\]}]*[\]}]")  # [Exit.], {Kissing her.]


def _speaker(line: str) -> str | None:
    line = line.strip()
    if not _SPEAKER.match(line):
        return None
    # without the period only capitals count (A Midsummer Night's Dream
    # prints "HERMIA"); otherwise a one-word line of verse would qualify
    if not line.endswith(".") and line != line.upper():
        return None
    return line.removesuffix(".").strip()


def speeches(play: str, text: str, min_speeches: int = 3) -> list[Speech]:
    """The speeches of one play, from its first act on.

    Paragraphs are separated by blank lines; a speech is a paragraph whose
    first line is a speaker's name (a name must head at least
    ``min_speeches`` paragraphs, which keeps out short lines of verse that
    look like names). A paragraph without a name continues the previous
    speech (the text after a stage direction); act and scene headings end
    it. Stage directions in brackets are removed.
    """
    paragraphs = re.split(r"\n[ \t]*\n", text)
    first_act = next(
        (i for i, p in enumerate(paragraphs) if p.strip().startswith("ACT")),
        0,
    )
    paragraphs = [p.strip("\n") for p in paragraphs[first_act:]]
    counts = Counter()
    for p in paragraphs:
        head, _, rest = p.partition("\n")
        name = _speaker(head)
        if name and rest.strip():
            counts[name] += 1
    out: list[Speech] = []
    current: tuple[str, list[str]] | None = None
    scene = 0

    def close():
        if current and current[1]:
            out.append(Speech(play, current[0], tuple(current[1]), scene))

    for p in paragraphs:
        head, _, rest = p.partition("\n")
        name = _speaker(head)
        if _HEADING.match(head.strip()):
            close()
            current, scene = None, scene + 1
            continue
        if name and counts[name] >= min_speeches and rest.strip():
            close()
            current, body = (name, []), rest
        elif current is not None:
            body = p
        else:
            continue
        body = _DIRECTION.sub(" ", body)
        current[1].extend(
            " ".join(x.split()) for x in body.split("\n") if x.strip()
        )
    close()
    return out


def all_speeches(text: str | None = None) -> list[Speech]:
    """The speeches of the nine plays, in corpus order."""
    return [
        s for name, t in split_plays(text).items() for s in speeches(name, t)
    ]


# ---------------------------------------------------------------------------
# 2. Which play is this passage from?


def passages(
    speech_list: list[Speech], max_chars: int = 160, min_lines: int = 2
) -> list[str]:
    """Non-overlapping passages of consecutive spoken lines within a scene,
    speakers removed: whole lines, as many as fit in ``max_chars``
    characters (newlines included), at least ``min_lines``."""
    out, lines, size, scene = [], [], 0, None

    def flush():
        if len(lines) >= min_lines:
            out.append("\n".join(lines))

    for s in speech_list:
        if s.scene != scene:
            flush()
            lines, size, scene = [], 0, s.scene
        for line in s.lines:
            extra = len(line) + (1 if lines else 0)
            if size + extra > max_chars:
                flush()
                lines, size, extra = [], 0, len(line)
            if extra > max_chars:  # a line too long on its own
                continue
            lines.append(line)
            size += extra
    flush()
    return out


def classification_examples(
    n_per_class: int = 600,
    max_chars: int = 160,
    min_lines: int = 2,
    seed: int = 0,
    text: str | None = None,
) -> list[dict]:
    """``n_per_class`` passages of every play (so the classes are balanced
    and the majority baseline is 1/9), each ``{"text", "label"}`` with the
    play's title as label, drawn with ``random.Random(seed)``."""
    rng = random.Random(seed)
    by_play: dict[str, list[Speech]] = {}
    for s in all_speeches(text):
        by_play.setdefault(s.play, []).append(s)
    examples = []
    for play, speech_list in by_play.items():
        found = passages(speech_list, max_chars, min_lines)
        if len(found) < n_per_class:
            raise ValueError(
                f"{PLAY_TITLES[play]} has only {len(found)} passages of at "
                f"most {max_chars} characters; ask for fewer than "
                f"{n_per_class} per class"
            )
        label = PLAY_TITLES[play]
        for t in sorted(rng.sample(range(len(found)), n_per_class)):
            examples.append({"text": found[t], "label": label})
    return examples


# ---------------------------------------------------------------------------
# 2b. Original or shuffled? A task that only word order can answer

ORDER_LABELS = ["original", "shuffled"]


def shuffle_words(text: str, rng: random.Random) -> str:
    """``text`` with the words of each line after its first put in a random
    order: the same words in another order. The first word stays first,
    and every other word keeps the space before it, so a byte-level BPE
    encodes both texts to the same tokens, only in another order. Lines of
    fewer than three words cannot change; a line whose shuffle came out as
    it was is shuffled again (up to ten times)."""
    out = []
    for line in text.split("\n"):
        first, *rest = line.split(" ")
        for _ in range(10):
            if len(set(rest)) < 2:
                break
            shuffled = rng.sample(rest, len(rest))
            if shuffled != rest:
                rest = shuffled
                break
        out.append(" ".join([first, *rest]))
    return "\n".join(out)


def order_examples(
    examples: list[dict], seed: int = 0, both: bool = False
) -> list[dict]:
    """Original or shuffled? ``{"text", "label"}`` examples from passages
    (``{"text", ...}``), labelled with ``ORDER_LABELS``. With ``both``,
    every passage twice, as it is and shuffled (``shuffle_words``), so the
    two classes hold the same tokens and any classifier of token counts
    scores exactly one half; otherwise each passage once, as it is or
    shuffled, by a coin of ``random.Random(seed)``. A passage that no
    shuffle can change is left out."""
    rng = random.Random(seed)
    out = []
    for e in examples:
        shuffled = shuffle_words(e["text"], rng)
        if shuffled == e["text"]:
            continue
        pair = [
            {"text": e["text"], "label": ORDER_LABELS[0]},
            {"text": shuffled, "label": ORDER_LABELS[1]},
        ]
        out += pair if both else [pair[rng.random() < 0.5]]
    return out


# ---------------------------------------------------------------------------
# 3. Instructions whose answers code can check

INSTRUCTIONS = {
    "first_word": "What is the first word of this line?",
    "end_mark": "What punctuation mark ends this line?",
    "thou_you": "Does this line say thou or you?",
    "play": "Which play is this line from?",
}
_PUNCT = '.,;:!?-"'
_END_MARKS = ".,;:!?"  # end_mark's answers, besides "none"
_THOU_YOU = ("neither", "thou", "you")  # thou_you's answers, in pool order
_THOU = {"thou", "thee", "thy", "thine"}
_YOU = {"you", "your", "yours", "ye"}


def _first_word(line: str) -> str:
    return line.split()[0].strip(_PUNCT)


def _end_mark(line: str) -> str:
    return line[-1] if line[-1] in _END_MARKS else "none"


def _thou_or_you(line: str) -> str | None:
    words = {w.strip(_PUNCT + "'").lower() for w in line.split()}
    thou, you = bool(words & _THOU), bool(words & _YOU)
    if thou and you:
        return None  # both: not asked
    return "thou" if thou else "you" if you else "neither"


def _answers(line: str, title: str) -> dict[str, str | None]:
    return {
        "first_word": _first_word(line) or None,
        "end_mark": _end_mark(line),
        "thou_you": _thou_or_you(line),
        "play": title,
    }


def instruction_examples(
    n_per_task: int = 1500,
    min_chars: int = 25,
    seed: int = 0,
    text: str | None = None,
) -> list[dict]:
    """``n_per_task`` questions of each kind in ``INSTRUCTIONS``, as
    ``{"instruction", "input", "output", "task"}``. The input is a spoken
    line of at least ``min_chars`` characters that occurs once in the nine
    plays, so its answer is determined: its first word (without the
    punctuation around it); the punctuation mark it ends with (one of
    ``.,;:!?``, else "none"); whether it says thou (thee, thy, thine) or
    you (your, yours, ye), "neither" or, never asked, both; the play's
    title. ``thou_you`` draws the same number of each of its three
    answers (the first ones one more when ``n_per_task`` is not a multiple
    of 3), so that guessing one is right a third of the time."""
    rng = random.Random(seed)
    speech_list = all_speeches(text)
    seen = Counter(line for s in speech_list for line in s.lines)
    pools: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for s in speech_list:
        for line in s.lines:
            if seen[line] != 1 or len(line) < min_chars:
                continue
            for task, answer in _answers(line, PLAY_TITLES[s.play]).items():
                if answer is not None:  # one pool per task, or per answer
                    key = (task, answer if task == "thou_you" else "")
                    pools.setdefault(key, []).append((line, answer))
    examples = []
    for (task, answer), pairs in sorted(pools.items()):
        n = n_per_task
        if answer:  # thou_you: a third each, the remainder spread
            n = n_per_task // 3 + (_THOU_YOU.index(answer) < n_per_task % 3)
        if len(pairs) < n:
            raise ValueError(
                f"only {len(pairs)} {task} questions {answer} can be made; "
                f"ask for fewer than {n_per_task} per task"
            )
        for k in sorted(rng.sample(range(len(pairs)), n)):
            line, output = pairs[k]
            examples.append(
                dict(
                    instruction=INSTRUCTIONS[task],
                    input=line,
                    output=output,
                    task=task,
                )
            )
    return examples


# ---------------------------------------------------------------------------
# 4. Splits and files


def split_examples(
    examples: list[dict],
    key: str,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, list[dict]]:
    """``{"train", "val", "test"}``: every class (the value of ``key``:
    "label" or "task") shuffled with ``random.Random(seed)`` and cut in
    these fractions, so each part has the classes in the same shares. Made
    once and written to files; the chapters read the files."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three that sum to 1: {fractions}")
    rng = random.Random(seed)
    by_class: dict[str, list[dict]] = {}
    for e in examples:
        by_class.setdefault(e[key], []).append(e)
    parts = {"train": [], "val": [], "test": []}
    for cls in sorted(by_class):
        group = list(by_class[cls])
        rng.shuffle(group)
        n_train = round(len(group) * fractions[0])
        n_val = round(len(group) * fractions[1])
        parts["train"] += group[:n_train]
        parts["val"] += group[n_train : n_train + n_val]
        parts["test"] += group[n_train + n_val :]
    for part in parts.values():  # classes interleaved, not in blocks
        rng.shuffle(part)
    return parts


def write_jsonl(path, records: list[dict], key: str | None = None) -> dict:
    """Write one JSON object per line (atomic: a temporary file renamed);
    return ``{"path", "sha256", "bytes", "examples", "counts"}``, the
    counts being those of ``records[i][key]`` (the class balance)."""
    path = Path(path)
    data = "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in records
    ).encode("utf-8")
    with atomic_write(path) as f:
        f.write(data)
    counts = Counter(r[key] for r in records) if key else Counter()
    return dict(
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        examples=len(records),
        counts=dict(sorted(counts.items())),
    )


def build_datasets(directory, seed: int = 0, **sizes) -> dict:
    """The data sets, split and written to ``directory`` as
    ``plays-{train,val,test}.jsonl`` (which play), ``order-*.jsonl`` (the
    same passages, original or shuffled: each training passage once, each
    validation and test passage both ways) and
    ``instruct-{train,val,test}.jsonl``; returns what ``write_jsonl``
    reports for each file, by name. ``sizes``: ``n_per_class``,
    ``n_per_task``."""
    directory = Path(directory)
    plays = classification_examples(
        n_per_class=sizes.get("n_per_class", 600), seed=seed
    )
    tasks = instruction_examples(
        n_per_task=sizes.get("n_per_task", 1500), seed=seed
    )
    report = {}
    for name, examples, key in (
        ("plays", plays, "label"),
        ("instruct", tasks, "task"),
    ):
        parts = split_examples(examples, key, seed=seed)
        for k, (part, records) in enumerate(parts.items()):
            path = directory / f"{name}-{part}.jsonl"
            report[path.name] = write_jsonl(path, records, key)
            if name == "plays":  # the same passages, original or shuffled
                records = order_examples(
                    records, seed=seed + k, both=part != "train"
                )
                path = directory / f"order-{part}.jsonl"
                report[path.name] = write_jsonl(path, records, "label")
    return report


def read_jsonl(path, task: str) -> list[tuple[int, dict]]:
    """The examples of a JSON-lines file for ``task`` ("classify" or
    "instruct"; ``FIELDS`` lists the fields), as ``(line number, example)``
    pairs. Blank lines are skipped; other fields are kept and ignored.
    Anything wrong raises ``DataFormatError`` naming the file and line:
    a missing file, text that is not UTF-8, malformed JSON, a line that is
    not an object, a missing field or one that is not a string, an empty
    text, a file without examples."""
    if task not in FIELDS:
        raise ValueError(
            f"unknown task {task!r}; choose one of {list(FIELDS)}"
        )
    fields = FIELDS[task]
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no such file") from None
    except OSError as e:
        raise DataFormatError(
            f"{path}: cannot read it ({e.strerror})"
        ) from None
    out = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{number}"
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise DataFormatError(f"{where}: not UTF-8 text") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(
                f"{where}: malformed JSON ({e.msg} at column {e.colno})"
            ) from None
        if not isinstance(record, dict):
            raise DataFormatError(
                f"{where}: expected a JSON object with fields "
                f"{', '.join(fields)}, got {type(record).__name__}"
            )
        for name, required in fields.items():
            if name not in record:
                if not required:
                    record[name] = ""
                    continue
                needed = ", ".join(f for f, r in fields.items() if r)
                raise DataFormatError(
                    f"{where}: missing field {name!r} (a {task} example "
                    f"needs {needed})"
                )
            if not isinstance(record[name], str):
                raise DataFormatError(
                    f"{where}: field {name!r} must be a string, got "
                    f"{type(record[name]).__name__}"
                )
        main = "text" if task == "classify" else "output"
        if not record[main].strip():
            raise DataFormatError(f"{where}: field {main!r} is empty")
        out.append((number, record))
    if not out:
        what = "the file is empty" if not raw else "only blank lines"
        raise DataFormatError(f"{path}: no examples ({what})")
    return out
