import torch

# Unit tests use tiny tensors: one thread is faster and, on a busy 2-core
# machine, far steadier than two (OpenMP barriers). Notebooks run in their
# own kernels and are not affected.
torch.set_num_threads(1)
