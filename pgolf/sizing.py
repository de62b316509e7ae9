"""Predicted artifact size for a config, from initialized or trained weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import accounting
from .config import Config
from .export import export_artifact
from .model import build_model


def size_report_for(cfg: Config, run_dir: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Export report for ``cfg``: trained weights from ``run_dir/final_model.pt`` if given, else a fresh
    init (seeded). Fresh weights compress differently from trained ones: the report says which."""
    if run_dir is not None:
        state = torch.load(Path(run_dir) / "final_model.pt", map_location="cpu", weights_only=True)
        source = f"trained weights of {run_dir}"
    else:
        torch.manual_seed(seed)
        state = build_model(cfg).state_dict()
        source = f"fresh init (seed {seed}); zero-initialized projections compress far better than trained ones"
    blob, report = export_artifact(state, cfg.export, detail=True)
    code = accounting.code_bytes()
    report.update({"weights": source, "code_bytes": code, "total_bytes": len(blob) + code,
                   "fits_16mb": accounting.fits(len(blob), code), "cap_bytes": accounting.CAP_BYTES})
    return report
