import numpy as np
import pandas as pd
import pytest

from pgolf.research.stats import RULE_NATS, compare, holm, rule_threshold, summarize

BPB_PER_NAT = 0.59  # roughly sp1024's val_bpb / val_loss


def _runs(effects: dict[str, float], seeds=(0, 1, 2, 3), noise=0.0005) -> pd.DataFrame:
    """Synthetic runs: val_loss = 2.0 + arm effect + a per-seed offset shared by all arms + noise."""
    rng = np.random.default_rng(0)
    seed_offset = {s: rng.normal(0, 0.01) for s in seeds}
    rows = [{"arm": arm, "seed": s, "val_loss": 2.0 + effect + seed_offset[s] + rng.normal(0, noise)}
            for arm, effect in effects.items() for s in seeds]
    df = pd.DataFrame(rows)
    df["val_bpb"] = df["val_loss"] * BPB_PER_NAT
    return df


def test_summarize_counts_mean_std_per_arm():
    summary = summarize(_runs({"base": 0.0, "x": -0.1}), "val_loss")
    assert list(summary.index) == ["base", "x"]
    assert (summary["n"] == 4).all()
    assert summary.loc["x", "mean"] == pytest.approx(summary.loc["base", "mean"] - 0.1, abs=0.005)


def test_big_paired_effect_clears_the_rule():
    result = compare(_runs({"base": 0.0, "better": -0.02}), "base", "val_loss").loc["better"]
    assert result["test"] == "paired" and result["n_pairs"] == 4
    assert result["diff"] == pytest.approx(-0.02, abs=0.002)
    assert result["p"] < 1e-4 and result["p_rule"] < 0.01
    assert bool(result["clears_rule"])


def test_bpb_threshold_comes_from_the_data_ratio():
    df = _runs({"base": 0.0, "better": -0.02})
    assert rule_threshold(df, "val_bpb") == pytest.approx(RULE_NATS * BPB_PER_NAT)
    assert bool(compare(df, "base", "val_bpb").loc["better", "clears_rule"])
    with pytest.raises(ValueError, match="val_loss"):
        rule_threshold(df.drop(columns="val_loss"), "val_bpb")


def test_no_effect_or_too_small_effect_does_not_clear():
    df = _runs({"base": 0.0, "same": 0.0, "small": -0.003, "worse": 0.02})
    result = compare(df, "base", "val_loss")
    assert not result["clears_rule"].any()
    assert result.loc["small", "p"] < 0.01  # a real difference, but under 0.005 nats


def test_missing_pairs_fall_back_to_welch():
    df = _runs({"base": 0.0, "better": -0.05}, noise=0.002)
    df.loc[df["arm"] == "better", "seed"] += 100  # no common seeds
    result = compare(df, "base", "val_loss").loc["better"]
    assert result["test"] == "welch" and np.isfinite(result["p"])
    assert "Welch" in result["note"]


def test_single_run_gives_nan_p_and_an_explanation():
    df = _runs({"base": 0.0, "better": -0.5}, seeds=(0,))
    result = compare(df, "base", "val_loss").loc["better"]
    assert np.isnan(result["p"]) and np.isnan(result["p_rule"]) and np.isnan(result["t"])
    assert not result["clears_rule"] and "fewer than 2" in result["note"]
    assert np.isnan(summarize(df, "val_loss").loc["base", "std"])


def test_holm_steps_down_keeps_order_and_skips_nan():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06
    got = holm([0.01, 0.04, np.nan, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, np.nan, 0.06, 0.02])
    assert holm([0.6, 0.9]).tolist() == [1.0, 1.0]  # capped at 1
    assert holm([0.2]).tolist() == [0.2] and np.isnan(holm([np.nan])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])
