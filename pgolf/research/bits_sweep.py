"""The quantization gap of trained weights re-exported at several bit widths, without training (notebook 02).

Each run's raw weights are exported again with the attention and MLP matrices at each bit width (everything
else as the run exported it), loaded back and scored on the first ``eval_tokens`` validation targets; the gap
is against the same weights unquantized on the same targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pgolf.core.config import Config
from pgolf.core.export import export_artifact, load_artifact
from pgolf.research.rescore import load_final_state, run_id, score_state, validation_slice
from pgolf.research.tables import AnalysisTable


@dataclass(frozen=True)
class BitsSweepRow:
    scale: str  # the folder under runs/ that holds the run (a protocol scale)
    arm: str  # the ablation arm whose weights were re-exported
    seed: int
    bits: int  # export bits of the attention and MLP matrices
    val_bpb_fp: float  # the unquantized weights on the same targets
    q_val_bpb: float  # after the export round trip at `bits`
    gap_bpb: float  # q_val_bpb - val_bpb_fp
    artifact_bytes: int  # compressed artifact at `bits`
    tokens_scored: int  # validation targets scored


TABLE = AnalysisTable(study="qat", name="bits_sweep", row=BitsSweepRow, notebook="02")


def _selected(runs: pd.DataFrame, arms: Sequence[str]) -> list[dict]:
    return runs[runs["arm"].isin(list(arms))].to_dict("records")


def _embedding_storage(cfg: Config) -> int | str:
    return "fp16" if cfg.export.embed_fp16 else cfg.export.bits_other


def bits_sweep(*, runs: pd.DataFrame, arms: Sequence[str], bits: Sequence[int], eval_tokens: int,
               dataset: str | Path) -> pd.DataFrame:
    """One row per (run of ``arms``, bit width); ``runs`` is an ablation table (arm, seed, path)."""
    rows = []
    for r in _selected(runs, arms):
        cfg = Config.from_json(Path(r["path"]) / "config.json")
        state = load_final_state(r["path"])
        tokens, luts = validation_slice(cfg=cfg, dataset=dataset, n_tokens=eval_tokens)
        fp = score_state(cfg=cfg, state=state, tokens=tokens, luts=luts)
        for b in bits:
            export_cfg = cfg.replace({"export.bits_attn": b, "export.bits_mlp": b}).export
            blob, _ = export_artifact(state, export_cfg, control=cfg.model.control_patterns)
            q = score_state(cfg=cfg, state=load_artifact(blob), tokens=tokens, luts=luts)
            rows.append(BitsSweepRow(scale=Path(r["path"]).parent.name, arm=r["arm"], seed=int(r["seed"]), bits=int(b), val_bpb_fp=fp.val_bpb,
                                     q_val_bpb=q.val_bpb, gap_bpb=q.val_bpb - fp.val_bpb, artifact_bytes=len(blob),
                                     tokens_scored=q.tokens))
    return TABLE.frame(rows)


def bits_sweep_inputs(*, runs: pd.DataFrame, arms: Sequence[str], bits: Sequence[int], eval_tokens: int) -> dict:
    """What the table depends on: the run folders (their names hash config and code), arms, bits, targets."""
    selected = _selected(runs, arms)
    embedding = sorted({_embedding_storage(Config.from_json(Path(r["path"]) / "config.json")) for r in selected},
                       key=str)
    return {"runs": [run_id(r["path"]) for r in selected], "sweep_arms": list(arms), "bits": list(bits),
            "eval_tokens": eval_tokens, "embedding_bits": embedding[0] if len(embedding) == 1 else embedding}


def bits_sweep_table(*, runs_root: Path, runs: pd.DataFrame, arms: Sequence[str], bits: Sequence[int],
                     eval_tokens: int, dataset: str | Path, rerun: bool = False,
                     log: Callable[[str], None] = print, table: AnalysisTable = TABLE) -> pd.DataFrame:
    """:func:`bits_sweep`, stored where ``table`` says (default: ``runs_root/qat/analysis``, notebook 02's; another
    study passes its own :class:`AnalysisTable` of :class:`BitsSweepRow`) and reused while its inputs are unchanged."""
    inputs = bits_sweep_inputs(runs=runs, arms=arms, bits=bits, eval_tokens=eval_tokens)
    return table.cached(runs_root=runs_root, inputs=inputs, rerun=rerun, log=log,
                        compute=lambda: bits_sweep(runs=runs, arms=arms, bits=bits, eval_tokens=eval_tokens,
                                                   dataset=dataset))
