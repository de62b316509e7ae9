"""Small pieces the ablation notebooks share: result tables and verdict sentences."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pgolf.research.stats import RULE_ALPHA, summarize

TABLE = {"q_val_bpb": ".4f", "val_bpb": ".4f", "quant_gap_bpb": "+.4f", "artifact_bytes": ",.0f",
         "step_avg_ms": ".1f"}


def arm_table(runs: pd.DataFrame, metrics: dict[str, str] = TABLE) -> pd.DataFrame:
    """mean ± std over seeds per arm (std omitted when an arm has one run)."""
    cols = {"n": summarize(runs, "q_val_bpb")["n"]}
    for metric, fmt in metrics.items():
        s = summarize(runs, metric)
        cols[metric] = pd.Series([f"{m:{fmt}} ± {sd:{fmt.lstrip('+')}}" if np.isfinite(sd) else f"{m:{fmt}}"
                                  for m, sd in zip(s["mean"], s["std"])], index=s.index)
    return pd.DataFrame(cols)


def verdict(row: pd.Series, arm: str, control: str, metric: str) -> str:
    """One sentence that says only what the test in ``row`` (a ``stats.compare`` row) supports: the paired
    difference with its 95% CI, the two-sided p, the rule's one-sided p, and the smallest effect these seeds
    detect (MDE at alpha 0.01, power 0.8). A non-significant difference whose whole CI lies closer to 0 than
    the rule's threshold is reported as excluding an effect of the rule's size. When the row has ``p_holm``
    (:func:`pgolf.research.stats.with_holm` over the notebook's tests) the verdict uses it and shows both."""
    diff = f"`{arm}` − `{control}` = {row['diff']:+.4f} {metric}"
    if not np.isfinite(row["p"]):
        return f"{diff}; {row['note'] or 'no test possible'}."
    adjusted = "p_holm" in row.index and np.isfinite(row["p_holm"])
    p_used = row["p_holm"] if adjusted else row["p"]
    p_text = f"p = {row['p']:.2g}" + (f", Holm-adjusted {p_used:.2g}" if adjusted else "")
    n = int(row["n_pairs"] or row["n"])
    ci = f"95% CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
    power = f"{n} seeds detect {row['mde']:.4f} (MDE, α = {RULE_ALPHA}, power 0.8)"
    if p_used >= RULE_ALPHA:
        excluded = ""
        if np.isfinite(row["threshold"]) and max(abs(row["ci_low"]), abs(row["ci_high"])) < row["threshold"]:
            excluded = f"; the CI excludes an effect of the rule's size (±{row['threshold']:.4f})"
        return (f"not significant at this scale (α = {RULE_ALPHA}): {diff}, {ci}, {p_text}; "
                f"{power}{excluded}.")
    better = "lower" if row["diff"] < 0 else "higher"
    found = (f"`{arm}` is {better} by {abs(row['diff']):.4f} {metric}, {ci}, {p_text} "
             f"({n} seeds, paired)")
    if row["diff"] >= 0 or not np.isfinite(row["threshold"]):
        return found + "."  # the record rule is about improvements of the score
    rule = "clears" if row["clears_rule"] else "does not clear"
    return f"{found}; it {rule} the 0.005-nat rule ({row['threshold']:.4f}, one-sided p = {row['p_rule']:.2g})."


def scale_verdict(row: pd.Series, arm: str, metric: str, regimes: dict[str, str] | None = None) -> str:
    """One sentence on a :func:`pgolf.research.stats.scale_difference` row: the effect at each scale, their
    difference with its 95% CI and Welch p (Holm-adjusted where the row has ``p_holm``), and only the claim the
    test supports: the effects differ between these two regimes, or no difference was detected. ``regimes``:
    scale -> how it trains (e.g. "6.6 training tokens per parameter"), named instead of calling a scale larger."""
    regimes = regimes or {}
    name = {sc: f"{sc}" + (f" ({regimes[sc]})" if sc in regimes else "") for sc in (row["scale_ref"], row["scale"])}
    effects = (f"`{arm}`'s effect on {metric} is {row['diff_ref']:+.4f} at {name[row['scale_ref']]}, "
               f"{int(row['n_pairs_ref'])} seeds, and {row['diff']:+.4f} at {name[row['scale']]}, "
               f"{int(row['n_pairs'])} seeds")
    if not np.isfinite(row["p"]):
        return f"{effects}; {row['note'] or 'no test possible'}."
    adjusted = "p_holm" in row.index and np.isfinite(row["p_holm"])
    p_used = row["p_holm"] if adjusted else row["p"]
    p_text = f"Welch p = {row['p']:.2g}" + (f", Holm-adjusted {p_used:.2g}" if adjusted else "")
    diff = (f"{row['scale']} − {row['scale_ref']} = {row['diff_of_diffs']:+.4f}, 95% CI "
            f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], {p_text}")
    if p_used < RULE_ALPHA:
        return f"{effects}; they differ ({diff}): the effect depends on the regime, by this test."
    return (f"{effects}; no difference between the two is detected at α = {RULE_ALPHA} ({diff}), which does not "
            "show that they are equal.")
