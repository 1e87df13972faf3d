"""The tokenizer benchmark; its code is llmbook/bench_tokenizer.py, inside
the package so that the chapters can run it from an installed wheel too.

    python benchmarks/tokenizer.py --help
"""

from llmbook.bench_tokenizer import main

if __name__ == "__main__":
    main()
