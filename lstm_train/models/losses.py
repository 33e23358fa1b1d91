"""Label-smoothed cross-entropy over a large output vocabulary, fused for the CPU.

`F.cross_entropy(..., label_smoothing=eps)` is correct but its backward costs
~100 ms a batch on this CPU (measured: a few thousand target tokens x 8k
subwords), and composing it from `log_softmax`, `gather` and `mean` spends as
much again on full-size temporaries (a float copy of the logits, the zeros of
gather's backward, mean's expanded gradient).  The loss and its gradient have
closed forms over the logits z of one token with gold class y:

    loss = logsumexp(z) - (1 - eps) z_y - eps mean(z)
    dloss/dz = softmax(z) - (1 - eps) onehot(y) - eps / V

so forward keeps only the log-normaliser per row and backward recomputes the
softmax, both in row chunks (float32 math on bf16 or fp32 logits) in one
reused buffer, and writes the gradient straight into the logits' dtype.  The
buffer matters: every fresh tensor of this size costs its page faults again
(measured: exp into a new 88 MB tensor 52 ms, into a reused one 14 ms).
"""

from __future__ import annotations

import torch

_ROWS = 256  # rows per chunk: a few MB of float32, cache-friendly


class _SmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, smoothing: float):  # type: ignore[override]
        n, v = logits.shape
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        mean = torch.empty(n, dtype=torch.float32, device=logits.device)
        chunk = torch.empty(min(n, _ROWS), v, dtype=torch.float32, device=logits.device)  # reused: no page faults
        for start in range(0, n, _ROWS):
            z = chunk[: min(_ROWS, n - start)].copy_(logits[start : start + _ROWS])
            mean[start : start + _ROWS] = z.mean(dim=1)
            top = z.amax(dim=1, keepdim=True)
            lse[start : start + _ROWS] = z.sub_(top).exp_().sum(dim=1).log_().add_(top[:, 0])
        gold = logits.gather(1, target[:, None]).squeeze(1).float()
        nll = lse - gold
        loss = nll - smoothing * (mean - gold)
        ctx.save_for_backward(logits, target, lse)
        ctx.smoothing = smoothing
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_nll: torch.Tensor):  # type: ignore[override]
        logits, target, lse = ctx.saved_tensors
        eps, (n, v) = ctx.smoothing, logits.shape
        grad = torch.empty_like(logits)
        grad_loss = grad_loss.float()
        chunk = torch.empty(min(n, _ROWS), v, dtype=torch.float32, device=logits.device)
        for start in range(0, n, _ROWS):
            rows = slice(start, start + _ROWS)
            g = grad_loss[rows, None]
            p = chunk[: min(_ROWS, n - start)].copy_(logits[rows]).sub_(lse[rows, None]).exp_().mul_(g)
            if eps:
                p.sub_(g * (eps / v))
            p.scatter_add_(1, target[rows, None], -(1 - eps) * g)
            grad[rows] = p
        return grad, None, None


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (label-smoothed loss, plain negative log-likelihood) of logits [N, V] for target [N].

    The smoothed target puts 1 - eps on the gold class and eps spread evenly over all V
    classes (`F.cross_entropy`'s definition); the NLL is for perplexity (no gradient)."""
    return _SmoothedCrossEntropy.apply(logits, target, float(smoothing))
