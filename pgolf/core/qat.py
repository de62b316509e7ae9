"""Straight-through fake-quant QAT, wired from the export plan so both quantize the same tensors.

The on/off state is explicit instance state on each CastedLinear. During a run one object owns it:
:class:`QATController` decides when it switches on (:func:`start_due`, once for all ranks), flips the
layers with :func:`set_qat`, rebuilds the compiled model after ``torch._dynamo.reset()`` (so a compiled
graph can never keep a stale value, the records' constant-folded class attribute), logs the switch, saves
and restores the decision in checkpoints, and switches it off for the export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pgolf.core.config import ExportConfig, QATConfig
from pgolf.core.model.layers import CastedLinear
from pgolf.core.quant import QuantSpec, plan_tensor
from pgolf.core.runtime import start_due


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
        clip_sigmas=export_spec.clip_sigmas,
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


class QATController:
    """The one owner of QAT's on/off state during a run; nothing else flips it.

    ``recompile`` (or None when the model is not compiled) is called after every flip: it resets dynamo and
    rebuilds the trainer's compiled (and DDP) wrapper. ``log(line)`` and ``metric(**row)`` write the run's
    log and metrics. ``qat_step`` is the step at which QAT switched on (None: not yet); it is decided once,
    even when no layer has a fake quantizer, and a resumed run takes it from the checkpoint.
    """

    def __init__(self, model: nn.Module, cfg: QATConfig, *, distributed: bool, device: torch.device,
                 recompile: Callable[[], None] | None, log: Callable[[str], None], metric: Callable[..., None]):
        self.model, self.cfg = model, cfg
        self.distributed, self.device = distributed, device
        self.recompile, self.log, self.metric = recompile, log, metric
        self.qat_step: int | None = None

    @property
    def active(self) -> bool:
        return qat_active(self.model)

    def maybe_switch(self, step: int, progress: float) -> bool:
        """Switch QAT on at ``step`` if it is due at training fraction ``progress`` (agreed across ranks).

        Every rank calls this before every step until the switch happened: it holds the all-reduce of
        :func:`start_due`, so a rank that skipped a call would deadlock the others."""
        if not self.cfg.enabled or self.qat_step is not None or self.active:  # decided once, even with 0 layers
            return False
        if not start_due(progress, self.cfg.start_frac, self.distributed, self.device):
            return False
        self.switch_on(step)
        return True

    def switch_on(self, step: int) -> int:
        """Switch fake quantization on now (at ``step``), recompile, log; returns the number of layers."""
        n = set_qat(self.model, True)
        if self.recompile is not None:
            self.recompile()
        self.qat_step = step
        self.log(f"qat:enabled step:{step} layers:{n} recompile:{int(self.recompile is not None)}")
        self.metric(event="qat_enabled", step=step, layers=n, recompile=self.recompile is not None)
        return n

    def switch_off(self) -> int:
        """Real weights for the export (``qat_step`` keeps the decision for the summary). No recompile: fake
        quantization acts only in training mode, so the evaluation graphs are the same either way, and a
        recompile would cost the final evaluation its compile time again."""
        return set_qat(self.model, False)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's keys ``qat_active`` and ``qat_step``."""
        return {"qat_active": self.active, "qat_step": self.qat_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's decision: the step it was made at, and the layers on if it was on."""
        self.qat_step = state["qat_step"]
        if state["qat_active"]:
            set_qat(self.model, True)
            if self.recompile is not None:
                self.recompile()
