"""Structural techniques in the challenge's regime (notebook 08): the ``regime`` scale's arms and analyses.

The ``regime`` scale (:mod:`pgolf.research.scales`: 8 layers, d=16, 103 training tokens per non-embedding
parameter) is deep enough to put a technique where the records put it. Three arms against its shared control:

- ``loop_middle``: the U-Net's last encoder and first decoder layer (3, 4 of 8) run three times with shared
  weights from 50% of the steps on, as the 2026-04-05 record loops layers 4-5 of 11 (``loop_count=2``);
- ``skip_gates``: the U-Net skips mixed by a learned sigmoid gate, trained as control tensors (fp32, Adam);
- ``qat_int6``: late QAT at int6 over the last 15% of the steps, exported at int6 (notebook 02's arm).

The analyses read the runs and two tables computed from the control's raw weights without training, stored
under ``runs/regime_study/analysis/`` (:data:`BITS_TABLE`: the control re-exported at 8 and 6 bits, notebook 02's
sweep; :data:`GPTQ_TABLE`: round-to-nearest vs GPTQ at 6 bits on the same weights, notebook 06's sweep). Every
function here takes tables and returns tables; nothing reads the disk except :func:`run_seconds` (a run's log).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pgolf.core.config import Config
from pgolf.research import bits_sweep, gptq_sweep, late_qat, protocol
from pgolf.research.results import train_times
from pgolf.research.stats import CI_LEVEL, compare, welch
from pgolf.research.tables import AnalysisTable

STUDY = "regime_study"  # the study's folder under runs/ (selection.json, analysis/); its runs live in runs/regime/
SCALE = "regime"
LOOP, SKIP, QAT = "loop_middle", "skip_gates", "qat_int6"
QAT_BITS = 6
GPTQ, RTN = "gptq quantile", "rtn quantile"  # gptq_sweep.labelled's arms at the quantile clip
MICRO_LOOP = "loop_last_layer"  # notebook 06's loop at micro (the last of 2 layers run twice)

BITS_TABLE = AnalysisTable(study=STUDY, name="bits_sweep", row=bits_sweep.BitsSweepRow, notebook="08")
GPTQ_TABLE = AnalysisTable(study=STUDY, name="gptq_sweep", row=gptq_sweep.GPTQSweepRow, notebook="08")


def arms() -> dict[str, dict[str, Any]]:
    """The study's three arms, exactly as their runs were trained (their run keys hash these overrides)."""
    cp = (*Config().model.control_patterns, "skip_gates")
    return {LOOP: {"model.loop_layers": [3, 4], "model.loop_count": 2, "model.loop_start_frac": 0.5},
            SKIP: {"model.skip_gates": True, "model.control_patterns": list(cp)},
            QAT: {"qat.enabled": True, "qat.start_frac": 0.85, "export.bits_attn": QAT_BITS,
                  "export.bits_mlp": QAT_BITS}}


# ---- the int6 gap: no QAT, QAT, GPTQ ----------------------------------------------------------------

def qat_tests(runs: pd.DataFrame, bits_table: pd.DataFrame) -> pd.DataFrame:
    """``qat_int6`` minus the control re-exported at int6 (``control@int6``), paired by seed, on the final score,
    the gap and the pre-quantization bpb (:func:`pgolf.research.late_qat.comparisons`), one row per measure."""
    tests = late_qat.comparisons(runs, bits_table, {QAT_BITS: QAT})
    return tests.reset_index().set_index("measure")


def gptq_rows(gptq_table: pd.DataFrame, bits: int = QAT_BITS) -> pd.DataFrame:
    """The sweep's round-to-nearest and GPTQ exports (quantile clip) at ``bits``, labelled (arm = ``rtn quantile``
    / ``gptq quantile``)."""
    table = gptq_sweep.labelled(gptq_table)
    return table[(table["bits"] == bits) & table["arm"].isin([RTN, GPTQ])]


def gptq_tests(gptq_table: pd.DataFrame) -> pd.DataFrame:
    """GPTQ minus round-to-nearest on the same weights at int6, paired by seed, on the score and on the gap."""
    rows = gptq_rows(gptq_table)
    return pd.DataFrame({measure: compare(rows, RTN, metric, threshold=float("nan")).loc[GPTQ]
                         for measure, metric in (("score", "q_val_bpb"), ("gap", "gap_bpb"))}).T


def qat_vs_gptq(runs: pd.DataFrame, gptq_table: pd.DataFrame) -> pd.Series:
    """The two routes to an int6 artifact, paired by seed on the same validation targets: the QAT arm's own
    score minus the control's weights exported by GPTQ (a row of :func:`pgolf.research.stats.compare`)."""
    rows = gptq_rows(gptq_table)
    gptq = rows[rows["arm"] == GPTQ][["seed", "q_val_bpb", "tokens_scored"]].assign(arm=f"control@int{QAT_BITS} GPTQ")
    qat = runs[runs["arm"] == QAT]
    if not (gptq["tokens_scored"] == int(qat["val_tokens_scored"].iloc[0])).all():
        raise ValueError(f"the GPTQ sweep scored {sorted(set(gptq['tokens_scored']))} targets, the QAT runs "
                         f"{int(qat['val_tokens_scored'].iloc[0])}: compute the sweep on the runs' targets")
    both = pd.concat([gptq[["arm", "seed", "q_val_bpb"]], qat[["arm", "seed", "q_val_bpb"]]], ignore_index=True)
    return compare(both, f"control@int{QAT_BITS} GPTQ", "q_val_bpb", threshold=float("nan")).loc[QAT]


def gap_closed(runs: pd.DataFrame, bits_table: pd.DataFrame, gptq_table: pd.DataFrame) -> pd.DataFrame:
    """Per route, the int6 gap without it, with it, and the share of the gap it closes (means over seeds):
    QAT (trained) against the control re-exported at int6; GPTQ against round-to-nearest on the same weights
    (both with ``export.scale_floor=false``, as notebook 06's sweep exports)."""
    qat = runs[runs["arm"] == QAT]
    no_qat = late_qat.control_at_bits(bits_table, QAT_BITS)
    rows = gptq_rows(gptq_table)
    out = {f"QAT ({QAT})": (no_qat["gap_bpb"], qat["q_val_bpb"] - qat["val_bpb"]),
           "GPTQ (same weights)": (rows.loc[rows["arm"] == RTN, "gap_bpb"], rows.loc[rows["arm"] == GPTQ, "gap_bpb"])}
    table = pd.DataFrame([{"route": route, "n": len(after), "gap_without": before.mean(), "gap_with": after.mean()}
                          for route, (before, after) in out.items()]).set_index("route")
    table["closed_bpb"] = table["gap_without"] - table["gap_with"]
    table["closed_share"] = table["closed_bpb"] / table["gap_without"]
    return table


# ---- costs ------------------------------------------------------------------------------------------

def code_sha(run_dir: str | Path) -> str | None:
    """The git commit of the code that trained a run (its ``environment.json``), or None if not recorded."""
    path = Path(run_dir) / "environment.json"
    try:
        return json.loads(path.read_text()).get("git_sha")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def step_time_ratios(runs: pd.DataFrame, control: str = protocol.CONTROL) -> pd.DataFrame:
    """Per arm and seed: the arm's mean step time over the control's (``step_avg_ms``, same seed); wall-clock
    times on a shared machine, so only their spread over seeds says how far to trust one ratio. ``same_code``:
    whether the same commit trained both (a faster training loop between them makes the ratio meaningless)."""
    ctrl = runs[runs["arm"] == control].set_index("seed")
    others = runs[runs["arm"] != control]
    ratios = others.assign(ratio=others["step_avg_ms"] / others["seed"].map(ctrl["step_avg_ms"]),
                           same_code=[code_sha(p) is not None and code_sha(p) == code_sha(ctrl.loc[s, "path"])
                                      for p, s in zip(others["path"], others["seed"])])
    return ratios[["arm", "seed", "step_avg_ms", "ratio", "same_code"]].reset_index(drop=True)


SWITCHES = ("loop_step", "qat_step")  # summary fields: the step at which an arm's technique switched on


def _train_ms(run_dir: str | Path) -> pd.Series:
    """step -> training time (ms) at the end of that step (:func:`pgolf.research.results.train_times`); an error
    naming the file when the run has no training rows."""
    times = train_times(run_dir)
    if times.empty:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'}: no training rows with train_time_ms")
    return times


def switched_on_ratios(runs: pd.DataFrame, control: str = protocol.CONTROL) -> pd.DataFrame:
    """Per run of an arm whose technique switches on mid-run (``loop_step`` or ``qat_step`` in its summary): the
    mean step time from that step to the end over the control's on the same steps of the same seed, i.e. the
    cost while the technique is on (the whole-run ratio dilutes it by the steps before)."""
    base = {int(r["seed"]): r["path"] for r in runs[runs["arm"] == control].to_dict("records")}
    rows = []
    for r in runs[runs["arm"] != control].to_dict("records"):
        switch = next((int(r[k]) for k in SWITCHES if k in r and pd.notna(r[k])), None)
        if switch is None or int(r["seed"]) not in base:
            continue
        arm_ms, ref_ms = _train_ms(r["path"]), _train_ms(base[int(r["seed"])])
        end = min(arm_ms.index.max(), ref_ms.index.max())
        if not switch < end:
            continue
        per_step = lambda t: (t[end] - t[switch]) / (end - switch)  # noqa: E731
        rows.append({"arm": r["arm"], "seed": int(r["seed"]), "from_step": switch,
                     "ratio_on": per_step(arm_ms) / per_step(ref_ms)})
    return pd.DataFrame(rows, columns=["arm", "seed", "from_step", "ratio_on"])


def step_time_summary(runs: pd.DataFrame, control: str = protocol.CONTROL) -> pd.DataFrame:
    """:func:`step_time_ratios` per arm, over the seeds whose arm and control runs the same code trained (``n`` of
    ``n_all``; a faster training loop between them would decide the ratio): the mean ratio, the smallest and the
    largest; and for arms that switch on mid-run, the same over the steps where it is on (:func:`switched_on_ratios`;
    NaN for the others and where no seed's pair shares its code)."""
    ratios = step_time_ratios(runs, control)
    arms = list(dict.fromkeys(ratios["arm"]))
    same = ratios[ratios["same_code"]]
    table = same.groupby("arm", sort=False)["ratio"].agg(n="count", mean="mean", min="min", max="max").reindex(arms)
    table["n"] = table["n"].fillna(0).astype(int)
    table["n_all"] = ratios.groupby("arm", sort=False).size().reindex(arms)
    on = switched_on_ratios(runs, control).merge(same[["arm", "seed"]], on=["arm", "seed"]).groupby("arm", sort=False)
    table["from_step"] = on["from_step"].min().reindex(table.index)
    for stat in ("mean", "min", "max"):
        table[f"on_{stat}"] = on["ratio_on"].agg(stat).reindex(table.index)
    return table


ROUNDTRIP_EVAL = re.compile(r"^final_\S+_roundtrip val_loss:\S+ val_bpb:\S+ eval_time:(\d+)ms", re.MULTILINE)


def run_seconds(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run, the seconds its own timings record: the training loop (``train_time_ms``) and the round-trip
    evaluation (``eval_time`` in its ``train.log``). Both are wall clock of a one-thread process, so on a
    loaded machine they bound its CPU-seconds from above; the unquantized evaluation (as long as the round-trip
    one), start-up and export are not timed."""
    rows = []
    for r in runs.to_dict("records"):
        log = Path(r["path"]) / "train.log"
        found = ROUNDTRIP_EVAL.findall(log.read_text()) if log.is_file() else []
        if not found:
            raise ValueError(f"{log}: no 'final_..._roundtrip ... eval_time:<ms>ms' line to time the evaluation")
        rows.append({"arm": r["arm"], "seed": int(r["seed"]), "train_s": r["train_time_ms"] / 1000.0,
                     "eval_s": int(found[-1]) / 1000.0})
    table = pd.DataFrame(rows)
    table["timed_s"] = table["train_s"] + table["eval_s"]
    return table


# ---- regime against micro ---------------------------------------------------------------------------

def scale_difference(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray, level: float = CI_LEVEL) -> dict[str, float]:
    """Whether an effect differs between two scales: :func:`pgolf.research.stats.welch` of the per-seed paired
    differences ``a`` (one scale) against ``b`` (another; independent seeds and models), with n_a, n_b, mean_a
    and mean_b beside diff = mean_a - mean_b, its ``level`` CI, t, df and the two-sided p."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return {"n_a": len(a), "n_b": len(b), "mean_a": float(a.mean()), "mean_b": float(b.mean()), **welch(a, b, level)}


def _at(table: pd.DataFrame | None, scale: str) -> pd.DataFrame:
    """The rows of ``table`` at ``scale`` (none when the table is missing or has no scale column)."""
    if table is None or "scale" not in table.columns:
        return pd.DataFrame(columns=["scale", "arm", "seed"])
    return table[table["scale"] == scale]


def effect_pairs(regime_runs: pd.DataFrame, regime_bits: pd.DataFrame | None, micro_loop_runs: pd.DataFrame | None,
                 micro_qat_runs: pd.DataFrame | None, micro_bits: pd.DataFrame | None) -> pd.DataFrame:
    """The per-seed paired differences compared across the two scales, one frame (columns technique, scale,
    arm, reference, seed, diff): depth recurrence (each scale's loop arm minus its control, q_val_bpb), late
    QAT at int6 (the QAT arm minus the control re-exported at int6, q_val_bpb) and the control's own int6 gap
    (q_val_bpb - val_bpb of the re-export, against no reference: arm ``control@int6``). ``micro_*``: the runs
    notebooks 06 and 02 selected (any scale; only ``micro`` is kept) and 02's bits sweep; a missing one (None)
    leaves its rows out."""
    frames = []

    def add(technique: str, scale: str, pairs: pd.DataFrame, reference: str) -> None:
        frames.append(pd.DataFrame({"technique": technique, "scale": scale, "arm": pairs["arm"].to_numpy(),
                                    "reference": reference, "seed": pairs["seed"].to_numpy(int),
                                    "diff": pairs["diff"].to_numpy(float)}))

    for scale, runs, arm in ((SCALE, regime_runs, LOOP), ("micro", micro_loop_runs, MICRO_LOOP)):
        sub = _at(runs, scale)
        sub = sub[sub["arm"].isin([protocol.CONTROL, arm])]
        if (sub["arm"] == arm).any() and (sub["arm"] == protocol.CONTROL).any():
            add("depth recurrence", scale, protocol.deltas(sub), protocol.CONTROL)
    sweeps = [(scale, _at(runs, scale), _at(bits, scale))
              for scale, runs, bits in ((SCALE, regime_runs, regime_bits), ("micro", micro_qat_runs, micro_bits))]
    for scale, sub, table in sweeps:
        has_ref = len(table) > 0 and ((table["bits"] == QAT_BITS) & (table["arm"] == protocol.CONTROL)).any()
        if (sub["arm"] == QAT).any() and has_ref:
            pairs = late_qat.differences(sub, table, {QAT_BITS: QAT})
            add("late QAT int6", scale, pairs[pairs["measure"] == "score"].assign(arm=QAT),
                f"control@int{QAT_BITS}")
    for scale, _, table in sweeps:  # the no-QAT gap needs only the sweep
        gap = late_qat.control_at_bits(table, QAT_BITS) if len(table) else None
        if gap is not None and len(gap):
            add("int6 gap without QAT", scale, gap.rename(columns={"gap_bpb": "diff"}), "unquantized")
    if not frames:
        return pd.DataFrame(columns=["technique", "scale", "arm", "reference", "seed", "diff"])
    return pd.concat(frames, ignore_index=True)


def scale_tests(pairs: pd.DataFrame) -> pd.DataFrame:
    """:func:`scale_difference` of regime against micro for every technique of :func:`effect_pairs` that both
    scales measured; one row per technique (diff = regime mean - micro mean)."""
    rows = {}
    for technique, group in pairs.groupby("technique", sort=False):
        by = {sc: g["diff"] for sc, g in group.groupby("scale")}
        if SCALE in by and "micro" in by:
            rows[technique] = {"regime_arm": group.loc[group["scale"] == SCALE, "arm"].iloc[0],
                               "micro_arm": group.loc[group["scale"] == "micro", "arm"].iloc[0],
                               **scale_difference(by[SCALE], by["micro"])}
    return pd.DataFrame.from_dict(rows, orient="index")
