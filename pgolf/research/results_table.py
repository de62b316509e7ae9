"""The results table, computed from the committed runs and stored tables alone: ``pgolf results``.

One row per (study, scale, arm): seeds, the arm's mean val_bpb and q_val_bpb, and its paired difference from
the study's reference (the shared control; for late QAT the control re-exported at the same bits; for
evaluation settings the official evaluation of the same weights) with the 95% CI, the two-sided p, that p
adjusted by Holm's method over every test of the table (the verdict uses it), the rule's one-sided p and the
minimal detectable effect (alpha 0.01, power 0.8). docs/results.md holds the output between
``<!-- RESULTS -->`` markers (``pgolf results --update docs/results.md`` rewrites it), and a test checks that
it matches the runs. Studies are registered with :func:`register_study` or declared by their notebook on disk
(:func:`declared_studies`), so a new study needs no edit here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pgolf.core.paths import runs_dir
from pgolf.research import bits_sweep, eval_sweep, gptq_sweep, late_qat, protocol, rate_distortion, regime_study
from pgolf.research.figures import declarations, selected_runs, with_control
from pgolf.research.stats import RULE_ALPHA, compare, holm

HEADER = ("| study | scale | arm | vs | seeds | mean bpb | Δ (paired) | 95% CI | p | p (Holm) | p rule | MDE | verdict |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")



@dataclass(frozen=True)
class TableRow:
    """One test of the table: its labels, the arm's mean and the row of :func:`pgolf.research.stats.compare`."""
    study: str
    scale: str
    arm: str
    ref: str
    mean: float
    test: pd.Series


Rows = Callable[[Path, bool], list[TableRow]]  # (runs_root, skip_broken) -> table rows


@dataclass(frozen=True)
class Study:
    """One study of the table: ``name`` is its folder under ``runs/`` (and its ``selection.json``), ``number``
    its notebook's, ``rows`` what it contributes (default: :func:`paired_rows`)."""
    name: str
    number: str
    rows: Rows


STUDIES: dict[str, Study] = {}


def register_study(name: str, number: str, rows: Rows | None = None, *,
                   references: Sequence[tuple[str, str]] = ()) -> Study:
    """Add a study to ``pgolf results``, in registration order. Without ``rows`` the study's rows are every
    arm against the shared control per scale, plus each ``(arm, reference)`` pair of ``references``
    (:func:`paired_rows`). A notebook need not call this: ``figures.write_selection(..., number="07")``
    declares its study on disk (:func:`declared_studies`)."""
    if name in STUDIES:
        raise ValueError(f"study {name!r} is registered twice")
    study = Study(name, str(number), rows if rows is not None else
                  (lambda root, skip: paired_rows(root, name, f"{number} {name}", references, skip_broken=skip)))
    STUDIES[name] = study
    return study


def declared_studies(runs_root: Path) -> list[Study]:
    """The studies declared by a notebook on disk and not registered in code: every ``runs_root/<study>/
    selection.json`` with a ``results`` entry (written by ``figures.write_selection(..., number=...)``),
    ordered by number, then name."""
    found = []
    for study, declared in declarations(runs_root).items():
        if study in STUDIES:
            continue
        refs = [tuple(pair) for pair in declared.get("references", [])]
        number = str(declared["number"])
        found.append(Study(study, number, lambda root, skip, study=study, number=number, refs=refs:
                           paired_rows(root, study, f"{number} {study}", refs, skip_broken=skip)))
    return sorted(found, key=lambda st: (st.number, st.name))


def _verdict(row: pd.Series, p_holm: float) -> str:
    """The verdict at alpha (0.01) on the Holm-adjusted p over the whole table (the raw p is shown beside it)."""
    if not pd.notna(p_holm):
        return "no test"
    if p_holm >= RULE_ALPHA:
        excluded = max(abs(row["ci_low"]), abs(row["ci_high"])) < row["threshold"]
        return f"not significant at α = {RULE_ALPHA:g}" + (" (rule-size effect excluded)" if excluded else "")
    return ("lower" if row["diff"] < 0 else "higher") + (", clears rule" if row["clears_rule"] else "")


def table_row(study: str, scale: str, arm: str, ref: str, mean: float, row: pd.Series) -> TableRow:
    """One test of the table from a row of :func:`pgolf.research.stats.compare` (``mean``: the arm's mean)."""
    return TableRow(study, scale, arm, ref, mean, row)


def _fmt(value: float, spec: str) -> str:
    return format(value, spec) if pd.notna(value) else ""


def format_row(r: TableRow, p_holm: float) -> str:
    """The markdown line of a test, with its Holm-adjusted p (the family: every test of the table)."""
    row = r.test
    ci = f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" if pd.notna(row["ci_low"]) else ""
    return (f"| {r.study} | {r.scale} | `{r.arm}` | `{r.ref}` | {int(row['n_pairs'] or row['n'])} | {r.mean:.4f} | "
            f"{row['diff']:+.4f} | {ci} | {_fmt(row['p'], '.2g')} | {_fmt(p_holm, '.2g')} | "
            f"{_fmt(row['p_rule'], '.2g')} | {_fmt(row['mde'], '.4f')} | {_verdict(row, p_holm)} |")


def paired_rows(runs_root: Path, study: str, label: str, references: Sequence[tuple[str, str]] = (), *,
                skip_broken: bool = False) -> list[TableRow]:
    """The rows of a study of trained arms (``runs_root/<study>/selection.json``): per scale, every arm against
    the shared control on q_val_bpb, then each ``(arm, reference)`` pair at the scales that hold both."""
    runs = with_control(selected_runs(runs_root, study, skip_broken=skip_broken))
    if runs.empty:
        return []
    lines = []
    means = runs.groupby(["scale", "arm"])["q_val_bpb"].mean()
    for (scale, arm), row in protocol.comparisons(runs, "q_val_bpb").iterrows():
        lines.append(table_row(label, scale, arm, protocol.CONTROL, means[(scale, arm)], row))
    for arm, ref in references:
        for scale, group in runs.groupby("scale", sort=False):
            pair = group[group["arm"].isin([ref, arm])]
            if pair["arm"].nunique() == 2:
                row = compare(pair, ref, "q_val_bpb").loc[arm]
                lines.append(table_row(label, scale, arm, ref, means[(scale, arm)], row))
    return lines


def _qat_rows(root: Path, skip_broken: bool) -> list[TableRow]:
    runs, stored = with_control(selected_runs(root, "qat", skip_broken=skip_broken)), bits_sweep.TABLE.read(root)
    if runs.empty or stored is None:
        return []
    lines = []
    qat_arms = {int(a.removeprefix("qat_int")): a for a in runs["arm"].unique() if a.startswith("qat_int")}
    tests = late_qat.comparisons(runs, stored[1], qat_arms)
    means = runs.groupby(["scale", "arm"])["q_val_bpb"].mean()
    for (scale, bits, measure), row in tests.iterrows():
        if measure == "score":
            lines.append(table_row("02 qat", scale, row["arm"], row["reference"], means[(scale, row["arm"])], row))
    return lines


def _eval_rows(root: Path, skip_broken: bool) -> list[TableRow]:
    stored = eval_sweep.TABLE.read(root)
    if stored is None or stored[1].empty:
        return []
    labelled, ref = eval_sweep.labelled(stored[1])
    tests = compare(labelled, ref, "val_bpb")
    means = labelled.groupby("arm")["val_bpb"].mean()
    scale = stored[1]["run"].iloc[0].split("/")[0]
    label = f"04 eval (unquantized val_bpb, first {int(labelled['tokens_scored'].iloc[0]):,} val targets)"
    rows = [table_row(label, scale, arm, ref, means[arm], row) for arm, row in tests.iterrows()]
    for arm, other in EVAL_PAIRS:  # the comparisons a practitioner makes between two non-reference settings
        pair = labelled[labelled["arm"].isin([arm, other])]
        if pair["arm"].nunique() == 2:
            rows.append(table_row(label, scale, arm, other, means[arm], compare(pair, other, "val_bpb").loc[arm]))
    return rows


# 04: longer context at the same stride (does NTK at twice the length add to the sliding window's gain?)
EVAL_PAIRS = (("L=256 NTK stride 64", "L=128 stride 64"),)


def _frontier_rows(root: Path, skip_broken: bool) -> list[TableRow]:
    lines = []
    stored = gptq_sweep.TABLE.read(root)
    if stored is not None and not stored[1].empty:
        sweep = gptq_sweep.labelled(stored[1])
        scale = sweep["run"].iloc[0].split("/")[0]
        for bits, group in sweep.groupby("bits", sort=False):
            tests = compare(group, "rtn quantile", "q_val_bpb", threshold=float("nan"))
            means = group.groupby("arm")["q_val_bpb"].mean()
            for arm, row in tests.iterrows():
                lines.append(table_row(f"06 frontier (int{bits} export, first {int(group['tokens_scored'].iloc[0]):,} "
                                       "val targets)", scale, arm, "rtn quantile", means[arm], row))
    lines += _matched_bytes_rows(root)
    runs = with_control(selected_runs(root, "frontier", skip_broken=skip_broken))
    if not runs.empty and runs["arm"].nunique() > 1:
        lines += paired_rows(root, "frontier", "06 frontier", skip_broken=skip_broken)
    return lines


MATCHED_BITS = 6  # 06's matched-bytes tests in the table: at the records' width (the notebook shows every width)


def _matched_bytes_rows(root: Path) -> list[TableRow]:
    """06: SD-clip at each k against the quantile clip's curve at equal artifact bytes, int6 matrices, the
    embedding held fixed; only the settings whose points lie inside the curve's byte range have a test."""
    stored = rate_distortion.TABLE.read(root)
    if stored is None or stored[1].empty:
        return []
    table = stored[1]
    tests = rate_distortion.matched_tests(rate_distortion.matched_points(table))
    tests = tests[(tests["bits"] == MATCHED_BITS) & tests["p"].notna()]
    scale = table["run"].iloc[0].split("/")[0]
    label = (f"06 frontier (int{MATCHED_BITS} at matched bytes, embedding fixed, first "
             f"{int(table['tokens_scored'].iloc[0]):,} val targets)")
    rows = []
    for _, t in tests.iterrows():
        sd = table[(table["quantizer"] == t["quantizer"]) & (table["bits"] == t["bits"])
                   & (table["sigmas"] == t["sigmas"]) & (table["clip"] != rate_distortion.REFERENCE_CLIP)]
        test = t.reindex(["n_pairs", "diff", "ci_low", "ci_high", "p", "mde"]).astype(float)
        test["n"], test["p_rule"], test["threshold"], test["clears_rule"] = t["n_pairs"], float("nan"), float("nan"), False
        rows.append(table_row(label, scale, f"{t['quantizer']} sdclip k={t['sigmas']:g}",
                              f"{t['quantizer']} quantile, same bytes", float(sd["q_val_bpb"].mean()), test))
    return rows


def _regime_rows(root: Path, skip_broken: bool) -> list[TableRow]:
    """08: every arm against the regime scale's shared control; late QAT against the control's weights at int6;
    GPTQ against round-to-nearest on the same weights at int6."""
    rs = regime_study
    runs = with_control(selected_runs(root, rs.STUDY, skip_broken=skip_broken))
    if runs.empty:
        return []
    label = f"08 {rs.STUDY}"
    lines = paired_rows(root, rs.STUDY, label, skip_broken=skip_broken)
    bits, gptq = rs.BITS_TABLE.read(root), rs.GPTQ_TABLE.read(root)
    if bits is not None and (runs["arm"] == rs.QAT).any():
        row = rs.qat_tests(runs, bits[1]).loc["score"]
        mean = runs.loc[runs["arm"] == rs.QAT, "q_val_bpb"].mean()
        lines.append(table_row(label, rs.SCALE, rs.QAT, row["reference"], mean, row))
    if gptq is not None and not gptq[1].empty:
        rows = rs.gptq_rows(gptq[1])
        lines.append(table_row(f"{label} (int{rs.QAT_BITS} export, same weights)", rs.SCALE, rs.GPTQ, rs.RTN,
                               rows.loc[rows["arm"] == rs.GPTQ, "q_val_bpb"].mean(), rs.gptq_tests(gptq[1]).loc["score"]))
    return lines


register_study("swiglu_vs_relu2", "01")
register_study("smeargate", "03", references=[("smear_per_dim", "smear_scalar"),
                                               ("smear_per_dim_g095", "smear_per_dim")])
register_study("qat", "02", _qat_rows)
register_study("eval", "04", _eval_rows)
register_study("frontier", "06", _frontier_rows)
register_study(regime_study.STUDY, "08", _regime_rows)


def table_tests(runs_root: Path | None = None, *, skip_broken: bool = False) -> list[TableRow]:
    """The table's tests: the registered studies in registration order, then those declared on disk
    (:func:`declared_studies`). A run a study lists but cannot read is an error naming the file;
    ``skip_broken`` leaves such runs out, with a warning naming each."""
    root = Path(runs_root) if runs_root is not None else runs_dir()
    studies = [*STUDIES.values(), *declared_studies(root)]
    return [row for study in studies for row in study.rows(root, skip_broken)]


def results_rows(runs_root: Path | None = None, *, skip_broken: bool = False) -> list[str]:
    """The table's markdown lines (:func:`table_tests`), each with its p adjusted by Holm's method over every
    test of the table (:func:`pgolf.research.stats.holm`); verdicts use the adjusted p."""
    tests = table_tests(runs_root, skip_broken=skip_broken)
    adjusted = holm([t.test["p"] for t in tests])
    return [format_row(t, p) for t, p in zip(tests, adjusted)]


def results_markdown(runs_root: Path | None = None, *, skip_broken: bool = False) -> str:
    return "\n".join([HEADER, *results_rows(runs_root, skip_broken=skip_broken)])


def _cmd_results(args: argparse.Namespace) -> int:
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = results_markdown(args.runs_root, skip_broken=args.skip_broken)
    for w in caught:  # the runs --skip-broken left out, one line each
        print(f"pgolf: warning: {w.message}", file=sys.stderr)
    if args.update is None:
        print(table)
        return 0
    try:
        update_block(args.update, table)
    except (OSError, ValueError) as err:
        print(f"pgolf: error: {err}", file=sys.stderr)
        return 2
    print(f"updated the results block of {args.update}")
    return 0


BEGIN, END = "<!-- RESULTS -->", "<!-- /RESULTS -->"


def update_block(path: Path, table: str) -> None:
    """Replace the text between the ``<!-- RESULTS -->`` markers of ``path`` with ``table`` (atomically)."""
    path = Path(path)
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{path}: expected one {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    tmp.replace(path)


def register(subparsers) -> None:
    parser = subparsers.add_parser("results", help="the results table (docs/results.md), from the runs on disk")
    parser.add_argument("--runs-root", type=Path, default=None, help="default: runs/")
    parser.add_argument("--skip-broken", action="store_true",
                        help="leave out runs whose records cannot be read (each named on stderr) instead of failing")
    parser.add_argument("--update", type=Path, default=None, metavar="FILE",
                        help="write the table between the <!-- RESULTS --> markers of FILE (e.g. docs/results.md) "
                             "instead of printing it")
    parser.set_defaults(func=_cmd_results)
