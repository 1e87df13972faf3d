"""llmbook.finetune and llmbook.finetune.data: the data sets built from the
plays, the classifier, the instruction format, the loop and its resume,
the command line and its errors. Tiny random models, tiny data: seconds."""

import dataclasses
import json
import subprocess
import sys
from collections import Counter

import pytest
import torch

from llmbook import finetune as ft
from llmbook.checkpoint import load_model, save_checkpoint
from llmbook.data import BOOK_PLAYS, load_shakespeare
from llmbook.finetune import data as fd
from llmbook.finetune.cli import main as finetune_main
from llmbook.finetune.finetuner import _batch as batch_of
from llmbook.model import GPT, GPTConfig
from llmbook.tokenizer import EOT, Tokenizer, train_bpe
from llmbook.train import TrainConfig

TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in "
    "the mind to suffer the slings and arrows of outrageous fortune. "
) * 10


@pytest.fixture(scope="module")
def tok():
    vocab, merges = train_bpe(TEXT, 300, special_tokens=[EOT])
    return Tokenizer(vocab, merges, special_tokens=[EOT])


def tiny_gpt(tok, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=tok.vocab_size, block_size=48)
    return GPT(GPTConfig.preset("tiny", **{**cfg, **kw}))


CLASSIFY = [
    {"text": "to be or not to be", "label": "hamlet"},
    {"text": "the slings and arrows", "label": "fortune"},
    {"text": "whether 'tis nobler", "label": "hamlet"},
    {"text": "outrageous fortune", "label": "fortune"},
]
INSTRUCT = [
    {"instruction": "Who asks?", "input": "to be", "output": "Hamlet"},
    {"instruction": "What follows?", "input": "", "output": "the question"},
]


# ---------------------------------------------------------------------------
# Data sets from the plays


@pytest.fixture(scope="module")
def speeches():
    return fd.all_speeches()


def test_the_corpus_splits_into_its_nine_plays_and_their_speeches(speeches):
    plays = fd.split_plays()
    assert list(plays) == list(BOOK_PLAYS)
    assert plays["hamlet"].startswith("HAMLET, PRINCE OF DENMARK")
    assert {s.play for s in speeches} == set(BOOK_PLAYS)
    first = speeches[0]
    assert first.speaker == "FIRST CITIZEN"
    assert first.lines[0] == "Before we proceed any further, hear me speak."
    text = load_shakespeare()
    # speakers of every style: "Ham." in Hamlet, "HERMIA" in the Dream
    names = {(s.play, s.speaker) for s in speeches}
    assert ("hamlet", "Ham") in names
    assert ("midsummer_nights_dream", "HERMIA") in names
    for s in speeches[::50]:  # spoken lines are lines of the text
        for line in s.lines:
            assert "[" not in line and line.split()[0] in text


def test_classification_examples_are_balanced_without_speaker_names():
    ex = fd.classification_examples(n_per_class=40, seed=3)
    assert ex == fd.classification_examples(n_per_class=40, seed=3)
    counts = {}
    for e in ex:
        counts[e["label"]] = counts.get(e["label"], 0) + 1
        assert len(e["text"]) <= 160 and e["text"].count("\n") >= 1
    assert counts == {title: 40 for title in fd.PLAY_TITLES.values()}
    speakers = {s.speaker for s in fd.all_speeches()}
    lines = {line for e in ex for line in e["text"].split("\n")}
    assert not lines & speakers
    assert not any(x in lines for x in ("Ham.", "HERMIA", "MACBETH."))


def test_instruction_answers_are_determined_by_the_text(speeches):
    ex = fd.instruction_examples(n_per_task=30, seed=1)
    assert len(ex) == 4 * 30
    by_line = {}
    for s in speeches:
        for line in s.lines:
            by_line.setdefault(line, []).append(s)
    for e in ex:
        assert e["instruction"] == fd.INSTRUCTIONS[e["task"]]
        s, *others = by_line[e["input"]]
        assert not others  # the line occurs once: one right answer
        line = e["input"]
        words = [w.strip(".,;:!?-\"'").lower() for w in line.split()]
        thou = any(w in ("thou", "thee", "thy", "thine") for w in words)
        you = any(w in ("you", "your", "yours", "ye") for w in words)
        expected = {
            "play": fd.PLAY_TITLES[s.play],
            "first_word": line.split()[0].strip('.,;:!?-"'),
            "end_mark": line[-1] if line[-1] in ".,;:!?" else "none",
            "thou_you": "thou" if thou else "you" if you else "neither",
        }[e["task"]]
        assert e["output"] == expected
        if e["task"] == "thou_you":
            assert not (thou and you)  # never asked: two right answers
    answers = Counter(e["output"] for e in ex if e["task"] == "thou_you")
    assert answers == {"thou": 10, "you": 10, "neither": 10}
    marks = {e["output"] for e in ex if e["task"] == "end_mark"}
    assert marks <= set(".,;:!?") | {"none"} and len(marks) > 3


def test_instruction_tasks_keep_their_size_when_not_a_multiple_of_3():
    ex = fd.instruction_examples(n_per_task=32, seed=1)
    assert Counter(e["task"] for e in ex) == {t: 32 for t in fd.INSTRUCTIONS}
    answers = Counter(e["output"] for e in ex if e["task"] == "thou_you")
    assert answers == {"neither": 11, "thou": 11, "you": 10}


def test_split_is_stratified_disjoint_and_fixed():
    ex = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(100)]
    parts = fd.split_examples(ex, "label", seed=5)
    assert parts == fd.split_examples(ex, "label", seed=5)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    texts = [e["text"] for p in parts.values() for e in p]
    assert sorted(texts) == sorted(e["text"] for e in ex)
    assert sum(e["label"] == "a" for e in parts["val"]) == 5


def test_write_jsonl_reports_hash_size_counts_and_reads_back(tmp_path):
    import hashlib

    path = tmp_path / "d" / "x.jsonl"
    info = fd.write_jsonl(path, CLASSIFY, key="label")
    data = path.read_bytes()
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["bytes"] == len(data) and info["examples"] == 4
    assert info["counts"] == {"fortune": 2, "hamlet": 2}
    assert [e for _, e in fd.read_jsonl(path, "classify")] == CLASSIFY
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.jsonl"]


def test_shuffled_words_keep_the_tokens_and_change_the_order():
    import random

    from llmbook.data import use_local_tiktoken

    use_local_tiktoken()  # GPT-2's own byte-level BPE, from local files
    import tiktoken

    gpt2 = tiktoken.get_encoding("gpt2")
    examples = fd.classification_examples(n_per_class=30, seed=1)
    rng = random.Random(0)
    changed = 0
    for e in examples:
        text = e["text"]
        mixed = fd.shuffle_words(text, rng)
        changed += mixed != text
        for a, b in zip(text.split("\n"), mixed.split("\n")):
            assert a.split()[0] == b.split()[0]  # the first word stays
            assert sorted(a.split()) == sorted(b.split())
        assert sorted(gpt2.encode(mixed)) == sorted(gpt2.encode(text))
    assert changed == len(examples)  # every passage has a longer line
    assert fd.shuffle_words("Go.\nTo be", rng) == "Go.\nTo be"


def test_order_examples_each_once_or_both_ways():
    passages = [{"text": f"a b c {i} d e", "label": "x"} for i in range(200)]
    once = fd.order_examples(passages, seed=0)
    assert len(once) == 200
    n_orig = sum(e["label"] == "original" for e in once)
    assert 70 < n_orig < 130  # a fair coin
    for e, p in zip(once, passages):
        assert (e["text"] == p["text"]) == (e["label"] == "original")
    both = fd.order_examples(passages, seed=0, both=True)
    assert [e["label"] for e in both] == ["original", "shuffled"] * 200
    assert [e["text"] for e in both[::2]] == [p["text"] for p in passages]
    assert fd.order_examples(passages, seed=0) == once  # deterministic
    assert fd.order_examples([{"text": "a b\nc d"}], seed=0) == []


def test_build_datasets_writes_nine_files(tmp_path):
    report = fd.build_datasets(tmp_path, n_per_class=20, n_per_task=20)
    assert sorted(report) == sorted(
        f"{n}-{p}.jsonl"
        for n in ("plays", "order", "instruct")
        for p in ("train", "val", "test")
    )
    assert report["plays-test.jsonl"]["examples"] == 9 * 2
    assert report["order-test.jsonl"]["counts"] == {
        "original": 18,
        "shuffled": 18,
    }
    assert report["order-train.jsonl"]["examples"] == 9 * 16
    again = fd.build_datasets(tmp_path / "b", n_per_class=20, n_per_task=20)
    assert all(again[k]["sha256"] == report[k]["sha256"] for k in report)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"text": "a", "label": "x"}\n{"text": "b", label}\n',
            ":2: malformed",
        ),
        ('{"text": "a"}\n', ":1: missing field 'label'"),
        ('\n{"text": 3, "label": "x"}\n', ":2: field 'text' must be a string"),
        ('["a", "x"]\n', ":1: expected a JSON object"),
        ('{"text": " ", "label": "x"}\n', ":1: field 'text' is empty"),
        ("", ": no examples (the file is empty)"),
        ("\n\n", ": no examples (only blank lines)"),
    ],
)
def test_read_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(fd.DataFormatError) as e:
        fd.read_jsonl(path, "classify")
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_read_jsonl_instruct_input_is_optional(tmp_path):
    path = tmp_path / "i.jsonl"
    path.write_text('{"instruction": "Hi", "output": "ho"}\n')
    [(line, e)] = fd.read_jsonl(path, "instruct")
    assert line == 1 and e["input"] == ""
    with pytest.raises(fd.DataFormatError, match="no such file"):
        fd.read_jsonl(tmp_path / "none.jsonl", "instruct")


# ---------------------------------------------------------------------------
# The classifier


def test_classifier_pools_the_last_real_token(tok):
    clf = ft.Classifier(tiny_gpt(tok), 3).eval()
    seqs = [tok.encode("to be or not"), tok.encode("the question: whether")]
    ids, mask = ft.pad(seqs, pad_id=5)
    assert mask.sum(1).tolist() == [len(s) for s in seqs]
    batch = clf(ids, attention_mask=mask)  # (2, 3)
    alone = torch.cat([clf(torch.tensor([s])) for s in seqs])
    torch.testing.assert_close(batch, alone)
    other, _ = ft.pad(seqs, pad_id=7)  # what the padding holds is unseen
    torch.testing.assert_close(clf(other, attention_mask=mask), batch)


def test_freeze_chooses_what_trains(tok):
    clf = ft.Classifier(tiny_gpt(tok), 2)
    assert ft.freeze(clf, "head") == ["head.weight", "head.bias"]
    names = ft.freeze(clf, "last_block")
    assert "gpt.blocks.1.attn.c_attn.weight" in names
    assert not any(n.startswith("gpt.blocks.0.") for n in names)
    assert "gpt.ln_f.weight" in names and "gpt.wte.weight" not in names
    assert len(ft.freeze(clf, "all")) == len(list(clf.parameters()))
    gpt = tiny_gpt(tok)
    assert "wte.weight" in ft.freeze(gpt, "head")  # the tied LM head
    with pytest.raises(ValueError, match="unknown train"):
        ft.freeze(clf, "some")


def test_wilson_interval():
    lo, hi = ft.wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4)
    assert hi == pytest.approx(0.5962, abs=1e-4)
    assert ft.wilson_interval(0, 10)[0] == 0.0
    assert ft.wilson_interval(10, 10)[1] == 1.0


# ---------------------------------------------------------------------------
# The instruction format


def test_special_tokens_are_added_without_changing_old_ids(tok):
    new = ft.add_special_tokens(tok)
    assert new.vocab_size == tok.vocab_size + 3
    assert new.special_tokens[EOT] == tok.special_tokens[EOT]
    assert [new.special_tokens[t] for t in ft.SPECIAL_TOKENS] == [
        tok.vocab_size,
        tok.vocab_size + 1,
        tok.vocab_size + 2,
    ]
    assert all(new.vocab[i] == b for i, b in tok.vocab.items())
    assert new.encode(TEXT[:200]) == tok.encode(TEXT[:200])
    assert ft.add_special_tokens(new).special_tokens == new.special_tokens
    ids = new.encode(ft.format_instruction("Who?", "to be", "Hamlet"))
    assert ids[0] == new.special_tokens[ft.INSTRUCTION]
    assert ids[-1] == new.special_tokens[ft.END]


@pytest.mark.parametrize("tied", [True, False])
def test_resize_vocab_keeps_old_rows_and_ties(tok, tied):
    gpt = tiny_gpt(tok, tie_weights=tied)
    old_wte = gpt.wte.weight.detach().clone()
    old_head = gpt.lm_head.weight.detach().clone()
    idx = torch.tensor([tok.encode("to be or not")])
    before = gpt(idx)
    ft.resize_vocab(gpt, tok.vocab_size + 600)
    assert gpt.config.vocab_size == tok.vocab_size + 600
    assert gpt.wte.weight.shape == (tok.vocab_size + 600, 32)
    assert gpt.lm_head.weight.shape == (tok.vocab_size + 600, 32)
    assert (gpt.lm_head.weight is gpt.wte.weight) == tied
    assert torch.equal(gpt.wte.weight[: tok.vocab_size], old_wte)
    assert torch.equal(gpt.lm_head.weight[: tok.vocab_size], old_head)
    new_rows = gpt.wte.weight[tok.vocab_size :]
    assert new_rows.std().item() == pytest.approx(0.02, rel=0.1)
    assert abs(new_rows.mean().item()) < 0.002
    torch.testing.assert_close(gpt(idx)[..., : tok.vocab_size], before)
    assert gpt.num_parameters() == GPT(gpt.config).num_parameters()
    with pytest.raises(ValueError, match="only grows"):
        ft.resize_vocab(gpt, 10)


def test_prompt_labels_and_padding_are_ignored(tok):
    t = ft.add_special_tokens(tok)
    long = ft.encode_instruction(t, "Who asks?", "to be", "Hamlet")
    short = ft.encode_instruction(t, "Say", "", "no")
    prompt, n = ft.encode_instruction(t, "Who asks?", "to be")
    assert long[0][:n] == prompt and long[1] == n == len(prompt)
    assert prompt[-1] == t.special_tokens[ft.RESPONSE]
    ids, mask, labels = ft.instruction_batch([long, short])
    ignored = labels == ft.IGNORE
    assert torch.equal(ignored[0], torch.arange(ids.size(1)) < long[1])
    pad_and_prompt = (torch.arange(ids.size(1)) < short[1]) | ~mask[1]
    assert torch.equal(ignored[1], pad_and_prompt)
    assert torch.equal(labels[~ignored], ids[~ignored])
    _, _, every = ft.instruction_batch([long, short], loss_on="all")
    assert torch.equal(every == ft.IGNORE, ~mask)
    with pytest.raises(ValueError, match="add_special_tokens"):
        ft.encode_instruction(tok, "Who?")


def test_instruction_loss_counts_only_labelled_positions(tok):
    t = ft.add_special_tokens(tok)
    gpt = ft.resize_vocab(tiny_gpt(tok), t.vocab_size)
    ex = [ft.encode_instruction(t, "Who asks?", "to be", "Hamlet")]
    ids, mask, labels = ft.instruction_batch(ex)
    loss = ft.instruction_loss(gpt, ids, mask, labels)
    logits = gpt(ids)[0, :-1]
    n = ex[0][1]
    expected = torch.nn.functional.cross_entropy(logits[n - 1 :], ids[0, n:])
    torch.testing.assert_close(loss, expected)


# ---------------------------------------------------------------------------
# The loop


def test_finetuned_instruction_model_answers_and_stops(tok):
    cfg = ft.FinetuneConfig(
        task="instruct", steps=40, batch_size=2, warmup=2, lr=1e-2
    )
    result = ft.finetune(cfg, tiny_gpt(tok), tok, INSTRUCT)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    score = ft.exact_match(result.model, result.tokenizer, INSTRUCT)
    assert score["answers"] == ["Hamlet", "the question"]
    assert score["accuracy"] == 1.0 and score["by_task"] == {"": 1.0}
    # before finetuning: the format is new, the answers are not there
    base = ft.resize_vocab(tiny_gpt(tok), result.tokenizer.vocab_size)
    before = ft.exact_match(base, result.tokenizer, INSTRUCT, 8)
    assert before["accuracy"] == 0.0
    assert all(len(result.tokenizer.encode(a)) <= 8 for a in before["answers"])


def test_classifier_finetune_learns_and_reports(tok):
    cfg = ft.FinetuneConfig(steps=30, batch_size=4, warmup=2, lr=3e-3)
    result = ft.finetune(cfg, tiny_gpt(tok), tok, CLASSIFY)
    assert result.config.labels == ["fortune", "hamlet"]
    ev = ft.evaluate_classifier(
        result.model, tok, CLASSIFY, ["fortune", "hamlet"]
    )
    assert ev["accuracy"] == 1.0 and ev["confusion"] == [[2, 0], [0, 2]]
    assert ev["predictions"] == [e["label"] for e in CLASSIFY]


@pytest.mark.parametrize(
    "task, lora, examples",
    [("classify", 0, CLASSIFY), ("instruct", 4, INSTRUCT)],
)
def test_interrupted_run_resumes_to_the_same_weights(
    tmp_path, tok, task, lora, examples
):
    def run(out, stop_at=None):
        def callback(step, loss):
            if step == stop_at:
                raise KeyboardInterrupt

        cfg = ft.FinetuneConfig(
            task=task,
            steps=6,
            batch_size=3,
            warmup=2,
            lora_rank=lora,
            checkpoint_interval=2,
            out_dir=str(out),
        )
        return ft.finetune(
            cfg, tiny_gpt(tok, dropout=0.1), tok, examples, callback=callback
        )

    whole = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_at=3)  # after the checkpoint of step 2
    resumed = run(tmp_path / "b")
    # the history of the steps before the interruption comes back with the
    # checkpoint: the resumed run reports all six
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert resumed.history == whole.history
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    net, _, cfg = ft.load_finetuned(tmp_path / "b" / "ckpt.pt")
    assert all(torch.equal(net.state_dict()[k], a[k]) for k in a)
    assert cfg.lora_rank == lora


def test_batches_cover_every_example_once_per_epoch():
    order = [i for step in range(7) for i in batch_of(10, 3, step, seed=2)]
    assert sorted(order[:10]) == list(range(10)) == sorted(order[10:20])
    assert order[:10] != list(range(10))  # shuffled
    assert batch_of(10, 3, 4, seed=2) == order[12:15]  # the step alone
    assert batch_of(10, 3, 4, seed=3) != order[12:15]


def test_resume_refuses_other_settings(tmp_path, tok):
    cfg = ft.FinetuneConfig(steps=2, batch_size=2, out_dir=str(tmp_path))
    ft.finetune(cfg, tiny_gpt(tok), tok, CLASSIFY)
    with pytest.raises(ft.FinetuneError, match="lr differ"):
        ft.finetune(
            dataclasses.replace(cfg, lr=0.1), tiny_gpt(tok), tok, CLASSIFY
        )
    with pytest.raises(ft.FinetuneError, match="base_sha256"):
        ft.finetune(cfg, tiny_gpt(tok, seed=1), tok, CLASSIFY)


def test_lora_trains_adapters_and_the_head_only(tok):
    cfg = ft.FinetuneConfig(steps=2, batch_size=2, lora_rank=2)
    result = ft.finetune(cfg, tiny_gpt(tok), tok, CLASSIFY)
    names = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or n.startswith("head.") for n in names)
    assert result.trainable < result.total / 5


# ---------------------------------------------------------------------------
# The command line


@pytest.fixture()
def pretrained(tmp_path, tok):
    path = tmp_path / "pre.pt"
    save_checkpoint(path, tiny_gpt(tok), None, TrainConfig(), tok, step=0)
    return path


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def cli(capsys, *argv):
    code = finetune_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_classify_and_instruct(tmp_path, pretrained, capsys):
    data = write(tmp_path / "c.jsonl", CLASSIFY)
    code, out, _ = cli(
        capsys,
        "--task",
        "classify",
        "--data",
        data,
        "--val",
        data,
        "--checkpoint",
        pretrained,
        "--out",
        tmp_path / "c",
        "--steps",
        3,
    )
    assert code == 0 and "validation accuracy" in out
    assert (tmp_path / "c" / "ckpt.pt").is_file()
    data = write(tmp_path / "i.jsonl", INSTRUCT)
    code, out, _ = cli(
        capsys,
        "--task",
        "instruct",
        "--data",
        data,
        "--val",
        data,
        "--checkpoint",
        pretrained,
        "--out",
        tmp_path / "i",
        "--steps",
        3,
        "--lora-rank",
        2,
    )
    assert code == 0 and "validation exact match" in out
    model, tokenizer = load_model(tmp_path / "i" / "model.pt")
    assert ft.END in tokenizer.special_tokens
    assert model.config.vocab_size == tokenizer.vocab_size


def test_cli_errors_name_file_and_line(tmp_path, pretrained, capsys):
    good = write(tmp_path / "good.jsonl", CLASSIFY)
    long = write(
        tmp_path / "long.jsonl", [*CLASSIFY, {"text": TEXT, "label": "hamlet"}]
    )
    unknown = write(tmp_path / "val.jsonl", [{"text": "to be", "label": "x"}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "hamlet"}\n{"text": \n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    missing = write(tmp_path / "m.jsonl", [{"label": "hamlet"}])
    base = [
        "--task",
        "classify",
        "--checkpoint",
        pretrained,
        "--steps",
        1,
        "--out",
        tmp_path / "o",
    ]
    cases = [
        (["--data", bad], f"{bad}:2: malformed JSON"),
        (["--data", missing], f"{missing}:1: missing field 'text'"),
        (["--data", empty], f"{empty}: no examples"),
        (
            ["--data", good, "--val", unknown],
            f"{unknown}:1: unknown label 'x'",
        ),
        (["--data", good, "--labels", "hamlet"], f"{good}:2: unknown label"),
        (["--data", long], f"{long}:5: the example is "),
        (["--data", good, "--checkpoint", good], f"{good}: not a pretrained"),
        (["--data", good, "--checkpoint", tmp_path / "no.pt"], "no such"),
    ]
    for extra, message in cases:
        code, _, err = cli(capsys, *base, *extra)
        assert code == 2, extra
        assert err.count("\n") == 1 and message in err, err
        assert "Traceback" not in err
    code, _, err = cli(capsys, *base, "--data", long)
    assert "more than the model's context of 48 tokens" in err
    assert "refused, not truncated" in err


def test_cli_help_and_exit_status_in_a_process(tmp_path):
    run = [sys.executable, "-m", "llmbook.finetune"]
    out = subprocess.run([*run, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ('"text"', '"label"', '"instruction"', '"input"', '"output"'):
        assert name in out.stdout
    assert "refused" in out.stdout and "--labels" in out.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{\n")
    out = subprocess.run(
        [*run, "--task", "instruct", "--data", bad, "--checkpoint", bad],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{bad}:1: malformed JSON" in out.stderr


def test_the_gpu_profile_path_on_a_gpt2_shaped_stand_in():
    # GPT-2's tokenizer and vocabulary (a tiny random GPT-2 of that
    # vocabulary stands in for GPT.from_pretrained): the new tokens come
    # after <|endoftext|> = 50256 and the tied matrix grows to 50260 rows
    gpt2_tok = Tokenizer.from_gpt2()
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.preset("gpt2", n_layer=1, n_head=2, n_embd=16))
    cfg = ft.FinetuneConfig(task="instruct", steps=1, batch_size=1)
    result = ft.finetune(cfg, gpt, gpt2_tok, INSTRUCT[:1])
    assert result.tokenizer.special_tokens[ft.END] == 50259
    assert result.model.config.vocab_size == 50260
    assert result.model.lm_head.weight is result.model.wte.weight
    assert not torch.equal(result.model.wpe.weight, gpt.wpe.weight)  # trained


def test_classifying_with_a_gpt2_shaped_stand_in():
    # chapter 10's base="gpt2": GPT.from_pretrained("gpt2") and GPT-2's
    # tokenizer; a tiny random GPT-2 of that vocabulary stands in
    gpt2_tok = Tokenizer.from_gpt2()
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.preset("gpt2", n_layer=1, n_head=2, n_embd=16))
    labels = sorted({e["label"] for e in CLASSIFY})
    for kw in (dict(train="last_block"), dict(lora_rank=2)):
        cfg = ft.FinetuneConfig(steps=2, batch_size=2, labels=labels, **kw)
        result = ft.finetune(cfg, gpt, gpt2_tok, CLASSIFY)
        ev = ft.evaluate_classifier(result.model, gpt2_tok, CLASSIFY, labels)
        assert ev["n"] == len(CLASSIFY) and 0 <= ev["accuracy"] <= 1
        assert sum(map(sum, ev["confusion"])) == len(CLASSIFY)


def test_cli_set_overrides_any_setting_and_refuses_typos(capsys):
    """One command-line style: --set KEY=VALUE, as for training; a bad
    setting is refused before any file is read (exit 2)."""
    base = ["--task", "classify", "--data", "no.jsonl", "--checkpoint", "x"]
    assert finetune_main([*base, "--set", "warmup=ten"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m llmbook.finetune: error: setting")
    assert "warmup='ten' is not a valid int" in err
    assert finetune_main([*base, "--set", "wat=1"]) == 2
    assert "unknown setting 'wat'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        finetune_main(["--help"])
    shown = capsys.readouterr().out
    assert "weight_decay=0.0" in shown and "exit status" in shown


def test_run_dir_names_a_run_by_its_settings_model_and_data(tmp_path, tok):
    cfg = ft.FinetuneConfig(task="instruct", steps=3, batch_size=2)
    model = tiny_gpt(tok)
    here = ft.run_dir(tmp_path, cfg, model, INSTRUCT)
    assert here.parent == tmp_path and here.name.startswith("instruct-")
    moved = dataclasses.replace(cfg, out_dir=str(here))
    assert ft.run_dir(tmp_path, moved, model, INSTRUCT) == here
    assert ft.run_dir(tmp_path, cfg, tiny_gpt(tok), INSTRUCT) == here
    others = [
        ft.run_dir(
            tmp_path, dataclasses.replace(cfg, lr=2e-3), model, INSTRUCT
        ),
        ft.run_dir(tmp_path, cfg, tiny_gpt(tok, seed=1), INSTRUCT),
        ft.run_dir(tmp_path, cfg, model, INSTRUCT[:1]),
    ]
    assert len({here, *others}) == 4
    # a run in its directory is found again, finished, by the same call
    first = ft.finetune(moved, model, tok, INSTRUCT)
    again = ft.finetune(moved, model, tok, INSTRUCT)
    assert again.history == first.history  # kept in the checkpoint
    assert again.checkpoint == first.checkpoint
    for p, q in zip(first.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q)
