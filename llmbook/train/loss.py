"""The loss: how wrong the model's next-token predictions are.

1. ``cross_entropy``: the mean next-token loss, through log-sum-exp.
2. ``LinearCrossEntropy``: the LM head and the loss fused, without the
   (N, V) logits tensor, for training.
3. ``LanguageModelLoss``: what the training loop runs, the fused path when
   it applies, the plain one otherwise.
4. ``bits_per_byte``: a loss in a unit that does not depend on the
   tokenizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from llmbook.model import GPT


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Mean negative log-likelihood of ``targets`` in nats.

    logits (..., V), targets (...) int64 -> scalar. For one position,
    -log softmax(z)[y] = logsumexp(z) - z[y]; ``torch.logsumexp`` subtracts
    the maximum first, so a large logit cannot overflow exp. Positions whose
    target is ``ignore_index`` do not count (as in ``F.cross_entropy``).
    float32 and float64 logits are computed in their own precision;
    float16 and bfloat16 ones in float32 (the loss is a long sum of small
    terms), which is also the result's dtype, as under autocast.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
            " do not match: logits must be targets' shape plus a vocab axis"
        )
    z = logits.reshape(-1, logits.size(-1))  # (N, V)
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    y = targets.reshape(-1)  # (N,)
    if ignore_index is None:
        picked = z.gather(1, y[:, None]).squeeze(1)  # (N,)
        return (torch.logsumexp(z, dim=1) - picked).mean()
    keep = y != ignore_index  # (N,)
    picked = z.gather(1, torch.where(keep, y, 0)[:, None]).squeeze(1)
    nll = (torch.logsumexp(z, dim=1) - picked) * keep  # (N,)
    return nll.sum() / keep.sum()


class LinearCrossEntropy(torch.autograd.Function):
    """``cross_entropy(h @ w.T, y)`` without the (N, V) logits tensor.

    The LM head's logits are the largest tensor of a small model: for
    50,257 tokens and 2,048 positions, 400 MB written, read back by the
    softmax, written again as their gradient, read twice more. Here rows
    are taken ``chunk`` at a time; each chunk's logits are turned at once
    into the gradient of the loss, (softmax(z) - onehot(y)) / N, which
    gives the gradients of h and w on the spot, while the chunk is still in
    the cache. The backward pass only scales what forward stored. Same
    numbers as the plain path up to float rounding (tests).
    """

    @staticmethod
    def forward(ctx, h, w, y, chunk: int):
        # h (N, C), w (V, C), y (N,)
        n = h.size(0)
        dh, dw = torch.empty_like(h), torch.zeros_like(w)
        total = torch.zeros((), dtype=torch.float64, device=h.device)
        for i in range(0, n, chunk):
            hc, yc = h[i : i + chunk], y[i : i + chunk, None]
            z = hc @ w.t()  # (n, V) logits of this chunk
            picked = z.gather(1, yc)  # (n, 1)
            m = z.amax(1, keepdim=True)  # (n, 1)
            z.sub_(m).exp_()
            s = z.sum(1, keepdim=True)  # (n, 1)
            total += (m + s.log() - picked).sum()
            z.div_(s).scatter_add_(1, yc, z.new_full(yc.shape, -1.0))
            torch.mm(z, w, out=dh[i : i + chunk])  # (n, C)
            dw.addmm_(z.t(), hc)  # (V, C)
        ctx.save_for_backward(dh, dw)
        ctx.n = n
        return (total / n).to(h.dtype)

    @staticmethod
    def backward(ctx, grad):
        dh, dw = ctx.saved_tensors
        scale = grad / ctx.n
        return dh * scale, dw * scale, None, None


class LanguageModelLoss(nn.Module):
    """What the training loop runs (and DDP or ``torch.compile`` wrap):
    (idx (B, T), targets (B, T)) -> mean next-token loss. With gradients
    on, in float32, the LM head and the loss are fused
    (``LinearCrossEntropy``); otherwise it is ``cross_entropy(model(idx))``.
    """

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, idx, targets):
        m = self.model
        fuse = (
            torch.is_grad_enabled()
            and not torch.is_autocast_enabled(idx.device.type)
            and m.lm_head.bias is None
        )
        if not fuse:
            return cross_entropy(m(idx), targets)
        h = m.hidden_states(idx)  # (B, T, C)
        w = m.lm_head.weight  # (V, C)
        chunk = max(64, (1 << 23) // w.size(0))  # ~32 MB of logits at a time
        return LinearCrossEntropy.apply(
            h.reshape(-1, h.size(-1)), w, targets.reshape(-1), chunk
        )


def bits_per_byte(loss: float, n_tokens: int, n_bytes: int) -> float:
    """A loss in nats per token as bits per byte of the text, a unit in
    which models with different tokenizers compare."""
    return loss * n_tokens / n_bytes / math.log(2)
