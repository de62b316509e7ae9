"""Float precision helpers shared by the model, the optimizer and the quantizers.

pgolf trains in bf16/fp32 (the official layout) or, with ``train.float64``, in float64 on CPU: the behaviour
fingerprint's numerics reference. Code that upcasts "to float32" for accuracy uses :func:`at_least_fp32`, which
is ``.float()`` for bf16/fp16/fp32 tensors (so every ordinary run computes exactly what it did) and leaves a
float64 tensor as it is (so a float64 run is not rounded back to float32, where CPU kernels disagree)."""

from __future__ import annotations

import torch
from torch import Tensor


def at_least_fp32(t: Tensor) -> Tensor:
    """``t.float()``, except that float64 stays float64."""
    return t if t.dtype == torch.float64 else t.float()


def at_least_fp32_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype :func:`at_least_fp32` gives a tensor of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32
