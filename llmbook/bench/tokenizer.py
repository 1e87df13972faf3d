"""Tokenizer speed, side by side: BPE training time and encoding throughput.

    python -m llmbook.bench.tokenizer            # 1 MB and 5 MB corpora
    python -m llmbook.bench.tokenizer --quick    # 1 MB only, fewer repeats

Training: ``llmbook.tokenizer.train_bpe`` (pure Python, incremental pair
counts) against Hugging Face ``tokenizers``' BPE trainer (Rust, multi-
threaded), vocabulary 4,096, on the nine-play corpus (1.1 MB) and on all 42
texts (5.1 MB).

Encoding (MB/s of UTF-8 input): the from-scratch ``Tokenizer.encode`` (with
an empty word cache, and again with the cache filled), its ``to_tiktoken()``
export, tiktoken's own GPT-2, GPT-2 through our ``to_tiktoken()``, and
Hugging Face ``tokenizers`` built from GPT-2's ``vocab.bpe``/``encoder.json``.
Contenders alternate within each round (``llmbook.timing.alternate``); the
table shows medians. The machine may be shared, so read the ratios rather
than the absolute numbers.

Hugging Face ``tokenizers`` is a benchmark dependency, not one of the
package's: it is imported where it is used, and the encoding table leaves
it out where it is not installed.
"""

from __future__ import annotations

import argparse
import os
import statistics

import tiktoken

from llmbook import data
from llmbook.timing import alternate
from llmbook.tokenizer import EOT, Tokenizer, train_bpe


def hf_gpt2():
    """GPT-2 in Hugging Face ``tokenizers``, from the local data-gym files."""
    from tokenizers import Tokenizer as HFTokenizer  # optional: see above
    from tokenizers import decoders, models, pre_tokenizers

    vocab_bpe = data._tiktoken_cache_path(data.GPT2_VOCAB_BPE[0])
    encoder_json = data._tiktoken_cache_path(data.GPT2_ENCODER_JSON[0])
    bpe = models.BPE.from_file(str(encoder_json), str(vocab_bpe))
    tok = HFTokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def hf_train_bpe(path, vocab_size: int):
    """A BPE vocabulary trained by Hugging Face ``tokenizers`` (its Rust
    trainer, on all cores): the tokenizer, trained."""
    from tokenizers import Tokenizer as HFTokenizer  # optional: see above
    from tokenizers import models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(path)], trainer)
    return tok


def train_table(complete_sizes=(False, True), vocab_size=4096, repeats=3):
    """Rows (corpus, MB, ours s, HF s) of median training times, the two
    trainers alternating (no warm-up round: each run is seconds long)."""
    rows = []
    for complete in complete_sizes:
        path = data.shakespeare_path(complete)
        mb = path.stat().st_size / 1e6
        seconds = alternate(
            {
                "ours": lambda p=path: train_bpe(p, vocab_size, [EOT]),
                "hf": lambda p=path: hf_train_bpe(p, vocab_size),
            },
            repeats,
            warmup=0,
        )
        name = "42 texts" if complete else "9 plays"
        ours, hf = (statistics.median(seconds[k]) for k in ("ours", "hf"))
        rows.append((name, mb, ours, hf))
    return rows


def encode_contenders(book: Tokenizer) -> dict:
    """name -> function(text) returning token ids."""
    data.use_local_tiktoken()  # before the first get_encoding
    gpt2 = tiktoken.get_encoding("gpt2")
    ours_gpt2 = Tokenizer.from_gpt2().to_tiktoken("gpt2-llmbook")
    book_tt = book.to_tiktoken()

    def cold(text):
        book._cache.clear()  # as if the tokenizer were new
        return book.encode(text)

    contenders = {
        "from scratch, cold cache": cold,
        "from scratch, warm cache": book.encode,
        "to_tiktoken()": lambda t: book_tt.encode(t, allowed_special="all"),
        "tiktoken gpt2": lambda t: gpt2.encode(t, allowed_special="all"),
        "GPT-2 via to_tiktoken()": lambda t: ours_gpt2.encode(
            t, allowed_special="all"
        ),
    }
    try:
        hf = hf_gpt2()
        contenders["HF tokenizers gpt2"] = lambda t: hf.encode(t).ids
    except ImportError:
        pass
    return contenders


def encode_table(text: str, book: Tokenizer, repeats: int = 5):
    """Rows (name, vocab, MB/s, speed relative to tiktoken gpt2), medians
    over ``repeats`` rounds in which the contenders alternate (no warm-up
    round: the warm cache is warm because the cold one runs just before)."""
    contenders = encode_contenders(book)
    mb = len(text.encode("utf-8")) / 1e6
    seconds = alternate(
        {name: lambda f=fn: f(text) for name, fn in contenders.items()},
        repeats,
        warmup=0,
    )
    speed = {n: mb / statistics.median(s) for n, s in seconds.items()}
    ref = speed["tiktoken gpt2"]
    vocab = {
        n: 50257 if "GPT-2" in n or "gpt2" in n else book.vocab_size
        for n in contenders
    }
    return [(n, vocab[n], speed[n], speed[n] / ref) for n in contenders]


def check_agreement(text: str, book: Tokenizer) -> None:
    """The contenders are only comparable if they give the same ids."""
    c = encode_contenders(book)
    assert c["from scratch, cold cache"](text) == c["to_tiktoken()"](text)
    reference = c["tiktoken gpt2"](text)
    for name in ("GPT-2 via to_tiktoken()", "HF tokenizers gpt2"):
        if name in c:
            assert c[name](text) == reference, name


def print_train_table(rows) -> None:
    print(
        f"{'corpus':10s} {'MB':>5s} {'llmbook (s)':>12s} "
        f"{'HF tokenizers (s)':>18s}"
    )
    for name, mb, ours, hf in rows:
        print(f"{name:10s} {mb:5.2f} {ours:12.2f} {hf:18.2f}")


def print_encode_table(rows) -> None:
    print(f"{'encoder':26s} {'vocab':>6s} {'MB/s':>7s} {'x tiktoken':>11s}")
    for name, vocab, mbs, ratio in rows:
        print(f"{name:26s} {vocab:6d} {mbs:7.2f} {ratio:11.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 3
    print(
        f"CPU cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"\nBPE training, vocab 4096, median of {repeats} "
        "(HF tokenizers uses all cores)"
    )
    rows = train_table(
        (False,) if args.quick else (False, True), repeats=repeats
    )
    print_train_table(rows)

    text = data.load_shakespeare()
    book = Tokenizer(*train_bpe(text, 4096, [EOT]), [EOT])
    check_agreement(text, book)
    print(
        f"\nEncoding the 1.13 MB corpus, median of {repeats + 2} "
        "(all contenders agree with their reference, token for token)"
    )
    print_encode_table(encode_table(text, book, repeats=repeats + 2))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
