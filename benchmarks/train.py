"""The train benchmark; its code is llmbook/bench_train.py, inside the package
so that the chapters can run it from an installed wheel too.

    python benchmarks/train.py --help
"""

from llmbook.bench_train import main

if __name__ == "__main__":
    main()
