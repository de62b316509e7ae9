"""Straight-through fake-quant QAT, wired from the export plan so both quantize the same tensors.

The on/off state is explicit instance state on each CastedLinear. The trainer flips it with
:func:`set_qat` and then rebuilds the compiled model after ``torch._dynamo.reset()``, so a compiled
graph can never keep a stale value (the records' constant-folded class attribute). When it flips is
decided by :func:`qat_start_due` alone, once for all ranks.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch import nn

from pgolf.core.config import ExportConfig, QATConfig
from pgolf.core.model.layers import CastedLinear
from pgolf.core.quant import QuantSpec, plan_tensor


def qat_spec(export_spec: QuantSpec, cls: str, cfg: QATConfig) -> QuantSpec | None:
    """The fake quantizer for a matrix the export quantizes with ``export_spec`` (None: not in scope)."""
    if cls not in cfg.scope:
        return None
    bits = cfg.bits or export_spec.bits
    if not cfg.own_quantizer:
        return dataclasses.replace(export_spec, bits=bits)
    return QuantSpec(
        bits,
        clip=export_spec.clip if cfg.clip == "export" else cfg.clip,
        clip_quantile=export_spec.clip_quantile,
        scale_floor=export_spec.scale_floor if cfg.scale_floor == "export" else cfg.scale_floor == "qmax",
        scale_dtype=export_spec.scale_dtype if cfg.scale_dtype == "export" else cfg.scale_dtype,
        stored=False,
    )


def assign_qat_specs(model: nn.Module, export: ExportConfig, cfg: QATConfig | None = None, *,
                     control: tuple[str, ...]) -> list[str]:
    """Give each CastedLinear whose weight the exporter quantizes to ints (and whose class is in the
    QAT scope) its fake quantizer: the exporter's own QuantSpec unless ``cfg`` asks for another.
    ``control``: ``model.control_patterns``, as the export plans with it."""
    cfg = cfg or QATConfig()
    names = []
    for name, m in model.named_modules():
        if isinstance(m, CastedLinear):
            plan = plan_tensor(f"{name}.weight", m.weight, export, control=control)
            m.qat_spec = (qat_spec(plan.spec, plan.cls, cfg)
                          if plan.action == "int" and plan.spec is not None and m.weight.ndim == 2 else None)
            m.qat_cast_first = cfg.cast_first
            if m.qat_spec is not None:
                names.append(f"{name}.weight")
    return names


def set_qat(model: nn.Module, enabled: bool) -> int:
    """Switch fake quantization on or off; returns how many layers changed state."""
    changed = 0
    for m in model.modules():
        if isinstance(m, CastedLinear) and m.qat_spec is not None and m.qat_enabled != enabled:
            m.qat_enabled = enabled
            changed += 1
    return changed


def qat_active(model: nn.Module) -> bool:
    return any(isinstance(m, CastedLinear) and m.qat_enabled for m in model.modules())


def qat_start_due(progress: float, start_frac: float, distributed: bool, device: torch.device) -> bool:
    """Whether QAT switches on now: the one place that decides it, with the same answer on every rank.

    ``progress`` is this rank's training fraction (wallclock under a time cap, else steps). Each rank
    reads its own clock, so near ``start_frac`` ranks can disagree by a step; a rank that quantizes
    while another does not trains a silently different model, and under compile the switch rebuilds
    DDP on one rank only. So every rank calls this on every step until QAT is on (all ranks together,
    one 1-element all-reduce), and the MAX makes all of them switch on the step the first rank is due.
    """
    due = progress >= start_frac
    if not distributed:
        return due
    flag = torch.tensor(int(due), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
