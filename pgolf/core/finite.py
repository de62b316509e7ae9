"""Non-finite losses, scores and artifacts fail a run with a message that names what overflowed."""

from __future__ import annotations

import math

import torch

from pgolf.core.evaluate import EvalResult


class NonFiniteLossError(FloatingPointError):
    pass


class NonFiniteScoreError(FloatingPointError):
    """A final score, or a weight of the trained model or of its artifact, is NaN or inf; the message says which."""


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite_score(what: str, r: EvalResult, state: dict[str, torch.Tensor]) -> None:
    """Raise :class:`NonFiniteScoreError` naming the non-finite metric and the weights that could explain it."""
    bad = [f"{k}={getattr(r, k)}" for k in ("val_loss", "val_bpb") if not math.isfinite(getattr(r, k))]
    if not bad:
        return
    weights = nonfinite_tensors(state)
    cause = (f"non-finite weights: {', '.join(weights[:8])}{' ...' if len(weights) > 8 else ''}" if weights else
             "every weight is finite, so the forward pass overflowed")
    raise NonFiniteScoreError(f"{what}: {' '.join(bad)} ({cause})")


def check_finite_artifact(state: dict[str, torch.Tensor], restored: dict[str, torch.Tensor]) -> None:
    """Raise if the round-tripped artifact holds NaN/inf, naming the tensors (with the trained max |w|: a finite
    weight beyond the fp16 range, 65504, overflows in an fp16 passthrough tensor or scale)."""
    bad = nonfinite_tensors(restored)
    if bad:
        detail = ", ".join(f"{k} (trained max|w|={state[k].float().abs().max().item():.4g})" if k in state else k
                           for k in bad[:8])
        raise NonFiniteScoreError(f"artifact: {len(bad)} tensor(s) are NaN/inf after export and reload: {detail}"
                                  f"{' ...' if len(bad) > 8 else ''} (weights beyond the fp16 range, 65504, overflow "
                                  f"in fp16 passthrough tensors and scales); the artifact was not written")
