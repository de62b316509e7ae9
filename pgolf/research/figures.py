"""Every figure of the project, rebuilt from run folders on disk without training: ``pgolf figures``.

A builder is ``fn(runs_root: Path, out_dir: Path) -> list[Path]``, registered with ``@figure("name")``;
it reads runs with ``pgolf.research.results``, plots with ``pgolf.research.plots`` and saves with ``plots.savefig``.
The notebooks call the same builders, so ``pgolf figures`` regenerates exactly what they show.

Two small on-disk contracts connect notebooks and builders (both plain JSON under ``runs/<study>/``):
- ``selection.json``: the run folders a notebook's ``ablate`` call returned, so a figure shows those runs
  and not every run ever made in that folder (older budgets, older code versions);
- ``analysis/<name>.json``: a table computed from saved weights without training (e.g. the bpb of one model
  at several evaluation strides), stored with its inputs (:mod:`pgolf.research.tables`). Builders read it
  through the ``AnalysisTable`` of the module that computes it (``bits_sweep``, ``eval_sweep``,
  ``compression``, ``smear_gates``), whose row dataclass is the table's schema, and never load weights.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pgolf.core.paths import figures_dir, runs_dir
from pgolf.core.records import RunRecordError
from pgolf.core.runs import atomic_write_json
from pgolf.research import bits_sweep, compression, eval_sweep, gptq_sweep, late_qat, plots, protocol, smear_gates
from pgolf.research.results import load_metrics, load_runs, read_run, runs_frame

Builder = Callable[[Path, Path], list[Path]]
FIGURES: dict[str, Builder] = {}


def figure(name: str) -> Callable[[Builder], Builder]:
    def register_builder(fn: Builder) -> Builder:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = fn
        return fn
    return register_builder


def regenerate(names: list[str] | None = None, runs_root: Path | None = None,
               out_dir: Path | None = None) -> list[Path]:
    """Run the named builders (default: all) and return the files they wrote."""
    names = list(FIGURES) if not names else names
    for name in names:
        if name not in FIGURES:
            close = difflib.get_close_matches(name, FIGURES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown figure {name!r}.{hint} Known: {', '.join(FIGURES)}")
    runs_root = Path(runs_root) if runs_root is not None else runs_dir()
    out_dir = Path(out_dir) if out_dir is not None else figures_dir()
    return [path for name in names for path in FIGURES[name](runs_root, out_dir)]


# ---- notebook <-> builder contracts ----------------------------------------------------------------

SELECTION_FILE = "selection.json"


def write_selection(runs_root: Path, study: str, runs: pd.DataFrame) -> Path:
    """Record which run folders (paths relative to ``runs_root``, in table order) a notebook's study used; the
    runs may live in any folder under ``runs_root`` (e.g. a scale's folder shared by several studies)."""
    root = Path(runs_root).resolve()
    rows = [{"arm": str(r["arm"]), "seed": int(r["seed"]), "run": Path(r["path"]).resolve().relative_to(root).as_posix()}
            for r in runs.to_dict("records")]
    path = Path(runs_root) / study / SELECTION_FILE
    atomic_write_json(path, {"study": study, "runs": rows})
    return path


def _selection(runs_root: Path, study: str) -> list[Path] | None:
    sel = Path(runs_root) / study / SELECTION_FILE
    if not sel.is_file():
        return None
    return [Path(runs_root) / row["run"] for row in json.loads(sel.read_text())["runs"]]


def selected_runs(runs_root: Path, study: str, *, skip_broken: bool = False) -> pd.DataFrame:
    """The finished runs listed in ``runs_root/study/selection.json``, in its order (every finished run under
    ``runs_root/study`` if there is no selection). A listed run that is missing, damaged or not finished is a
    :class:`~pgolf.core.records.RunRecordError` naming it (``skip_broken``: left out, with a warning)."""
    folders = _selection(runs_root, study)
    if folders is None:
        return load_runs(Path(runs_root) / study, skip_broken=skip_broken)  # empty when the folder does not exist
    sel = Path(runs_root) / study / SELECTION_FILE
    rows = []
    for folder in folders:
        try:
            row = read_run(folder)
            if row is None or row["status"] != "finished":
                state = "no run records" if row is None else f"status {row['status']!r}"
                raise RunRecordError(f"{folder}: listed in {sel} but not a finished run ({state})")
        except (RunRecordError, OSError) as err:
            if not skip_broken:
                raise
            warnings.warn(f"skipping a broken run (skip_broken=True): {err}")
            continue
        rows.append(row)
    return runs_frame(rows)


def selected_metrics(runs_root: Path, study: str) -> pd.DataFrame:
    folders = _selection(runs_root, study)
    if folders is None:
        return load_metrics(Path(runs_root) / study)
    frames = [load_metrics(folder) for folder in folders if folder.is_dir()]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else load_metrics(Path(runs_root) / study)


# ---- per-notebook figures --------------------------------------------------------------------------

def _unigram_bpb(run: dict[str, Any]) -> float | None:
    """The corpus's unigram baseline as the run recorded it (figures read runs/ only, never the dataset)."""
    value = run.get("unigram_val_bpb")
    return None if value is None or pd.isna(value) else float(value)


@figure("quickstart")
def quickstart_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 00: the training loss and the validation bpb of the quickstart run."""
    runs = selected_runs(runs_root, "quickstart")
    if runs.empty:
        return []
    metrics = selected_metrics(runs_root, "quickstart")
    fig, (left, right) = plots.new_figure(ncols=2)
    plots.plot_curves(metrics, y="train_loss", ax=left)
    left.set_ylabel("train_loss (nats/token)")
    plots.plot_curves(metrics, y="val_bpb", ax=right)
    unigram = _unigram_bpb(runs.iloc[0].to_dict())
    if unigram is not None:
        right.axhline(unigram, color="0.5", linestyle="--", linewidth=1)
        right.annotate(f"unigram {unigram:.3f}", (0, unigram), xytext=(2, -10), textcoords="offset points",
                       fontsize=7, color="0.4")
    q = runs["q_val_bpb"].iloc[0]
    right.scatter([runs["steps"].iloc[0]], [q], marker="x", color="k", zorder=3, label="after int8 roundtrip")
    right.legend()
    fig.suptitle("quickstart: tiny preset")
    return [plots.savefig(fig, Path(out_dir) / "quickstart.svg")]


def _scale_panels(pairs: pd.DataFrame, title: str | None, metric: str = "q_val_bpb", extra_panels: int = 0,
                  width_in: float | None = None):
    """One paired-difference panel per scale (``pairs``: scale, arm, seed, diff, threshold), then
    ``extra_panels`` empty axes for the caller; returns the figure and all its axes. ``title``: None leaves
    the figure's title to the caller."""
    scales = list(dict.fromkeys(pairs["scale"]))
    width = max(3.4, 0.9 * pairs["arm"].nunique() + 1.6) if width_in is None else width_in
    fig, axes = plots.new_figure(ncols=len(scales) + extra_panels, width_in=width)
    for ax, scale in zip(axes, scales):
        sub = pairs[pairs["scale"] == scale]
        plots.plot_paired_deltas(sub, ax=ax, threshold=float(sub["threshold"].iloc[0]), metric=metric)
        ax.set_title(scale)
    if title is not None:
        fig.suptitle(title)
    return fig, axes


def with_control(runs: pd.DataFrame, control: str = protocol.CONTROL) -> pd.DataFrame:
    """The runs of the scales (folders) that hold a ``control`` arm, with a ``scale`` column; others are
    left out (a figure of paired differences needs the control)."""
    if runs.empty or "arm" not in runs:
        return runs.iloc[:0]
    runs = runs.assign(scale=runs["ablation"])
    return runs[runs.groupby("scale")["arm"].transform(lambda a: (a == control).any()).astype(bool)]


def _paired_figure(runs_root: Path, out_dir: Path, study: str, title: str, control: str = "control") -> list[Path]:
    runs = with_control(selected_runs(runs_root, study), control)
    if runs.empty:
        return []
    pairs = protocol.deltas(runs, "q_val_bpb", control)
    if pairs.empty:
        return []
    fig, _ = _scale_panels(pairs, title)
    return [plots.savefig(fig, Path(out_dir) / f"{study}.svg")]


@figure("swiglu_vs_relu2")
def swiglu_vs_relu2_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 01: per-seed paired differences of each SwiGLU arm from the shared relu² control, per scale."""
    return _paired_figure(runs_root, out_dir, "swiglu_vs_relu2", "SwiGLU − relu² control, after the int8 roundtrip")


@figure("qat")
def qat_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 02: late QAT at each bit width minus the control re-exported at that width, per seed: on the
    final score, on the quantization gap and on the pre-quantization bpb."""
    runs = with_control(selected_runs(runs_root, "qat"))
    stored = bits_sweep.TABLE.read(runs_root)
    if runs.empty or stored is None or stored[1].empty:
        return []
    qat_arms = {int(a.removeprefix("qat_int")): a for a in runs["arm"].unique() if a.startswith("qat_int")}
    if not qat_arms:
        return []
    pairs = late_qat.differences(runs, stored[1], qat_arms)
    fig, _ = _scale_panels(pairs, "Late QAT − no QAT at the same export bits (bpb)", metric="bpb")
    return [plots.savefig(fig, Path(out_dir) / "qat.svg")]


@figure("smeargate")
def smeargate_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 03: per-seed paired differences from the shared control, per scale, and the learned gates."""
    runs = with_control(selected_runs(runs_root, "smeargate"))
    if runs.empty:
        return []
    pairs = protocol.deltas(runs, "q_val_bpb")
    if pairs.empty:
        return []
    fig, axes = _scale_panels(pairs, None, extra_panels=1, width_in=3.4)
    right = axes[-1]
    stored = smear_gates.TABLE.read(runs_root)
    gates = stored[1] if stored is not None else smear_gates.TABLE.frame([])
    order = {Path(p).name: i for i, p in enumerate(runs["path"])}  # the selected runs, in their order
    gates = gates[gates["run"].isin(order)].sort_values("run", key=lambda s: s.map(order))
    colors: dict[str, str] = {}
    for r in gates.to_dict("records"):
        g = np.asarray(r["values"], dtype=float)
        label = None if r["arm"] in colors else r["arm"]  # one legend entry per arm
        color = colors.setdefault(r["arm"], f"C{len(colors)}")
        if g.size == 1:
            right.axhline(float(g[0]), color=color, linewidth=1.0, label=label)
        else:
            right.plot(np.sort(g)[::-1], color=color, linewidth=0.8, label=label)
    right.set_xlabel("gate dimension (sorted)")
    right.set_ylabel("gate: weight on x_t")
    right.set_title("learned gates")
    if colors:
        right.legend()
    fig.suptitle("SmearGate − no gate, after the int8 roundtrip")
    return [plots.savefig(fig, Path(out_dir) / "smeargate.svg")]


@figure("eval")
def eval_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 04: per-seed differences of each evaluation setting from the official non-overlapping
    evaluation of the same weights, and the forward compute per scored token."""
    stored = eval_sweep.TABLE.read(runs_root)
    if stored is None or stored[1].empty:
        return []
    diffs = eval_sweep.setting_differences(stored[1])
    fig, (left, right) = plots.new_figure(ncols=2, width_in=4.6)
    plots.plot_paired_deltas(diffs, ax=left, metric="val_bpb")
    left.set_title("Δ vs non-overlapping windows")
    cost = diffs.groupby("arm", sort=False)[["forward_tokens", "tokens_scored"]].first()
    right.barh(range(len(cost)), cost["forward_tokens"] / cost["tokens_scored"], color="C0")
    right.set_yticks(range(len(cost)), cost.index, fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("forward tokens per scored token")
    fig.suptitle("Evaluation settings on the same weights (per seed)")
    return [plots.savefig(fig, Path(out_dir) / "eval.svg")]


@figure("frontier")
def frontier_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 06: per bit width, GPTQ and/or SD-clip minus round-to-nearest with the quantile clip on the same
    weights (per seed, mean and 95% CI); with a training arm, its paired difference from the shared control."""
    stored = gptq_sweep.TABLE.read(runs_root)
    if stored is None or stored[1].empty:
        return []
    sweep = gptq_sweep.labelled(stored[1])
    panels = []
    for b, group in sweep.groupby("bits", sort=False):
        ref = group[group["arm"] == "rtn quantile"].set_index("seed")["q_val_bpb"]
        others = group[group["arm"] != "rtn quantile"]
        panels.append((f"int{b}: vs rtn quantile", others.assign(diff=others["q_val_bpb"] - others["seed"].map(ref))))
    runs = with_control(selected_runs(runs_root, "frontier"))
    if not runs.empty and runs["arm"].nunique() > 1:
        pairs = protocol.deltas(runs, "q_val_bpb")
        panels.append(("training arms vs control", pairs))
    fig, axes = plots.new_figure(ncols=len(panels), width_in=3.2)
    for ax, (title, pairs) in zip(axes, panels):
        threshold = float(pairs["threshold"].iloc[0]) if "threshold" in pairs else None
        plots.plot_paired_deltas(pairs, ax=ax, threshold=threshold)
        ax.set_title(title)
    fig.suptitle("GPTQ, SD-clip and depth recurrence (round-trip bpb)")
    return [plots.savefig(fig, Path(out_dir) / "frontier.svg")]


@figure("compression")
def compression_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 05: artifact bytes against the roundtrip bpb loss of trained weights, per export setting (mean
    over the runs, with the 95% CI of the bpb loss across them); colour = bits, marker = compressor."""
    stored = compression.TRAINED.read(runs_root)
    if stored is None or stored[1].empty:
        return []
    t = stored[1].assign(gap_bpb=lambda d: d["q_val_bpb"] - d["val_bpb_fp"])
    fig, (ax,) = plots.new_figure(ncols=1, width_in=5.0, height_in=3.4)
    markers = {"zlib": "o", "zstd": "s", "lzma": "^", "brotli": "D"}
    bits = list(dict.fromkeys(t["bits"]))
    for (b, comp, prune, packed), g in t.groupby(["bits", "compressor", "prune_frac", "bitpack"], sort=False):
        per_run = g["gap_bpb"].to_numpy(float)
        half = plots.t_interval_half_width(per_run) if len(per_run) > 1 else 0.0
        color = f"C{bits.index(b)}"
        ax.errorbar(g["artifact_bytes"].mean() / 1e3, per_run.mean(), yerr=half, fmt="none", ecolor=color,
                    elinewidth=0.7, capsize=2)
        ax.scatter(g["artifact_bytes"].mean() / 1e3, per_run.mean(), marker="*" if packed else markers.get(comp, "o"),
                   facecolors=color if prune == 0 else "none", edgecolors=color, s=50 if packed else 22, zorder=3)
    handles = [plots.legend_proxy(marker="o", color=f"C{i}", label=f"{b} bits") for i, b in enumerate(bits)]
    handles += [plots.legend_proxy(marker=m, color="0.3", label=c) for c, m in markers.items()
                if c in set(t["compressor"])]
    ax.legend(handles=handles, fontsize=7, ncols=2)
    ax.axhline(0.0, color="0.5", linestyle="--", linewidth=0.8)
    ax.set_xlabel("artifact kB (trained weights, mean over runs)")
    ax.set_ylabel("roundtrip bpb loss (mean, 95% CI)")
    n = t["run"].nunique()
    fig.suptitle(f"Compression of trained weights ({n} runs): hollow = pruned, star = bit-packed")
    return [plots.savefig(fig, Path(out_dir) / "compression.svg")]


def _cmd_figures(args: argparse.Namespace) -> int:
    try:
        paths = regenerate(args.names, runs_root=args.runs_root)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("figures", help="regenerate figures from the run folders")
    parser.add_argument("names", nargs="*", help=f"figures to build (default all: {', '.join(FIGURES)})")
    parser.add_argument("--runs-root", type=Path, default=None, help="default: runs/")
    parser.set_defaults(func=_cmd_figures)
