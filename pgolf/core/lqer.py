"""LQER: a low-rank correction of the quantization error, stored with the artifact (export.lqer_rank > 0).

After the int export, the ``top_k`` tensors whose error ``E = W - dequant(Q)`` has the largest Frobenius norm get
``E ~ A @ B`` from a rank-``r`` truncated SVD (``A = U_r S_r``, ``B = V_r^T``), stored quantized; loading adds
``dequant(A) @ dequant(B)`` to the dequantized weight. The factor packing is that of the 2026-04-27 record
(PR #1855, https://github.com/openai/parameter-golf/pull/1855, after Zhang et al., "LQER: Low-Rank Quantization
Error Reconstruction for LLMs", https://arxiv.org/abs/2402.02446):

- ``asym`` (``export.lqer_asym_group > 0`` and B's size a multiple of it): A with one fp16 scale for the whole
  matrix, ``max|A| / 1.5``, codes in [-2, 1] (2 bits); B in groups of ``group`` consecutive values (row-major),
  one fp16 scale ``max|group| / 7.5`` each, codes in [-8, 7] (4 bits);
- ``sym``: A and B per row, ``max|row| / qmax`` with ``qmax = 2^(bits-1) - 1``, codes in [-qmax, qmax].

Every scale is floored at 1e-10 before its fp16 rounding, as the record does. Pure functions of tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

FLOOR = 1e-10


def error_factors(error: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Rank-``min(rank, min(error.shape))`` factors (A, B) of the fp32 ``error``: A = U_r diag(S_r), B = V_r^T."""
    U, S, Vh = torch.linalg.svd(error.float(), full_matrices=False)
    r = min(rank, S.numel())
    return (U[:, :r] * S[:r]).contiguous(), Vh[:r, :].contiguous()


def top_by_error(errors: dict[str, float], k: int) -> list[str]:
    """The ``k`` names with the largest error norm, largest first (ties keep ``errors``' order)."""
    return [n for n, _ in sorted(errors.items(), key=lambda kv: -kv[1])[:k]]


def _row_codes(t: Tensor, qmax: int) -> tuple[Tensor, Tensor]:
    s = (t.abs().amax(dim=1).clamp_min(FLOOR) / qmax).to(torch.float16)
    return torch.clamp(torch.round(t / s.float().view(-1, 1)), -qmax, qmax).to(torch.int8), s


def pack(A: Tensor, B: Tensor, *, group: int, bits: int) -> dict[str, Any]:
    """The stored factors of one tensor: ``asym`` when ``group`` > 0 divides B's size, else ``sym`` at ``bits``."""
    if group > 0 and B.numel() % group == 0:
        sA = (A.abs().amax().clamp_min(FLOOR) / 1.5).to(torch.float16)
        qA = torch.clamp(torch.round(A / sA.float()), -2, 1).to(torch.int8)
        Bg = B.reshape(-1, group)
        sB = (Bg.abs().amax(dim=-1, keepdim=True).clamp_min(FLOOR) / 7.5).to(torch.float16).reshape(-1)
        qB = torch.clamp(torch.round(Bg / sB.float().reshape(-1, 1)), -8, 7).to(torch.int8).reshape(B.shape)
        return {"scheme": "asym", "A": qA, "sA": sA, "B": qB, "sB": sB}
    qmax = 2 ** (bits - 1) - 1
    qA, sA = _row_codes(A, qmax)
    qB, sB = _row_codes(B, qmax)
    return {"scheme": "sym", "A": qA, "sA": sA, "B": qB, "sB": sB}


def correction(entry: dict[str, Any]) -> Tensor:
    """dequant(A) @ dequant(B) in fp32, the term loading adds to the dequantized weight."""
    qA, sA, qB, sB = entry["A"], entry["sA"], entry["B"], entry["sB"]
    if entry["scheme"] == "asym":
        A = qA.float() * float(sA)
        group = qB.numel() // sB.numel()
        B = (qB.reshape(-1, group).float() * sB.float().view(-1, 1)).reshape(qB.shape)
    else:
        A = qA.float() * sA.float().view(-1, 1)
        B = qB.float() * sB.float().view(-1, 1)
    return A @ B


def entry_bytes(entry: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for k, t in entry.items() if k != "scheme")


def check_entry(entry: Any, rows: int, cols: int) -> str | None:
    """None if ``entry`` is a well-formed factor pair for a (rows, cols) tensor, else what is wrong."""
    if not isinstance(entry, dict) or entry.get("scheme") not in ("asym", "sym"):
        return "expected a dict with scheme 'asym' or 'sym'"
    if not all(isinstance(entry.get(k), Tensor) for k in ("A", "sA", "B", "sB")):
        return "expected tensors A, sA, B, sB"
    A, B = entry["A"], entry["B"]
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != rows or B.shape[1] != cols or A.shape[1] != B.shape[0]:
        return f"factor shapes {list(A.shape)} @ {list(B.shape)} do not make ({rows}, {cols})"
    if entry["scheme"] == "asym" and (entry["sB"].numel() == 0 or B.numel() % entry["sB"].numel()):
        return "B's group scales do not divide B"
    return None
