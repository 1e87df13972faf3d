# Launcher: the train benchmark is llmbook/bench/train.py.
from llmbook.bench.train import main

if __name__ == "__main__":
    raise SystemExit(main())
