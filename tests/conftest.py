"""The suite runs in two pytest-xdist workers (``-n 2 --dist loadfile`` in
pyproject.toml), one thread each: a notebook, or a test file, is the unit
a worker takes, and the two cores work on two of them at once. ``pytest -n
0`` runs everything in one process, as before, notebooks on all cores.

The order in which the workers take files (``ORDER`` below) keeps both
cores busy: the training chapter first, since chapters 6 to 9 load the model
it trains (``llmbook.runs`` lets one notebook train it while the others
wait on a lock); then work that needs no trained model, while it trains;
then the chapters that need it, longest first; the short notebooks last,
to fill the gaps.
"""

import os

# Before torch is imported, here and in every notebook kernel a worker
# starts (they inherit the environment): one thread per worker.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

import torch  # noqa: E402

# Unit tests use tiny tensors: one thread is faster and, on a busy 2-core
# machine, far steadier than two (OpenMP barriers). Notebooks run in their
# own kernels: with one worker (-n 0) they use every core.
torch.set_num_threads(1)

# Files in the order the workers take them; a file not listed goes
# between the two groups, in collection order.
ORDER = (
    "book/05_training.ipynb",  # trains the model that 6 to 9 load
    "tests/test_notebooks.py",  # every chapter's second run (own models)
    "book/02_tokenization.ipynb",
    "book/04_gpt_model.ipynb",
    "book/B_solutions.ipynb",
    None,  # the unit tests
    "book/08_classification.ipynb",
    "book/07_fast_generation.ipynb",
    "book/09_instruction_tuning.ipynb",
    "book/06_generation.ipynb",
    "book/A_backprop.ipynb",
    "book/03_attention.ipynb",
    "book/C_lora.ipynb",
    "book/01_what_we_build.ipynb",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(ORDER)}
    rest = rank[None]

    def key(item):
        path = item.nodeid.split("::", 1)[0]
        return rank.get(path, rest)

    items.sort(key=key)  # stable: each file's tests keep their order
