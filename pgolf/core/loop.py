"""Depth recurrence (PR #1394, https://github.com/openai/parameter-golf/pull/1394): when looping is on, the
blocks of ``model.loop_layers`` run ``1 + model.loop_count`` times with shared weights.

The on/off state is the model's explicit ``looping_active`` attribute, and during a run one object owns it:
:class:`LoopController` switches it on at ``model.loop_start_frac`` of training (decided once, the same on
every rank), logs and records the switch, and saves/restores it in checkpoints. The compiled model follows
the flag through dynamo's guard on it: the compile priming (:func:`prime_looped`) traces both graphs before
training, as the record does, so the switch mid-run costs no compile time (a CPU test checks that a
compiled model's output changes when the flag flips).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pgolf.core.config import ModelConfig
from pgolf.core.runtime import start_due


def loop_enabled(cfg: ModelConfig) -> bool:
    return bool(cfg.loop_layers) and cfg.loop_count > 0


def set_looping(model: nn.Module, active: bool) -> bool:
    """Set the flag; returns whether it changed."""
    changed = bool(model.looping_active) != active
    model.looping_active = active
    return changed


class LoopController:
    """The one owner of the looping flag during a run (after :func:`prime_looped`); nothing else flips it.

    ``loop_step`` is the step at which looping switched on (None: not yet)."""

    def __init__(self, model: nn.Module, cfg: ModelConfig, *, distributed: bool, device: torch.device,
                 log: Callable[[str], None], metric: Callable[..., None]):
        self.model, self.cfg = model, cfg
        self.distributed, self.device = distributed, device
        self.log, self.metric = log, metric
        self.loop_step: int | None = None

    @property
    def active(self) -> bool:
        return bool(self.model.looping_active)

    def maybe_switch(self, step: int, progress: float) -> bool:
        """Switch looping on at ``step`` if due at training fraction ``progress`` (one MAX all-reduce per
        call until it happened, so every rank must call it before every step, as QAT's switch)."""
        if not loop_enabled(self.cfg) or self.loop_step is not None:
            return False
        if not start_due(progress, self.cfg.loop_start_frac, self.distributed, self.device):
            return False
        self.switch_on(step, progress)
        return True

    def switch_on(self, step: int, progress: float = float("nan")) -> None:
        set_looping(self.model, True)
        self.loop_step = step
        enc, dec = self.model.encoder_indices, self.model.decoder_indices
        self.log(f"layer_loop:enabled step:{step} frac:{progress:.3f} encoder:{enc} decoder:{dec}")
        self.metric(event="loop_enabled", step=step, progress=progress)

    def for_evaluation(self) -> None:
        """The record evaluates the exported model with looping on, however far training got."""
        if loop_enabled(self.cfg) and not self.active:
            set_looping(self.model, True)
            self.log("layer_loop:enabled for evaluation (training ended before loop_start_frac)")

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's keys ``loop_active`` and ``loop_step``."""
        return {"loop_active": self.active, "loop_step": self.loop_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loop_step = state.get("loop_step")
        set_looping(self.model, bool(state.get("loop_active", False)))


def prime_looped(model: nn.Module, cfg: ModelConfig, run_steps: Callable[[], None],
                 log: Callable[[str], None]) -> None:
    """The record's second compile priming: ``run_steps`` (the warmup steps) again with looping on, then
    off. The caller restores the initial weights and optimizer states afterwards, as for the first pass."""
    if not loop_enabled(cfg):
        return
    set_looping(model, True)
    log(f"loop_warmup:enabled encoder:{model.encoder_indices} decoder:{model.decoder_indices}")
    try:
        run_steps()
    finally:
        set_looping(model, False)
