"""The cross-entropy of softcapped logits, ``F.cross_entropy(cap * tanh(z / cap), target)``, with fewer buffers.

Autograd runs that expression as six kernels forward (div, tanh, mul, log_softmax, nll_loss) and backward
(nll_loss_backward, _log_softmax_backward_data, mul, tanh_backward, div), each writing a fresh (tokens, vocab)
buffer: at ``micro`` scale 8 MB apiece, 2,048 x 1,024 per step. :class:`SoftcapCrossEntropy` calls the same
aten kernels in the same order on the same values, so losses and gradients keep every bit
(``tests/test_softcap_ce.py``), but it writes the elementwise steps in place and keeps only what the backward
reads (tanh's output and the log-probabilities).

Used on CPU for float32/float64 logits outside ``torch.compile`` (:func:`softcap_cross_entropy`); elsewhere
(CUDA, bf16 autocast, compiled graphs, whose kernels are generated) the plain expression runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.core.precision import at_least_fp32

_aten = torch.ops.aten
_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}  # at::Reduction, as nll_loss_forward takes it
_IGNORE_INDEX = -100  # F.cross_entropy's default


class SoftcapCrossEntropy(torch.autograd.Function):
    """``F.cross_entropy(cap * torch.tanh(z / cap), target, reduction=...)`` for (N, V) ``z`` and (N,) ``target``:
    the same kernels in the same order, elementwise steps in place."""

    @staticmethod
    def forward(ctx, z: Tensor, target: Tensor, cap: float, reduction: str) -> Tensor:
        t = torch.div(z, cap)
        torch.tanh(t, out=t)  # kept: tanh's backward reads its output
        logp = torch._log_softmax(torch.mul(t, cap), 1, False)  # what F.cross_entropy's log_softmax calls
        loss, total_weight = _aten.nll_loss_forward(logp, target, None, _REDUCTIONS[reduction], _IGNORE_INDEX)
        ctx.save_for_backward(t, logp, target, total_weight)
        ctx.cap, ctx.reduction = cap, _REDUCTIONS[reduction]
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor, None, None, None]:
        t, logp, target, total_weight = ctx.saved_tensors
        grad = _aten._log_softmax_backward_data(
            _aten.nll_loss_backward(grad_loss, logp, target, None, ctx.reduction, _IGNORE_INDEX, total_weight),
            logp, 1, logp.dtype)
        grad.mul_(ctx.cap)  # d(cap * t)
        _aten.tanh_backward(grad, t, grad_input=grad)  # d tanh, through its output
        return grad.div_(ctx.cap), None, None, None  # d(z / cap)


def softcap_cross_entropy(z: Tensor, target: Tensor, cap: float, reduction: str = "mean") -> Tensor:
    """``F.cross_entropy(at_least_fp32(cap * tanh(z / cap)), target, reduction=reduction)`` for (N, V) ``z``; the
    bit-identical :class:`SoftcapCrossEntropy` where it applies (CPU, float32/float64, eager; with or without
    autograd)."""
    if z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling():
        return SoftcapCrossEntropy.apply(z, target, cap, reduction)
    return F.cross_entropy(at_least_fp32(cap * torch.tanh(z / cap)), target, reduction=reduction)
