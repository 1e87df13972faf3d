# Launcher: the open-models benchmark is llmbook/bench/modern.py.
from llmbook.bench.modern import main

if __name__ == "__main__":
    raise SystemExit(main())
