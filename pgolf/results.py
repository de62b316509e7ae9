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

RUN_KEYS = ["ablation", "name", "arm", "seed"]  # copied onto every metrics row


def _read_summary(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        warnings.warn(f"skipping unreadable {path}: {err}")
        return None


def load_runs(root: str | Path, status: str | None = "finished") -> pd.DataFrame:
    """One row per run with ``status`` (None: any), summary fields plus ``ablation`` and ``path``.

    Rows are sorted by path, so the same folders always give the same table.
    """
    rows = []
    for summary_path in sorted(Path(root).rglob("summary.json")):
        if ".replaced-" in str(summary_path.parent):  # folders moved aside by --overwrite / rerun
            continue
        summary = _read_summary(summary_path)
        if summary is None or (status is not None and summary.get("status") != status):
            continue
        run_dir = summary_path.parent
        rows.append({"ablation": run_dir.parent.name, **summary, "path": str(run_dir)})
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
