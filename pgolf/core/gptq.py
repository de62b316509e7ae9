"""Full-Hessian GPTQ (Frantar et al., 2022) as PR #1394 uses it (https://github.com/openai/parameter-golf/pull/1394).

A weight ``W`` (rows x cols) of a linear map ``y = x W^T`` is quantized one column at a time; each column's
rounding error is spread over the columns not yet quantized, weighted by the inverse of the layer's input
Hessian ``H = sum x^T x`` over calibration tokens, so that ``||(W - Q) X^T||`` rather than ``||W - Q||`` is small.
Details (all as in PR #1394): columns with a zero Hessian diagonal ("dead") get diagonal 1 and weight 0;
``damp * mean(diag H)`` is added to the diagonal; columns go in order of descending diagonal (act-order);
the inverse Hessian's upper Cholesky factor drives the updates; blocks of ``block_size`` columns are updated
lazily. The per-row scales come from the export's clip rule before GPTQ and do not change; the codes are
rounded against the fp16 scale the artifact stores.

:func:`collect_hessians` makes the Hessians from forward passes (hooks on every ``nn.Linear`` input, and on the
final norm's output for a tied embedding, whose transpose is the output head).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.core.precision import at_least_fp32
from pgolf.core.quant import QuantSpec, row_clip, row_scale


class GPTQError(ValueError):
    """A Hessian GPTQ cannot use (wrong shape, not positive definite after damping)."""


def _upper_inverse_factor(H: Tensor, name: str, damp: float) -> Tensor:
    """Upper Cholesky factor of ``H^-1`` (H symmetric positive definite)."""
    L, info = torch.linalg.cholesky_ex(H)
    if int(info):
        raise GPTQError(f"gptq: the Hessian of {name} is not positive definite after damping "
                        f"(export.gptq_damp={damp}); raise export.gptq_damp")
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


def gptq_codes(w: Tensor, H: Tensor, scale: Tensor, qmax: int, *, damp: float = 0.01, block_size: int = 128,
               act_order: bool = True, name: str = "weight") -> Tensor:
    """Int8 codes in [-qmax, qmax] for ``w`` (rows x cols) on the per-row grid ``scale`` (fp32, rows),
    given the input Hessian ``H`` (cols x cols). ``name`` only labels errors."""
    W = at_least_fp32(w.detach())
    rows, cols = W.shape
    if H.shape != (cols, cols):
        raise GPTQError(f"gptq: Hessian of {name} has shape {tuple(H.shape)}, expected ({cols}, {cols}) "
                        f"for a weight of shape {tuple(W.shape)}")
    if scale.shape != (rows,):
        raise GPTQError(f"gptq: scale of {name} has shape {tuple(scale.shape)}, expected ({rows},)")
    H = H.detach().to(W.device, W.dtype).clone()
    dead = H.diagonal() == 0  # inputs never active: their columns cannot matter
    H[dead, dead] = 1
    H.diagonal().add_(damp * H.diagonal().mean())
    order = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(cols, device=W.device)
    W = W[:, order].clone()
    W[:, dead[order]] = 0
    H = H[order][:, order]
    U = _upper_inverse_factor(H, name, damp)  # H^-1 = U^T U
    s = scale.to(W.device, W.dtype)
    Q = torch.zeros(rows, cols, dtype=torch.int8, device=W.device)
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        Wb = W[:, b0:b1].clone()
        Ub = U[b0:b1, b0:b1]
        errs = torch.zeros(rows, b1 - b0, dtype=W.dtype, device=W.device)
        for j in range(b1 - b0):
            col = Wb[:, j]
            q = torch.clamp(torch.round(col / s), -qmax, qmax)
            Q[:, b0 + j] = q.to(torch.int8)
            e = (col - q * s) / Ub[j, j]
            errs[:, j] = e
            Wb[:, j:] -= e.unsqueeze(1) * Ub[j, j:].unsqueeze(0)  # this block's later columns absorb the error
        if b1 < cols:
            W[:, b1:] -= errs @ U[b0:b1, b1:]  # the rest, once per block
    return Q[:, torch.argsort(order)].contiguous()


def gptq_quantize(w: Tensor, H: Tensor, spec: QuantSpec, *, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = True, name: str = "weight") -> tuple[Tensor, Tensor]:
    """Per-row codes (int8 container) and fp16 scales, as :func:`pgolf.core.quant.quantize_rows` returns
    them, with GPTQ in place of rounding to nearest. The scale is the export's (``spec``'s clip rule and
    floor), rounded to fp16 before the codes are computed whatever ``spec.scale_dtype`` says."""
    clip_abs = row_clip(at_least_fp32(w.detach()), spec).float()
    scale16 = row_scale(clip_abs, spec).to(torch.float16)
    q = gptq_codes(w, H, scale16.float(), spec.qmax, damp=damp, block_size=block_size, act_order=act_order,
                   name=name)
    return q, scale16.contiguous()


# -- calibration ----------------------------------------------------------------------------

def collect_hessians(model: nn.Module, batches: Iterable[Tensor | tuple[Tensor, ...]], *,
                     names: Collection[str] | None = None, reduce: bool = False) -> dict[str, Tensor]:
    """``{weight name: sum over calibration tokens of x^T x / number of batches}`` (fp32, on the CPU) for the
    input ``x`` of every ``nn.Linear`` (depth-recurrent layers add once per call), and for ``tok_emb.weight``
    when the model ties its output head to the embedding (it has ``tok_emb`` and ``final_norm`` and no
    ``lm_head``, or ``lm_head is None``): the head's input is the final norm's output. ``batches`` yields input ids (or ``(inputs, targets)``); the caller sets autocast.
    ``names`` limits the Hessians to those weights; ``reduce`` averages them over the distributed ranks
    (every rank must then export the same artifact)."""
    sums: dict[str, Tensor] = {}

    def hook(key: str, use_output: bool):
        def fn(module: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
            x = at_least_fp32((out if use_output else inp[0]).detach())
            x = x.reshape(-1, x.shape[-1])  # (tokens, features)
            if key not in sums:
                sums[key] = torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
            sums[key].addmm_(x.T, x)
        return fn

    def wanted(key: str) -> bool:
        return names is None or key in names

    handles = [m.register_forward_hook(hook(f"{n}.weight", False)) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and wanted(f"{n}.weight")]
    tied = getattr(model, "lm_head", None) is None and hasattr(model, "tok_emb") and hasattr(model, "final_norm")
    if tied and wanted("tok_emb.weight"):
        handles.append(model.final_norm.register_forward_hook(hook("tok_emb.weight", True)))
    was_training = model.training
    model.eval()
    n = 0
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n == 0:
        raise GPTQError("gptq: no calibration batches")
    if reduce and dist.is_available() and dist.is_initialized():
        for key in sorted(sums):  # same order on every rank
            dist.all_reduce(sums[key])
        n *= dist.get_world_size()
    return {key: (h / n).cpu() for key, h in sums.items()}


def calibration_batches(loader, n_batches: int, batch_tokens: int, seq_len: int, accum: int):
    """The next ``n_batches`` training micro-batches' inputs from a pgolf token loader. A packed row of documents
    (``data.order="doc_packing"``, one row of ``k * seq_len`` tokens) is cut into ``k`` rows of ``seq_len``: GPTQ
    calibrates on causal windows of the training length (the 2026-04-27 record: its shuffled windows of that length)."""
    for _ in range(n_batches):
        x = loader.next_batch(batch_tokens, seq_len, accum)[0]
        if x.size(0) == 1 and x.size(1) > seq_len and x.size(1) % seq_len == 0:
            x = x.reshape(-1, seq_len)
        yield x
