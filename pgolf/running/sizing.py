"""Predicted artifact size for a config, from initialized or trained weights.

``pgolf size PRESET`` prints :func:`format_table` of :func:`size_estimate`: the headline is the bytes of
trained weights (a run's, with ``--run``) or of a Gaussian stand-in for them, against the 16,000,000-byte
cap, then one row per tensor class. ``--json`` prints :func:`size_report_for`, which also exports the
fresh init.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from pgolf.core import accounting
from pgolf.core.config import Config
from pgolf.core.export import artifact_contents, export_artifact
from pgolf.core.model import build_model
from pgolf.core.quant import plan_tensor
from pgolf.core.safe_load import load_plain

SURROGATE_NOTE = ("Gaussian stand-in for trained weights (every integer-quantized matrix drawn N(0, 1), "
                  "scale floor off)")


def human_code_bytes(cfg: Config) -> int:
    """The size of the readable generated script for ``cfg`` (``train_gpt_human.py``, before packing)."""
    from pgolf.submit.bundle import human_source
    return len(human_source(cfg).encode("utf-8"))


def size_report_for(cfg: Config, run_dir: Path | None = None, seed: int = 0, detail: bool = True) -> dict[str, Any]:
    """Export report for ``cfg``: trained weights from ``run_dir/final_model.pt`` if given, else a fresh
    init (seeded). Fresh weights compress differently from trained ones: the report says which.

    It also reports ``surrogate_bytes``: the export of a Gaussian stand-in for trained weights (every
    integer-quantized matrix drawn N(0, 1), the scale floor off). Fresh init is no guide to trained
    bytes: its projections are zero and its rows sit under the 1/qmax floor, so nearly every code is 0.
    Trained rows are roughly Gaussian; per-row max clipping of a Gaussian gives codes of about
    log2(qmax / 3.3) + 2.05 bits (7.3 at int8, 5.3 at int6), which the surrogate reproduces. With
    ``detail`` the surrogate's per-class report is ``surrogate_classes``."""
    state, source = _weights(cfg, run_dir, seed)
    blob, report = export_artifact(state, _export_cfg(cfg), control=cfg.model.control_patterns, detail=detail)
    code = accounting.code_bytes(cfg)
    if cfg.export.quantizer == "gptq":
        report["quantizer_note"] = GPTQ_NOTE
    report.update({"weights": source, "code_bytes": code, "code_bytes_rule": accounting.CODE_BYTES_NOTE,
                   "code_bytes_raw": accounting.raw_code_bytes(),
                   "code_bytes_human": human_code_bytes(cfg), "total_bytes": len(blob) + code,
                   "fits_16mb": accounting.fits(len(blob), code), "cap_bytes": accounting.CAP_BYTES})
    if run_dir is None:
        sblob, sreport = _export_surrogate(state, cfg, seed, detail)
        report.update({"surrogate_bytes": len(sblob), "surrogate_total_bytes": len(sblob) + code,
                       "surrogate_fits_16mb": accounting.fits(len(sblob), code)})
        if detail:
            report["surrogate_classes"] = sreport["classes"]
    return report


def size_estimate(cfg: Config, run_dir: Path | None = None, seed: int = 0, detail: bool = True) -> dict[str, Any]:
    """The best guess of a trained artifact's size: a run's trained weights (``run_dir``), else the Gaussian
    stand-in (see :func:`size_report_for`). The export report plus ``weights``, ``code_bytes``,
    ``total_bytes``, ``cap_bytes`` and ``fits_16mb``; ``detail`` compresses each class on its own too."""
    state, source = _weights(cfg, run_dir, seed)
    if run_dir is None:
        blob, report = _export_surrogate(state, cfg, seed, detail)
        source = f"{SURROGATE_NOTE}; seed {seed}"
    else:
        blob, report = export_artifact(state, _export_cfg(cfg), control=cfg.model.control_patterns, detail=detail)
    code = accounting.code_bytes(cfg)
    if cfg.export.quantizer == "gptq":
        report["quantizer_note"] = GPTQ_NOTE
    report.update({"weights": source, "code_bytes": code, "code_bytes_rule": accounting.CODE_BYTES_NOTE,
                   "code_bytes_raw": accounting.raw_code_bytes(),
                   "code_bytes_human": human_code_bytes(cfg), "total_bytes": len(blob) + code,
                   "cap_bytes": accounting.CAP_BYTES, "fits_16mb": accounting.fits(len(blob), code)})
    return report


GPTQ_NOTE = ("export.quantizer=gptq sized with round-to-nearest codes (no calibration Hessians here); "
             "GPTQ rounds on the same per-row grid, so its artifact differs in the codes only")


def _export_cfg(cfg: Config):
    """The export settings to size with: gptq needs calibration data, so its sizes use rounding to nearest."""
    return dataclasses.replace(cfg.export, quantizer="rtn") if cfg.export.quantizer == "gptq" else cfg.export


def _weights(cfg: Config, run_dir: Path | None, seed: int) -> tuple[dict[str, torch.Tensor], str]:
    if run_dir is not None:
        path = Path(run_dir) / "final_model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (a run saves it with train.save_raw_model=true)")
        return (load_plain(path, name=path, kind="pgolf model state (final_model.pt)"), f"trained weights of {run_dir}")
    torch.manual_seed(seed)
    return (build_model(cfg).state_dict(),
            f"fresh init (seed {seed}); zero-initialized projections compress far better than trained ones")


def _export_surrogate(state: dict[str, torch.Tensor], cfg: Config, seed: int, detail: bool) -> tuple[bytes, dict]:
    return export_artifact(gaussian_surrogate(state, cfg, seed), dataclasses.replace(_export_cfg(cfg), scale_floor=False),
                           control=cfg.model.control_patterns, detail=detail)


def gaussian_surrogate(state: dict[str, torch.Tensor], cfg: Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """``state`` with every matrix the exporter quantizes to ints replaced by N(0, 1) draws."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        if plan_tensor(name, t, cfg.export, control=cfg.model.control_patterns).action == "int":
            t = torch.randn(t.shape, generator=g, dtype=torch.float32)
        out[name] = t
    return out


def _storage(kinds: list[str]) -> str:
    """``["6", "8"]`` -> ``int6+int8``; float kinds (fp16, fp32, raw) as they are."""
    return "+".join(f"int{k}" if k.isdigit() else k for k in kinds)


def format_table(name: str, est: dict[str, Any]) -> str:
    """The human-readable report of :func:`size_estimate`: headline, verdict, one row per tensor class."""
    art, code, total, cap = est["artifact_bytes"], est["code_bytes"], est["total_bytes"], est["cap_bytes"]
    verdict = (f"fits, {cap - total:,} bytes to spare" if est["fits_16mb"]
               else f"DOES NOT FIT: over by {total - cap:,} bytes")
    lines = [
        f"{name}: {total:,} bytes of {cap:,} -> {verdict}",
        f"  artifact {art:>12,} bytes  {artifact_contents(est)} + {est['compressor']}",
        f"  code     {code:>12,} bytes  {est.get('code_bytes_rule', accounting.CODE_BYTES_NOTE)}; unpacked: "
        f"{est['code_bytes_human']:,} bytes (the readable train_gpt_human.py), raw "
        f"{est.get('code_bytes_raw', accounting.raw_code_bytes()):,} bytes (every .py under pgolf/core/)",
        f"  weights: {est['weights']}",
        "",
        f"{'class':<10} {'tensors':>7} {'params':>12}  {'storage':<14} {'payload bytes':>14} {'compressed (est.)':>18}",
    ]
    classes = est["classes"]
    for cls, c in classes.items():
        comp = f"{c['compressed_bytes']:,}" if "compressed_bytes" in c else "-"
        lines.append(f"{cls:<10} {c['tensors']:>7} {c['params']:>12,}  {_storage(c['storage']):<14} "
                     f"{c['payload_bytes']:>14,} {comp:>18}")
    lines.append(f"{'total':<10} {sum(c['tensors'] for c in classes.values()):>7} "
                 f"{sum(c['params'] for c in classes.values()):>12,}  {'':<14} {est['payload_bytes']:>14,} "
                 f"{art:>18,}  (the artifact, all classes compressed together)")
    return "\n".join(lines)
