# Launcher: the attention benchmark is llmbook/bench/attention.py.
from llmbook.bench.attention import main

if __name__ == "__main__":
    raise SystemExit(main())
