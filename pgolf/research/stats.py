"""Per-arm summaries and tests against a control arm, including the challenge's record rule.

The rule: a record must improve val_loss by at least 0.005 nats with p < 0.01. Lower is better for
every metric here. The rule's p-value (``p_rule``) is one-sided against the shifted null
"improvement <= threshold", as the records' one-sample tests against SOTA - 0.005 did; ``p`` is the
ordinary two-sided test of "any difference". For bpb metrics the threshold is converted with the
data's own ratio: threshold_bpb = 0.005 * mean(val_bpb / val_loss) (``q_val_bpb`` uses ``q_val_loss``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

RULE_NATS = 0.005
RULE_ALPHA = 0.01


def summarize(df: pd.DataFrame, metric: str, arm_col: str = "arm") -> pd.DataFrame:
    """n, mean and std (ddof=1, NaN for n=1) of ``metric`` per arm, arms in table order."""
    grouped = df.dropna(subset=[metric]).groupby(arm_col, sort=False)[metric]
    return grouped.agg(n="count", mean="mean", std="std")


def rule_threshold(df: pd.DataFrame, metric: str) -> float:
    """0.005 nats expressed in the units of ``metric`` (nats for ``*loss``, bpb via the data's ratio)."""
    if metric.endswith("loss"):
        return RULE_NATS
    if metric.endswith("bpb"):
        loss_col = metric.removesuffix("bpb") + "loss"
        if loss_col in df.columns:
            ratio = (df[metric] / df[loss_col]).dropna()
            if len(ratio):
                return RULE_NATS * float(ratio.mean())
        raise ValueError(f"converting 0.005 nats to {metric} needs a {loss_col!r} column; pass threshold=")
    raise ValueError(f"no rule threshold for {metric!r}; pass threshold= in the metric's units")


def _pairs(arm: pd.DataFrame, control: pd.DataFrame, metric: str, pair_on: str) -> pd.DataFrame | None:
    if pair_on not in arm.columns or arm[pair_on].duplicated().any() or control[pair_on].duplicated().any():
        return None
    return arm[[pair_on, metric]].merge(control[[pair_on, metric]], on=pair_on, suffixes=("", "_control"))


def _test(arm: pd.DataFrame, control: pd.DataFrame, metric: str, pair_on: str, threshold: float) -> dict:
    a, c = arm[metric].to_numpy(float), control[metric].to_numpy(float)
    pairs = _pairs(arm, control, metric, pair_on)
    if pairs is not None and len(pairs) >= 2:
        x, y = pairs[metric].to_numpy(float), pairs[f"{metric}_control"].to_numpy(float)
        two_sided = sps.ttest_rel(x, y)
        rule = sps.ttest_rel(x + threshold, y, alternative="less")
        result = {"test": "paired", "n_pairs": len(pairs), "diff": float(np.mean(x - y))}
    elif len(a) >= 2 and len(c) >= 2:
        two_sided = sps.ttest_ind(a, c, equal_var=False)
        rule = sps.ttest_ind(a + threshold, c, equal_var=False, alternative="less")
        result = {"test": "welch", "n_pairs": 0 if pairs is None else len(pairs), "diff": a.mean() - c.mean()}
    else:
        return {"test": None, "n_pairs": 0, "diff": a.mean() - c.mean(), "t": np.nan, "p": np.nan,
                "p_rule": np.nan, "note": "fewer than 2 runs in an arm: no test possible"}
    note = "" if np.isfinite(rule.pvalue) else "zero variance: p-value undefined"
    if result["test"] == "welch":
        note = note or "fewer than 2 seed pairs: unpaired Welch test"
    return {**result, "t": float(two_sided.statistic), "p": float(two_sided.pvalue),
            "p_rule": float(rule.pvalue), "note": note}


def compare(df: pd.DataFrame, control: str, metric: str, pair_on: str = "seed", arm_col: str = "arm",
            threshold: float | None = None, alpha: float = RULE_ALPHA) -> pd.DataFrame:
    """Each non-control arm against ``control``: diff = mean(arm) - mean(control), t/p, rule verdict.

    Runs are paired by ``pair_on`` (paired t-test) when at least 2 pairs exist, otherwise Welch's
    test; with fewer than 2 runs per arm p is NaN and ``note`` says why. ``clears_rule`` is True only
    when the one-sided p of "improvement > threshold" is below ``alpha``.
    """
    df = df.dropna(subset=[metric])
    if control not in set(df[arm_col]):
        raise ValueError(f"control arm {control!r} has no {metric} values; arms: {sorted(set(df[arm_col]))}")
    threshold = rule_threshold(df, metric) if threshold is None else threshold
    control_runs = df[df[arm_col] == control]
    rows = []
    for arm, runs in df[df[arm_col] != control].groupby(arm_col, sort=False):
        result = _test(runs, control_runs, metric, pair_on, threshold)
        clears = bool(np.isfinite(result["p_rule"]) and result["p_rule"] < alpha
                      and result["diff"] <= -threshold)
        rows.append({"arm": arm, "n": len(runs), "n_control": len(control_runs), **result,
                     "threshold": threshold, "clears_rule": clears})
    columns = ["arm", "n", "n_control", "n_pairs", "test", "diff", "t", "p", "p_rule", "threshold",
               "clears_rule", "note"]
    return pd.DataFrame(rows, columns=columns).set_index("arm")
