"""Per-row symmetric quantization, shared by export and by QAT, so both use one quantizer.

``plan_tensor`` decides what happens to each state-dict entry, in a fixed order: control tensors
first (named by ``model.control_patterns`` less ``export.control_exclude``; fp32 whatever their size,
so the records' "small tensor before control tensor" bug cannot happen unless
``export.control_fp32=false`` asks for it), then small-float passthrough, then the
fp16-kept names and the fp16 embedding, then integer quantization by tensor class (attention / MLP /
other) at the bits the config gives that class. The seed PRs' variants (row-max clip, fp16-rounded
scales, no scale floor) and PR #1394's standard-deviation clip (https://github.com/openai/parameter-golf/pull/1394)
are fields of :class:`QuantSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pgolf.core.config import ExportConfig
from pgolf.core.precision import at_least_fp32

TensorClass = Literal["attn", "mlp", "embed", "other"]


@dataclass(frozen=True)
class QuantSpec:
    """One per-row quantizer.

    ``stored`` specs are the export's: the scale is stored as fp16, so its floor keeps it a normal fp16
    number. Unstored specs are QAT-only quantizers computed in fp32 (the seed PRs' fake quantizers).
    """

    bits: int
    clip: Literal["quantile", "amax", "sdclip"] = "quantile"
    clip_quantile: float = 0.9999984
    scale_floor: bool = True  # scale >= 1/qmax (official)
    scale_dtype: Literal["fp32", "fp16"] = "fp32"  # the scale the codes are computed with
    stored: bool = True
    clip_sigmas: float = 0.0  # sdclip: clip each row at clip_sigmas * its standard deviation
    # stored specs without the 1/qmax floor: floor the scale at 1e-10 and let fp16 round it to a subnormal
    # (PR #1394's GPTQ scale) instead of at fp16's smallest normal (pgolf)
    subnormal: bool = False

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1


@dataclass(frozen=True)
class TensorPlan:
    action: Literal["int", "fp32", "fp16", "raw"]
    cls: str  # attn / mlp / embed / other / control / small / nonfloat
    spec: QuantSpec | None = None


def tensor_class(name: str) -> TensorClass:
    if name.endswith("tok_emb.weight") or name.endswith("lm_head.weight"):
        return "embed"
    if ".attn." in name:
        return "attn"
    if ".mlp." in name:
        return "mlp"
    return "other"


def sdclip_sigmas(cls: str, cfg: ExportConfig) -> float:
    """k of the SD clip for a tensor class: the embedding's, attention's / MLP's when set (> 0), else the
    matrices' (PR #1855 clips MLP, attention, other matrices and the embedding at four values)."""
    if cls == "embed":
        return cfg.sdclip_sigmas_embed
    per_class = {"attn": cfg.sdclip_sigmas_attn, "mlp": cfg.sdclip_sigmas_mlp}.get(cls, 0.0)
    return per_class or cfg.sdclip_sigmas_matrix


def clip_rule(cls: str, cfg: ExportConfig) -> str:
    """The clip rule of a tensor class: ``export.clip``, or ``export.clip_embed`` for the embedding when set."""
    return cfg.clip_embed if cls == "embed" and cfg.clip_embed != "same" else cfg.clip


def spec_for(cls: str, cfg: ExportConfig) -> QuantSpec:
    bits = {"attn": cfg.bits_attn, "mlp": cfg.bits_mlp}.get(cls, cfg.bits_other)
    clip = clip_rule(cls, cfg)
    sigmas = sdclip_sigmas(cls, cfg) if clip == "sdclip" else 0.0
    return QuantSpec(bits, clip, cfg.clip_quantile, cfg.scale_floor, cfg.scale_dtype, clip_sigmas=sigmas,
                     subnormal=cfg.scale_subnormal)


# PR #1855's int8 gate rule (export.gate_int8): per-row max / 127, the scale floored at 1e-10 and stored fp16
GATE_SPEC = QuantSpec(8, clip="amax", scale_floor=False, scale_dtype="fp16", subnormal=True)
GATE_SUFFIX = ".attn_gate_w"
GATE_NUMEL = (32, 8192)


def is_int8_gate(name: str, t: Tensor, cfg: ExportConfig) -> bool:
    return (cfg.gate_int8 and name.endswith(GATE_SUFFIX) and t.ndim == 2
            and GATE_NUMEL[0] <= t.numel() <= GATE_NUMEL[1])


def is_export_control(name: str, cfg: ExportConfig, control: tuple[str, ...]) -> bool:
    """Whether the export stores ``name`` as a control tensor: it matches one of the model's control
    patterns ``control`` (``model.control_patterns``) that ``export.control_exclude`` does not remove."""
    return any(p in name for p in control if p not in cfg.control_exclude)


def plan_tensor(name: str, t: Tensor, cfg: ExportConfig, *, control: tuple[str, ...]) -> TensorPlan:
    """What the export does with one state-dict entry. The order of the checks is the contract:

    non-float -> int8 gate (``gate_int8``) -> control (fp32; with ``control_fp32`` before the small-tensor
    rule, pgolf's fix) -> small (fp16) -> control (records' order) -> ``fp16_patterns`` -> fp16 embedding ->
    int by class.
    ``control`` is the model's control patterns (``model.control_patterns``): an explicit input, as
    the optimizer and the dtype layout read the same list.
    """
    if not t.is_floating_point():
        return TensorPlan("raw", "nonfloat")
    if is_int8_gate(name, t, cfg):
        return TensorPlan("int", "gate", GATE_SPEC)
    is_control = is_export_control(name, cfg, control)
    if is_control and cfg.control_fp32:
        return TensorPlan("fp32", "control")
    if t.numel() <= cfg.keep_float_max_numel:
        return TensorPlan("fp16", "small")
    if is_control:
        return TensorPlan("fp32", "control")
    cls = tensor_class(name)
    if any(p in name for p in cfg.fp16_patterns) or (cls == "embed" and cfg.embed_fp16):
        return TensorPlan("fp16", cls)
    return TensorPlan("int", cls, spec_for(cls, cfg))


# -- the quantizer --------------------------------------------------------------------------

def row_quantile(a: Tensor, q: float) -> Tensor:
    """``torch.quantile(a, q, dim=1)`` (linear interpolation) for q near 1, via topk.

    Equal to torch.quantile bit for bit (tested); far cheaper, which matters inside QAT.
    """
    n = a.shape[1]
    rank = torch.tensor(q, dtype=a.dtype) * (n - 1)
    lo = int(rank.floor().item())
    hi = int(rank.ceil().item())
    k = n - lo
    if k > 64:
        return torch.quantile(a, q, dim=1)
    top = torch.topk(a, k, dim=1, largest=True, sorted=True).values  # top[:, j] = sorted[n-1-j]
    below = top[:, n - 1 - lo]
    above = top[:, n - 1 - hi]
    return torch.lerp(below, above, (rank - lo).to(a.dtype))


def row_clip(t32: Tensor, spec: QuantSpec) -> Tensor:
    """Per-row clip value: a quantile of |w|, max |w|, or (sdclip) ``clip_sigmas`` times the row's
    standard deviation (unbiased, about the row mean, as PR #1394 computes it)."""
    if spec.clip == "sdclip":
        return spec.clip_sigmas * t32.std(dim=1)
    a = t32.abs()
    if spec.clip == "amax":
        return a.amax(dim=1)
    return row_quantile(a, spec.clip_quantile)


def row_scale(clip_abs: Tensor, spec: QuantSpec) -> Tensor:
    """Per-row scale in fp32 (fp16-representable when ``spec.scale_dtype == "fp16"``).

    Floors: 1/qmax (official); else fp16's smallest normal for stored scales (PR #314's
    ``clamp_min(1e-12).half().clamp_min(fp16 tiny)`` gives the same value), or with ``spec.subnormal``
    1e-10 (PR #1394: rows whose clip / qmax is below 6.1e-5 keep an fp16 subnormal scale, and one below
    ~3e-8 a zero scale); else, for fp32 QAT quantizers, ``max(clip, 1e-12) / qmax`` as in the PRs' fake
    quantizers.
    """
    qmax = spec.qmax
    if spec.scale_floor:
        scale = (clip_abs / qmax).clamp_min(1.0 / qmax)
    elif spec.stored:
        scale = (clip_abs / qmax).clamp_min(1e-10 if spec.subnormal else torch.finfo(torch.float16).tiny)
    else:
        scale = clip_abs.clamp_min(1e-12) / qmax
    if spec.scale_dtype == "fp16":
        scale = scale.to(torch.float16).float()
    return scale


def quantize_rows(t: Tensor, spec: QuantSpec) -> tuple[Tensor, Tensor]:
    """Per-row symmetric codes in [-qmax, qmax] (int8 container) and the scales.

    Stored specs return fp16 scales (the export format); unstored (QAT) specs return the fp32 scale.
    """
    t32 = t.float()
    qmax = spec.qmax
    # the clip from the unrounded tensor (float64 stays float64: its std/quantile agree across CPU kernels)
    clip_abs = row_clip(at_least_fp32(t), spec).float() if t32.numel() else torch.empty(t32.shape[0])
    clipped = torch.maximum(torch.minimum(t32, clip_abs[:, None]), -clip_abs[:, None])
    scale = row_scale(clip_abs, spec)
    q = torch.clamp(torch.round(clipped / scale[:, None]), -qmax, qmax).to(torch.int8)
    return q.contiguous(), (scale.to(torch.float16) if spec.stored else scale).contiguous()


def dequantize_rows(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    s = scale.to(torch.float32)
    return (q.float() * s.view(q.shape[0], *([1] * (q.ndim - 1)))).to(dtype)


def floor_fraction(t: Tensor, spec: QuantSpec) -> float:
    """Fraction of rows whose scale is raised by the 1/qmax floor (a row whose max is below 1 gets the absolute step 1/qmax)."""
    if not spec.scale_floor or t.numel() == 0:
        return 0.0
    clip_abs = row_clip(at_least_fp32(t), spec).float()
    return float((clip_abs / spec.qmax < 1.0 / spec.qmax).float().mean())


def quantize_tensor(t: Tensor, bits: int = 8, clip_quantile: float = 0.9999984) -> tuple[Tensor, Tensor]:
    """Per-tensor scale for large non-matrix float tensors (official rule)."""
    t32 = t.float()
    qmax = 2 ** (bits - 1) - 1
    clip_abs = float(torch.quantile(t32.abs().flatten(), clip_quantile).item()) if t32.numel() else 0.0
    scale = torch.tensor(clip_abs / qmax if clip_abs > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip_abs, clip_abs) / scale), -qmax, qmax).to(torch.int8)
    return q.contiguous(), scale


def fake_quant(w: Tensor, spec: QuantSpec) -> Tensor:
    """Forward: exactly the export's dequantized weight. Backward: identity (straight-through).

    Written as ``fq + (w - w.detach())`` rather than ``w + (fq - w).detach()``: the second form
    rounds twice in floating point and can differ from the export by one ulp.
    """
    with torch.no_grad():
        fq = dequantize_rows(*quantize_rows(w, spec), w.dtype)
    return fq + (w - w.detach())
