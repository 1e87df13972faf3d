# Launcher: the generate benchmark is llmbook/bench/generate.py.
from llmbook.bench.generate import main

if __name__ == "__main__":
    raise SystemExit(main())
