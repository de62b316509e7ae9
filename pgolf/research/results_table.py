"""The README's results table, computed from the committed runs and stored tables alone: ``pgolf results``.

One row per (study, scale, arm): seeds, the arm's mean val_bpb and q_val_bpb, and its paired difference from
the study's reference (the shared control; for late QAT the control re-exported at the same bits; for
evaluation settings the official evaluation of the same weights) with the 95% CI, the two-sided p, the rule's
one-sided p and the minimal detectable effect (alpha 0.01, power 0.8). The README holds the output between
``<!-- RESULTS -->`` markers, and a test checks that it matches the runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pgolf.core.paths import runs_dir
from pgolf.research import bits_sweep, eval_sweep, gptq_sweep, late_qat, protocol
from pgolf.research.figures import selected_runs, with_control
from pgolf.research.stats import RULE_ALPHA, compare

HEADER = ("| study | scale | arm | vs | seeds | q_val_bpb (mean) | Δ (paired) | 95% CI | p | p rule | MDE | verdict |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")
STUDIES = {"swiglu_vs_relu2": "01", "qat": "02", "smeargate": "03", "eval": "04", "frontier": "06"}


def _verdict(row: pd.Series) -> str:
    if not pd.notna(row["p"]):
        return "no test"
    if row["p"] >= RULE_ALPHA:
        return "not significant" + (" (rule-size effect excluded)" if max(abs(row["ci_low"]), abs(row["ci_high"]))
                                    < row["threshold"] else "")
    return ("lower" if row["diff"] < 0 else "higher") + (", clears rule" if row["clears_rule"] else "")


def _row(study: str, scale: str, arm: str, ref: str, mean: float, row: pd.Series) -> str:
    ci = f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" if pd.notna(row["ci_low"]) else ""
    p = f"{row['p']:.2g}" if pd.notna(row["p"]) else ""
    p_rule = f"{row['p_rule']:.2g}" if pd.notna(row["p_rule"]) else ""
    mde = f"{row['mde']:.4f}" if pd.notna(row["mde"]) else ""
    return (f"| {study} | {scale} | `{arm}` | `{ref}` | {int(row['n_pairs'] or row['n'])} | {mean:.4f} | "
            f"{row['diff']:+.4f} | {ci} | {p} | {p_rule} | {mde} | {_verdict(row)} |")


def results_rows(runs_root: Path | None = None, *, skip_broken: bool = False) -> list[str]:
    """The table's rows. A run a study lists but cannot read is an error naming the file; ``skip_broken``
    leaves such runs out, with a warning naming each."""
    root = Path(runs_root) if runs_root is not None else runs_dir()
    lines = []
    for study in ("swiglu_vs_relu2", "smeargate"):
        runs = with_control(selected_runs(root, study, skip_broken=skip_broken))
        if runs.empty:
            continue
        tests = protocol.comparisons(runs, "q_val_bpb")
        means = runs.groupby(["scale", "arm"])["q_val_bpb"].mean()
        name = f"{STUDIES[study]} {study}"
        for (scale, arm), row in tests.iterrows():
            lines.append(_row(name, scale, arm, protocol.CONTROL, means[(scale, arm)], row))
        if study == "smeargate":
            for scale, group in runs.groupby("scale", sort=False):
                pair = group[group["arm"].isin(["smear_scalar", "smear_per_dim"])]
                if pair["arm"].nunique() == 2:
                    row = compare(pair, "smear_scalar", "q_val_bpb").loc["smear_per_dim"]
                    lines.append(_row(name, scale, "smear_per_dim", "smear_scalar",
                                      means[(scale, "smear_per_dim")], row))
    runs, stored = with_control(selected_runs(root, "qat", skip_broken=skip_broken)), bits_sweep.TABLE.read(root)
    if not runs.empty and stored is not None:
        qat_arms = {int(a.removeprefix("qat_int")): a for a in runs["arm"].unique() if a.startswith("qat_int")}
        tests = late_qat.comparisons(runs, stored[1], qat_arms)
        means = runs.groupby(["scale", "arm"])["q_val_bpb"].mean()
        for (scale, bits, measure), row in tests.iterrows():
            if measure == "score":
                lines.append(_row("02 qat", scale, row["arm"], row["reference"], means[(scale, row["arm"])], row))
    stored = eval_sweep.TABLE.read(root)
    if stored is not None and not stored[1].empty:
        labelled, ref = eval_sweep.labelled(stored[1])
        tests = compare(labelled, ref, "val_bpb")
        means = labelled.groupby("arm")["val_bpb"].mean()
        scale = stored[1]["run"].iloc[0].split("/")[0]
        for arm, row in tests.iterrows():
            lines.append(_row(f"04 eval (unquantized val_bpb, first {int(labelled['tokens_scored'].iloc[0]):,} val "
                              "targets)", scale, arm, ref, means[arm], row))
    stored = gptq_sweep.TABLE.read(root)
    if stored is not None and not stored[1].empty:
        sweep = gptq_sweep.labelled(stored[1])
        scale = sweep["run"].iloc[0].split("/")[0]
        for bits, group in sweep.groupby("bits", sort=False):
            tests = compare(group, "rtn quantile", "q_val_bpb", threshold=float("nan"))
            means = group.groupby("arm")["q_val_bpb"].mean()
            for arm, row in tests.iterrows():
                lines.append(_row(f"06 frontier (int{bits} export, first {int(group['tokens_scored'].iloc[0]):,} "
                                  "val targets)", scale, arm, "rtn quantile", means[arm], row))
    runs = with_control(selected_runs(root, "frontier", skip_broken=skip_broken))
    if not runs.empty and runs["arm"].nunique() > 1:
        means = runs.groupby(["scale", "arm"])["q_val_bpb"].mean()
        for (scale, arm), row in protocol.comparisons(runs, "q_val_bpb").iterrows():
            lines.append(_row("06 frontier", scale, arm, protocol.CONTROL, means[(scale, arm)], row))
    return lines


def results_markdown(runs_root: Path | None = None, *, skip_broken: bool = False) -> str:
    return "\n".join([HEADER, *results_rows(runs_root, skip_broken=skip_broken)])


def _cmd_results(args: argparse.Namespace) -> int:
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = results_markdown(args.runs_root, skip_broken=args.skip_broken)
    for w in caught:  # the runs --skip-broken left out, one line each
        print(f"pgolf: warning: {w.message}", file=sys.stderr)
    print(table)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("results", help="the README's results table, from the runs on disk")
    parser.add_argument("--runs-root", type=Path, default=None, help="default: runs/")
    parser.add_argument("--skip-broken", action="store_true",
                        help="leave out runs whose records cannot be read (each named on stderr) instead of failing")
    parser.set_defaults(func=_cmd_results)
