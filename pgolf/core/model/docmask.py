"""Document-masked attention over one packed row (the 2026-04-27 record's varlen attention, ``model.doc_mask``).

The record (https://github.com/openai/parameter-golf/pull/1855, ``_build_cu_seqlens`` and
``CausalSelfAttention.forward`` of its ``train_gpt.py``) packs a batch into a single row and lets each token attend
only to the earlier tokens of its own *segment*:

- segments start at every document start (a BOS position) and at position 0; with ``max_doc_len > 0`` a longer
  document is cut into segments of ``max_doc_len`` tokens counted from its start;
- ``cu_seqlens`` (int32) lists the segment starts and then the row length, padded with the row length to a
  multiple of ``bucket_size`` entries (a fixed size for compiled kernels); ``max_seqlen`` is the longest segment.

On CUDA with flash-attention importable (``flash_attn_interface`` (FA3) or ``flash_attn`` (FA2)) and a bf16/fp16
row, its ``flash_attn_varlen_func`` runs; everywhere else the same math runs as a block-diagonal causal mask
through ``scaled_dot_product_attention`` (memory ``T x T`` booleans: meant for CPU checks and short rows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CU_BUCKET = 64  # the record's cu_seqlens padding


def build_cu_seqlens(doc_starts: list[int], total_len: int, max_doc_len: int = 0, bucket_size: int = CU_BUCKET,
                     device: torch.device | str = "cpu") -> tuple[Tensor, int]:
    """``(cu_seqlens, max_seqlen)`` of a packed row of ``total_len`` tokens whose documents start at
    ``doc_starts`` (sorted positions in ``[0, total_len)``; position 0 always starts a segment)."""
    starts = [int(s) for s in doc_starts]
    if not starts or starts[0] != 0:
        starts = [0] + starts
    bounds = starts + [total_len]
    segs: list[int] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        segs.extend(range(a, b, max_doc_len) if max_doc_len > 0 else [a])
    ends = segs[1:] + [total_len]
    n = len(segs) + 1
    padded = -(-n // bucket_size) * bucket_size if bucket_size > 0 else n
    cu = torch.full((padded,), total_len, dtype=torch.int32)
    cu[: len(segs)] = torch.tensor(segs, dtype=torch.int32)
    return cu.to(device), max(e - s for s, e in zip(segs, ends))


def cu_seqlens_from_tokens(row: Tensor, bos_id: int, max_doc_len: int = 0,
                           bucket_size: int = CU_BUCKET) -> tuple[Tensor, int]:
    """:func:`build_cu_seqlens` of a 1-D token row whose documents start at ``bos_id`` tokens (the record's eval)."""
    starts = (row == bos_id).nonzero(as_tuple=True)[0].tolist() if bos_id >= 0 else []
    return build_cu_seqlens(starts, row.numel(), max_doc_len, bucket_size, row.device)


def segment_ids(cu_seqlens: Tensor, total_len: int) -> Tensor:
    """The segment index of each position (padding entries of ``cu_seqlens`` equal ``total_len``: never reached)."""
    pos = torch.arange(total_len, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    return torch.searchsorted(cu_seqlens, pos, right=True) - 1


def document_mask(cu_seqlens: Tensor, total_len: int) -> Tensor:
    """``(T, T)`` bool: query i may attend key j iff j <= i in the same segment."""
    seg = segment_ids(cu_seqlens, total_len)
    causal = torch.ones(total_len, total_len, dtype=torch.bool, device=cu_seqlens.device).tril()
    return causal & (seg[:, None] == seg[None, :])


def _flash_varlen():
    """flash-attention's varlen kernel, looked up once when this module is imported (not inside compiled code)."""
    try:
        from flash_attn_interface import flash_attn_varlen_func  # FA3 (the record's)
        return flash_attn_varlen_func
    except ImportError:
        pass
    try:
        from flash_attn import flash_attn_varlen_func  # FA2
        return flash_attn_varlen_func
    except ImportError:
        return None


FLASH_VARLEN = _flash_varlen()


def document_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int = 0) -> Tensor:
    """Causal attention within segments. ``q`` (1, H, T, hd), ``k``/``v`` (1, KV, T, hd) (GQA when KV < H);
    returns (1, H, T, hd). ``max_seqlen``: the longest segment (0: T; only the flash kernel reads it)."""
    if q.size(0) != 1:
        raise ValueError(f"document-masked attention packs the batch into one row (batch 1), got batch {q.size(0)}")
    T = q.size(2)
    if FLASH_VARLEN is not None and q.is_cuda and q.dtype == torch.float32 and torch.is_autocast_enabled("cuda"):
        half = torch.get_autocast_dtype("cuda")  # the kernel takes bf16/fp16 only: autocast's dtype, as SDPA would
        q, k, v = q.to(half), k.to(half), v.to(half)
    flash = FLASH_VARLEN if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) else None
    if flash is not None:
        out = flash(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1),
                    cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens, max_seqlen_q=max_seqlen or T,
                    max_seqlen_k=max_seqlen or T, causal=True)
        out = out[0] if isinstance(out, tuple) else out
        return out.transpose(0, 1)[None]
    mask = document_mask(cu_seqlens, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=(k.size(1) != q.size(1)))
