"""GPTQ vs round-to-nearest and SD-clip vs quantile clip on the same trained weights, at equal bits (notebook 06).

Each run's raw weights are exported with the attention and MLP matrices at each bit width under the four
combinations of quantizer (``rtn``, ``gptq``) and clip rule (``quantile``, ``sdclip``), everything else as the
run exported it except ``export.scale_floor=false`` in all four (SD-clip requires it; keeping it the same
isolates the clip rule). GPTQ's Hessians come from ``calibration_batches`` training micro-batches read with the
run's own loader config, through the final weights. Each export is loaded back and scored on the first
``eval_tokens`` validation targets; the gap is against the same weights unquantized on the same targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from pgolf.core import gptq
from pgolf.core.config import Config, DataConfig
from pgolf.core.data.loader import resolve_dataset
from pgolf.core.data.permuted import make_train_loader
from pgolf.core.export import export_artifact, load_artifact
from pgolf.core.model import build_model
from pgolf.research.rescore import one_thread, run_id, saved_runs
from pgolf.research.tables import AnalysisTable

QUANTIZERS = ("rtn", "gptq")
CLIPS = ("quantile", "sdclip")


@dataclass(frozen=True)
class GPTQSweepRow:
    run: str  # <scale>/<run folder>
    seed: int
    bits: int  # export bits of the attention and MLP matrices
    quantizer: str  # rtn | gptq
    clip: str  # quantile | sdclip
    val_bpb_fp: float  # the unquantized weights on the same targets
    q_val_bpb: float  # after the export round trip
    gap_bpb: float  # q_val_bpb - val_bpb_fp
    artifact_bytes: int
    tokens_scored: int


TABLE = AnalysisTable(study="frontier", name="gptq_sweep", row=GPTQSweepRow, notebook="06")


def export_overrides(bits: int, quantizer: str, clip: str) -> dict:
    return {"export.bits_attn": bits, "export.bits_mlp": bits, "export.quantizer": quantizer,
            "export.clip": clip, "export.scale_floor": False}


def run_hessians(cfg: Config, state: dict[str, torch.Tensor], dataset: str | Path, n_batches: int
                 ) -> dict[str, torch.Tensor]:
    """GPTQ Hessians of ``state`` from the first ``n_batches`` training micro-batches of the run's loader."""
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    files = resolve_dataset(DataConfig(path=str(dataset)), cfg.model.vocab_size).train_files
    loader = make_train_loader(cfg, files, 0, 1, "cpu")
    t = cfg.train
    return gptq.collect_hessians(model, gptq.calibration_batches(loader, n_batches, t.train_batch_tokens,
                                                                 t.train_seq_len, 1))


def gptq_sweep(*, run_dirs: Sequence[str | Path], dataset: str | Path, bits: Sequence[int], eval_tokens: int,
               calibration_batches: int) -> pd.DataFrame:
    rows = []
    with one_thread():
        for run in saved_runs(run_dirs, dataset=dataset, eval_tokens=eval_tokens):
            fp = run.score().val_bpb
            hessians = run_hessians(run.cfg, run.state, dataset, calibration_batches)
            for b in bits:
                for quantizer in QUANTIZERS:
                    for clip in CLIPS:
                        ecfg = run.cfg.replace(export_overrides(b, quantizer, clip)).export
                        blob, _ = export_artifact(run.state, ecfg, control=run.cfg.model.control_patterns,
                                                  hessians=hessians if quantizer == "gptq" else None)
                        q = run.score(load_artifact(blob))
                        rows.append(GPTQSweepRow(run=run.run_id, seed=run.cfg.train.seed, bits=int(b),
                                                 quantizer=quantizer, clip=clip, val_bpb_fp=fp, q_val_bpb=q.val_bpb,
                                                 gap_bpb=q.val_bpb - fp, artifact_bytes=len(blob),
                                                 tokens_scored=q.tokens))
    return TABLE.frame(rows)


def gptq_sweep_table(*, runs_root: Path, run_dirs: Sequence[str | Path], dataset: str | Path, bits: Sequence[int],
                     eval_tokens: int, calibration_batches: int, rerun: bool = False,
                     log: Callable[[str], None] = print, table: AnalysisTable = TABLE) -> pd.DataFrame:
    """:func:`gptq_sweep`, stored where ``table`` says (default: ``runs_root/frontier/analysis``, notebook 06's;
    another study passes its own :class:`AnalysisTable` of :class:`GPTQSweepRow`) while its inputs are unchanged."""
    inputs = {"runs": [run_id(d) for d in run_dirs], "bits": list(bits),
              "eval_tokens": eval_tokens, "calibration_batches": calibration_batches,
              "settings": [export_overrides(0, q, c) for q in QUANTIZERS for c in CLIPS]}
    return table.cached(runs_root=runs_root, inputs=inputs, rerun=rerun, log=log,
                        compute=lambda: gptq_sweep(run_dirs=run_dirs, dataset=dataset, bits=bits,
                                                   eval_tokens=eval_tokens, calibration_batches=calibration_batches))


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``arm`` = "<quantizer> <clip>" (per bit width the reference is ``rtn quantile``)."""
    return table.assign(arm=table["quantizer"] + " " + table["clip"])
