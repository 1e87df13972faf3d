"""The checks of chapter 7's exercises (training): the learning-rate
schedule, cross-entropy, gradient clipping, and a training step with its bug
fixed.

``buggy_train_step`` is that step with the bug; the chapter imports it (from
``llmbook.exercises``) for the reader to find what is wrong."""

import random

import torch

from llmbook.exercises.harness import Case, _gen, _randn, exercise
from llmbook.model import GPT, GPTConfig
from llmbook.train.loss import cross_entropy
from llmbook.train.optim import AdamW, clip_grad_norm, lr_at


def _lr_at(step, lr, min_lr, warmup, max_steps):
    return lr_at(
        step, lr=lr, min_lr=min_lr, warmup=warmup, max_steps=max_steps
    )


@exercise(
    "7.1",
    label="ex-train-lr",
    name="my_lr_at",
    params=("step", "lr", "min_lr", "warmup", "max_steps"),
    reference=_lr_at,
    rtol=1e-9,
    atol=1e-12,
)
def _cases_5_1():
    cases = []
    for step in [0, 1, 9, 10, 11, 50, 99, 100, 150]:
        cases.append(Case((step, 1e-3, 1e-4, 10, 100), f"step {step}"))
    rng = random.Random(51)
    for _ in range(15):
        warmup = rng.randrange(1, 40)
        max_steps = warmup + rng.randrange(1, 200)
        step = rng.randrange(0, max_steps + 20)
        cases.append(Case((step, 3e-4, 3e-5, warmup, max_steps), "random"))
    cases.append(Case((5, 6e-4, 0.0, 5, 5), "warmup == max_steps"))
    return cases


def _cross_entropy(logits, targets):
    return cross_entropy(logits, targets)


@exercise(
    "7.2",
    label="ex-train-ce",
    name="my_cross_entropy",
    params=("logits", "targets"),
    reference=_cross_entropy,
    rtol=1e-5,
    atol=1e-5,
)
def _cases_5_2():
    cases = []
    for seed, (lead, v, scale) in enumerate(
        [((4,), 10, 1.0), ((2, 3), 7, 2.0), ((1,), 2, 1.0), ((2, 5), 50, 5.0)]
    ):
        logits = _randn(*lead, v, seed=seed, scale=scale)
        targets = torch.randint(v, lead, generator=_gen(10 + seed))
        cases.append(Case((logits, targets), "random"))
    big = torch.tensor([[1000.0, 0.0, -1000.0], [50.0, 90.0, 89.0]])
    cases.append(Case((big, torch.tensor([0, 2])), "huge logits: no overflow"))
    wrong = torch.zeros(2, 4, dtype=torch.long)
    cases.append(
        Case((_randn(2, 3, 5, seed=4), wrong), "targets of the wrong shape")
    )
    return cases


def _clip_grad_norm(params, max_norm):
    return clip_grad_norm(params, max_norm)


class _Params(list):
    """Parameters with gradients; described by their shapes."""

    def _exercise_repr(self):
        shapes = [tuple(p.shape) for p in self]
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in self if p.grad is not None])
        )
        return f"{len(self)} parameters {shapes}, gradient norm {norm:.4g}"

    def __deepcopy__(self, memo):
        out = _Params()
        for p in self:
            q = p.detach().clone().requires_grad_(True)
            q.grad = None if p.grad is None else p.grad.clone()
            out.append(q)
        return out


def _observe_clip(fn, args):
    params = args[0]
    norm = fn(*args)
    return {
        "returned norm": norm,
        "gradients after": [p.grad for p in params if p.grad is not None],
    }


@exercise(
    "7.3",
    label="ex-train-clip",
    name="my_clip_grad_norm",
    params=("parameters", "max_norm"),
    reference=_clip_grad_norm,
    observe=_observe_clip,
)
def _cases_5_3():
    def params(shapes, seed, scale):
        out = _Params()
        for i, s in enumerate(shapes):
            p = torch.zeros(s, requires_grad=True)
            p.grad = _randn(*s, seed=seed + i, scale=scale)
            out.append(p)
        return out

    return [
        Case((params([(3, 4), (4,)], 0, 1.0), 1.0), "norm above 1"),
        Case(
            (params([(3, 4), (4,)], 1, 0.05), 1.0),
            "norm below max_norm: unchanged",
        ),
        Case((params([(10,), (2, 2), (5, 1)], 2, 3.0), 0.5), "three tensors"),
        Case((params([(6,)], 3, 10.0), 5.0), "one tensor"),
        Case((params([(2, 8), (8,), (3,)], 4, 2.0), 2.0), "random"),
    ]


def buggy_train_step(model, optimizer, x, y, lr):
    """One step of training, with a bug for exercise 5.4 to find."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    clip_grad_norm(model.parameters(), 1.0)
    return loss.item()


def _train_step(model, optimizer, x, y, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = cross_entropy(model(x), y)
    loss.backward()
    clip_grad_norm(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


class _Run:
    """A tiny model, its optimizer and four batches (built on demand)."""

    def __init__(self, seed):
        self.seed = seed

    def _exercise_repr(self):
        return (
            f"<tiny GPT (seed {self.seed}), AdamW lr 1e-2, four batches "
            "of (4, 16) ids; lr 1e-2, 1e-2, 5e-3, 1e-3>"
        )


def _observe_train(fn, args):
    (run,) = args
    torch.manual_seed(run.seed)
    model = GPT(GPTConfig.preset("tiny"))
    optimizer = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    g = _gen(run.seed + 1)
    losses = []
    for lr in (1e-2, 1e-2, 5e-3, 1e-3):
        ids = torch.randint(64, (4, 17), generator=g)
        losses.append(fn(model, optimizer, ids[:, :-1], ids[:, 1:], lr))
    return {
        "losses of the four steps": losses,
        "weights after four steps": [
            p.detach().clone() for p in model.parameters()
        ],
    }


@exercise(
    "7.4",
    label="ex-train-bug",
    name="my_train_step",
    params=("run",),
    reference=_train_step,
    rtol=1e-4,
    atol=1e-5,
    observe=_observe_train,
)
def _cases_5_4():
    return [
        Case((_Run(0),), "tiny GPT, four steps"),
        Case((_Run(1),), "another seed"),
    ]
