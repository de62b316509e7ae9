"""The statistics that say whether a comparison can answer its question: CIs, MDE and seeds needed.

Known values are G*Power's one-sample/paired t-test sample sizes; the normal approximation
((z_a + z_b) / d)^2 gives 8 instead of 10 pairs for d = 1 and 32 instead of 34 for d = 0.5, so these
tests fail on it as well as on a wrong degrees of freedom or a one-tailed power for a two-sided test.
"""

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from pgolf.research.stats import compare, mde, paired_differences, seeds_needed, t_test_power

CONTROL = [2.51, 2.47, 2.55, 2.49, 2.52]
ARM = [2.50, 2.47, 2.52, 2.49, 2.505]


def _table(arm: list[float], control: list[float], seeds=None) -> pd.DataFrame:
    seeds = range(len(arm)) if seeds is None else seeds
    rows = [{"arm": "base", "seed": s, "val_loss": v} for s, v in enumerate(control)]
    rows += [{"arm": "x", "seed": s, "val_loss": v} for s, v in zip(seeds, arm)]
    return pd.DataFrame(rows)


def _paired_sample(n: int, mean: float, sd: float) -> pd.DataFrame:
    """Pairs whose differences have exactly this sample mean and sd (ddof=1)."""
    z = np.random.default_rng(n).normal(size=n)
    d = mean + sd * (z - z.mean()) / z.std(ddof=1)
    control = 2.0 + np.random.default_rng(n + 1).normal(0, 0.05, size=n)
    return _table(list(control + d), list(control))


def test_paired_ci_matches_a_hand_computation():
    row = compare(_table(ARM, CONTROL), "base", "val_loss").loc["x"]
    d = np.subtract(ARM, CONTROL)  # -0.01, 0, -0.03, 0, -0.015
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert row["test"] == "paired" and row["diff"] == pytest.approx(-0.011)
    assert row["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.011 - half, -0.011 + half))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(sps.ttest_rel(ARM, CONTROL).confidence_interval()))
    assert compare(_table(ARM, CONTROL), "base", "val_loss", ci_level=0.99).loc["x", "ci_low"] < row["ci_low"]


def test_welch_ci_uses_the_welch_satterthwaite_df():
    arm, control = [2.40, 2.45, 2.47], [2.50, 2.51, 2.58, 2.49]
    row = compare(_table(arm, control, seeds=(10, 11, 12)), "base", "val_loss").loc["x"]
    va, vc = np.var(arm, ddof=1) / 3, np.var(control, ddof=1) / 4
    df = (va + vc) ** 2 / (va**2 / 2 + vc**2 / 3)
    half = sps.t.ppf(0.975, df) * np.sqrt(va + vc)
    diff = np.mean(arm) - np.mean(control)
    assert row["test"] == "welch" and np.isnan(row["sd_diff"])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((diff - half, diff + half))
    assert row["mde"] > abs(row["ci_high"] - row["ci_low"]) / 2  # detecting needs more than excluding zero


def test_ci_contains_the_mean_and_shrinks_like_one_over_sqrt_n():
    widths = {}
    for n in (4, 16, 64):
        row = compare(_paired_sample(n, -0.01, 0.02), "base", "val_loss").loc["x"]
        assert row["ci_low"] < row["diff"] < row["ci_high"] and row["diff"] == pytest.approx(-0.01)
        widths[n] = row["ci_high"] - row["ci_low"]
    # width = 2 t_{n-1} sd / sqrt(n): halves per 4x pairs, up to the t quantile's shrinking
    assert widths[16] / widths[64] == pytest.approx(2 * sps.t.ppf(0.975, 15) / sps.t.ppf(0.975, 63))
    assert 2.0 < widths[16] / widths[64] < 2.2 and 2.0 < widths[4] / widths[16] < 3.0


def test_seeds_needed_matches_gpower():
    assert seeds_needed(sd_diff=1.0, effect=1.0, alpha=0.05) == 10
    assert seeds_needed(sd_diff=0.01, effect=-0.005, alpha=0.05) == 34  # sign and scale do not matter
    assert seeds_needed(sd_diff=1.0, effect=0.5, alpha=0.05, two_sided=False) == 27


def test_power_without_an_effect_is_alpha():
    for df in (1, 4, 30):  # both tails count for a two-sided test
        assert t_test_power(0.0, df, alpha=0.05) == pytest.approx(0.05)
        assert t_test_power(0.0, df, alpha=0.05, two_sided=False) == pytest.approx(0.05)


def test_seeds_needed_agrees_with_a_simulated_paired_t_test():
    rng = np.random.default_rng(0)
    trials, tol = 20_000, 3 * np.sqrt(0.8 * 0.2 / 20_000)  # 3 Monte-Carlo standard errors
    simulated = {}
    for n in (9, 10):
        d = rng.normal(1.0, 1.0, size=(trials, n))  # paired differences, effect = sd = 1
        t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
        simulated[n] = np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1))
        assert simulated[n] == pytest.approx(t_test_power(np.sqrt(n), n - 1, alpha=0.05), abs=tol)
    assert simulated[10] >= 0.8 - tol and simulated[9] < 0.8


def test_mde_is_the_effect_seeds_needed_can_detect():
    for sd, effect in ((0.008, 0.004), (0.006, 0.0124), (1.0, 0.3)):
        n = seeds_needed(sd_diff=sd, effect=effect)
        assert mde(sd_diff=sd, n=n) <= abs(effect) < mde(sd_diff=sd, n=n - 1) or n == 2
        found = mde(sd_diff=sd, n=n)
        assert t_test_power(found / (sd / np.sqrt(n)), n - 1) == pytest.approx(0.8, abs=1e-8)


def test_monotonicity_and_exact_search():
    mdes = [mde(sd_diff=1.0, n=n) for n in range(2, 40)]
    assert all(a > b for a, b in pairwise(mdes))
    needed = [seeds_needed(sd_diff=1.0, effect=e) for e in (0.2, 0.5, 1.0, 2.0, 10.0, 60.0)]
    assert all(a > b for a, b in pairwise(needed)) and needed[-2:] == [3, 2]  # mde(2) = 57.7 sd
    assert seeds_needed(sd_diff=2.0, effect=0.5) > seeds_needed(sd_diff=1.0, effect=0.5)
    assert seeds_needed(sd_diff=1.0, effect=0.5) > seeds_needed(sd_diff=1.0, effect=0.5, alpha=0.05)
    assert seeds_needed(sd_diff=1.0, effect=0.5, power=0.9) > seeds_needed(sd_diff=1.0, effect=0.5)
    for effect in (0.3, 0.7, 1.3):  # the bisection finds the first n a linear scan finds
        scan = next(n for n in range(2, 1000) if t_test_power(effect * np.sqrt(n), n - 1) >= 0.8)
        assert seeds_needed(sd_diff=1.0, effect=effect) == scan


def test_compare_reports_the_mde_of_the_pairs_used():
    df = _paired_sample(6, -0.004, 0.008)
    row = compare(df, "base", "val_loss").loc["x"]
    assert row["mde"] == pytest.approx(mde(sd_diff=0.008, n=6, alpha=0.01))
    looser = compare(df, "base", "val_loss", alpha=0.05, power=0.5).loc["x"]
    assert looser["mde"] == pytest.approx(mde(sd_diff=0.008, n=6, alpha=0.05, power=0.5))
    assert looser["mde"] < row["mde"]


def test_undefined_statistics_are_nan_with_a_note():
    single = compare(_table([2.4], [2.5]), "base", "val_loss").loc["x"]
    constant = compare(_table([2.4, 2.5, 2.6], [2.5, 2.6, 2.7]), "base", "val_loss").loc["x"]
    for row, note in ((single, "fewer than 2"), (constant, "zero variance")):
        assert all(np.isnan(row[c]) for c in ("ci_low", "ci_high", "sd_diff", "mde", "t", "p", "p_rule"))
        assert note in row["note"] and not row["clears_rule"]
    assert constant["diff"] == pytest.approx(-0.1)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="n >= 2"):
        mde(sd_diff=1.0, n=1)
    with pytest.raises(ValueError, match="sd_diff > 0"):
        mde(sd_diff=0.0, n=5)
    with pytest.raises(ValueError, match="effect != 0"):
        seeds_needed(sd_diff=1.0, effect=0.0)
    with pytest.raises(ValueError, match="max_n=100"):
        seeds_needed(sd_diff=1.0, effect=0.1, max_n=100)
    with pytest.raises(ValueError, match="power"):
        compare(_table(ARM, CONTROL), "base", "val_loss", power=1.5)


def test_paired_differences_one_row_per_arm_and_seed():
    df = pd.concat([_table(ARM, CONTROL), pd.DataFrame([{"arm": "y", "seed": 1, "val_loss": 2.0},
                                                       {"arm": "z", "seed": 99, "val_loss": 2.0}])])
    pairs = paired_differences(df, "base", "val_loss")
    assert list(pairs.columns) == ["arm", "seed", "val_loss", "val_loss_control", "diff"]
    x = pairs[pairs["arm"] == "x"]
    assert list(x["seed"]) == [0, 1, 2, 3, 4] and x["diff"].to_numpy() == pytest.approx(np.subtract(ARM, CONTROL))
    assert pairs[pairs["arm"] == "y"]["diff"].tolist() == pytest.approx([2.0 - 2.47])
    assert "z" not in set(pairs["arm"])  # no shared seed, no row
    assert x["diff"].mean() == pytest.approx(compare(df, "base", "val_loss").loc["x", "diff"])
    with pytest.raises(ValueError, match="repeats within an arm"):
        paired_differences(pd.concat([df, df.head(1)]), "base", "val_loss")
    with pytest.raises(ValueError, match="control arm 'nope'"):
        paired_differences(df, "nope", "val_loss")
