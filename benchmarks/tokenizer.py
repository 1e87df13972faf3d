# Launcher: the tokenizer benchmark is llmbook/bench/tokenizer.py.
from llmbook.bench.tokenizer import main

if __name__ == "__main__":
    raise SystemExit(main())
