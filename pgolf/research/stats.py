"""Per-arm summaries and tests against a control arm, including the challenge's record rule.

The rule: a record must improve val_loss by at least 0.005 nats with p < 0.01. Lower is better for
every metric here. The rule's p-value (``p_rule``) is one-sided against the shifted null
"improvement <= threshold", as the records' one-sample tests against SOTA - 0.005 did; ``p`` is the
ordinary two-sided test of "any difference". For bpb metrics the threshold is converted with the
data's own ratio: threshold_bpb = 0.005 * mean(val_bpb / val_loss) (``q_val_bpb`` uses ``q_val_loss``).

Power: a t-test with ``df`` degrees of freedom whose true mean difference is ``effect`` has statistic
T ~ noncentral t(df, ncp = effect / se), se the standard error of the mean difference (sd/sqrt(n) for
n pairs). Power is P(|T| > t_crit) two-sided (both tails, as G*Power counts it) or P(T > t_crit)
one-sided, t_crit the central t quantile at alpha. ``mde`` solves power(ncp) = target for ncp with
``scipy.stats.nct`` and a root finder, then returns ncp * se; ``seeds_needed`` searches n exactly.
The normal approximation ((z_a + z_b) * sd / effect)^2 undercounts at small n (8 instead of 10 pairs
for effect = sd, alpha = 0.05), which is why the noncentral t is used throughout.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

RULE_NATS = 0.005
RULE_ALPHA = 0.01
POWER = 0.8
CI_LEVEL = 0.95


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


# ---- power of a t-test (noncentral t) ----

def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (same order; NaN stays NaN and is not counted).

    The i-th smallest of the m finite p-values becomes max over j <= i of min(1, (m - j + 1) * p_(j)), so
    rejecting where the adjusted p is below alpha keeps the family-wise error rate at alpha."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if finite.size == 0:
        return out
    if (p[finite] < 0).any() or (p[finite] > 1).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[finite].min()}..{p[finite].max()}")
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def with_holm(tests: pd.DataFrame, column: str = "p") -> pd.DataFrame:
    """``tests`` (rows of :func:`compare`, one family) with ``p_holm``: ``column`` adjusted by :func:`holm` over
    every row. A notebook passes all the tests it reports, so its verdicts hold for the family together."""
    return tests.assign(p_holm=holm(tests[column].to_numpy(float)))


def _check_levels(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not alpha < power < 1:
        raise ValueError(f"power must be in (alpha={alpha}, 1), got {power}")


def t_test_power(ncp: float, df: float, alpha: float = RULE_ALPHA, two_sided: bool = True) -> float:
    """Power of a t-test with ``df`` degrees of freedom when the true effect is ``ncp`` standard errors."""
    ncp = abs(ncp)
    if not two_sided:
        return float(sps.nct.sf(sps.t.ppf(1 - alpha, df), df, ncp))
    crit = sps.t.ppf(1 - alpha / 2, df)
    # P(T < -crit | ncp) written as P(T > crit | -ncp): nct.cdf returns NaN far in its lower tail
    return float(sps.nct.sf(crit, df, ncp) + sps.nct.sf(crit, df, -ncp))


def _ncp_for_power(df: float, alpha: float, power: float, two_sided: bool) -> float:
    """The noncentrality at which a t-test with ``df`` degrees of freedom reaches ``power``."""
    def shortfall(ncp: float) -> float:
        return t_test_power(ncp, df, alpha, two_sided) - power
    high = 1.0
    while shortfall(high) < 0:  # power rises with ncp; bracket the root
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10))


def mde(*, sd_diff: float, n: int, alpha: float = RULE_ALPHA, power: float = POWER,
        two_sided: bool = True) -> float:
    """Smallest |true mean difference| a paired t-test over ``n`` pairs detects with ``power`` at ``alpha``."""
    _check_levels(alpha, power)
    if n < 2 or not sd_diff > 0:
        raise ValueError(f"mde needs n >= 2 pairs and sd_diff > 0, got n={n}, sd_diff={sd_diff}")
    return sd_diff / np.sqrt(n) * _ncp_for_power(n - 1, alpha, power, two_sided)


def seeds_needed(*, sd_diff: float, effect: float, alpha: float = RULE_ALPHA, power: float = POWER,
                 two_sided: bool = True, max_n: int = 10000) -> int:
    """Smallest number of pairs n >= 2 whose paired t-test reaches ``power`` for a true mean difference ``effect``.

    ``sd_diff`` is a pilot's std of paired differences. Power grows with n, so a doubling search
    brackets the answer and bisection finds the exact smallest n.
    """
    _check_levels(alpha, power)
    if not sd_diff > 0 or not effect != 0 or not np.isfinite(effect):
        raise ValueError(f"seeds_needed needs sd_diff > 0 and a finite effect != 0, got {sd_diff}, {effect}")
    d = abs(effect) / sd_diff

    def enough(n: int) -> bool:
        return t_test_power(d * np.sqrt(n), n - 1, alpha, two_sided) >= power

    low, high = 1, 2  # invariant: low pairs are not enough (or below the minimum), high pairs are tried
    while not enough(high):
        if high >= max_n:
            raise ValueError(f"effect {effect} with sd_diff {sd_diff} needs more than max_n={max_n} pairs")
        low, high = high, min(2 * high, max_n)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


# ---- comparisons against a control arm ----

def _pairs(arm: pd.DataFrame, control: pd.DataFrame, metric: str, pair_on: str) -> pd.DataFrame | None:
    if pair_on not in arm.columns or arm[pair_on].duplicated().any() or control[pair_on].duplicated().any():
        return None
    return arm[[pair_on, metric]].merge(control[[pair_on, metric]], on=pair_on, suffixes=("", "_control"))


def paired_differences(df: pd.DataFrame, control: str, metric: str, *, pair_on: str = "seed",
                       arm_col: str = "arm") -> pd.DataFrame:
    """One row per non-control arm and shared ``pair_on`` value: the arm's and control's values and diff.

    diff = arm - control (lower is better). Arms without a shared value have no rows; a value that
    repeats within an arm is an error, since the pairing would then be ambiguous.
    """
    df = df.dropna(subset=[metric])
    for col in (arm_col, pair_on):
        if col not in df.columns:
            raise ValueError(f"paired_differences needs a {col!r} column; columns: {sorted(df.columns)}")
    repeated = df[df.duplicated([arm_col, pair_on], keep=False)]
    if len(repeated):
        raise ValueError(f"{pair_on} repeats within an arm, pairs are ambiguous: "
                         f"{sorted(set(zip(repeated[arm_col], repeated[pair_on])))}")
    control_runs = df.loc[df[arm_col] == control, [pair_on, metric]]
    if control_runs.empty:
        raise ValueError(f"control arm {control!r} has no {metric} values; arms: {sorted(set(df[arm_col]))}")
    pairs = df.loc[df[arm_col] != control, [arm_col, pair_on, metric]].merge(
        control_runs, on=pair_on, suffixes=("", "_control"))
    pairs["diff"] = pairs[metric] - pairs[f"{metric}_control"]
    return pairs.rename(columns={arm_col: "arm"}).reset_index(drop=True)


def _undefined(diff: float, note: str, **known) -> dict:
    return {"diff": diff, "ci_low": np.nan, "ci_high": np.nan, "sd_diff": np.nan, "t": np.nan, "p": np.nan,
            "p_rule": np.nan, "mde": np.nan, "note": note, **known}


def _paired(x: np.ndarray, y: np.ndarray, threshold: float, alpha: float, power: float, level: float) -> dict:
    d = x - y
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    known = {"test": "paired", "n_pairs": n}
    if not sd > 0:
        return _undefined(mean, "zero variance of paired differences: p-value undefined", **known)
    half = sps.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)
    two_sided = sps.ttest_rel(x, y)
    rule = sps.ttest_rel(x + threshold, y, alternative="less")
    return {**known, "diff": mean, "ci_low": mean - half, "ci_high": mean + half, "sd_diff": sd,
            "t": float(two_sided.statistic), "p": float(two_sided.pvalue), "p_rule": float(rule.pvalue),
            "mde": mde(sd_diff=sd, n=n, alpha=alpha, power=power), "note": ""}


def _welch(a: np.ndarray, c: np.ndarray, threshold: float, alpha: float, power: float, level: float,
           n_pairs: int) -> dict:
    diff = float(a.mean() - c.mean())
    known = {"test": "welch", "n_pairs": n_pairs}
    va, vc = a.var(ddof=1) / len(a), c.var(ddof=1) / len(c)
    if not va + vc > 0:
        return _undefined(diff, "zero variance in both arms: p-value undefined", **known)
    se = float(np.sqrt(va + vc))
    df = (va + vc) ** 2 / (va**2 / (len(a) - 1) + vc**2 / (len(c) - 1))  # Welch-Satterthwaite
    half = sps.t.ppf(0.5 + level / 2, df) * se
    two_sided = sps.ttest_ind(a, c, equal_var=False)
    rule = sps.ttest_ind(a + threshold, c, equal_var=False, alternative="less")
    return {**known, "diff": diff, "ci_low": diff - half, "ci_high": diff + half, "sd_diff": np.nan,
            "t": float(two_sided.statistic), "p": float(two_sided.pvalue), "p_rule": float(rule.pvalue),
            "mde": se * _ncp_for_power(df, alpha, power, two_sided=True),
            "note": "fewer than 2 seed pairs: unpaired Welch test"}


def _test(arm: pd.DataFrame, control: pd.DataFrame, metric: str, pair_on: str, threshold: float,
          alpha: float, power: float, level: float) -> dict:
    a, c = arm[metric].to_numpy(float), control[metric].to_numpy(float)
    pairs = _pairs(arm, control, metric, pair_on)
    if pairs is not None and len(pairs) >= 2:
        x, y = pairs[metric].to_numpy(float), pairs[f"{metric}_control"].to_numpy(float)
        return _paired(x, y, threshold, alpha, power, level)
    n_pairs = 0 if pairs is None else len(pairs)
    if len(a) >= 2 and len(c) >= 2:
        return _welch(a, c, threshold, alpha, power, level, n_pairs)
    return _undefined(float(a.mean() - c.mean()), "fewer than 2 runs in an arm: no test possible",
                      test=None, n_pairs=n_pairs)


COLUMNS = ["arm", "n", "n_control", "n_pairs", "test", "diff", "ci_low", "ci_high", "sd_diff", "t", "p",
           "p_rule", "mde", "threshold", "clears_rule", "note"]


def compare(df: pd.DataFrame, control: str, metric: str, pair_on: str = "seed", arm_col: str = "arm",
            threshold: float | None = None, alpha: float = RULE_ALPHA, *, power: float = POWER,
            ci_level: float = CI_LEVEL) -> pd.DataFrame:
    """Each non-control arm against ``control``: diff = mean(arm) - mean(control), its CI, t/p, MDE, rule verdict.

    Runs are paired by ``pair_on`` (paired t-test) when at least 2 pairs exist, otherwise Welch's
    test; with fewer than 2 runs per arm, or zero variance, the statistics are NaN and ``note`` says
    why. ``ci_low``/``ci_high``: the ``ci_level`` CI of diff (t with n-1 df paired, Welch-Satterthwaite
    df unpaired). ``sd_diff``: std (ddof=1) of the paired differences. ``mde``: the smallest |true diff|
    the same test detects two-sided at ``alpha`` with ``power`` (for Welch, with the observed standard
    error and df). ``clears_rule`` is True only when the one-sided p of "improvement > threshold" is
    below ``alpha``.
    """
    _check_levels(alpha, power)
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level}")
    df = df.dropna(subset=[metric])
    if control not in set(df[arm_col]):
        raise ValueError(f"control arm {control!r} has no {metric} values; arms: {sorted(set(df[arm_col]))}")
    threshold = rule_threshold(df, metric) if threshold is None else threshold
    control_runs = df[df[arm_col] == control]
    rows = []
    for arm, runs in df[df[arm_col] != control].groupby(arm_col, sort=False):
        result = _test(runs, control_runs, metric, pair_on, threshold, alpha, power, ci_level)
        clears = bool(np.isfinite(result["p_rule"]) and result["p_rule"] < alpha
                      and result["diff"] <= -threshold)
        rows.append({"arm": arm, "n": len(runs), "n_control": len(control_runs), **result,
                     "threshold": threshold, "clears_rule": clears})
    return pd.DataFrame(rows, columns=COLUMNS).set_index("arm")


# ---- the same arm at two scales ----

SCALE_COLUMNS = ["scale", "n_pairs", "diff", "scale_ref", "n_pairs_ref", "diff_ref", "diff_of_diffs", "ci_low",
                 "ci_high", "t", "df", "p", "note"]


def scale_difference(runs: pd.DataFrame, arm: str, control: str, metric: str, scales: tuple[str, str] | list[str],
                     *, pair_on: str = "seed", arm_col: str = "arm", scale_col: str = "scale",
                     ci_level: float = CI_LEVEL) -> pd.Series:
    """Whether ``arm``'s paired effect against ``control`` differs between two scales.

    At each scale the effect is the per-seed paired difference arm - control on ``metric``
    (:func:`paired_differences`); the two scales' differences are independent samples (other models, other
    runs), so Welch's t-test compares their means: ``diff_of_diffs`` = mean effect at ``scales[1]`` - mean
    effect at ``scales[0]`` (the reference, ``*_ref``), its ``ci_level`` CI with the Welch-Satterthwaite ``df``,
    and the two-sided ``p`` (the same as ``scipy.stats.ttest_ind(b, a, equal_var=False)``). With fewer than 2
    pairs at a scale, or no spread at either, the test is NaN and ``note`` says why.
    """
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level}")
    if len(scales) != 2 or scales[0] == scales[1]:
        raise ValueError(f"scale_difference compares two different scales, got {list(scales)}")
    if scale_col not in runs.columns:
        raise ValueError(f"scale_difference needs a {scale_col!r} column; columns: {sorted(runs.columns)}")
    effects = []
    for scale in scales:
        group = runs[(runs[scale_col] == scale) & runs[arm_col].isin([arm, control])]
        if not (group[arm_col] == arm).any():
            raise ValueError(f"scale {scale!r} has no runs of arm {arm!r}; arms there: "
                             f"{sorted(set(runs.loc[runs[scale_col] == scale, arm_col]))}")
        pairs = paired_differences(group, control, metric, pair_on=pair_on, arm_col=arm_col)
        effects.append(pairs.loc[pairs["arm"] == arm, "diff"].to_numpy(float))
    ref, other = effects
    row = {"scale": scales[1], "n_pairs": len(other), "diff": float(other.mean()) if len(other) else np.nan,
           "scale_ref": scales[0], "n_pairs_ref": len(ref), "diff_ref": float(ref.mean()) if len(ref) else np.nan}
    row["diff_of_diffs"] = row["diff"] - row["diff_ref"]
    undefined = {"ci_low": np.nan, "ci_high": np.nan, "t": np.nan, "df": np.nan, "p": np.nan}
    if len(ref) < 2 or len(other) < 2:
        return pd.Series({**row, **undefined, "note": "fewer than 2 seed pairs at a scale: no test possible"},
                         index=SCALE_COLUMNS)
    test = welch(other, ref, ci_level)
    if not np.isfinite(test["p"]):
        return pd.Series({**row, **undefined, "note": "zero variance at both scales: p-value undefined"},
                         index=SCALE_COLUMNS)
    return pd.Series({**row, **{k: test[k] for k in ("ci_low", "ci_high", "t", "df", "p")}, "note": ""},
                     index=SCALE_COLUMNS)


def welch(a, b, ci_level: float = CI_LEVEL) -> dict[str, float]:
    """Welch's t-test of two independent samples: ``diff`` = mean(a) - mean(b), its ``ci_level`` CI with the
    Welch-Satterthwaite ``df``, ``t`` and the two-sided ``p`` (those of ``scipy.stats.ttest_ind(a, b,
    equal_var=False)``). Needs at least 2 values in each; with no spread in either the test is NaN."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"welch needs at least 2 values per sample, got {len(a)} and {len(b)}")
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if not va + vb > 0:
        return {"diff": diff, "ci_low": np.nan, "ci_high": np.nan, "t": np.nan, "df": np.nan, "p": np.nan}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    half = float(sps.t.ppf(0.5 + ci_level / 2, df)) * float(np.sqrt(va + vb))
    test = sps.ttest_ind(a, b, equal_var=False)
    return {"diff": diff, "ci_low": diff - half, "ci_high": diff + half, "t": float(test.statistic), "df": float(df),
            "p": float(test.pvalue)}
