"""Figures for ablation results, saved byte-identically so that regenerating them leaves git clean.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no backend choice at import):
they display inline in a notebook when returned from a cell, and ``savefig`` writes them anywhere.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats as sps

# Reproducible bytes: a fixed SVG id salt and no dates or tool versions in the file metadata.
SAVE_RC = {"svg.hashsalt": "pgolf"}
METADATA = {
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
    "png": {"Software": None},
}
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
}


def styled(fn):
    """Build the figure inside the pgolf rc style, without touching the global rcParams."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


@styled
def new_figure(ncols: int = 1, width_in: float = 4.0, height_in: float = 3.0) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width_in * ncols, height_in), layout="constrained")
    return fig, list(np.atleast_1d(fig.subplots(1, ncols)))


def savefig(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as svg, pdf or png (by suffix), atomically and byte-identically on every rerun."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in METADATA:
        raise ValueError(f"savefig: unsupported format {path.suffix!r}; use one of {sorted(METADATA)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with mpl.rc_context({**STYLE, **SAVE_RC}):
            fig.savefig(tmp, format=fmt, metadata=METADATA[fmt])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else new_figure()[1][0]


@styled
def plot_metric_by_arm(runs: pd.DataFrame, metric: str = "q_val_bpb", arm_col: str = "arm",
                       seed_col: str = "seed", ax: Axes | None = None) -> Figure:
    """Per-arm mean +- std (black, with n) beside the individual seeds (grey dots); arms in table order."""
    ax = _axes(ax)
    runs = runs.dropna(subset=[metric])
    arms = list(dict.fromkeys(runs[arm_col]))
    for x, arm in enumerate(arms):
        values = runs.loc[runs[arm_col] == arm].sort_values(seed_col)[metric].to_numpy(float)
        offsets = np.linspace(-0.3, -0.12, len(values)) if len(values) > 1 else np.array([-0.2])
        ax.scatter(x + offsets, values, s=14, color="0.6", zorder=2)  # seeds left of their mean
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        ax.errorbar(x, values.mean(), yerr=std, fmt="o", color="k", capsize=4, zorder=3)
        ax.annotate(f"n={len(values)}", (x, values.mean()), xytext=(8, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_xticks(range(len(arms)), arms, rotation=30 if len(arms) > 4 else 0)
    ax.set_xlim(-0.6, len(arms) - 0.4)
    ax.set_ylabel(f"{metric} (mean ± std)")
    return ax.figure


@styled
def plot_curves(metrics: pd.DataFrame, y: str = "val_bpb", x: str = "step", arm_col: str = "arm",
                ax: Axes | None = None) -> Figure:
    """``y`` against ``x`` from long-format metric rows: one line per arm, mean over seeds, shaded std.

    Rows without ``y`` (e.g. train rows) are dropped; at each step the mean is over the seeds logged there.
    """
    ax = _axes(ax)
    rows = metrics.dropna(subset=[y]) if y in metrics else metrics.iloc[:0]
    for arm, group in rows.groupby(arm_col, sort=False):
        stats = group.groupby(x)[y].agg(["mean", "std"]).fillna({"std": 0.0})
        (line,) = ax.plot(stats.index, stats["mean"], label=str(arm))
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if len(rows):
        ax.legend()
    return ax.figure


@styled
def plot_paired_deltas(pairs: pd.DataFrame, ax: Axes | None = None, level: float = 0.95,
                       threshold: float | None = None, metric: str = "q_val_bpb") -> Figure:
    """Per-seed paired differences (arm - control; grey dots) and their mean with its ``level`` t-interval
    (black), one column per arm in table order; a line at 0 and, with ``threshold``, a dashed line at
    -threshold (the record rule's 0.005 nats in the metric's units). ``pairs``: columns arm, diff (and seed)."""
    ax = _axes(ax)
    arms = list(dict.fromkeys(pairs["arm"]))
    for x, arm in enumerate(arms):
        d = pairs.loc[pairs["arm"] == arm, "diff"].to_numpy(float)
        offsets = np.linspace(-0.3, -0.12, len(d)) if len(d) > 1 else np.array([-0.2])
        ax.scatter(x + offsets, d, s=10, color="0.6", zorder=2)
        half = t_interval_half_width(d, level) if len(d) > 1 else 0.0
        ax.errorbar(x, d.mean(), yerr=half, fmt="o", color="k", capsize=4, zorder=3)
        ax.annotate(f"n={len(d)}", (x, d.mean()), xytext=(8, 0), textcoords="offset points", va="center",
                    fontsize=7)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    if threshold is not None:
        ax.axhline(-threshold, color="C3", linestyle="--", linewidth=0.9)
        ax.annotate("-0.005 nats", (len(arms) - 0.5, -threshold), xytext=(0, -9), textcoords="offset points",
                    ha="right", fontsize=7, color="C3")
    ax.set_xticks(range(len(arms)), arms, rotation=30 if len(arms) > 3 else 0)
    ax.set_xlim(-0.6, len(arms) - 0.4)
    ax.set_ylabel(f"Δ {metric} vs control (per seed; mean, {level:.0%} CI)")
    return ax.figure


def t_interval_half_width(values: np.ndarray, level: float = 0.95) -> float:
    """Half-width of the ``level`` t-interval of the mean of ``values`` (at least 2)."""
    values = np.asarray(values, dtype=float)
    return float(sps.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def legend_proxy(*, marker: str, color: str, label: str) -> Line2D:
    """A legend entry for a marker that no single artist carries."""
    return Line2D([], [], marker=marker, color=color, linestyle="none", label=label)
