"""Read run folders into tidy DataFrames (shared by the ablation engine, notebooks and figures).

Run-folder contract (written by the trainer): ``runs/<ablation>/<run_name>/`` holds ``summary.json``
(status, name, arm, seed, steps, val_loss, val_bpb, q_val_loss, q_val_bpb, total_bytes, ...) and
``metrics.jsonl`` (one JSON object per line; validation rows carry val_loss/val_bpb, train rows
train_loss). ``root`` may be ``runs/`` or one ablation folder: run folders are found at any depth.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from pgolf.core.runs import STATUS_FILE, read_status

RUN_KEYS = ["ablation", "name", "arm", "seed"]  # copied onto every metrics row


def _read_summary(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        warnings.warn(f"skipping unreadable {path}: {err}")
        return None


def load_runs(root: str | Path, status: str | None = "finished") -> pd.DataFrame:
    """One row per run with ``status`` (None: any), summary fields plus ``ablation`` and ``path``.

    A run's status is its ``status.json`` as :func:`pgolf.core.runs.read_status` reports it (a ``running`` run whose
    process died reads ``interrupted``), so a summary that says finished never hides a later failure. Runs
    without a summary (failed, interrupted or still running) have a row too, with only status, name and path.
    Rows are sorted by path, so the same folders always give the same table.
    """
    root = Path(root)
    found = {p.parent for name in ("summary.json", STATUS_FILE) for p in root.rglob(name)}
    rows = []
    for run_dir in sorted(found, key=lambda d: str(d / "summary.json")):
        if ".replaced-" in str(run_dir):  # folders moved aside by --overwrite / rerun
            continue
        summary = _read_summary(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
        if summary is None:
            continue
        try:
            recorded = read_status(run_dir)
        except (OSError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping unreadable {run_dir / STATUS_FILE}: {err}")
            continue
        state = recorded["status"] if recorded else summary.get("status")
        if status is not None and state != status:
            continue
        row = {"ablation": run_dir.parent.name, **summary, "status": state, "path": str(run_dir)}
        row.setdefault("name", run_dir.name)
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["ablation", "name", "arm", "seed", "path"])


def load_metrics(root: str | Path, status: str | None = "finished") -> pd.DataFrame:
    """Long format: one row per ``metrics.jsonl`` line of each selected run, plus the run's ``RUN_KEYS``."""
    frames = []
    for run in load_runs(root, status).to_dict("records"):
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
