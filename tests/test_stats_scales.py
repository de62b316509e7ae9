"""scale_difference: Welch's test on two scales' per-seed paired differences (diff of diffs)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from pgolf.research.stats import scale_difference


def _two_scales(effects: dict[str, list[float]], offsets: dict[str, list[float]]) -> pd.DataFrame:
    """Control = 2.0 + a per-seed offset (large, shared with the arm); arm = control + the given effect."""
    rows = []
    for scale, diffs in effects.items():
        for seed, (d, off) in enumerate(zip(diffs, offsets[scale])):
            rows.append({"scale": scale, "arm": "control", "seed": seed, "q_val_bpb": 2.0 + off})
            rows.append({"scale": scale, "arm": "gate", "seed": seed, "q_val_bpb": 2.0 + off + d})
    return pd.DataFrame(rows)


def test_welch_on_paired_differences_matches_closed_form_and_scipy():
    # effects 0.01*[1,2,3] at micro (mean 0.02, var 1e-4) and 0.01*[4,6,8] at small (mean 0.06, var 4e-4):
    # se = 0.01*sqrt(1/3 + 4/3), t = 4/sqrt(5/3) = 3.0984, df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17
    micro, small = [0.01, 0.02, 0.03], [0.04, 0.06, 0.08]
    runs = _two_scales({"micro": micro, "small": small},
                       {"micro": [0.3, -0.2, 0.05], "small": [-0.4, 0.1, 0.25]})  # offsets cancel in pairs
    row = scale_difference(runs, "gate", "control", "q_val_bpb", ["micro", "small"])
    assert row["scale"] == "small" and row["scale_ref"] == "micro" and row["n_pairs"] == row["n_pairs_ref"] == 3
    assert row["diff_ref"] == pytest.approx(0.02) and row["diff"] == pytest.approx(0.06)
    assert row["diff_of_diffs"] == pytest.approx(0.04)
    assert row["t"] == pytest.approx(4 / np.sqrt(5 / 3)) and row["df"] == pytest.approx(50 / 17)
    reference = sps.ttest_ind(small, micro, equal_var=False)
    assert row["p"] == pytest.approx(reference.pvalue) and row["t"] == pytest.approx(reference.statistic)
    half = sps.t.ppf(0.975, 50 / 17) * 0.01 * np.sqrt(5 / 3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.04 - half, 0.04 + half))
    # the reference scale is the first: swapping the scales flips the sign, not p
    swapped = scale_difference(runs, "gate", "control", "q_val_bpb", ["small", "micro"])
    assert swapped["diff_of_diffs"] == pytest.approx(-0.04) and swapped["p"] == pytest.approx(row["p"])


def test_unequal_seeds_and_same_effect_give_a_large_p():
    rng = np.random.default_rng(1)
    micro, small = list(-0.01 + rng.normal(0, 0.002, 10)), list(-0.01 + rng.normal(0, 0.002, 3))
    runs = _two_scales({"micro": micro, "small": small},
                       {"micro": list(rng.normal(0, 0.05, 10)), "small": list(rng.normal(0, 0.05, 3))})
    row = scale_difference(runs, "gate", "control", "q_val_bpb", ("micro", "small"))
    assert (row["n_pairs_ref"], row["n_pairs"]) == (10, 3)
    assert row["p"] == pytest.approx(sps.ttest_ind(small, micro, equal_var=False).pvalue)
    assert row["p"] > 0.05 and row["ci_low"] < 0 < row["ci_high"]


def test_too_few_pairs_gives_nan_and_a_missing_arm_or_bad_scales_an_error():
    runs = _two_scales({"micro": [0.01, 0.02, 0.03], "small": [0.05]}, {"micro": [0, 0, 0], "small": [0]})
    row = scale_difference(runs, "gate", "control", "q_val_bpb", ["micro", "small"])
    assert np.isnan(row["p"]) and "fewer than 2 seed pairs" in row["note"]
    assert row["diff_of_diffs"] == pytest.approx(0.03)
    no_arm_at_small = runs[(runs["scale"] == "micro") | (runs["arm"] == "control")]
    with pytest.raises(ValueError, match="scale 'small' has no runs of arm 'gate'; arms there: \\['control'\\]"):
        scale_difference(no_arm_at_small, "gate", "control", "q_val_bpb", ["micro", "small"])
    with pytest.raises(ValueError, match="two different scales"):
        scale_difference(runs, "gate", "control", "q_val_bpb", ["micro", "micro"])


def test_scale_verdict_claims_a_difference_only_when_the_adjusted_p_is_below_alpha():
    from pgolf.research.report import scale_verdict
    runs = _two_scales({"micro": [0.01, 0.02, 0.03], "small": [0.04, 0.06, 0.08]},
                       {"micro": [0, 0, 0], "small": [0, 0, 0]})
    row = scale_difference(runs, "gate", "control", "q_val_bpb", ["micro", "small"])
    regimes = {"micro": "6.6 tokens/param", "small": "1.0 tokens/param"}
    text = scale_verdict(pd.concat([row, pd.Series({"p_holm": 0.001})]),
                         "gate", "q_val_bpb", regimes)
    assert "they differ" in text and "micro (6.6 tokens/param)" in text and "larger" not in text
    text = scale_verdict(pd.concat([row, pd.Series({"p_holm": 0.2})]), "gate", "q_val_bpb", regimes)
    assert "no difference between the two is detected" in text and "Holm-adjusted 0.2" in text
    assert "they differ" not in text and "grows" not in text and "shrinks" not in text
