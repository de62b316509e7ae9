"""Read run folders into tidy DataFrames (shared by the ablation engine, notebooks and figures).

Run-folder contract (written by the trainer): ``runs/<ablation>/<run_name>/`` holds ``summary.json``
(status, name, arm, seed, steps, val_loss, val_bpb, q_val_loss, q_val_bpb, total_bytes, ...) and
``metrics.jsonl`` (one JSON object per line; validation rows carry val_loss/val_bpb, train rows
train_loss). ``root`` may be ``runs/`` or one ablation folder: run folders are found at any depth.

A run folder whose ``summary.json`` or ``status.json`` cannot be read (truncated, not a JSON object, a status
that is not a string, a finished run whose scores are missing, null or not numbers) is an error naming the
file (:class:`pgolf.core.records.RunRecordError`): a table never silently loses a run. ``skip_broken=True``
leaves such runs out instead and names each in a warning (``pgolf results --skip-broken``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from pgolf.core.records import RunRecordError, read_summary
from pgolf.core.runs import STATUS_FILE, read_status

RUN_KEYS = ["ablation", "name", "arm", "seed"]  # copied onto every metrics row


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """One run's row (summary fields, ``status``, ``ablation``, ``path``), or None for a folder with neither
    record; :class:`RunRecordError` naming the file when a record is damaged."""
    run_dir = Path(run_dir)
    has_summary = (run_dir / "summary.json").exists()
    if not has_summary and not (run_dir / STATUS_FILE).exists():
        return None
    summary = read_summary(run_dir / "summary.json") if has_summary else {}
    recorded = read_status(run_dir)
    state = recorded["status"] if recorded else summary.get("status")
    if has_summary and state == "finished" and summary.get("status") != "finished":
        raise RunRecordError(f"{run_dir / 'summary.json'}: damaged run record: status.json says finished, the "
                             f"summary says {summary.get('status')!r}")
    row = {"ablation": run_dir.parent.name, **summary, "status": state, "path": str(run_dir)}
    row.setdefault("name", run_dir.name)
    return row


def runs_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = list(rows)
    return pd.DataFrame(rows, columns=None if rows else ["ablation", "name", "arm", "seed", "path"])


def load_runs(root: str | Path, status: str | None = "finished", *, skip_broken: bool = False) -> pd.DataFrame:
    """One row per run with ``status`` (None: any), summary fields plus ``ablation`` and ``path``.

    A run's status is its ``status.json`` as :func:`pgolf.core.runs.read_status` reports it (a ``running`` run whose
    process died reads ``interrupted``), so a summary that says finished never hides a later failure. Runs
    without a summary (failed, interrupted or still running) have a row too, with only status, name and path.
    Rows are sorted by path, so the same folders always give the same table. A damaged record raises
    :class:`RunRecordError` naming the file, unless ``skip_broken`` (then a warning names it).
    """
    root = Path(root)
    found = {p.parent for name in ("summary.json", STATUS_FILE) for p in root.rglob(name)}
    rows = []
    for run_dir in sorted(found, key=lambda d: str(d / "summary.json")):
        if ".replaced-" in str(run_dir):  # folders moved aside by --overwrite / rerun
            continue
        try:
            row = read_run(run_dir)
        except (RunRecordError, OSError) as err:
            if not skip_broken:
                raise
            warnings.warn(f"skipping a broken run (skip_broken=True): {err}")
            continue
        if row is None or (status is not None and row["status"] != status):
            continue
        rows.append(row)
    return runs_frame(rows)


def load_metrics(root: str | Path, status: str | None = "finished", *, skip_broken: bool = False) -> pd.DataFrame:
    """Long format: one row per ``metrics.jsonl`` line of each selected run, plus the run's ``RUN_KEYS``."""
    frames = []
    for run in load_runs(root, status, skip_broken=skip_broken).to_dict("records"):
        metrics_path = Path(run["path"]) / "metrics.jsonl"
        if not metrics_path.is_file():
            continue
        lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        frame = pd.DataFrame(lines).drop(columns=RUN_KEYS, errors="ignore")
        for key in reversed(RUN_KEYS):
            frame.insert(0, key, run.get(key))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*RUN_KEYS, "step"])
    return pd.concat(frames, ignore_index=True)


def train_times(run_dir: str | Path) -> pd.Series:
    """step -> cumulative training time (ms) at the end of that step, from the training rows (``train_loss`` and
    ``train_time_ms``) of a run's ``metrics.jsonl``, sorted by step; empty when it has none."""
    path = Path(run_dir) / "metrics.jsonl"
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    times = {int(r["step"]): float(r["train_time_ms"]) for r in rows if "train_loss" in r and "train_time_ms" in r}
    return pd.Series(times, dtype=float).sort_index()
