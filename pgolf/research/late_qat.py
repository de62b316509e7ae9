"""Late QAT against the same weights without QAT, at the same export bits (notebook 02).

The control trains without QAT and exports at int8. Its trained weights re-exported at ``b`` bits
(:mod:`pgolf.research.bits_sweep`, on the targets the official evaluation scores) are exactly what a no-QAT arm
exporting at ``b`` bits would give, since export bits do not change training. Against that ``control@int<b>``,
the QAT arm that trains with fake quantization at ``b`` bits over the last part of training and exports at
``b`` bits is measured three ways, paired by seed:

- ``score``: q_val_bpb (after the export round trip): what QAT buys on the final score;
- ``gap``: q_val_bpb - val_bpb: whether QAT shrinks the quantization gap;
- ``pre_quant``: val_bpb before the round trip: what fake quantization costs the unquantized model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pgolf.research.results import train_times
from pgolf.research.stats import compare, paired_differences, rule_threshold

MEASURES = {"score": "q_val_bpb", "gap": "gap_bpb", "pre_quant": "val_bpb"}


def control_at_bits(sweep: pd.DataFrame, bits: int, control: str = "control") -> pd.DataFrame:
    """The control's re-export at ``bits`` as run-like rows (scale, arm ``control@int<bits>``, seed, metrics)."""
    rows = sweep[(sweep["arm"] == control) & (sweep["bits"] == bits)]
    return pd.DataFrame({"scale": rows["scale"], "arm": f"{control}@int{bits}", "seed": rows["seed"],
                         "val_bpb": rows["val_bpb_fp"], "q_val_bpb": rows["q_val_bpb"],
                         "gap_bpb": rows["gap_bpb"]}).reset_index(drop=True)


def _frames(runs: pd.DataFrame, sweep: pd.DataFrame, qat_arms: Mapping[int, str], control: str):
    """(scale, bits, arm, reference arm, the two arms' rows, rule threshold) for each QAT arm present."""
    runs = runs.assign(gap_bpb=runs["q_val_bpb"] - runs["val_bpb"])
    for scale, group in runs.groupby("scale", sort=False):
        threshold = rule_threshold(group, "q_val_bpb")
        for bits, arm in qat_arms.items():
            qat = group[group["arm"] == arm]
            if qat.empty:
                continue
            ref = control_at_bits(sweep[sweep["scale"] == scale], bits, control)
            if ref.empty:
                raise ValueError(f"scale {scale}: the sweep has no re-export of {control!r} at {bits} bits")
            rows = pd.concat([ref, qat[["scale", "arm", "seed", "val_bpb", "q_val_bpb", "gap_bpb"]]],
                             ignore_index=True)
            yield scale, bits, arm, ref["arm"].iloc[0], rows, threshold


def comparisons(runs: pd.DataFrame, sweep: pd.DataFrame, qat_arms: Mapping[int, str],
                control: str = "control") -> pd.DataFrame:
    """One row per (scale, bits, measure): the QAT arm minus ``control@int<bits>``
    (:func:`pgolf.research.stats.compare`: diff, 95% CI, p, MDE); the rule's threshold (0.005 nats) and one-sided
    p only for the final score."""
    out = []
    for scale, bits, arm, ref, rows, threshold in _frames(runs, sweep, qat_arms, control):
        for measure, metric in MEASURES.items():  # the record rule applies to the final score only
            rule = threshold if measure == "score" else float("nan")
            row = compare(rows, ref, metric, threshold=rule).loc[arm]
            out.append({"scale": scale, "bits": bits, "measure": measure, "arm": arm, "reference": ref,
                        **row.to_dict()})
    return pd.DataFrame(out).set_index(["scale", "bits", "measure"])


def differences(runs: pd.DataFrame, sweep: pd.DataFrame, qat_arms: Mapping[int, str],
                control: str = "control") -> pd.DataFrame:
    """Per-seed paired differences for every (scale, bits, measure), labelled ``int<bits> <measure>`` in the
    ``arm`` column (the input of :func:`pgolf.research.plots.plot_paired_deltas`), with the rule threshold."""
    frames = []
    for scale, bits, _arm, ref, rows, threshold in _frames(runs, sweep, qat_arms, control):
        for measure, metric in MEASURES.items():
            pairs = paired_differences(rows, ref, metric)
            pairs["arm"] = f"int{bits} {measure}"
            pairs.insert(0, "scale", scale)
            pairs["bits"], pairs["measure"], pairs["threshold"] = bits, measure, threshold
            frames.append(pairs)
    return pd.concat(frames, ignore_index=True)


def _ms_per_step(run_dir: str | Path, split_step: int) -> tuple[float, float] | None:
    """Mean training ms per step of a run up to ``split_step`` and after it, from the cumulative ``train_time_ms``
    of its ``metrics.jsonl`` training rows; None when the run has no training step after ``split_step``."""
    times = train_times(run_dir)
    last = int(times.index.max()) if len(times) else 0
    if not 0 < split_step < last:
        return None
    if split_step not in times:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'}: no training row at step {split_step}, where the run is "
                         f"split (last step {last})")
    return times[split_step] / split_step, (times[last] - times[split_step]) / (last - split_step)


def step_times(runs: pd.DataFrame, qat_arms: Mapping[int, str], control: str = "control") -> pd.DataFrame:
    """QAT's step-time cost measured inside each run, so that the machine's load (which differs between runs
    trained at different times) cancels as far as it is steady within a run: ms per step before and after the
    step where fake quantization switched on (``qat_step``), and their ratio. The control, which never switches,
    is split at the same step as its scale's QAT arms, so its ratio is what the schedule alone does. One row per
    run (scale, arm, seed, split_step, ms_before, ms_after, after_over_before); a QAT run that never switched on,
    or any run with no step after the split (a smoke run of a few steps), is left out."""
    rows = []
    for scale, group in runs.groupby("scale", sort=False):
        qat = group[group["arm"].isin(list(qat_arms.values())) & group["qat_step"].notna()]  # QAT switched on
        if qat.empty:
            continue
        split = int(qat["qat_step"].median())
        for r in pd.concat([group[group["arm"] == control], qat]).to_dict("records"):
            step = split if r["arm"] == control else int(r["qat_step"])
            split_times = _ms_per_step(r["path"], step)
            if split_times is None:
                continue
            before, after = split_times
            rows.append({"scale": scale, "arm": r["arm"], "seed": r["seed"], "split_step": step,
                         "ms_before": before, "ms_after": after, "after_over_before": after / before})
    return pd.DataFrame(rows, columns=["scale", "arm", "seed", "split_step", "ms_before", "ms_after",
                                       "after_over_before"])
