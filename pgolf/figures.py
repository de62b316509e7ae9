"""Every figure of the project, rebuilt from run folders on disk without training: ``pgolf figures``.

A builder is ``fn(runs_root: Path, out_dir: Path) -> list[Path]``, registered with ``@figure("name")``;
it reads runs with ``pgolf.results``, plots with ``pgolf.plots`` and saves with ``plots.savefig``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

from pgolf import plots
from pgolf.paths import figures_dir, runs_dir
from pgolf.results import load_metrics, load_runs

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


@figure("ablations")
def ablation_overview(runs_root: Path, out_dir: Path) -> list[Path]:
    """One figure per ablation folder: post-quant bpb per arm (seeds overlaid) and validation curves."""
    runs = load_runs(runs_root)
    if runs.empty:
        return []
    metrics = load_metrics(runs_root)
    written = []
    for ablation, ablation_runs in runs.groupby("ablation", sort=True):
        has_quant = "q_val_bpb" in ablation_runs and ablation_runs["q_val_bpb"].notna().any()
        metric = "q_val_bpb" if has_quant else "val_bpb"
        fig, (left, right) = plots.new_figure(ncols=2)
        plots.plot_metric_by_arm(ablation_runs, metric=metric, ax=left)
        plots.plot_curves(metrics[metrics["ablation"] == ablation], y="val_bpb", ax=right)
        fig.suptitle(str(ablation))
        written.append(plots.savefig(fig, out_dir / "ablations" / f"{ablation}.svg"))
    return written


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
