"""The exercises' checks: every solution passes, every planted mistake fails.

The solutions are the code cells of book/B_solutions.ipynb, executed here in
one namespace (the notebook is the single copy of them). Each check is then
fed plausible wrong answers (an off-by-one, a missing scale, the wrong
tie-break, a transposed weight...) and must reject each one with a message
that names the input, the expected and the returned value and where they
first differ, without showing the solution's code.
"""

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_autograd import WRONG as AUTOGRAD_WRONG
from test_ngram import _planted as ngram_planted

from llmbook import exercises as ex
from llmbook.exercises import (
    appendix_a,
    ch1,
    ch2,
    ch7,
    check,
    harness,
    run_check,
)
from llmbook.tokenizer import merge

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "book" / "B_solutions.ipynb"
CHAPTERS = {
    "1": "01_what_we_build",
    "2": "02_tokenization",
    "3": "03_ngrams",
    "4": "04_autograd",
    "5": "05_attention",
    "6": "06_gpt_model",
    "A": "A_backprop",
    "7": "07_training",
    "8": "08_generation",
    "9": "09_fast_generation",
    "D": "D_pytorch",
    "13": "13_open_models",
    "14": "14_preferences",
}


@pytest.fixture(scope="module")
def solutions():
    """The namespace left by running the solutions notebook's code."""
    nb = json.loads(SOLUTIONS.read_text(encoding="utf-8"))
    namespace = {"__name__": "solutions"}
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                # IPython-only lines (magics) have no place in the solutions
                assert not re.search(r"^\s*[%!]", source, re.M), source
                exec(compile(source, str(SOLUTIONS), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("exercise_id", ex.exercise_ids())
def test_solution_passes(solutions, exercise_id):
    exercise = ex.EXERCISES[exercise_id]
    fn = solutions.get(exercise.name)
    assert fn is not None, f"B_solutions.ipynb defines no {exercise.name}"
    result = run_check(exercise_id, fn)
    assert result.passed, result.message
    assert result.message == (
        f"Exercise {exercise_id} ({exercise.name}): "
        f"passed all {result.n_cases} cases."
    )


def test_every_solution_is_checked_in_the_notebook():
    text = SOLUTIONS.read_text(encoding="utf-8")
    for exercise_id, exercise in ex.EXERCISES.items():
        assert f'check(\\"{exercise_id}\\", {exercise.name})' in text


# ---------------------------------------------------------------------------
# Planted wrong answers: (exercise id, what is wrong, the function)


def _pairs_t0(ids, block_size):  # includes t = 0, whose context is empty
    if block_size < 1:
        raise ValueError
    return [(ids[max(0, t - block_size) : t], ids[t]) for t in range(len(ids))]


def _pairs_wrap(ids, block_size):  # a negative start wraps around
    if block_size < 1:
        raise ValueError
    return [(ids[t - block_size : t], ids[t]) for t in range(1, len(ids))]


def _pairs_no_check(ids, block_size):  # never refuses a bad block_size
    return [
        (ids[max(0, t - block_size) : t], ids[t]) for t in range(1, len(ids))
    ]


def _pairs_long(ids, block_size):  # one id too many in each context
    if block_size < 1:
        raise ValueError
    return [
        (ids[max(0, t - block_size - 1) : t], ids[t])
        for t in range(1, len(ids))
    ]


def _chars_not_bytes(text):
    if not isinstance(text, str):
        raise TypeError
    counts = [0] * 256
    for c in text:
        counts[ord(c) % 256] += 1
    return counts


def _nll_log2(probs, targets):
    if probs.shape[0] != targets.shape[0]:
        raise ValueError
    return -torch.log2(probs[torch.arange(len(targets)), targets]).mean()


def _nll_sum(probs, targets):
    if probs.shape[0] != targets.shape[0]:
        raise ValueError
    return -torch.log(probs[torch.arange(len(targets)), targets]).sum()


def _nll_all_columns(probs, targets):  # probs[:, targets] is (N, N)
    if probs.shape[0] != targets.shape[0]:
        raise ValueError
    return -torch.log(probs[:, targets]).mean()


def _step_smaller_pair(ids, new_id):
    if len(ids) < 2:
        raise ValueError
    counts = ch2._pair_counts(ids)
    pair = max(counts, key=lambda p: (counts[p], (-p[0], -p[1])))
    return pair, merge(ids, pair, new_id)


def _step_first_seen(ids, new_id):  # ties: the first pair seen
    if len(ids) < 2:
        raise ValueError
    counts = ch2._pair_counts(ids)
    pair = max(counts, key=counts.get)
    return pair, merge(ids, pair, new_id)


def _step_overlapping(ids, new_id):  # "aaa" becomes two merged tokens
    if len(ids) < 2:
        raise ValueError
    counts = ch2._pair_counts(ids)
    pair = max(counts, key=lambda p: (counts[p], p))
    out = []
    for i in range(len(ids) - 1):
        out.append(new_id if (ids[i], ids[i + 1]) == pair else ids[i])
    return pair, out if pair in zip(ids, ids[1:]) else ids


def _encode_leftmost(word, merges):  # merges the leftmost known pair
    if not isinstance(word, str):
        raise TypeError
    ids = list(word.encode("utf-8"))
    while True:
        for p in zip(ids, ids[1:]):
            if p in merges:
                ids = merge(ids, p, merges[p])
                break
        else:
            return ids


def _encode_latest(word, merges):  # the last learned merge first
    if not isinstance(word, str):
        raise TypeError
    ids = list(word.encode("utf-8"))
    rank = {p: r for r, p in enumerate(merges)}
    while len(ids) > 1:
        pairs = [p for p in zip(ids, ids[1:]) if p in merges]
        if not pairs:
            break
        pair = max(pairs, key=rank.get)
        ids = merge(ids, pair, merges[pair])
    return ids


def _decode_per_token(ids, vocab):  # splits characters across tokens
    for i in ids:
        if i not in vocab:
            raise ValueError
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)


def _decode_no_check(ids, vocab):  # an unknown id silently becomes nothing
    return b"".join(vocab.get(i, b"") for i in ids).decode(
        "utf-8", errors="replace"
    )


def _mask_top_left(t_q, t_k):  # right only when t_q == t_k
    if t_q < 1 or t_q > t_k:
        raise ValueError
    return torch.ones(t_q, t_k, dtype=torch.bool).tril()


def _mask_inverted(t_q, t_k):  # True where attention is forbidden
    if t_q < 1 or t_q > t_k:
        raise ValueError
    return ~torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)


def _mask_float(t_q, t_k):  # an additive mask instead of a boolean one
    if t_q < 1 or t_q > t_k:
        raise ValueError
    m = torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)
    return torch.zeros(t_q, t_k).masked_fill(~m, float("-inf"))


def _attention_unscaled(q, k, v):  # forgets 1/sqrt(d)
    t_q, t_k = q.size(-2), k.size(-2)
    if t_q > t_k:
        raise ValueError
    s = q @ k.transpose(-2, -1)
    m = torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)
    return s.masked_fill(~m, float("-inf")).softmax(-1) @ v


def _attention_by_d(q, k, v):  # divides by d instead of sqrt(d)
    t_q, t_k = q.size(-2), k.size(-2)
    if t_q > t_k:
        raise ValueError
    s = q @ k.transpose(-2, -1) / q.size(-1)
    m = torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)
    return s.masked_fill(~m, float("-inf")).softmax(-1) @ v


def _attention_top_left(q, k, v):  # is_causal=True: wrong with a cache
    if q.size(-2) > k.size(-2):
        raise ValueError
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _attention_softmax_axis(q, k, v):  # softmax over the queries
    t_q, t_k = q.size(-2), k.size(-2)
    if t_q > t_k:
        raise ValueError
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    m = torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)
    return torch.nan_to_num(s.masked_fill(~m, float("-inf")).softmax(-2)) @ v


def _split_view(x, n_head):  # the right shape, the wrong channels
    B, T, C = x.shape
    if C % n_head:
        raise ValueError
    return x.view(B, n_head, T, C // n_head)


def _split_no_transpose(x, n_head):
    B, T, C = x.shape
    if C % n_head:
        raise ValueError
    return x.view(B, T, n_head, C // n_head)


def _split_no_check(x, n_head):  # silently drops channels
    B, T, C = x.shape
    hs = C // n_head
    return x[..., : n_head * hs].view(B, T, n_head, hs).transpose(1, 2)


def _merge_view(y):  # no transpose back: heads interleaved with time
    B, nh, T, hs = y.shape
    return y.reshape(B, T, nh * hs)


def _merge_wrong_order(y):  # transposes, then flattens (hs, nh)
    B, nh, T, hs = y.shape
    return y.permute(0, 2, 3, 1).reshape(B, T, nh * hs)


def _rope_interleaved(x, cos, sin, offset):  # pairs (2i, 2i+1)
    t = x.size(-2)
    if offset + t > cos.size(0):
        raise ValueError
    c, s = cos[offset : offset + t], sin[offset : offset + t]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
    return out.flatten(-2)


def _rope_sign(x, cos, sin, offset):  # rotates the other way
    t = x.size(-2)
    if offset + t > cos.size(0):
        raise ValueError
    c, s = cos[offset : offset + t], sin[offset : offset + t]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * c + x2 * s, x2 * c - x1 * s), dim=-1)


def _rope_no_offset(x, cos, sin, offset):  # ignores the offset
    t = x.size(-2)
    if offset + t > cos.size(0):
        raise ValueError
    c, s = cos[:t], sin[:t]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def _rms_eps_outside(x, weight, eps):
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * weight


def _rms_centred(x, weight, eps):  # subtracts the mean: LayerNorm's job
    xc = x - x.mean(-1, keepdim=True)
    return xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rms_no_weight(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _count_formula(
    config, tied_twice=False, final_norm=True, gelu_width=False
):
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    H = 4 * C if gelu_width else config.mlp_hidden
    norm = 2 * C if (config.norm == "layernorm" and config.bias) else C
    b = config.bias
    attn = 3 * C * C + C * C + (4 * C if b else 0)
    if config.mlp == "gelu":
        mlp = 2 * C * H + ((H + C) if b else 0)
    else:
        mlp = 3 * C * H + ((2 * H + C) if b else 0)
    n = L * (attn + mlp + 2 * norm) + V * C
    n += norm if final_norm else 0
    if config.positions == "learned":
        n += config.block_size * C
    if tied_twice or not config.tie_weights:
        n += V * C
    return n


def _kv_concat(cache, layer, k, v):  # returns the right tensors, stores none
    if cache.pos + k.size(-2) > cache.block_size:
        raise ValueError
    pos = cache.pos
    return (
        torch.cat((cache.k[layer][:, :, :pos], k), dim=2),
        torch.cat((cache.v[layer][:, :, :pos], v), dim=2),
    )


def _kv_advances(cache, layer, k, v):  # moves pos itself (the model does)
    if cache.pos + k.size(-2) > cache.block_size:
        raise ValueError
    end = cache.pos + k.size(-2)
    cache.k[layer][:, :, cache.pos : end] = k
    cache.v[layer][:, :, cache.pos : end] = v
    cache.pos = end
    return cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]


def _kv_only_new(cache, layer, k, v):  # returns only the new positions
    if cache.pos + k.size(-2) > cache.block_size:
        raise ValueError
    end = cache.pos + k.size(-2)
    cache.k[layer][:, :, cache.pos : end] = k
    cache.v[layer][:, :, cache.pos : end] = v
    return k, v


def _kv_no_check(cache, layer, k, v):
    end, room = cache.pos + k.size(-2), cache.block_size - cache.pos
    cache.k[layer][:, :, cache.pos : end] = k[:, :, :room]
    cache.v[layer][:, :, cache.pos : end] = v[:, :, :room]
    return cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]


def _softmax_bwd_diag(dout, p):  # only the diagonal of the Jacobian
    return p * dout


def _softmax_bwd_axis(dout, p):  # sums over the wrong axis
    return p * (dout - (dout * p).sum(0, keepdim=True))


def _ln_bwd_no_var(dout, x, w, b, eps):  # forgets the path through var
    mu = x.mean(-1, keepdim=True)
    rstd = torch.rsqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)
    xhat = (x - mu) * rstd
    dxhat = dout * w
    dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True))
    c = x.shape[-1]
    dw = (dout * xhat).reshape(-1, c).sum(0)
    db = dout.reshape(-1, c).sum(0) if b is not None else None
    return dx, dw, db


def _ln_bwd_dw_unnormalised(dout, x, w, b, eps):  # dw from x, not x-hat
    dx, _, db = appendix_a._layernorm_backward(dout, x, w, b, eps)
    c = x.shape[-1]
    return dx, (dout * x).reshape(-1, c).sum(0), db


def _ln_bwd_always_db(dout, x, w, b, eps):  # a bias gradient without bias
    dx, dw, _ = appendix_a._layernorm_backward(dout, x, w, b, eps)
    return dx, dw, dout.reshape(-1, x.shape[-1]).sum(0)


def _linear_bwd_transposed(dout, x, w):  # dW = X^T dY: W's transpose
    if x.shape[-1] != w.shape[1] or dout.shape[-1] != w.shape[0]:
        raise ValueError
    x2, d2 = x.reshape(-1, x.shape[-1]), dout.reshape(-1, dout.shape[-1])
    return dout @ w, x2.T @ d2


def _linear_bwd_last_row(dout, x, w):  # forgets to sum over the batch
    if x.shape[-1] != w.shape[1] or dout.shape[-1] != w.shape[0]:
        raise ValueError
    x2, d2 = x.reshape(-1, x.shape[-1]), dout.reshape(-1, dout.shape[-1])
    return dout @ w, torch.outer(d2[-1], x2[-1])


def _linear_bwd_wt(dout, x, w):  # dX = dY W^T (the forward's weight)
    if x.shape[-1] != w.shape[1] or dout.shape[-1] != w.shape[0]:
        raise ValueError
    x2, d2 = x.reshape(-1, x.shape[-1]), dout.reshape(-1, dout.shape[-1])
    return dout @ w.T, d2.T @ x2


def _lr_warmup_from_zero(step, lr, min_lr, warmup, max_steps):
    if step < warmup:
        return lr * step / warmup  # step 0 would waste a step at lr 0
    return ch7._lr_at(step, lr, min_lr, warmup, max_steps)


def _lr_cosine_to_zero(step, lr, min_lr, warmup, max_steps):
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= max_steps:
        return min_lr
    t = (step - warmup) / max(1, max_steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * t)) * lr  # ignores min_lr


def _lr_no_floor(step, lr, min_lr, warmup, max_steps):
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, max_steps - warmup)  # past the end: rises
    return min_lr + 0.5 * (1 + math.cos(math.pi * t)) * (lr - min_lr)


def _ce_naive(logits, targets):  # exp overflows for large logits
    if logits.shape[:-1] != targets.shape:
        raise ValueError
    z = logits.reshape(-1, logits.size(-1))
    p = z.exp() / z.exp().sum(-1, keepdim=True)
    return -p[torch.arange(len(z)), targets.reshape(-1)].log().mean()


def _ce_sum(logits, targets):
    if logits.shape[:-1] != targets.shape:
        raise ValueError
    z = logits.reshape(-1, logits.size(-1))
    y = targets.reshape(-1)
    return (torch.logsumexp(z, -1) - z[torch.arange(len(z)), y]).sum()


def _ce_no_check(logits, targets):  # broadcasting hides the mismatch
    z = logits.reshape(-1, logits.size(-1))
    y = targets.reshape(-1)[: len(z)]
    return (torch.logsumexp(z, -1) - z[torch.arange(len(y)), y]).mean()


def _clip_per_tensor(parameters, max_norm):
    total = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in parameters])
    )
    for p in parameters:
        n = p.grad.norm()
        if n > max_norm:
            p.grad.mul_(max_norm / n)
    return total


def _clip_always_scales(parameters, max_norm):  # also scales small ones up
    total = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in parameters])
    )
    for p in parameters:
        p.grad.mul_(max_norm / (total + 1e-6))
    return total


def _clip_returns_after(parameters, max_norm):  # the norm after clipping
    ch7._clip_grad_norm(parameters, max_norm)
    return torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in parameters])
    )


def _step_no_clip(model, optimizer, x, y, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = ch7._cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _step_ignores_lr(model, optimizer, x, y, lr):
    loss = ch7._cross_entropy(model(x), y)
    loss.backward()
    ch7._clip_grad_norm(list(model.parameters()), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _temp_multiplies(logits, temperature):
    if not isinstance(temperature, (int, float)) or isinstance(
        temperature, bool
    ):
        raise TypeError
    if temperature <= 0:
        raise ValueError
    return logits * temperature


def _temp_no_check(logits, temperature):
    return logits / temperature


def _topk_indices(logits, k):  # drops logits tied with the k-th
    if not isinstance(k, int) or isinstance(k, bool):
        raise TypeError
    if k < 1:
        raise ValueError
    k = min(k, logits.size(-1))
    idx = torch.topk(logits, k, dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, float("-inf"))


def _topk_zero(logits, k):  # zero instead of -inf: still probable
    if not isinstance(k, int) or isinstance(k, bool):
        raise TypeError
    if k < 1:
        raise ValueError
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


def _topp_cumsum(logits, p):  # drops the token that crosses p
    if not 0 < p <= 1:
        raise ValueError
    if p >= 1:
        return logits
    s, order = torch.sort(logits, dim=-1, descending=True)
    drop_sorted = s.softmax(-1).cumsum(-1) > p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _topp_unsorted(logits, p):  # accumulates in vocabulary order
    if not 0 < p <= 1:
        raise ValueError
    if p >= 1:
        return logits
    probs = logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= p
    return logits.masked_fill(drop, float("-inf"))


def _topp_no_check(logits, p):
    if p >= 1:
        return logits
    s, order = torch.sort(logits, dim=-1, descending=True)
    probs = s.softmax(-1)
    drop_sorted = probs.cumsum(-1) - probs >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _quant_scale(w, divisor=127.0, zero_row=True, check=True):
    if check and (w.dim() != 2 or not w.dtype.is_floating_point):
        raise ValueError("w must be a 2-D float matrix")
    if check and not torch.isfinite(w).all():
        raise ValueError("inf or NaN")
    amax = w.abs().amax(dim=1)
    if zero_row:
        amax = torch.where(amax > 0, amax, torch.full_like(amax, divisor))
    scale = amax / divisor
    q = torch.round(w / scale[:, None]).clamp(-127, 127)
    return q.to(torch.int8), scale


def _quant_truncates(w):
    q, scale = _quant_scale(w)
    return torch.trunc(w / scale[:, None]).to(torch.int8), scale


def _greedy_rule(draft_tokens, target_logits, leading=True, bonus=False):
    B, k = draft_tokens.shape
    if target_logits.shape[:2] != (B, k + 1):
        raise ValueError("shapes")
    best = target_logits.argmax(-1)
    agree = (best[:, :k] == draft_tokens).long()
    n = agree.cumprod(-1).sum(-1) if leading else agree.sum(-1)
    nxt = best[:, k] if bonus else best[torch.arange(B), n]
    return n, nxt


def _greedy_no_check(draft_tokens, target_logits):
    best = target_logits.argmax(-1)
    k = draft_tokens.shape[-1]
    agree = (best[..., :k] == draft_tokens).long()
    n = agree.cumprod(-1).sum(-1)
    return n, best.gather(-1, n[..., None]).squeeze(-1)


def _round(alpha, k, bonus=True, check=True):
    if check and (isinstance(k, bool) or not isinstance(k, int)):
        raise TypeError("k must be an int")
    if check and (not 0 <= alpha <= 1 or k < 1):
        raise ValueError("alpha in [0, 1], k >= 1")
    total = sum(alpha**i for i in range(1, k + 1))
    return total + 1 if bonus else total


def _round_formula(alpha, k):
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError("k must be an int")
    if not 0 <= alpha <= 1 or k < 1:
        raise ValueError("alpha in [0, 1], k >= 1")
    return (1 - alpha ** (k + 1)) / (1 - alpha)


def _linear_no_transpose(x, weight, bias):  # x @ W: right only if square
    if x.shape[-1] != weight.shape[1]:
        raise ValueError
    y = x @ weight
    return y if bias is None else y + bias


def _linear_no_bias(x, weight, bias):
    if x.shape[-1] != weight.shape[1]:
        raise ValueError
    return x @ weight.T


def _linear_no_check(x, weight, bias):  # PyTorch's RuntimeError instead
    y = x @ weight.T
    return y if bias is None else y + bias


def _broadcast_from_left(a, b):  # aligned on the left
    n = max(len(a), len(b))
    a, b = tuple(a) + (1,) * (n - len(a)), tuple(b) + (1,) * (n - len(b))
    if any(p != q and 1 not in (p, q) for p, q in zip(a, b)):
        raise ValueError
    return tuple(max(p, q) for p, q in zip(a, b))


def _broadcast_max(a, b):  # never refuses: the larger size wins
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    return tuple(max(p, q) for p, q in zip(a, b))


def _softmax_naive(x, dim):  # overflows for large logits
    z = x.exp()
    return z / z.sum(dim=dim, keepdim=True)


def _softmax_last_dim(x, dim):  # ignores dim
    return torch.softmax(x, dim=-1)


def _sgd_plus(params, lr):  # climbs the gradient
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p += lr * p.grad


def _sgd_rebinds(params, lr):  # p = p - ...: the parameters never change
    for p in params:
        if p.grad is not None:
            p = p.detach() - lr * p.grad


def _sgd_zeroes(params, lr):  # also zeroes the gradients
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * p.grad
                p.grad.zero_()


def _repeat_kv_tiled(k, n_group):  # head h reads h % n_kv_head, not h // g
    return k.repeat(1, n_group, 1, 1)


def _repeat_kv_time(k, n_group):  # repeats the positions, not the heads
    return k.repeat_interleave(n_group, dim=2)


def _repeat_kv_none(k, n_group):  # the key/value heads left as they are
    return k


def _window(t, window, off_by_one=False, causal=True):
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    allowed = j <= i if causal else torch.ones(t, t, dtype=torch.bool)
    if window is not None:
        allowed &= j >= i - window if off_by_one else j > i - window
    return allowed


def _window_none_unhandled(t, window):  # i - None raises TypeError
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    return (j <= i) & (j > i - window)


def _window_transposed(t, window):  # True where the key may see the query
    return _window(t, window).T


def _window_float(t, window):  # 1.0 / 0.0 instead of a boolean mask
    return _window(t, window).float()


def _route_rule(logits, k, renormalise=True, dim=-1):
    probs = logits.softmax(dim)
    weights, ids = probs.topk(k, dim=-1)
    if renormalise:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights, ids


def _route_top_k_logits(logits, k):  # Mixtral's order: the same function
    top, ids = logits.topk(k, dim=-1)
    return top.softmax(-1), ids


def _route_expert_order(logits, k):  # ids by expert number, not best first
    weights, ids = _route_rule(logits, k)
    ids, order = ids.sort(-1)
    return weights.gather(-1, order), ids


def _route_naive_softmax(logits, k):  # exp overflows for large logits
    z = logits.exp()
    weights, ids = (z / z.sum(-1, keepdim=True)).topk(k, dim=-1)
    return weights / weights.sum(-1, keepdim=True), ids


def _route_swapped(logits, k):  # (ids, weights)
    weights, ids = _route_rule(logits, k)
    return ids, weights


def _advantages(rewards, g, unbiased=True, per_group=True, eps=1e-4):
    r = rewards.float().view(-1, g) if per_group else rewards.float()[None]
    centred = r - r.mean(dim=-1, keepdim=True)
    return (
        centred / (r.std(dim=-1, keepdim=True, unbiased=unbiased) + eps)
    ).reshape(-1)


def _logprob_no_shift(logits, labels):
    lp = torch.log_softmax(logits, -1)
    picked = lp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return torch.where(labels != -100, picked, 0.0).sum(-1)


def _logprob_no_mask(logits, labels):
    t = labels[:, 1:].clamp(min=0)
    lp = torch.log_softmax(logits[:, :-1], -1)
    return lp.gather(-1, t[..., None]).squeeze(-1).sum(-1)


def _logprob_naive(logits, labels):
    t = labels[:, 1:]
    lp = torch.log(torch.softmax(logits[:, :-1], -1))
    picked = lp.gather(-1, t.clamp(min=0)[..., None]).squeeze(-1)
    return torch.where(t != -100, picked, 0.0).sum(-1)


def _dpo_rule(c, r, rc, rr, beta, ref=True, reduce="mean", naive=False):
    margin = beta * ((c - rc) - (r - rr)) if ref else beta * (c - r)
    logsig = (
        torch.log(torch.sigmoid(margin)) if naive else F.logsigmoid(margin)
    )
    return -(logsig.mean() if reduce == "mean" else logsig.sum())


WRONG = [
    ("1.1", "the first id as a target, with an empty context", _pairs_t0),
    ("1.1", "a negative slice start wraps around", _pairs_wrap),
    ("1.1", "block_size 0 accepted", _pairs_no_check),
    ("1.1", "one id too many per context", _pairs_long),
    ("1.2", "characters counted instead of bytes", _chars_not_bytes),
    ("1.3", "log base 2", _nll_log2),
    ("1.3", "sum instead of mean", _nll_sum),
    ("1.3", "probs[:, targets]", _nll_all_columns),
    ("2.1", "ties go to the smaller pair", _step_smaller_pair),
    ("2.1", "ties go to the first pair seen", _step_first_seen),
    ("2.1", "overlapping pairs merged", _step_overlapping),
    ("2.2", "leftmost known pair merged first", _encode_leftmost),
    ("2.2", "latest merge first", _encode_latest),
    ("2.3", "each token decoded on its own", _decode_per_token),
    ("2.3", "unknown ids ignored", _decode_no_check),
    ("5.1", "mask aligned to the top left", _mask_top_left),
    ("5.1", "mask inverted", _mask_inverted),
    ("5.1", "an additive float mask", _mask_float),
    ("5.2", "no 1/sqrt(d) scale", _attention_unscaled),
    ("5.2", "scaled by 1/d", _attention_by_d),
    ("5.2", "is_causal=True with cached keys", _attention_top_left),
    ("5.2", "softmax over the wrong axis", _attention_softmax_axis),
    ("5.3", "view straight to (B, nh, T, hs)", _split_view),
    ("5.3", "no transpose", _split_no_transpose),
    ("5.3", "indivisible C accepted", _split_no_check),
    ("5.4", "reshape without transposing back", _merge_view),
    ("5.4", "channels flattened in the wrong order", _merge_wrong_order),
    ("6.1", "neighbouring channels paired", _rope_interleaved),
    ("6.1", "rotation the wrong way", _rope_sign),
    ("6.1", "offset ignored", _rope_no_offset),
    ("6.2", "eps outside the square root", _rms_eps_outside),
    ("6.2", "mean subtracted", _rms_centred),
    ("6.2", "weight forgotten", _rms_no_weight),
    (
        "6.3",
        "tied matrix counted twice",
        lambda c: _count_formula(c, tied_twice=True),
    ),
    (
        "6.3",
        "final norm forgotten",
        lambda c: _count_formula(c, final_norm=False),
    ),
    (
        "6.3",
        "SwiGLU given GELU's 4C width",
        lambda c: _count_formula(c, gelu_width=True),
    ),
    ("8.4", "nothing stored in the cache", _kv_concat),
    ("8.4", "pos advanced by the update", _kv_advances),
    ("8.4", "only the new positions returned", _kv_only_new),
    ("8.4", "overflow not refused", _kv_no_check),
    ("A.1", "only the Jacobian's diagonal", _softmax_bwd_diag),
    ("A.1", "sum over the wrong axis", _softmax_bwd_axis),
    ("A.2", "path through the variance forgotten", _ln_bwd_no_var),
    ("A.2", "dw from x instead of x-hat", _ln_bwd_dw_unnormalised),
    ("A.2", "a bias gradient without a bias", _ln_bwd_always_db),
    ("A.3", "transposed weight gradient", _linear_bwd_transposed),
    ("A.3", "no sum over the batch", _linear_bwd_last_row),
    ("A.3", "dX through W^T", _linear_bwd_wt),
    ("7.1", "warmup starts at lr 0", _lr_warmup_from_zero),
    ("7.1", "cosine decays to 0, not min_lr", _lr_cosine_to_zero),
    ("7.1", "no floor after max_steps", _lr_no_floor),
    ("7.2", "softmax without log-sum-exp", _ce_naive),
    ("7.2", "sum instead of mean", _ce_sum),
    ("7.2", "shape mismatch accepted", _ce_no_check),
    ("7.3", "each tensor clipped on its own", _clip_per_tensor),
    ("7.3", "small gradients scaled up", _clip_always_scales),
    ("7.3", "returns the norm after clipping", _clip_returns_after),
    ("7.4", "the chapter's buggy step, unchanged", ex.buggy_train_step),
    ("7.4", "no clipping", _step_no_clip),
    ("7.4", "learning rate never set", _step_ignores_lr),
    ("8.1", "multiplies by the temperature", _temp_multiplies),
    ("8.1", "bad temperatures accepted", _temp_no_check),
    ("8.2", "ties with the k-th dropped", _topk_indices),
    ("8.2", "dropped logits set to 0", _topk_zero),
    ("8.3", "drops the token that crosses p", _topp_cumsum),
    ("8.3", "mass summed in vocabulary order", _topp_unsorted),
    ("8.3", "p outside (0, 1] accepted", _topp_no_check),
    ("9.1", "scale max/128", lambda w: _quant_scale(w, divisor=128.0)),
    ("9.1", "truncated, not rounded", _quant_truncates),
    (
        "9.1",
        "a zero row divides by zero",
        lambda w: _quant_scale(w, zero_row=False),
    ),
    ("9.1", "bad weights accepted", lambda w: _quant_scale(w, check=False)),
    (
        "9.2",
        "every match counted, not the leading ones",
        lambda d, t: _greedy_rule(d, t, leading=False),
    ),
    (
        "9.2",
        "always the bonus token",
        lambda d, t: _greedy_rule(d, t, bonus=True),
    ),
    ("9.2", "shapes not checked", _greedy_no_check),
    (
        "9.3",
        "the target's own token forgotten",
        lambda a, k: _round(a, k, bonus=False),
    ),
    ("9.3", "alpha = 1 divides by zero", _round_formula),
    (
        "9.3",
        "bad alpha and k accepted",
        lambda a, k: _round(a, k, check=False),
    ),
    ("D.1", "x @ W, not x @ W^T", _linear_no_transpose),
    ("D.1", "the bias forgotten", _linear_no_bias),
    ("D.1", "mismatched features not refused", _linear_no_check),
    ("D.2", "shapes aligned on the left", _broadcast_from_left),
    ("D.2", "incompatible sizes not refused", _broadcast_max),
    ("D.3", "no maximum subtracted", _softmax_naive),
    ("D.3", "always the last dimension", _softmax_last_dim),
    ("D.4", "a step up the gradient", _sgd_plus),
    ("D.4", "the name rebound, the parameter unchanged", _sgd_rebinds),
    ("D.4", "the gradients zeroed too", _sgd_zeroes),
    ("13.1", "heads tiled, not repeated in place", _repeat_kv_tiled),
    ("13.1", "positions repeated instead of heads", _repeat_kv_time),
    ("13.1", "key/value heads not repeated", _repeat_kv_none),
    (
        "13.2",
        "one key too many: j >= i - window",
        lambda t, w: _window(t, w, off_by_one=True),
    ),
    (
        "13.2",
        "the window without causality",
        lambda t, w: _window(t, w, causal=False),
    ),
    ("13.2", "window None not handled", _window_none_unhandled),
    ("13.2", "mask transposed", _window_transposed),
    ("13.2", "a float mask", _window_float),
    (
        "13.3",
        "weights not renormalised",
        lambda x, k: _route_rule(x, k, renormalise=False),
    ),
    (
        "13.3",
        "softmax over the tokens",
        lambda x, k: _route_rule(x, k, dim=0),
    ),
    ("13.3", "ids in expert order", _route_expert_order),
    ("13.3", "softmax without the maximum subtracted", _route_naive_softmax),
    ("13.3", "ids and weights swapped", _route_swapped),
    (
        "14.1",
        "the population standard deviation",
        lambda r, g: _advantages(r, g, unbiased=False),
    ),
    (
        "14.1",
        "the batch's mean and deviation, not the group's",
        lambda r, g: _advantages(r, g, per_group=False),
    ),
    (
        "14.1",
        "no epsilon: 0 / 0 for a group that agrees",
        lambda r, g: _advantages(r, g, eps=0.0),
    ),
    (
        "14.2",
        "the reference forgotten",
        lambda *a: _dpo_rule(*a, ref=False),
    ),
    ("14.2", "a sum over the pairs", lambda *a: _dpo_rule(*a, reduce="sum")),
    (
        "14.2",
        "log(sigmoid(x)) in two steps",
        lambda *a: _dpo_rule(*a, naive=True),
    ),
    ("14.2", "the sign flipped", lambda *a: -_dpo_rule(*a)),
    (
        "14.3",
        "no shift: the logits at t score the label at t",
        _logprob_no_shift,
    ),
    ("14.3", "the ignored labels counted as token 0", _logprob_no_mask),
    ("14.3", "log(softmax(x)) in two steps", _logprob_naive),
]


# The wrong answers planted in the checks of the counting and autograd
# chapters live beside those chapters' tests; they are run here too.
WRONG += [(i, fn.__name__.replace("_", " "), fn) for i, fn in ngram_planted()]
WRONG += AUTOGRAD_WRONG


def test_every_check_has_planted_wrong_answers():
    planted = {i for i, _, _ in WRONG}
    assert planted == set(ex.exercise_ids())


@pytest.mark.parametrize(
    "exercise_id, what, fn", WRONG, ids=[f"{i}: {w}" for i, w, _ in WRONG]
)
def test_wrong_answer_is_rejected(solutions, exercise_id, what, fn):
    result = run_check(exercise_id, fn)
    assert not result.passed and result.attempted, result.message
    msg = result.message
    assert msg.startswith(f"Exercise {exercise_id} (")
    assert f"failed on case {result.failed_case} of {result.n_cases}" in msg
    assert "\n  input:    " in msg and "\n  expected: " in msg
    assert "\n  got:      " in msg
    # it failed for the planted reason, not a mistake in the test
    assert not re.search(r"(Attribute|Name|Import)Error", msg), msg
    expected = msg.split("\n  expected: ")[1].split("\n")[0]
    if (
        not re.fullmatch(r"[-\d.e+]+", expected)
        and "error" not in expected
        and "raised" not in msg
    ):
        # a wrong value: say where it first differs (position or shape)
        assert re.search(
            r"first difference at|shape|length|dtype|"
            r"expected [-\d.e+]+, got",
            msg,
        ), msg
    # the solution's code is never shown: no line of it appears
    solution = solutions[ex.EXERCISES[exercise_id].name]
    import inspect

    for line in inspect.getsource(solution).splitlines()[1:]:
        line = line.strip()
        if len(line) > 25:
            assert line not in msg, line
    assert msg.isascii()


# The mistakes a case was written for: the failure names it in the case's
# description, the one thing the message says about the reader's code.
NAMED = [
    ("13.1", _repeat_kv_tiled, "h % n_kv_head as tiling the heads"),
    (
        "13.2",
        lambda t, w: _window(t, w, off_by_one=True),
        "j >= i - window lets in one key too many",
    ),
    (
        "13.3",
        lambda x, k: _route_rule(x, k, renormalise=False),
        "renormalised to sum to 1",
    ),
    (
        "14.1",
        lambda r, g: _advantages(r, g, per_group=False),
        "own group's mean, not the batch's",
    ),
    ("14.3", _logprob_no_shift, "the logits at t score the label at t + 1"),
    (
        "14.2",
        lambda *a: _dpo_rule(*a, naive=True),
        "use F.logsigmoid",
    ),
]


@pytest.mark.parametrize(
    "exercise_id, fn, named", NAMED, ids=[i for i, _, _ in NAMED]
)
def test_a_common_mistake_fails_on_the_case_that_names_it(
    exercise_id, fn, named
):
    result = run_check(exercise_id, fn)
    assert not result.passed
    assert named in result.message.splitlines()[0], result.message


def test_routing_by_the_top_k_logits_is_the_same_function():
    """Softmax over the k largest logits (Mixtral) equals the softmax over
    all E renormalised over the k chosen (Qwen3-MoE): the check accepts
    both, as ch13's docstring says."""
    assert run_check("13.3", _route_top_k_logits).passed


def test_routing_cases_have_no_ties():
    """Tied experts would make the ids depend on the tie-break of topk: in
    every case the k + 1 most probable experts are distinct (and the
    (k + 1)-th exists only when k < E)."""
    for case in ex.EXERCISES["13.3"].cases():
        logits, k = case.args
        probs = torch.softmax(logits.double(), dim=-1)
        top = probs.topk(min(k + 1, logits.size(-1)), dim=-1).values
        gaps = top[:, :-1] - top[:, 1:]
        assert (gaps > 1e-6).all(), case.desc


def test_not_attempted_is_not_a_failure(capsys):
    def bpe_step(ids, new_id):
        raise NotImplementedError  # your code

    check("2.1", bpe_step)
    out = capsys.readouterr().out
    assert out == "Exercise 2.1 (bpe_step): not attempted yet.\n"


def test_a_late_not_implemented_error_is_a_failure():
    def partial(ids, block_size):
        if len(ids) > 6:
            raise NotImplementedError("long inputs")
        return ch1._next_token_examples(ids, block_size)

    result = run_check("1.1", partial)
    assert not result.passed and result.attempted
    assert "raised NotImplementedError: long inputs" in result.message


def test_a_missing_return_gets_a_hint():
    result = run_check("5.1", lambda t_q, t_k: None)
    assert "got:      None (a missing return statement?)" in result.message


def test_unknown_exercise():
    with pytest.raises(KeyError, match="no exercise '11.9'"):
        run_check("11.9", print)


def test_an_exercise_is_registered_once():
    with pytest.raises(ValueError, match="'1.1' is registered twice"):
        harness.exercise(
            "1.1", label="x", name="f", params=(), reference=print
        )(list)
    assert ex.EXERCISES["1.1"].label == "ex-pipeline-pairs"


def test_exercises_are_listed_in_the_books_order():
    def place(exercise_id):
        chapter, k = exercise_id.split(".")
        return list(CHAPTERS).index(chapter), int(k)

    assert ex.exercise_ids() == sorted(ex.exercise_ids(), key=place)


def test_checks_are_deterministic():
    fn = _attention_top_left
    assert run_check("5.2", fn).message == run_check("5.2", fn).message


def test_threads_are_restored():
    n = torch.get_num_threads()
    run_check("1.1", ch1._next_token_examples)
    assert torch.get_num_threads() == n


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_chapter_numbers_its_exercises_as_the_checks_do(chapter):
    """The k-th exercise of chapter N is the one whose check is "N.k"."""
    nb = json.loads(
        (ROOT / "book" / f"{CHAPTERS[chapter]}.ipynb").read_text(
            encoding="utf-8"
        )
    )
    labels = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            labels += re.findall(
                r"\{exercise(?:-start)?\}[^\n]*\n:label: "
                r"(\S+)",
                "".join(cell["source"]),
            )
    if not labels and chapter in ("5", "6"):
        pytest.skip(f"{CHAPTERS[chapter]} has no exercise boxes yet")
    assert len(labels) >= 5
    for k, label in enumerate(labels, start=1):
        exercise = ex.EXERCISES.get(f"{chapter}.{k}")
        if exercise is not None:
            assert exercise.label == label, (chapter, k, label)
    coding = [
        e for e in ex.EXERCISES.values() if e.id.split(".")[0] == chapter
    ]
    assert len(coding) >= 3
    assert {e.label for e in coding} <= set(labels)
