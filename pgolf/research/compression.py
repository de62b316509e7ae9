"""Artifact bytes and round-trip val_bpb across export settings: bits x compressor x pruning x bit-packing
(notebook 05).

Two tables, kept apart because they answer different questions:
- ``trained``: one trained tiny model exported at every setting, loaded back and scored (bytes *and* bpb), with
  a freshly initialized model of the same config exported alongside (the trained/fresh byte ratio);
- ``real_scale``: freshly initialized real-size presets exported at every setting (bytes at the real parameter
  count; fresh weights are not trained weights, so these are not a trained model's bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pgolf.core.config import Config, ExportConfig
from pgolf.core.export import export_artifact, load_artifact
from pgolf.core.model import build_model
from pgolf.research.rescore import one_thread, run_id, saved_runs
from pgolf.research.tables import AnalysisTable
from pgolf.running.presets import get_preset

FRESH_SEED = 0  # torch seed of the freshly initialized models
MATRIX_CLASSES = ("attn", "mlp")  # the tensor classes whose bits the settings vary (pgolf.core.quant.tensor_class)


@dataclass(frozen=True)
class ExportSetting:
    bits: str  # "attention/MLP" bits, e.g. "6/5"
    bits_attn: int  # export bits of the attention matrices
    bits_mlp: int  # export bits of the MLP matrices
    compressor: str  # zlib / zstd / lzma, each at its default (maximum) level
    prune_frac: float  # fraction of smallest-|w| entries zeroed in each quantized matrix
    bitpack: bool  # sub-8-bit codes packed densely before compression


@dataclass(frozen=True)
class TrainedRow(ExportSetting):
    run: str  # <scale>/<run folder>: the trained weights
    seed: int
    artifact_bytes: int  # the trained weights' compressed artifact
    # the quantized attention and MLP matrices alone (codes, scales, metadata), same compressor and level: the
    # bytes a setting changes, without the int8 embedding (53% of micro's parameters, 3-12% at real scale)
    matrix_bytes: int
    fresh_init_bytes: int  # a fresh init of the same config, same setting
    trained_over_fresh: float  # artifact_bytes / fresh_init_bytes
    val_bpb_fp: float  # the unquantized trained weights on the same targets
    q_val_bpb: float  # after the export round trip at this setting


@dataclass(frozen=True)
class RealScaleRow(ExportSetting):
    preset: str  # real-size preset, freshly initialized
    params: int  # its parameter count
    artifact_bytes: int  # the fresh-init compressed artifact
    total_bytes: int  # artifact_bytes + code bytes


TRAINED = AnalysisTable(study="compression", name="trained", row=TrainedRow, notebook="05")
REAL_SCALE = AnalysisTable(study="compression", name="real_scale", row=RealScaleRow, notebook="05")


def compression_grid(*, bit_grid: Sequence[Sequence[int]], compressors: Sequence[str], prune_fracs: Sequence[float],
                     bitpack_bits: Sequence[int]) -> list[ExportSetting]:
    """Every (bits, compressor, pruning) without packing, then ``bitpack_bits`` packed, unpruned, per compressor."""
    out = [ExportSetting(f"{a}/{m}", a, m, c, p, False) for a, m in bit_grid for c in compressors for p in prune_fracs]
    a, m = bitpack_bits
    out += [ExportSetting(f"{a}/{m}", a, m, c, 0.0, True) for c in compressors]
    return out


def export_config(cfg: Config, setting: ExportSetting) -> ExportConfig:
    return cfg.replace({"export.bits_attn": setting.bits_attn, "export.bits_mlp": setting.bits_mlp,
                        "export.compressor": setting.compressor, "export.prune_frac": setting.prune_frac,
                        "export.bitpack": setting.bitpack}).export


def export_with_matrix_bytes(state: dict[str, torch.Tensor], ecfg: ExportConfig, *, control: tuple[str, ...],
                             hessians: dict[str, torch.Tensor] | None = None) -> tuple[bytes, int]:
    """The artifact of ``state`` and the compressed bytes of its attention and MLP matrices alone."""
    blob, report = export_artifact(state, ecfg, control=control, hessians=hessians,
                                   groups={"matrices": MATRIX_CLASSES})
    return blob, report["group_bytes"]["matrices"]


def fresh_state(cfg: Config, seed: int = FRESH_SEED) -> dict[str, torch.Tensor]:
    """The initial weights of ``cfg`` under ``torch.manual_seed(seed)``; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg).state_dict()


def trained_table(*, run_dirs: Sequence[str | Path], dataset: str | Path, eval_tokens: int,
                  grid: Sequence[ExportSetting]) -> pd.DataFrame:
    """One row per run and setting for the raw weights of ``run_dirs``, scored on the first ``eval_tokens``
    targets."""
    rows = []
    with one_thread():
        for run in saved_runs(run_dirs, dataset=dataset, eval_tokens=eval_tokens):
            cfg, fp, fresh = run.cfg, run.score().val_bpb, fresh_state(run.cfg)
            for s in grid:
                blob, matrix_bytes = export_with_matrix_bytes(run.state, export_config(cfg, s),
                                                              control=cfg.model.control_patterns)
                fresh_blob, _ = export_artifact(fresh, export_config(cfg, s), control=cfg.model.control_patterns)
                q = run.score(load_artifact(blob)).val_bpb
                rows.append(TrainedRow(**asdict(s), run=run.run_id, seed=cfg.train.seed,
                                       artifact_bytes=len(blob), matrix_bytes=matrix_bytes,
                                       fresh_init_bytes=len(fresh_blob),
                                       trained_over_fresh=len(blob) / len(fresh_blob), val_bpb_fp=fp, q_val_bpb=q))
    return TRAINED.frame(rows)



def real_scale_table(*, presets: Sequence[str], grid: Sequence[ExportSetting], compressors: Sequence[str],
                     code_bytes: int) -> pd.DataFrame:
    """One row per preset and setting of ``grid`` whose compressor is in ``compressors`` (fresh init)."""
    rows = []
    for name in presets:
        cfg = get_preset(name)
        fresh = fresh_state(cfg)
        params = sum(t.numel() for t in fresh.values())
        for s in (s for s in grid if s.compressor in compressors):
            blob, _ = export_artifact(fresh, export_config(cfg, s), control=cfg.model.control_patterns)
            rows.append(RealScaleRow(**asdict(s), preset=name, params=params, artifact_bytes=len(blob),
                                     total_bytes=len(blob) + code_bytes))
    return REAL_SCALE.frame(rows)


def trained_table_cached(*, runs_root: Path, run_dirs: Sequence[str | Path], dataset: str | Path,
                         eval_tokens: int, grid: Sequence[ExportSetting], rerun: bool = False,
                         log: Callable[[str], None] = print) -> pd.DataFrame:
    """:func:`trained_table`, stored under ``runs_root/compression/analysis`` while its inputs are unchanged."""
    inputs = {"runs": [run_id(d) for d in run_dirs], "eval_tokens": eval_tokens,
              "grid": [asdict(s) for s in grid], "fresh_seed": FRESH_SEED}
    return TRAINED.cached(runs_root=runs_root, inputs=inputs, rerun=rerun, log=log,
                          compute=lambda: trained_table(run_dirs=run_dirs, dataset=dataset, eval_tokens=eval_tokens,
                                                        grid=grid))


def real_scale_table_cached(*, runs_root: Path, presets: Sequence[str], grid: Sequence[ExportSetting],
                            compressors: Sequence[str], code_bytes: int, rerun: bool = False,
                            log: Callable[[str], None] = print) -> pd.DataFrame:
    """:func:`real_scale_table`, stored under ``runs_root/compression/analysis`` while its inputs are unchanged."""
    inputs = {"presets": list(presets), "grid": [asdict(s) for s in grid], "compressors": list(compressors),
              "fresh_seed": FRESH_SEED, "code_bytes": code_bytes}
    return REAL_SCALE.cached(runs_root=runs_root, inputs=inputs, rerun=rerun, log=log,
                             compute=lambda: real_scale_table(presets=presets, grid=grid, compressors=compressors,
                                                              code_bytes=code_bytes))


SETTING_KEY = ["bits", "compressor", "prune_frac", "bitpack"]  # identifies a setting across the two tables


OFFICIAL_BASELINE_BYTES = 15_815_847  # the NaiveBaseline record's trained int8+zlib artifact (model only)


def fresh_init_calibration(real: pd.DataFrame) -> dict[str, float]:
    """How far the fresh-init bytes of ``baseline`` at int8+zlib (a row of ``real``) are from the official trained
    artifact of the same config: the error any fresh-init size estimate carries at real size."""
    row = real[(real["preset"] == "baseline") & (real["bits"] == "8/8") & (real["compressor"] == "zlib")
               & (real["prune_frac"] == 0) & ~real["bitpack"]]
    if row.empty:
        raise ValueError("the real-size table has no baseline 8/8 zlib row to calibrate against")
    fresh = int(row["artifact_bytes"].iloc[0])
    return {"fresh_init_bytes": fresh, "official_trained_bytes": OFFICIAL_BASELINE_BYTES,
            "trained_over_fresh": OFFICIAL_BASELINE_BYTES / fresh}


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """The settings no other setting beats on both ``artifact_bytes`` and ``q_val_bpb``, smallest first."""
    t = table.sort_values(["artifact_bytes", "q_val_bpb"])
    return t[t["q_val_bpb"] < t["q_val_bpb"].cummin().shift(fill_value=np.inf)]


def setting_label(row) -> str:
    """E.g. ``6/4 zstd prune 0.03 bitpacked``."""
    return (f"{row['bits']} {row['compressor']}" + (f" prune {row['prune_frac']:g}" if row["prune_frac"] else "")
            + (" bitpacked" if row["bitpack"] else ""))
