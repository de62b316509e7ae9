"""Every figure of the project, rebuilt from run folders on disk without training: ``pgolf figures``.

A builder is ``fn(runs_root: Path, out_dir: Path, formats=("svg",)) -> list[Path]``, registered with
``@figure("name")``; it reads runs with ``pgolf.research.results``, plots with ``pgolf.research.plots`` and saves
with ``plots.save`` in every requested format (``pgolf figures --format svg,png,pdf``). The notebooks call the
same builders, so ``pgolf figures`` regenerates exactly what they show. A new study's figure of paired
differences is :func:`paired_figure` (see docs/adding-a-technique.md).

Two small on-disk contracts connect notebooks and builders (both plain JSON under ``runs/<study>/``):
- ``selection.json``: the run folders a notebook's ``ablate`` call returned, so a figure shows those runs
  and not every run ever made in that folder (older budgets, older code versions);
- ``analysis/<name>.json``: a table computed from saved weights without training (e.g. the bpb of one model
  at several evaluation strides), stored with its inputs (:mod:`pgolf.research.tables`). Builders read it
  through the ``AnalysisTable`` of the module that computes it (``bits_sweep``, ``eval_sweep``,
  ``compression``, ``smear_gates``, ``gptq_sweep``, ``rate_distortion``), whose row dataclass is the table's
  schema, and never load weights.
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
from matplotlib import ticker as mpl_ticker

from pgolf.core.paths import figures_dir, runs_dir
from pgolf.core.records import RunRecordError
from pgolf.core.runs import atomic_write_json
from pgolf.research import (bits_sweep, compression, eval_sweep, gptq_sweep, late_qat, plots, protocol,
                            rate_distortion, regime_study, smear_gates)
from pgolf.research.results import load_metrics, load_runs, read_run, runs_frame

Builder = Callable[..., list[Path]]
FIGURES: dict[str, Builder] = {}


def figure(name: str) -> Callable[[Builder], Builder]:
    def register_builder(fn: Builder) -> Builder:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = styled = plots.styled(fn)  # titles and labels set in the builder get the pgolf style too
        return styled
    return register_builder


def regenerate(names: list[str] | None = None, runs_root: Path | None = None,
               out_dir: Path | None = None, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Run the named builders (default: all) in every format of ``formats`` and return the files they wrote."""
    runs_root = Path(runs_root) if runs_root is not None else runs_dir()
    out_dir = Path(out_dir) if out_dir is not None else figures_dir()
    builders = {**FIGURES, **declared_figures(runs_root)}
    names = list(builders) if not names else names
    for name in names:
        if name not in builders:
            close = difflib.get_close_matches(name, builders, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown figure {name!r}.{hint} Known: {', '.join(builders)}")
    bad = [f for f in formats if f not in plots.FORMATS]
    if bad:
        raise ValueError(f"unknown figure format {', '.join(bad)}; expected one of {', '.join(plots.FORMATS)}")
    return [path for name in names for path in builders[name](runs_root, out_dir, formats=tuple(formats))]


# ---- notebook <-> builder contracts ----------------------------------------------------------------

SELECTION_FILE = "selection.json"


def write_selection(runs_root: Path, study: str, runs: pd.DataFrame, *, number: str | None = None,
                    title: str | None = None, references: list[tuple[str, str]] | None = None) -> Path:
    """Record which run folders (paths relative to ``runs_root``, in table order) a notebook's study used; the
    runs may live in any folder under ``runs_root`` (e.g. a scale's folder shared by several studies).

    ``number`` (the notebook's, e.g. ``"07"``) also lists the study in ``pgolf results``: every arm against
    the shared control, per scale, plus each ``(arm, reference)`` pair of ``references`` (e.g.
    ``[("smear_per_dim", "smear_scalar")]``; see :func:`pgolf.research.results_table.declared_studies`), and
    ``pgolf figures`` draws its :func:`paired_figure` with ``title`` (:func:`declared_figures`)."""
    root = Path(runs_root).resolve()
    rows = [{"arm": str(r["arm"]), "seed": int(r["seed"]), "run": Path(r["path"]).resolve().relative_to(root).as_posix()}
            for r in runs.to_dict("records")]
    record: dict[str, Any] = {"study": study, "runs": rows}
    if number is not None:
        record["results"] = {"number": str(number), "title": title or study,
                             "references": [list(pair) for pair in references or []]}
    path = Path(runs_root) / study / SELECTION_FILE
    atomic_write_json(path, record)
    return path


def declarations(runs_root: Path) -> dict[str, dict[str, Any]]:
    """Per study folder under ``runs_root`` whose ``selection.json`` declares it (``write_selection(...,
    number=...)``): its ``results`` entry (number, title, references). A damaged file is a
    :class:`~pgolf.core.records.RunRecordError` naming it."""
    found = {}
    for sel in sorted(Path(runs_root).glob(f"*/{SELECTION_FILE}")):
        try:
            declared = json.loads(sel.read_text()).get("results")
        except (OSError, json.JSONDecodeError, AttributeError) as err:
            raise RunRecordError(f"{sel}: not a readable selection file ({err})") from err
        if declared:
            found[sel.parent.name] = declared
    return found


def declared_figures(runs_root: Path) -> dict[str, Builder]:
    """A :func:`paired_figure` builder for every declared study (:func:`declarations`) that no registered
    builder draws, so a new study's figure needs no code here."""
    def builder(study: str, title: str) -> Builder:
        return lambda root, out, formats=("svg",): paired_figure(root, out, study, title, formats=formats)
    return {study: builder(study, d.get("title") or study) for study, d in declarations(runs_root).items()
            if study not in FIGURES}


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
def quickstart_figure(runs_root: Path, out_dir: Path, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Notebook 00: the training loss and the validation bpb of the quickstart run."""
    runs = selected_runs(runs_root, "quickstart")
    if runs.empty:
        return []
    metrics = selected_metrics(runs_root, "quickstart")
    fig, (left, right) = plots.new_figure(ncols=2)
    plots.plot_curves(metrics, y="train_loss", ax=left)
    left.get_legend().remove() if left.get_legend() else None  # one run: the arm is in the title
    left.set_ylabel("train_loss (nats/token)")
    left.set_title("training loss")
    plots.plot_curves(metrics, y="val_bpb", ax=right)
    right.get_legend().remove() if right.get_legend() else None
    right.set_ylabel("val_bpb (bits/byte)")
    right.set_title("validation bpb")
    unigram = _unigram_bpb(runs.iloc[0].to_dict())
    if unigram is not None:  # labelled on the line, no legend over the data
        right.axhline(unigram, color="0.5", linestyle="--", linewidth=1)
        right.annotate(f"unigram model {unigram:.3f}", (1.0, unigram), xycoords=("axes fraction", "data"),
                       xytext=(0, 3), textcoords="offset points", ha="right", va="bottom", fontsize=7, color="0.4")
    q, steps = runs["q_val_bpb"].iloc[0], runs["steps"].iloc[0]
    right.scatter([steps], [q], marker="x", color="k", zorder=3, label=f"after int8 roundtrip {q:.3f}")
    right.legend(loc="center right")  # the curve is low on the right: this area is empty
    plots.suptitle(fig, f"Quickstart: {runs['arm'].iloc[0]} preset, {int(runs['steps'].iloc[0])} steps")
    return plots.save(fig, out_dir, "quickstart", formats)


def _scale_panels(pairs: pd.DataFrame, title: str | None, metric: str = "q_val_bpb", reference: str = "control",
                  extra_panels: int = 0, unit: str = "bpb"):
    """One paired-difference panel per scale (``pairs``: scale, arm, seed, diff, threshold), then
    ``extra_panels`` empty axes for the caller; returns the figure and all its axes. ``title``: None leaves
    the figure's title to the caller."""
    scales = list(dict.fromkeys(pairs["scale"]))
    fig, axes = plots.new_figure(ncols=len(scales) + extra_panels)
    for ax, scale in zip(axes, scales):
        sub = pairs[pairs["scale"] == scale]
        plots.plot_paired_deltas(sub, ax=ax, threshold=float(sub["threshold"].iloc[0]), metric=metric,
                                 reference=reference, unit=unit)
        ax.set_title(f"{scale} ({plots.seeds_note(sub)})")
    if title is not None:
        plots.suptitle(fig, title)
    plots.caption(fig, PAIRED_KEY)
    return fig, axes


PAIRED_KEY = "grey: each seed's paired difference; black: mean with 95% CI; red dashed: the record rule"


def with_control(runs: pd.DataFrame, control: str = protocol.CONTROL) -> pd.DataFrame:
    """The runs of the scales (folders) that hold a ``control`` arm, with a ``scale`` column; others are
    left out (a figure of paired differences needs the control)."""
    if runs.empty or "arm" not in runs:
        return runs.iloc[:0]
    runs = runs.assign(scale=runs["ablation"])
    return runs[runs.groupby("scale")["arm"].transform(lambda a: (a == control).any()).astype(bool)]


@plots.styled
def paired_figure(runs_root: Path, out_dir: Path, study: str, title: str, *, control: str = protocol.CONTROL,
                  metric: str = "q_val_bpb", formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """The standard figure of a study: per scale, each arm's per-seed paired difference from ``control`` on
    ``metric`` (bpb), with the mean, its 95% CI and the record rule's line. Reads the runs listed in
    ``runs_root/study/selection.json`` (:func:`write_selection`) and writes ``out_dir/<study>.<fmt>``;
    returns the paths ([] when there is nothing to compare). Register it for ``pgolf figures`` with
    ``figure(study)(lambda r, o, formats=("svg",): paired_figure(r, o, study, title, formats=formats))``."""
    runs = with_control(selected_runs(runs_root, study), control)
    if runs.empty:
        return []
    pairs = protocol.deltas(runs, metric, control)
    if pairs.empty:
        return []
    fig, _ = _scale_panels(pairs, title, metric=metric, reference=control)
    return plots.save(fig, out_dir, study, formats)


@figure("swiglu_vs_relu2")
def swiglu_vs_relu2_figure(runs_root: Path, out_dir: Path, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Notebook 01: per-seed paired differences of each SwiGLU arm from the shared relu² control, per scale."""
    return paired_figure(runs_root, out_dir, "swiglu_vs_relu2",
                         "SwiGLU minus the relu² control, after the int8 roundtrip", formats=formats)


@figure("qat")
def qat_figure(runs_root: Path, out_dir: Path, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Notebook 02: late QAT at each bit width minus the control re-exported at that width, per seed: on the
    final score (the headline, with the rule's line), on the quantization gap and on the pre-quantization bpb;
    one row per scale."""
    runs = with_control(selected_runs(runs_root, "qat"))
    stored = bits_sweep.TABLE.read(runs_root)
    if runs.empty or stored is None or stored[1].empty:
        return []
    qat_arms = {int(a.removeprefix("qat_int")): a for a in runs["arm"].unique() if a.startswith("qat_int")}
    if not qat_arms:
        return []
    pairs = late_qat.differences(runs, stored[1], qat_arms)
    scales = list(dict.fromkeys(pairs["scale"]))
    measures = list(dict.fromkeys(pairs["measure"]))
    what = {"score": "score: q_val_bpb", "gap": "quantization gap", "pre_quant": "val_bpb before export"}
    fig, axes = plots.new_figure(ncols=len(measures), nrows=len(scales), height_in=2.3 * len(scales))
    for row, scale in enumerate(scales):
        for col, measure in enumerate(measures):
            ax = axes[row * len(measures) + col]
            sub = pairs[(pairs["scale"] == scale) & (pairs["measure"] == measure)]
            sub = sub.assign(arm=[f"int{b}" for b in sub["bits"]])
            threshold = float(sub["threshold"].iloc[0]) if measure == "score" else None  # the rule scores only
            plots.plot_paired_deltas(sub, ax=ax, threshold=threshold, metric=what.get(measure, measure),
                                     reference="no QAT")
            label = "Δ vs no QAT, same bits (bpb)"  # the control's weights exported at this arm's bits
            ax.set_ylabel(label if col else f"{scale}, {plots.seeds_note(sub)}\n{label}")
            if row == 0:
                ax.set_title(what.get(measure, measure))
    plots.suptitle(fig, "Late QAT minus no QAT, same seed, both exported at the same bits")
    plots.caption(fig, PAIRED_KEY + " (score only)")
    return plots.save(fig, out_dir, "qat", formats)


def _model_dim(run_dir: Path) -> int | str:
    """The model width d recorded in a run's ``config.json`` ("?" if the run folder does not record it)."""
    try:
        return int(json.loads((run_dir / "config.json").read_text())["model"]["model_dim"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return "?"


@figure("smeargate")
def smeargate_figure(runs_root: Path, out_dir: Path, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Notebook 03: per-seed paired differences from the shared control, per scale; the headline per-dim vs
    scalar gate; and the learned gates, per arm and scale (model width d named)."""
    runs = with_control(selected_runs(runs_root, "smeargate"))
    if runs.empty:
        return []
    pairs = protocol.deltas(runs, "q_val_bpb")
    if pairs.empty:
        return []
    scales = list(dict.fromkeys(pairs["scale"]))
    fig, axes = plots.new_figure(ncols=2, nrows=2, height_in=5.6)
    for ax, scale in zip(axes, scales[:2]):
        sub = pairs[pairs["scale"] == scale]
        plots.plot_paired_deltas(sub, ax=ax, threshold=float(sub["threshold"].iloc[0]))
        ax.set_title(f"vs no gate: {scale} ({plots.seeds_note(sub)})")
    head = axes[2]
    both = runs[runs["arm"].isin(["smear_scalar", "smear_per_dim"])]
    head_scales = [sc for sc, g in both.groupby("scale", sort=False) if g["arm"].nunique() == 2]
    if head_scales:
        head_pairs = protocol.deltas(both[both["scale"].isin(head_scales)], "q_val_bpb", "smear_scalar")
        width = {sc: _model_dim(Path(g["path"].iloc[0])) for sc, g in both.groupby("scale", sort=False)}
        head_pairs = head_pairs.assign(arm=[f"{a} @ {sc} (d = {width[sc]})"
                                            for a, sc in zip(head_pairs["arm"], head_pairs["scale"])])
        plots.plot_paired_deltas(head_pairs, ax=head, threshold=float(head_pairs["threshold"].iloc[0]),
                                 reference="smear_scalar")
        head.set_title(f"per-dim vs scalar gate ({plots.seeds_note(head_pairs)})")
    else:
        head.set_visible(False)
    right = axes[3]
    stored = smear_gates.TABLE.read(runs_root)
    gates = stored[1] if stored is not None else smear_gates.TABLE.frame([])
    order = {Path(p).name: i for i, p in enumerate(runs["path"])}  # the selected runs, in their order
    scale_of = {Path(p).name: sc for p, sc in zip(runs["path"], runs["scale"])}
    folder_of = {Path(p).name: Path(p) for p in runs["path"]}
    gates = gates[gates["run"].isin(order)].sort_values("run", key=lambda s: s.map(order))
    styles = {sc: ls for sc, ls in zip(scales, ["-", "--", ":", "-."])}
    colors = {"smear_scalar": "C0", "smear_per_dim": "C1"}  # any other arm (e.g. another init): the next colours
    for arm in dict.fromkeys(gates["arm"]):
        colors.setdefault(arm, f"C{len(colors) + 2}")  # from C4 on: C3 is the rule's red in the other panels
    seen: set[tuple[str, str]] = set()
    for r in gates.to_dict("records"):
        g = np.asarray(r["values"], dtype=float)
        scale = scale_of[r["run"]]
        key = (r["arm"], scale)
        color = colors[r["arm"]]
        label = None if key in seen else f"{r['arm']}, {scale} (d = {_model_dim(folder_of[r['run']])})"
        seen.add(key)
        if g.size == 1:
            right.axhline(float(g[0]), color=color, linewidth=0.8, linestyle=styles[scale], label=label)
        else:
            rank = (np.arange(g.size) + 0.5) / g.size
            right.plot(rank, np.sort(g)[::-1], color=color, linewidth=0.7, linestyle=styles[scale], label=label)
    right.set_xlabel("gate channels, sorted (fraction of d)")
    right.set_ylabel("gate weight on x_t (1 = no smear)")
    right.set_title("learned gates (one line per seed)")
    right.set_xlim(0, 1)
    if seen:  # under the panel, off the data (beside it, it would squeeze every column)
        right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.26), borderaxespad=0, fontsize=6.5)
    plots.suptitle(fig, "SmearGate, after the int8 roundtrip")
    plots.caption(fig, PAIRED_KEY)
    return plots.save(fig, out_dir, "smeargate", formats)


@figure("eval")
def eval_figure(runs_root: Path, out_dir: Path, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Notebook 04: per-seed differences of each evaluation setting from the official non-overlapping
    evaluation of the same weights, and the forward compute per scored token."""
    stored = eval_sweep.TABLE.read(runs_root)
    if stored is None or stored[1].empty:
        return []
    diffs = eval_sweep.setting_differences(stored[1])
    _, ref = eval_sweep.labelled(stored[1])
    fig, (left, right) = plots.new_figure(ncols=2, height_in=3.0)
    plots.plot_paired_deltas(diffs, ax=left, metric="val_bpb", reference=f"{ref}, same weights", horizontal=True)
    left.set_title(f"Δ val_bpb per seed ({plots.seeds_note(diffs)})")
    cost = diffs.groupby("arm", sort=False)[["forward_tokens", "tokens_scored"]].first()
    right.barh(range(len(cost)), cost["forward_tokens"] / cost["tokens_scored"], color="C0", height=0.6)
    right.set_yticks(range(len(cost)), [""] * len(cost))
    right.set_ylim(len(cost) - 0.4, -0.6)
    right.set_xlabel("forward tokens per scored token")
    right.set_title("evaluation compute")
    plots.suptitle(fig, f"Evaluation settings on the same weights, vs {ref}")
    plots.caption(fig, "grey: each seed's difference; black: mean with 95% CI")
    return plots.save(fig, out_dir, "eval", formats)


SAME_WEIGHTS_REF = "rtn quantile"  # the frontier's per-bit-width reference: round-to-nearest, quantile clip


def _same_weights_label(quantity: str, unit: str) -> str:
    """The Δ axis of a frontier panel: the reference is the same weights exported by ``rtn quantile`` at the
    same bits (not the control arm)."""
    return f"Δ {quantity} ({unit})\nvs {SAME_WEIGHTS_REF}, same weights"


def frontier_differences(sweep: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per bit width and seed, each arm's ``column`` minus :data:`SAME_WEIGHTS_REF`'s on the same weights
    (``sweep``: :func:`gptq_sweep.labelled`); arm = "int<bits> <quantizer> <clip>", base = the arm alone."""
    frames = []
    for b, group in sweep.groupby("bits", sort=False):
        ref = group[group["arm"] == SAME_WEIGHTS_REF].set_index("seed")[column]
        others = group[group["arm"] != SAME_WEIGHTS_REF]
        frames.append(others.assign(diff=others[column] - others["seed"].map(ref),
                                    arm=[f"int{b} {a}" for a in others["arm"]], base=others["arm"]))
    return pd.concat(frames, ignore_index=True)


@figure("frontier")
def frontier_figure(runs_root: Path, out_dir: Path, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Notebook 06: GPTQ vs round-to-nearest (the headline) and the SD-clip arms, each minus round-to-nearest
    with the quantile clip on the same weights at each bit width (per seed, mean and 95% CI), on the score and
    on the artifact's bytes (SD-clip's point: fewer bytes); with a training arm, its paired difference from the
    shared control."""
    stored = gptq_sweep.TABLE.read(runs_root)
    if stored is None or stored[1].empty:
        return []
    sweep = gptq_sweep.labelled(stored[1])
    diffs = frontier_differences(sweep, "q_val_bpb")
    gptq = diffs[diffs["base"] == "gptq quantile"]
    sdclip = diffs[diffs["base"] != "gptq quantile"]
    size = frontier_differences(sweep.assign(kB=sweep["artifact_bytes"] / 1e3), "kB")
    runs = with_control(selected_runs(runs_root, "frontier"))
    training = protocol.deltas(runs, "q_val_bpb") if not runs.empty and runs["arm"].nunique() > 1 else None
    fig, ax = plots.new_mosaic("AC;BB;DD" if training is not None else "AA;BB;DD", height_in=7.4)
    plots.plot_paired_deltas(gptq.assign(arm=[f"int{b}" for b in gptq["bits"]]), ax=ax["A"])
    ax["A"].set_ylabel(_same_weights_label("q_val_bpb", "bpb"))
    ax["A"].set_title(f"GPTQ, quantile clip ({plots.seeds_note(gptq)})")
    plots.plot_paired_deltas(sdclip, ax=ax["B"])
    ax["B"].set_ylabel(_same_weights_label("q_val_bpb", "bpb"))
    ax["B"].set_title(f"SD-clip (k untuned), rtn or GPTQ: score ({plots.seeds_note(sdclip)})")
    plots.plot_paired_deltas(size, ax=ax["D"])
    ax["D"].set_ylabel(_same_weights_label("artifact size", "kB"))
    ref_kb = sweep[sweep["arm"] == SAME_WEIGHTS_REF].groupby("bits", sort=False)["artifact_bytes"].mean() / 1e3
    ax["D"].set_title(f"artifact bytes ({SAME_WEIGHTS_REF}: "
                      + ", ".join(f"int{b} {kb:.0f} kB" for b, kb in ref_kb.items())
                      + f"; {plots.seeds_note(size)})")
    if training is not None:
        plots.plot_paired_deltas(training, ax=ax["C"], threshold=float(training["threshold"].iloc[0]))
        ax["C"].set_title(f"trained arms vs control ({plots.seeds_note(training)})")
    plots.suptitle(fig, "The 2026-04-05 record's parts at int6/5/4: round-trip bpb and artifact bytes")
    plots.caption(fig, PAIRED_KEY)
    return plots.save(fig, out_dir, "frontier", formats)


def tokens_per_parameter(runs: pd.DataFrame) -> dict[str, float]:
    """How a scale's runs trained (:func:`pgolf.research.scales.regime` of the first run's ``config.json`` and
    steps: training tokens per non-embedding parameter and per parameter); the model is built on the meta
    device, no data is read."""
    from pgolf.core.config import Config
    from pgolf.research.scales import regime

    first = runs.iloc[0]
    return regime(Config.from_json(Path(first["path"]) / "config.json"), steps=int(first["steps"]))


@figure(regime_study.STUDY)
def regime_figure(runs_root: Path, out_dir: Path, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Notebook 08: at the ``regime`` scale, each arm minus the shared control per seed (the headline); the two
    routes to an int6 artifact, each against its own reference on the same seed (QAT against the control's
    weights re-exported at int6, GPTQ against round-to-nearest on the same weights); and the same technique's
    per-seed differences at ``regime`` and at ``micro`` (notebooks 06 and 02), with the control's int6 gap."""
    runs = with_control(selected_runs(runs_root, regime_study.STUDY))
    if runs.empty or runs["arm"].nunique() < 2:
        return []
    bits = regime_study.BITS_TABLE.read(runs_root)
    gptq = regime_study.GPTQ_TABLE.read(runs_root)
    micro_bits = bits_sweep.TABLE.read(runs_root)
    pairs = regime_study.effect_pairs(runs, None if bits is None else bits[1],
                                      with_control(selected_runs(runs_root, "frontier")),
                                      with_control(selected_runs(runs_root, "qat")),
                                      None if micro_bits is None else micro_bits[1])
    routes = []
    qat = pairs[(pairs["technique"] == "late QAT int6") & (pairs["scale"] == regime_study.SCALE)]
    if len(qat):
        routes.append(qat.assign(arm=f"{regime_study.QAT}\n− control@int6"))
    if gptq is not None and not gptq[1].empty:
        rows = regime_study.gptq_rows(gptq[1])
        ref = rows[rows["arm"] == regime_study.RTN].set_index("seed")["q_val_bpb"]
        got = rows[rows["arm"] == regime_study.GPTQ]
        routes.append(pd.DataFrame({"arm": "GPTQ − RTN\nsame weights", "seed": got["seed"],
                                    "diff": got["q_val_bpb"].to_numpy() - got["seed"].map(ref).to_numpy()}))
    across = pairs[pairs.groupby("technique")["scale"].transform("nunique") > 1]
    here = tokens_per_parameter(runs[runs["arm"] == protocol.CONTROL])["tokens_per_non_embedding_param"]
    layout = "AB;CC" if routes and len(across) else ("AB" if routes else ("A;C" if len(across) else "A"))
    fig, ax = plots.new_mosaic(layout, height_in=2.8 * (layout.count(";") + 1))
    deltas = protocol.deltas(runs, "q_val_bpb")
    plots.plot_paired_deltas(deltas, ax=ax["A"], threshold=float(deltas["threshold"].iloc[0]))
    ax["A"].set_title(f"arms vs the shared control ({plots.seeds_note(deltas)})")
    if routes:
        both = pd.concat(routes, ignore_index=True)
        plots.plot_paired_deltas(both, ax=ax["B"], reference="the reference under each column")
        ax["B"].set_ylabel("Δ q_val_bpb at int6 (bpb)\nvs the reference below")
        ax["B"].set_title(f"two routes to int6 ({plots.seeds_note(both)})")
    if len(across):
        regime_of = {regime_study.SCALE: here}
        micro = with_control(selected_runs(runs_root, "frontier"))
        micro = micro[(micro["scale"] == "micro") & (micro["arm"] == protocol.CONTROL)] if len(micro) else micro
        if len(micro):
            regime_of["micro"] = tokens_per_parameter(micro)["tokens_per_non_embedding_param"]
        labelled = across.assign(arm=[f"{t}\n{sc}" for t, sc in zip(across["technique"], across["scale"])])
        plots.plot_paired_deltas(labelled, ax=ax["C"], annotate_n=True)
        ax["C"].set_ylabel("per-seed Δ q_val_bpb (bpb)\n(gap: q_val_bpb − val_bpb)")
        ax["C"].set_title("same technique, two regimes (tokens per non-embedding parameter: "
                          + ", ".join(f"{sc} {n:.0f}" for sc, n in regime_of.items()) + ")")  # n: beside each mean
    plots.suptitle(fig, f"Structural techniques at the regime scale ({here:.0f} training tokens per non-embedding "
                        "parameter), after the export round trip")
    plots.caption(fig, PAIRED_KEY)
    return plots.save(fig, out_dir, regime_study.STUDY, formats)


@figure("rate_distortion")
def rate_distortion_figure(runs_root: Path, out_dir: Path, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Notebook 06: round-trip bpb loss against artifact bytes per clip rule, mean over the seeds, one panel per
    quantizer: the quantile clip at each bit width (the reference curve) and SD-clip per bit width across k (the
    embedding int8 with the quantile clip in every setting)."""
    stored = rate_distortion.TABLE.read(runs_root)
    if stored is None or stored[1].empty:
        return []
    t = stored[1]
    means = (t.groupby(["quantizer", "clip", "bits", "sigmas"], sort=False)
             .agg(artifact_bytes=("artifact_bytes", "mean"), gap_bpb=("gap_bpb", "mean"), seeds=("seed", "nunique"))
             .reset_index())
    quantizers = list(dict.fromkeys(means["quantizer"]))
    names = {"rtn": "round to nearest", "gptq": "GPTQ"}
    sd_bits = sorted(set(means.loc[means["clip"] != rate_distortion.REFERENCE_CLIP, "bits"]))
    fig, axes = plots.new_figure(ncols=len(quantizers), height_in=3.4)
    log_y = bool((means["gap_bpb"] > 0).all())  # the losses span three decades: log when every mean is positive
    for ax, quantizer in zip(axes, quantizers):
        m = means[means["quantizer"] == quantizer]
        ref = m[m["clip"] == rate_distortion.REFERENCE_CLIP].sort_values("bits")
        ax.plot(ref["artifact_bytes"], ref["gap_bpb"], color="k", marker="o", markersize=3, linewidth=1)
        for x, y, b in zip(ref["artifact_bytes"], ref["gap_bpb"], ref["bits"]):
            ax.annotate(f"int{b}", (x, y), xytext=(2, 3), textcoords="offset points", fontsize=6)
        for i, b in enumerate(sd_bits):
            line = m[(m["clip"] != rate_distortion.REFERENCE_CLIP) & (m["bits"] == b)].sort_values("sigmas")
            ax.plot(line["artifact_bytes"], line["gap_bpb"], color=f"C{i}", marker="s", markersize=2.5, linewidth=0.8)
            for j in (0, len(line) - 1) if len(line) else ():
                r = line.iloc[j]
                ax.annotate(f"k={r['sigmas']:g}", (r["artifact_bytes"], r["gap_bpb"]), xytext=(2, -7 if j else 3),
                            textcoords="offset points", fontsize=5.5, color=f"C{i}")
        if log_y:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(mpl_ticker.MaxNLocator(4))  # 6-digit labels: few enough not to touch
        ax.xaxis.set_major_formatter(mpl_ticker.StrMethodFormatter("{x:,.0f}"))
        ax.set_xlabel("artifact bytes (mean over seeds)")
        ax.set_ylabel("round-trip bpb loss (bpb, mean)")
        ax.set_title(f"{names.get(quantizer, quantizer)} (n = {int(m['seeds'].min())} seeds)")
    handles = [plots.legend_proxy(marker="o", color="k", label="quantile clip, int4–int8")]
    handles += [plots.legend_proxy(marker="s", color=f"C{i}", label=f"SD-clip int{b}, k varies")
                for i, b in enumerate(sd_bits)]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=6.5)
    plots.suptitle(fig, "Clip rules at matched bytes: attention and MLP matrices vary, embedding int8 + quantile "
                        "clip in every setting")
    return plots.save(fig, out_dir, "rate_distortion", formats)


@figure("compression")
def compression_figure(runs_root: Path, out_dir: Path, formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Notebook 05: artifact bytes against the roundtrip bpb loss of trained weights, per export setting (mean
    over the runs, with the 95% CI of the bpb loss across them); colour = bits, marker = compressor."""
    stored = compression.TRAINED.read(runs_root)
    if stored is None or stored[1].empty:
        return []
    t = stored[1].assign(gap_bpb=lambda d: d["q_val_bpb"] - d["val_bpb_fp"])
    fig, (ax,) = plots.new_figure(ncols=1, height_in=3.3)
    markers = {"zlib": "o", "zstd": "s", "lzma": "^", "brotli": "D"}
    bits = list(dict.fromkeys(t["bits"]))
    for (b, comp, prune, packed), g in t.groupby(["bits", "compressor", "prune_frac", "bitpack"], sort=False):
        per_run = g["gap_bpb"].to_numpy(float)
        half = plots.t_interval_half_width(per_run) if len(per_run) > 1 else 0.0
        color = f"C{bits.index(b)}"
        ax.errorbar(g["artifact_bytes"].mean() / 1e3, per_run.mean(), yerr=half, fmt="none", ecolor=color,
                    elinewidth=0.7, capsize=2)
        ax.scatter(g["artifact_bytes"].mean() / 1e3, per_run.mean(), marker="*" if packed else markers.get(comp, "o"),
                   facecolors=color if prune == 0 else "none", edgecolors=color, s=40 if packed else 18, zorder=3)
    handles = [plots.legend_proxy(marker="o", color=f"C{i}", label=f"{b} bits") for i, b in enumerate(bits)]
    handles += [plots.legend_proxy(marker=m, color="0.3", label=c) for c, m in markers.items()
                if c in set(t["compressor"])]
    if t["bitpack"].any():
        handles.append(plots.legend_proxy(marker="*", color="0.3", label="bit-packed"))
    if (t["prune_frac"] > 0).any():
        handles.append(plots.legend_proxy(marker="o", color="0.3", label="pruned", hollow=True))
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=6.5)
    ax.axhline(0.0, color="0.5", linestyle="--", linewidth=0.8)
    ax.set_xlabel("artifact size (kB, mean over runs)")
    ax.set_ylabel("roundtrip bpb loss (bpb; mean, 95% CI)")
    plots.suptitle(fig, f"Export settings on trained weights ({t['run'].nunique()} runs)")
    return plots.save(fig, out_dir, "compression", formats)


def _cmd_figures(args: argparse.Namespace) -> int:
    try:
        paths = regenerate(args.names, runs_root=args.runs_root, formats=plots.parse_formats(args.format))
    except (KeyError, ValueError) as err:
        print(f"pgolf: error: {err.args[0]}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("figures", help="regenerate figures from the run folders")
    parser.add_argument("names", nargs="*", help=f"figures to build (default all: {', '.join(FIGURES)})")
    parser.add_argument("--runs-root", type=Path, default=None, help="default: runs/")
    parser.add_argument("--format", default="svg", metavar="LIST",
                        help=f"comma-separated formats to write, of {','.join(plots.FORMATS)} (default: svg, the "
                             "committed ones); e.g. svg,png,pdf for a paper or slides")
    parser.set_defaults(func=_cmd_figures)
