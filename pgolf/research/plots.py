"""Figures for ablation results, saved byte-identically so that regenerating them leaves git clean.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no backend choice at import):
they display inline in a notebook when returned from a cell, and ``savefig`` writes them anywhere.

One style for every figure (:data:`STYLE`): a single panel is a page column wide (:data:`COLUMN_IN`, 3.5 in),
two or more panels take a full page or slide width (:data:`PAGE_IN`, 7 in), text is sized for print, and
the layout is constrained so titles, labels and legends never overlap or get clipped. Every Δ axis names
its reference and its unit (``Δ q_val_bpb vs control (bpb)``).
"""

from __future__ import annotations

import functools
import os
import textwrap
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
FORMATS = ("svg", "png", "pdf")
COLUMN_IN = 3.5  # one column of a two-column page
PAGE_IN = 7.0  # a full page width, or a 16:9 slide at readable text size
ROW_IN = 2.6  # the height of one row of panels
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7,
    "figure.titlesize": 9.5,
    "figure.labelsize": 8,
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
def new_figure(ncols: int = 1, width_in: float | None = None, height_in: float | None = None,
               nrows: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure of ``nrows`` x ``ncols`` panels (row by row). ``width_in`` is the whole figure's width:
    by default one column for a single panel and a page for more; ``height_in`` defaults to
    :data:`ROW_IN` per row."""
    width = width_in if width_in is not None else (COLUMN_IN if ncols == 1 else PAGE_IN)
    height = height_in if height_in is not None else ROW_IN * nrows
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, list(np.atleast_1d(fig.subplots(nrows, ncols)).ravel())


@styled
def new_mosaic(layout: str, width_in: float = PAGE_IN, height_in: float | None = None) -> tuple[Figure, dict]:
    """A figure laid out by a matplotlib mosaic string (rows separated by ``;``), e.g. ``"AB;CC"``; returns
    the figure and its axes by letter."""
    rows = layout.count(";") + 1
    fig = Figure(figsize=(width_in, height_in if height_in is not None else ROW_IN * rows), layout="constrained")
    return fig, fig.subplot_mosaic(layout)


def parse_formats(text: str) -> tuple[str, ...]:
    """``"svg,png"`` -> ``("svg", "png")``; an unknown format is a ``ValueError`` naming it and the known ones."""
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"--format: unknown figure format {', '.join(bad) or repr(text)}; "
                         f"expected a comma-separated list of {', '.join(FORMATS)}")
    return formats


def save(fig: Figure, out_dir: str | Path, stem: str, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.<fmt>`` for every format, byte-identically; returns the paths."""
    return [savefig(fig, Path(out_dir) / f"{stem}.{fmt}") for fmt in formats]


def suptitle(fig: Figure, text: str) -> None:
    """The figure's title, wrapped to the figure's width (a single column holds about 45 characters)."""
    fig.suptitle(textwrap.fill(text, width=int(fig.get_figwidth() * 13)))


def caption(fig: Figure, text: str) -> None:
    """A one-line key under the panels (what the marks mean), kept inside the layout."""
    fig.supxlabel(textwrap.fill(text, width=int(fig.get_figwidth() * 18)), fontsize=6.5, color="0.35")


def seeds_note(pairs: pd.DataFrame, arm_col: str = "arm") -> str:
    """``"n = 10 seeds"`` (or ``"n = 3-10 seeds"``) for a panel title: the pairs per arm."""
    counts = pairs.groupby(arm_col, sort=False).size()
    lo, hi = int(counts.min()), int(counts.max())
    return f"n = {lo} seeds" if lo == hi else f"n = {lo}–{hi} seeds"


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
                       threshold: float | None = None, metric: str = "q_val_bpb", reference: str = "control",
                       unit: str = "bpb", horizontal: bool = False, annotate_n: bool | None = None) -> Figure:
    """Per-seed paired differences (arm - ``reference``; grey dots) and their mean with its ``level``
    t-interval (black), one column per arm in table order (``horizontal``: one row per arm, top to bottom).
    A line at 0 and, with ``threshold``, a dashed line at -threshold (the record rule's 0.005 nats in the
    metric's units), labelled outside the axes. The Δ axis reads ``Δ <metric> vs <reference> (<unit>)``.
    ``annotate_n``: write n beside each mean, or (``horizontal``) in each arm's tick label, where it cannot
    meet a tick label or a dot (default: only when the arms have different n; put :func:`seeds_note` in the
    title otherwise). ``pairs``: columns arm, diff (and seed)."""
    ax = _axes(ax)
    arms = list(dict.fromkeys(pairs["arm"]))
    counts = pairs.groupby("arm", sort=False).size()
    if annotate_n is None:
        annotate_n = counts.nunique() > 1
    for x, arm in enumerate(arms):
        d = pairs.loc[pairs["arm"] == arm, "diff"].to_numpy(float)
        offsets = np.linspace(-0.3, -0.12, len(d)) if len(d) > 1 else np.array([-0.2])
        half = t_interval_half_width(d, level) if len(d) > 1 else 0.0
        if horizontal:
            ax.scatter(d, x - offsets, s=8, color="0.6", zorder=2)
            ax.errorbar(d.mean(), x, xerr=half, fmt="o", color="k", capsize=3, markersize=4, zorder=3)
        else:
            ax.scatter(x + offsets, d, s=8, color="0.6", zorder=2)
            ax.errorbar(x, d.mean(), yerr=half, fmt="o", color="k", capsize=3, markersize=4, zorder=3)
        if annotate_n and not horizontal:  # horizontal: n goes into the arm's tick label, clear of the data
            ax.annotate(f"n={len(d)}", (x, d.mean()), xytext=(6, 0), textcoords="offset points", fontsize=6.5,
                        va="center", ha="left")
    line = ax.axvline if horizontal else ax.axhline
    line(0.0, color="0.5", linewidth=0.8)
    label = f"Δ {metric} vs {reference} ({unit})"
    if threshold is not None:
        line(-threshold, color="C3", linestyle="--", linewidth=0.9)
        if horizontal:
            ax.annotate("rule:\n−0.005 nats", (-threshold, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=6.5,
                        color="C3")
        else:
            ax.annotate("rule:\n−0.005\nnats", (1.0, -threshold), xycoords=("axes fraction", "data"),
                        xytext=(3, 0), textcoords="offset points", ha="left", va="center", fontsize=6.5,
                        color="C3")
    if horizontal:
        ax.set_yticks(range(len(arms)), [f"{a} (n={counts[a]})" for a in arms] if annotate_n else arms)
        ax.set_ylim(len(arms) - 0.4, -0.6)
        ax.set_xlabel(label)
    else:
        long = max((len(a) for a in arms), default=0) * len(arms) > 36
        ax.set_xticks(range(len(arms)), arms, rotation=30 if long else 0, ha="right" if long else "center",
                      rotation_mode="anchor")
        ax.set_xlim(-0.6, len(arms) - 0.4)
        ax.set_ylabel(label)
    return ax.figure


def t_interval_half_width(values: np.ndarray, level: float = 0.95) -> float:
    """Half-width of the ``level`` t-interval of the mean of ``values`` (at least 2)."""
    values = np.asarray(values, dtype=float)
    return float(sps.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def legend_proxy(*, marker: str, color: str, label: str, hollow: bool = False) -> Line2D:
    """A legend entry for a marker that no single artist carries (``hollow``: an unfilled marker)."""
    return Line2D([], [], marker=marker, color=color, linestyle="none", label=label,
                  markerfacecolor="none" if hollow else color)
