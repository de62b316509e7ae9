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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pgolf.core.accounting import CAP_BYTES
from pgolf.core.paths import figures_dir, runs_dir
from pgolf.core.runs import atomic_write_json
from pgolf.research import bits_sweep, compression, eval_sweep, plots, smear_gates
from pgolf.research.results import load_metrics, load_runs

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
    """Record which run folders (names, in table order) a notebook's ablation used."""
    rows = [{"arm": str(r["arm"]), "seed": int(r["seed"]), "run": Path(r["path"]).name}
            for r in runs.to_dict("records")]
    path = Path(runs_root) / study / SELECTION_FILE
    atomic_write_json(path, {"study": study, "runs": rows})
    return path


def selected_runs(runs_root: Path, study: str) -> pd.DataFrame:
    """The finished runs of ``runs_root/study`` listed in its selection file (all of them if none)."""
    folder = Path(runs_root) / study
    runs = load_runs(folder)  # empty when the folder does not exist
    sel = folder / SELECTION_FILE
    if runs.empty or not sel.is_file():
        return runs
    order = {row["run"]: i for i, row in enumerate(json.loads(sel.read_text())["runs"])}
    names = runs["path"].map(lambda p: Path(p).name)
    runs = runs[names.isin(order)]
    return runs.sort_values("path", key=lambda s: s.map(lambda p: order[Path(p).name])).reset_index(drop=True)


def selected_metrics(runs_root: Path, study: str) -> pd.DataFrame:
    runs = selected_runs(runs_root, study)
    metrics = load_metrics(Path(runs_root) / study)
    if runs.empty:
        return metrics
    return metrics[metrics["name"].isin([Path(p).name for p in runs["path"]])]


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


def _arms_and_curves(runs_root: Path, out_dir: Path, study: str, title: str) -> list[Path]:
    runs = selected_runs(runs_root, study)
    if runs.empty:
        return []
    fig, (left, right) = plots.new_figure(ncols=2)
    plots.plot_metric_by_arm(runs, metric="q_val_bpb", ax=left)
    plots.plot_curves(selected_metrics(runs_root, study), y="val_bpb", ax=right)
    fig.suptitle(title)
    return [plots.savefig(fig, Path(out_dir) / f"{study}.svg")]


@figure("swiglu_vs_relu2")
def swiglu_vs_relu2_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 01: post-roundtrip bpb per arm and the validation curves."""
    return _arms_and_curves(runs_root, out_dir, "swiglu_vs_relu2", "relu² vs SwiGLU (param-matched)")


@figure("qat")
def qat_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 02: quantization gap per arm, and the gap of trained weights exported at 8/6/5/4 bits."""
    runs = selected_runs(runs_root, "qat")
    if runs.empty:
        return []
    fig, (left, mid, right) = plots.new_figure(ncols=3, width_in=3.4)
    plots.plot_metric_by_arm(runs, metric="quant_gap_bpb", ax=left)
    left.axhline(0.0, color="0.5", linewidth=0.8)
    plots.plot_metric_by_arm(runs, metric="q_val_bpb", ax=mid)
    for ax in (left, mid):
        for label in ax.get_xticklabels():
            label.set_rotation(25)
    stored = bits_sweep.TABLE.read(runs_root)
    if stored is not None and not stored[1].empty:
        sweep = stored[1]
        for arm, group in sweep.groupby("arm", sort=False):
            means = group.groupby("bits")["gap_bpb"].mean()
            (line,) = right.plot(means.index, means.values, label=f"{arm} (mean)")
            right.scatter(group["bits"], group["gap_bpb"], s=12, color=line.get_color(), alpha=0.6)
        right.set_xticks(sorted(sweep["bits"].unique()))
        right.axhline(0.0, color="0.5", linewidth=0.8)
        right.set_xlabel("export bits (attention + MLP matrices)")
        right.set_ylabel("quantization gap (bpb)")
        right.legend()
    fig.suptitle("QAT: does it shrink the quantization gap?")
    return [plots.savefig(fig, Path(out_dir) / "qat.svg")]


@figure("smeargate")
def smeargate_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 03: post-roundtrip bpb per arm and the learned gate values of each run."""
    runs = selected_runs(runs_root, "smeargate")
    if runs.empty:
        return []
    fig, (left, right) = plots.new_figure(ncols=2)
    plots.plot_metric_by_arm(runs, metric="q_val_bpb", ax=left)
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
            right.axhline(float(g[0]), color=color, linewidth=1.2, label=label)
        else:
            right.plot(np.sort(g)[::-1], color=color, linewidth=1, label=label)
    right.set_xlabel("gate dimension (sorted)")
    right.set_ylabel("gate: weight on x_t")
    if colors:
        right.legend()
    fig.suptitle("SmearGate")
    return [plots.savefig(fig, Path(out_dir) / "smeargate.svg")]


@figure("eval")
def eval_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 04: bpb of one trained model by stride, eval length and NTK; compute per scored token."""
    stored = eval_sweep.TABLE.read(runs_root)
    if stored is None or stored[1].empty:
        return []
    sweep = stored[1]
    strides = sorted(sweep["stride"].unique(), key=lambda s: (s != 0, -s))  # none, then large -> small
    xpos = {s: i for i, s in enumerate(strides)}
    fig, (left, right) = plots.new_figure(ncols=2)
    for setting, group in sweep.groupby("setting", sort=False):
        group = group.sort_values("stride", key=lambda s: s.map(xpos))
        x = group["stride"].map(xpos)
        left.plot(x, group["val_bpb"], marker="o", label=setting)
        right.plot(x, group["forward_tokens"] / group["tokens_scored"], marker="o", label=setting)
    for ax in (left, right):
        ax.set_xticks(range(len(strides)), ["none" if s == 0 else str(s) for s in strides])
        ax.set_xlabel("sliding-window stride")
    left.set_ylabel("val_bpb (same tokens scored)")
    right.set_ylabel("forward tokens per scored token")
    right.set_yscale("log")
    left.legend()
    fig.suptitle("Evaluation: stride, length and NTK RoPE on one trained model")
    return [plots.savefig(fig, Path(out_dir) / "eval.svg")]


@figure("compression")
def compression_figure(runs_root: Path, out_dir: Path) -> list[Path]:
    """Notebook 05: bytes vs roundtrip bpb (tiny, trained) and real-size bytes against the cap (fresh init)."""
    trained = compression.TRAINED.read(runs_root)
    real = compression.REAL_SCALE.read(runs_root)
    if trained is None and real is None:
        return []
    n_bars = 0 if real is None else len(real[1])
    fig, (left, right) = plots.new_figure(ncols=2, width_in=4.6, height_in=max(3.6, 0.11 * n_bars))
    markers = {"zlib": "o", "zstd": "s", "lzma": "^"}
    if trained is not None and not trained[1].empty:
        t = trained[1]
        for i, (bits, group) in enumerate(t.groupby("bits", sort=False)):
            for (comp, prune, packed), g in group.groupby(["compressor", "prune_frac", "bitpack"], sort=False):
                left.scatter(g["artifact_bytes"] / 1e3, g["q_val_bpb"], marker="*" if packed else markers.get(comp, "o"),
                             facecolors=f"C{i}" if prune == 0 else "none", edgecolors=f"C{i}", s=40 if packed else 22,
                             label=f"{bits} {comp}{' prune' if prune else ''}{' packed' if packed else ''}")
        left.axhline(float(t["val_bpb_fp"].iloc[0]), color="0.5", linestyle="--", linewidth=0.8)
        left.set_xlabel("artifact kB (tiny, trained weights)")
        left.set_ylabel("val_bpb after roundtrip")
        left.legend(fontsize=5, ncols=2)
    if real is not None and not real[1].empty:
        r = real[1]
        labels = [f"{p} {b} {c}{' p' + str(pf) if pf else ''}{' packed' if bp else ''}"
                  for p, b, c, pf, bp in zip(r["preset"], r["bits"], r["compressor"], r["prune_frac"], r["bitpack"])]
        y = np.arange(len(r))
        colors = ["C2" if fits else "C3" for fits in r["total_bytes"] <= CAP_BYTES]
        right.barh(y, r["total_bytes"] / 1e6, color=colors)
        right.axvline(CAP_BYTES / 1e6, color="k", linestyle="--", linewidth=1)
        right.set_yticks(y, labels, fontsize=5)
        right.invert_yaxis()
        right.set_xlabel("artifact + code, MB (fresh-init weights)")
    fig.suptitle("Compression: bits x compressor x pruning")
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
