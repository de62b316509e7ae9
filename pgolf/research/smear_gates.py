"""What SmearGate learned: the gate of each run's raw weights (notebook 03).

The value is the weight an embedding keeps on the current token x_t; 1 minus it comes from the previous token.
Stored as an analysis table (the gate values with their summary), so the figure needs no weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pgolf.core.config import Config
from pgolf.research.rescore import load_final_state
from pgolf.research.tables import AnalysisTable

GATE = "smear.gate"  # the gate's parameter name in the state dict


@dataclass(frozen=True)
class GateRow:
    arm: str
    seed: int
    run: str  # run folder name
    params: int  # gate parameters: 1 (scalar) or model_dim (per dimension)
    mean: float  # mean weight on x_t over the gate's dimensions
    min: float
    max: float
    share_from_previous: float  # 1 - mean: the share of each embedding taken from the previous token
    values: list[float]  # the weight on x_t per gate dimension


TABLE = AnalysisTable(study="smeargate", name="gates", row=GateRow, notebook="03")


def smear_gate_values(run_dir: str | Path) -> np.ndarray | None:
    """The weight on x_t per gate dimension in a run's raw weights; None when the model has no gate.

    That is sigmoid(gate), or 1 - sigmoid(gate) with ``model.smear_gated="previous"`` (the records' form,
    whose sigmoid weights x_{t-1})."""
    gate = load_final_state(run_dir).get(GATE)
    if gate is None:
        return None
    g = torch.sigmoid(gate.float()).reshape(-1)
    if Config.from_json(Path(run_dir) / "config.json").model.smear_gated == "previous":
        g = 1 - g
    return g.numpy()


def gate_table(*, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run of ``runs`` (an ablation table: arm, seed, path) whose model has a gate."""
    rows = []
    for r in runs.to_dict("records"):
        g = smear_gate_values(r["path"])
        if g is None:
            continue
        rows.append(GateRow(arm=r["arm"], seed=int(r["seed"]), run=Path(r["path"]).name, params=int(g.size),
                            mean=float(g.mean()), min=float(g.min()), max=float(g.max()),
                            share_from_previous=float(1 - g.mean()), values=[float(v) for v in g]))
    return TABLE.frame(rows)


def gate_table_cached(*, runs_root: Path, runs: pd.DataFrame, rerun: bool = False,
                      log: Callable[[str], None] = print) -> pd.DataFrame:
    """:func:`gate_table`, stored under ``runs_root/smeargate/analysis`` while its runs are unchanged.

    A run's gate depends on that run alone, so when runs are added (a new arm) the stored rows of the others are
    kept and only the new runs' weights are read."""
    inputs = {"runs": [Path(p).name for p in runs["path"]]}
    stored = None if rerun else TABLE.read(runs_root)
    known = stored[1] if stored is not None else TABLE.frame([])

    def compute() -> pd.DataFrame:
        new = runs[~runs["path"].map(lambda p: Path(p).name).isin(set(known["run"]))]
        table = pd.concat([known[known["run"].isin(inputs["runs"])], gate_table(runs=new)], ignore_index=True)
        order = {name: i for i, name in enumerate(inputs["runs"])}
        return table.sort_values("run", key=lambda s: s.map(order)).reset_index(drop=True)
    return TABLE.cached(runs_root=runs_root, inputs=inputs, rerun=rerun, log=log, compute=compute)
