"""Weight averaging: SWA (uniform over snapshots once the LR has decayed) and EMA, both in fp32
(SWA optionally in the parameter dtype, as the records sum it).

The average is *applied* (loaded into the model) before the final evaluation and export; the
trainer logs how many snapshots went in, and a test checks the exported weights are the average.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.core.config import AveragingConfig


class WeightAverager:
    def __init__(self, model: nn.Module, cfg: AveragingConfig):
        self.cfg = cfg
        self.count = 0
        self.avg: dict[str, Tensor] = {}
        if cfg.mode == "ema":
            self.avg = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, lr_scale: float) -> bool:
        """Call after each optimizer step (``step`` counts finished steps). Returns True if it took a sample.

        SWA samples when the LR multiplier of that step was below ``swa_start_lr_scale`` and the step
        number (``swa_step``: finished steps, or PR #194's 0-based index ``step - 1``) divides by
        ``swa_every``."""
        if self.cfg.mode == "ema":
            sd = model.state_dict()
            d = self.cfg.ema_decay
            for k, v in self.avg.items():
                v.mul_(d).add_(sd[k].detach().float(), alpha=1 - d)
            self.count += 1
            return True
        number = step if self.cfg.swa_step == "done" else step - 1
        if self.cfg.mode == "swa" and lr_scale < self.cfg.swa_start_lr_scale and number % self.cfg.swa_every == 0:
            sd = model.state_dict()  # only when sampling: building it costs ~0.7 ms a step at micro scale
            if not self.avg:
                # swa_dtype="param" sums in each tensor's own dtype (bf16 embeddings on GPU), as the records do
                self.avg = {k: v.detach().clone() if self.cfg.swa_dtype == "param" else v.detach().float().clone()
                            for k, v in sd.items() if v.is_floating_point()}
            else:
                for k, v in self.avg.items():
                    v.add_(sd[k].detach().to(v.dtype))
            self.count += 1
            return True
        return False

    def averaged_state(self, model: nn.Module) -> dict[str, Tensor] | None:
        """The averaged state dict in the model's dtypes, or None if nothing (or, for SWA, fewer than
        ``swa_min_snapshots``) was collected."""
        if self.cfg.mode == "none" or self.count == 0:
            return None
        if self.cfg.mode == "swa" and self.count < self.cfg.swa_min_snapshots:
            return None
        sd = model.state_dict()
        out = {}
        for k, v in sd.items():
            if k in self.avg:
                a = self.avg[k] / self.count if self.cfg.mode == "swa" else self.avg[k]
                out[k] = a.to(v.dtype)
            else:
                out[k] = v
        return out

    def state_dict(self) -> dict:
        return {"count": self.count, "avg": self.avg}

    def load_state_dict(self, d: dict) -> None:
        self.count, self.avg = d["count"], d["avg"]
