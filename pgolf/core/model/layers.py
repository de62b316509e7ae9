"""Transformer building blocks with the official parameter names and shapes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.core.model.docmask import document_attention
from pgolf.core.quant import QuantSpec, fake_quant


class RMSNorm(nn.Module):
    def __init__(self, eps: float | None = None):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)


class CastedLinear(nn.Linear):
    """fp32 weights cast to the activation dtype at matmul time.

    QAT state is explicit instance state: ``qat_spec`` (which quantizer; set once from the export
    plan) and ``qat_enabled`` (flipped by the trainer, which then recompiles; see pgolf.core.qat).
    Fake quantization acts only in training mode: evaluation always sees the real weights. It reads
    the fp32 weight (what the export quantizes) unless ``qat_cast_first`` asks for the weight cast to
    the activation dtype first (the seed PRs' CastedLinear: bf16 under autocast).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, zero_init: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.zero_init = zero_init
        self.qat_spec: QuantSpec | None = None
        self.qat_enabled: bool = False
        self.qat_cast_first: bool = False

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        if self.qat_enabled and self.training and self.qat_spec is not None:
            w = fake_quant(w.to(x.dtype) if self.qat_cast_first else w, self.qat_spec)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, w.to(x.dtype), bias)


def ntk_base(base: float, rotary_dim: int, seq_len: int, train_seq_len: int) -> float:
    """NTK-aware RoPE base: base * (L_eval / L_train) ** (d / (d - 2)) when L_eval > L_train."""
    if seq_len <= train_seq_len:
        return base
    return base * (seq_len / train_seq_len) ** (rotary_dim / (rotary_dim - 2))


class Rotary(nn.Module):
    """cos/sin tables per sequence length; NTK scaling keyed on the *real* training length."""

    def __init__(self, dim: int, base: float, train_seq_len: int, ntk: bool = False):
        super().__init__()
        self.dim, self.base, self.train_seq_len, self.ntk = dim, base, train_seq_len, ntk
        self.register_buffer("inv_freq", self._inv_freq(base), persistent=False)
    def _inv_freq(self, base: float, dtype: torch.dtype = torch.float32) -> Tensor:
        return 1.0 / (base ** (torch.arange(0, self.dim, 2, dtype=dtype) / self.dim))

    def to_float64(self) -> None:
        """Recompute the frequencies in float64 (float32 ``pow`` differs in the last bit between CPU kernels)."""
        self.inv_freq = self._inv_freq(self.base, torch.float64).to(self.inv_freq.device)

    def base_for(self, seq_len: int) -> float:
        return ntk_base(self.base, self.dim, seq_len, self.train_seq_len) if self.ntk else self.base

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype,
                context_len: int = 0) -> tuple[Tensor, Tensor]:
        """cos/sin for positions 0..seq_len-1; the NTK base is keyed on ``context_len`` when given (the longest
        document of a document-masked batch: its positions run over the whole packed row, its context does not)."""
        # Recomputed per call (T x dim/2 elements: negligible). A cache would be shared between
        # inference_mode validation and autograd training, which torch refuses, and checking the
        # mode is something torch.compile cannot trace.
        base = self.base_for(context_len or seq_len)
        inv_freq = self.inv_freq.to(device) if base == self.base else self._inv_freq(base, self.inv_freq.dtype).to(device)
        t = torch.arange(seq_len, device=device, dtype=inv_freq.dtype)
        freqs = torch.outer(t, inv_freq)  # (T, dim/2)
        return freqs.cos()[None, None].to(dtype=dtype), freqs.sin()[None, None].to(dtype=dtype)


def apply_rotary_emb(x: Tensor, cos: Tensor, sin: Tensor, rope_dims: int = 0) -> Tensor:
    """Rotate the first ``rope_dims`` dims of each head (all with 0); the rest pass through (partial RoPE)."""
    if 0 < rope_dims < x.size(-1):
        return torch.cat((apply_rotary_emb(x[..., :rope_dims], cos, sin), x[..., rope_dims:]), dim=-1)
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, qk_gain_init: float,
                 train_seq_len: int, ntk: bool, rope_dims: int = 0, xsa: bool = False, gate_window: int = 0,
                 gate_scale: float = 1.0, doc_mask: bool = False):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim)
        self.c_k = CastedLinear(dim, kv_dim)
        self.c_v = CastedLinear(dim, kv_dim)
        self.proj = CastedLinear(dim, dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        self.rope_dims = rope_dims  # 0: every dim (the baseline); the frequencies span only the rotated dims
        self.rotary = Rotary(rope_dims or self.head_dim, rope_base, train_seq_len, ntk)
        self.xsa = xsa
        # sparse output gate (PR #1855): per head, sigmoid(scale * W_h . x[:gate_window]); zero-init (no RNG draw)
        self.gate_window, self.gate_scale = gate_window, gate_scale
        self.doc_mask = doc_mask  # model.doc_mask: forward takes cu_seqlens (a constant the submission bundle folds)
        if gate_window:
            self.attn_gate_w = nn.Parameter(torch.zeros(num_heads, gate_window, dtype=torch.float32))

    def forward(self, x: Tensor, cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> Tensor:
        """``cu_seqlens`` (int32 document starts over the single packed row, then its length, padded with it; see
        :func:`pgolf.core.model.docmask.build_cu_seqlens`): attention only within each document (``doc_mask``)."""
        bsz, seqlen, dim = x.shape
        q = self.c_q(x).reshape(bsz, seqlen, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.c_k(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = self.c_v(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = F.rms_norm(q, (q.size(-1),))
        k = F.rms_norm(k, (k.size(-1),))
        cos, sin = self.rotary(seqlen, x.device, q.dtype, max_seqlen if cu_seqlens is not None else 0)
        q = apply_rotary_emb(q, cos, sin, self.rope_dims)
        k = apply_rotary_emb(k, cos, sin, self.rope_dims)
        q = q * self.q_gain.to(dtype=q.dtype)[None, :, None, None]
        if self.doc_mask and cu_seqlens is not None:
            y = document_attention(q, k, v, cu_seqlens, max_seqlen)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None, is_causal=True, enable_gqa=(self.num_kv_heads != self.num_heads)
            )
        if self.xsa:
            y = exclusive_attention(y, v)
        if self.gate_window:
            g = torch.sigmoid(self.gate_scale * F.linear(x[..., :self.gate_window], self.attn_gate_w.to(x.dtype)))
            y = y * g.transpose(1, 2)[..., None]  # (B, T, H) -> (B, H, T, 1)
        y = y.transpose(1, 2).contiguous().reshape(bsz, seqlen, dim)
        return self.proj(y)


def exclusive_attention(y: Tensor, v: Tensor) -> Tensor:
    """XSA: remove from each head's output its component along the token's own (unit) value vector.

    y: (B, H, T, hd); v: (B, KV, T, hd); head h reads kv head h // (H / KV), as GQA does."""
    b, h, t, d = y.shape
    kv = v.size(1)
    y_g = y.reshape(b, kv, h // kv, t, d)
    vn = F.normalize(v, dim=-1).unsqueeze(2)  # (B, KV, 1, T, hd)
    return (y_g - (y_g * vn).sum(dim=-1, keepdim=True) * vn).reshape(b, h, t, d)
