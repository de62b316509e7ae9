"""Analysis tables: what a notebook computes from saved weights without training, stored with its inputs.

A table lives at ``runs/<study>/analysis/<name>.json`` as ``{"inputs": ..., "rows": [...]}``. Raw weights
(``final_model.pt``) stay local and are not committed, so on a fresh clone the stored table is the only record
of an analysis: a notebook reuses it while its inputs are unchanged and loads weights only to recompute it.

Each table is described once, by an :class:`AnalysisTable` in the module that computes it. Its ``row``
dataclass is the schema: the computing function builds rows of that type, and the figure builders read the
table through the same descriptor, so no column name is defined in a notebook.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from pgolf.core.runs import atomic_write_json


class MissingWeightsError(FileNotFoundError):
    """A file an analysis needs (a run's raw weights) is not on disk; ``path`` names it."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = Path(path)


def write_table(path: Path, inputs: dict[str, Any], table: pd.DataFrame) -> Path:
    rows = json.loads(table.to_json(orient="records", double_precision=15))
    atomic_write_json(Path(path), {"inputs": inputs, "rows": rows})
    return Path(path)


def read_table(path: Path) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """(inputs, rows) of a stored table, or None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(obj["inputs"], dict) or not isinstance(obj["rows"], list):
            raise TypeError("'inputs' must be an object and 'rows' a list")
        return obj["inputs"], pd.DataFrame(obj["rows"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not an analysis table (expected JSON with 'inputs' and 'rows'): {err}") from None


def _row_runs(rows: pd.DataFrame, runs: list[str]) -> list[str | None]:
    """The entry of ``runs`` (a table's ``inputs["runs"]``) each row was computed from: its ``run`` column, else
    the run whose name is ``<scale>/<arm>-s<seed>-<key>`` for the row's scale, arm and seed; None if unknown."""
    if "run" in rows.columns:
        return [r if r in runs else None for r in rows["run"]]
    if not {"scale", "arm", "seed"} <= set(rows.columns):
        return [None] * len(rows)
    out = []
    for sc, arm, seed in zip(rows["scale"], rows["arm"], rows["seed"]):
        found = [r for r in runs if r.startswith(f"{sc}/{arm}-s{int(seed)}-")]
        out.append(found[0] if len(found) == 1 else None)
    return out


def _run_subset(stored: tuple[dict[str, Any], pd.DataFrame], inputs: dict[str, Any]) -> pd.DataFrame | None:
    """The rows of a stored per-run table for a subset of its runs (fewer seeds, fewer scales), in the order of
    ``inputs["runs"]``, when every other input is the same and each stored row names its run; else None.
    This is what computing the table for those runs gives, without the runs' weights."""
    have, table = stored
    want = inputs.get("runs")
    if not isinstance(want, list) or not isinstance(have.get("runs"), list) or not want:
        return None
    if {k: v for k, v in have.items() if k != "runs"} != {k: v for k, v in inputs.items() if k != "runs"}:
        return None
    if not set(want) <= set(have["runs"]) or table.empty:
        return None
    owners = _row_runs(table, have["runs"])
    if any(o is None for o in owners):
        return None
    order = {r: i for i, r in enumerate(want)}
    keep = [i for i, o in enumerate(owners) if o in order]
    keep.sort(key=lambda i: order[owners[i]])  # stable: rows of one run keep their stored order
    return table.iloc[keep].reset_index(drop=True)


def _compute_restoring(compute: Callable[[], pd.DataFrame], runs_root: Path, log: Callable[[str], None]) -> pd.DataFrame:
    """``compute()``; in a scratch workspace in train mode, each run whose raw weights are missing is retrained
    there to restore them (:func:`pgolf.research.workspace.restore_weights`) and the computation repeated; a
    retrained run that differs from the recorded one raises :class:`MissingWeightsError` as before.
    Elsewhere (the published study, reuse mode) a missing file raises :class:`MissingWeightsError`."""
    from pgolf.research.ablate import default_mode
    from pgolf.research.workspace import in_workspace, restore_weights

    restored: set[Path] = set()
    while True:
        try:
            return compute()
        except MissingWeightsError as err:
            run = err.path.parent
            if (default_mode() != "train" or not in_workspace(runs_root) or run in restored
                    or not (run / "config.json").is_file() or not (run / "summary.json").is_file()):
                raise
            if not restore_weights(run, log=log):  # retrained, but not the recorded run: its weights are not used
                raise
            restored.add(run)


def _differing_keys(stored: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    return sorted(k for k in stored.keys() | inputs.keys() if stored.get(k) != inputs.get(k))


@dataclass(frozen=True)
class AnalysisTable:
    study: str  # the study's folder under runs/
    name: str  # file stem under runs/<study>/analysis/
    row: type  # dataclass with one field per stored column
    notebook: str  # the notebook that computes it, named as `pgolf notebooks run` takes it

    @property
    def columns(self) -> list[str]:
        return [f.name for f in fields(self.row)]

    @property
    def regenerate(self) -> str:
        """The command that retrains the runs (restoring their weights) and recomputes the table."""
        return f"pgolf notebooks run {self.notebook} -p rerun=True"

    def path(self, runs_root: Path) -> Path:
        return Path(runs_root) / self.study / "analysis" / f"{self.name}.json"

    def frame(self, rows: Iterable[Any]) -> pd.DataFrame:
        """A table of ``row`` instances, with every column even when there are no rows."""
        return pd.DataFrame([asdict(r) for r in rows], columns=self.columns)

    def _missing_columns(self, table: pd.DataFrame) -> list[str]:
        return [] if table.empty else [c for c in self.columns if c not in table.columns]

    def _ordered(self, table: pd.DataFrame) -> pd.DataFrame:
        if table.empty:
            return pd.DataFrame(columns=self.columns)
        return table[self.columns + [c for c in table.columns if c not in self.columns]]

    def read(self, runs_root: Path) -> tuple[dict[str, Any], pd.DataFrame] | None:
        """(inputs, table) as stored, columns in schema order; None when nothing is stored."""
        path = self.path(runs_root)
        stored = read_table(path)
        if stored is None:
            return None
        missing = self._missing_columns(stored[1])
        if missing:
            raise ValueError(f"{path}: lacks the columns {missing} of {self.row.__name__} (written by other code); "
                             f"recompute it with `{self.regenerate}`")
        return stored[0], self._ordered(stored[1])

    def cached(self, *, runs_root: Path, inputs: dict[str, Any], compute: Callable[[], pd.DataFrame],
               rerun: bool = False, log: Callable[[str], None] = print) -> pd.DataFrame:
        """The stored table if it was made from the same ``inputs`` with this schema; else ``compute()``, stored.

        ``inputs`` must be JSON-able and free of absolute paths, so that committed tables are reused on any
        checkout. When computing needs weights that are not on disk, the error names the weights file, the
        table and the command that regenerates both."""
        path = self.path(runs_root)
        inputs = json.loads(json.dumps(inputs))
        stored = None if rerun else read_table(path)
        if stored is not None and stored[0] == inputs and not self._missing_columns(stored[1]):
            log(f"{path.name}: reusing the stored table (same inputs)")
            return self._ordered(stored[1])
        subset = None if stored is None or self._missing_columns(stored[1]) else _run_subset(stored, inputs)
        if subset is not None:
            log(f"{path.name}: the stored table covers these {len(inputs['runs'])} of its {len(stored[0]['runs'])} runs "
                "with the same other inputs: taking their rows (no weights needed), stored for these inputs")
            write_table(path, inputs, subset)
            return self._ordered(read_table(path)[1])
        try:
            table = _compute_restoring(compute, runs_root, log)
        except MissingWeightsError as err:
            raise MissingWeightsError(f"{path}: {self._why_recompute(stored, inputs, rerun)}, and computing it "
                                      f"needs {err.path}, which is not on disk (raw weights are kept local, not "
                                      f"committed). Regenerate the weights and the table with `{self.regenerate}` (plus the -p parameters "
                                      f"you changed; it trains into a scratch workspace, and replaces the published "
                                      f"table only with --publish).",
                                      err.path) from None
        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise ValueError(f"{self.name}: the computed table lacks the columns {missing} of {self.row.__name__}")
        write_table(path, inputs, table)
        return self._ordered(read_table(path)[1])  # exactly what a later reuse returns

    def _why_recompute(self, stored: tuple[dict[str, Any], pd.DataFrame] | None, inputs: dict[str, Any],
                       rerun: bool) -> str:
        if rerun:
            return "rerun=True asks to recompute the table"
        if stored is None:
            return "no table is stored"
        differ = _differing_keys(stored[0], inputs)
        if differ:
            return f"the stored table was made from other inputs (differing: {', '.join(differ)})"
        return f"the stored table lacks columns of {self.row.__name__}"
