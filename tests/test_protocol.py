"""The research protocol (pgolf.research.protocol) and the analyses built on paired differences: late QAT
against the control re-exported at the same bits, verdict sentences, the paired-difference figure."""

import numpy as np
import pandas as pd
import pytest

from pgolf.research import late_qat, plots, protocol
from pgolf.research.report import verdict
from pgolf.research.stats import compare, with_holm
from pgolf.running.presets import param_count


def test_scales_turn_the_protocol_switches_on_and_keep_the_default_off():
    from pgolf.core.config import Config
    for scale in protocol.SCALES.values():
        cfg = scale.config()
        assert cfg.data.order == "permuted" and cfg.model.init_seeding == "per_name"
        if scale.device == "cpu":  # GPU scales keep the record settings' official threshold
            assert cfg.export.keep_float_max_numel <= 4096  # every block matrix quantized at these widths
    assert Config().data.order == "sequential" and Config().model.init_seeding == "global"
    micro, small = protocol.get_scale("micro").config(), protocol.get_scale("small").config()
    assert param_count(micro) < param_count(small)
    with pytest.raises(ValueError, match="scale 'huge': unknown"):
        protocol.get_scale("huge")


def test_the_regime_scale_is_in_the_challenges_regime_and_the_others_are_not():
    """regime: >= 100 training tokens per non-embedding parameter inside one epoch of the embedded corpus
    (2,134,495 train tokens), deep enough for a loop at the U-Net middle; micro and small are far below."""
    from pgolf.research.scales import regime
    reg = regime(protocol.get_scale("regime").config())
    assert reg["tokens_per_non_embedding_param"] >= 100 and reg["tokens"] <= 2_134_495
    assert protocol.get_scale("regime").config().model.num_layers >= 8
    assert regime(protocol.get_scale("micro").config())["tokens_per_param"] == pytest.approx(6.64, abs=0.01)
    assert regime(protocol.get_scale("small").config())["tokens_per_param"] == pytest.approx(1.04, abs=0.01)
    assert regime(protocol.get_scale("micro").config(), steps=200)["tokens"] == 200 * 2048


@pytest.mark.parametrize("scale", ["micro", "small"])
def test_param_matched_swiglu_is_within_one_percent(scale):
    cfg = protocol.get_scale(scale).config()
    hidden = protocol.param_matched_hidden(cfg, "swiglu")
    matched = param_count(cfg.replace({"model.mlp": "swiglu", "model.mlp_hidden": hidden}))
    assert abs(matched / param_count(cfg) - 1) < 0.01
    # the seed's rounding rule is not matched at these widths
    rounded = param_count(cfg.replace({"model.mlp": "swiglu"}))
    assert rounded / param_count(cfg) - 1 > 0.01


def test_param_matching_refuses_what_it_cannot_match():
    cfg = protocol.get_scale("micro").config()
    with pytest.raises(ValueError, match="within 0%"):
        protocol.param_matched_hidden(cfg, "swiglu", tolerance=0.0)  # 3 * 64 * h never equals 2 * 64 * 128


def test_study_plans_one_shared_control_with_both_seeds(tmp_path, monkeypatch):
    seen = {}

    def fake_ablate(ablation, base, arms, seeds, **kw):
        seen.update(ablation=ablation, base=base, arms=arms, seeds=seeds, **kw)
        return pd.DataFrame({"arm": list(arms), "seed": [seeds[0]] * len(arms)})

    monkeypatch.setattr(protocol, "ablate", fake_ablate)
    runs = protocol.study("micro", {"b": {"model.mlp": "swiglu"}}, [3], overrides={"train.iterations": 2},
                          runs_root=tmp_path)
    assert seen["ablation"] == "micro" and list(seen["arms"]) == ["control", "b"] and seen["seeds"] == [3]
    assert seen["seed_keys"] == ("train.seed", "data.order_seed") and seen["base"].train.iterations == 2
    assert runs["shared_control"].tolist() == [True, False] and (runs["scale"] == "micro").all()
    with pytest.raises(ValueError, match="'control' is the shared control"):
        protocol.study("micro", {"control": {}})


def test_ablation_plan_sets_every_seed_key(tmp_path):
    from pgolf.research.ablate import plan
    base = protocol.get_scale("micro").config()
    runs = plan("micro", base, {"control": {}}, [4], runs_root=tmp_path, seed_keys=protocol.SEED_KEYS)
    assert runs[0].cfg.train.seed == 4 and runs[0].cfg.data.order_seed == 4


def _runs(effect: float, n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = 2.5 + rng.normal(0, 0.01, n)
    rows = []
    for seed in range(n):
        rows.append({"scale": "micro", "arm": "control", "seed": seed, "val_bpb": base[seed],
                     "q_val_bpb": base[seed] + 0.001, "val_loss": 2.0, "q_val_loss": 2.0})
        rows.append({"scale": "micro", "arm": "qat_int4", "seed": seed, "val_bpb": base[seed] + 0.002,
                     "q_val_bpb": base[seed] + 0.002 + 0.01 + effect + rng.normal(0, 0.001),
                     "val_loss": 2.0, "q_val_loss": 2.0})
    return pd.DataFrame(rows)


def _sweep(runs: pd.DataFrame) -> pd.DataFrame:
    ctl = runs[runs["arm"] == "control"]
    return pd.DataFrame({"scale": ctl["scale"], "arm": "control", "seed": ctl["seed"], "bits": 4,
                         "val_bpb_fp": ctl["val_bpb"], "q_val_bpb": ctl["val_bpb"] + 0.03,
                         "gap_bpb": 0.03, "artifact_bytes": 1, "tokens_scored": 1})


def test_late_qat_is_measured_against_the_control_at_the_same_bits():
    runs = _runs(effect=0.0)
    sweep = _sweep(runs)
    table = late_qat.comparisons(runs, sweep, {4: "qat_int4"})
    assert set(table.index) == {("micro", 4, m) for m in ("score", "gap", "pre_quant")}
    assert table.loc[("micro", 4, "score"), "reference"] == "control@int4"
    # QAT's score 0.012 above its fp, the control's 0.03: QAT lowers the score by about 0.018
    assert table.loc[("micro", 4, "score"), "diff"] == pytest.approx(-0.018, abs=0.002)
    assert table.loc[("micro", 4, "pre_quant"), "diff"] == pytest.approx(0.002, abs=1e-9)
    assert table.loc[("micro", 4, "gap"), "diff"] == pytest.approx(0.010 - 0.03, abs=0.002)
    diffs = late_qat.differences(runs, sweep, {4: "qat_int4"})
    assert diffs["arm"].unique().tolist() == ["int4 score", "int4 gap", "int4 pre_quant"]
    with pytest.raises(ValueError, match="no re-export of 'control' at 4 bits"):
        late_qat.comparisons(runs, sweep.assign(bits=6), {4: "qat_int4"})


def test_verdict_states_the_ci_p_and_mde():
    runs = _runs(effect=0.0)
    row = compare(runs, "control", "q_val_bpb").loc["qat_int4"]
    text = verdict(row, "qat_int4", "control", "q_val_bpb")
    assert "is higher by" in text and "95% CI [" in text and "p = " in text and "rule" not in text  # worse: no rule
    row = compare(_runs(effect=-0.03), "control", "q_val_bpb").loc["qat_int4"]
    text = verdict(row, "qat_int4", "control", "q_val_bpb")
    assert "is lower by" in text and "clears the 0.005-nat rule" in text and "one-sided p" in text
    null = runs.assign(q_val_bpb=np.where(runs["arm"] == "control", runs["q_val_bpb"],
                                          runs["q_val_bpb"] - 0.012 + np.tile([0.0005, -0.0005], 6)))
    row = compare(null, "control", "q_val_bpb").loc["qat_int4"]
    text = verdict(row, "qat_int4", "control", "q_val_bpb")
    assert text.startswith("not significant at this scale") and "MDE" in text and "excludes" in text


def test_paired_difference_figure(tmp_path):
    pairs = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                          "diff": [-0.01, -0.02, -0.015, 0.0, 0.01, -0.005]})
    fig = plots.plot_paired_deltas(pairs, threshold=0.007)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert any(np.allclose(line.get_ydata(), -0.007) for line in ax.get_lines())
    assert plots.t_interval_half_width(np.array([1.0, 2.0, 3.0])) == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert plots.savefig(fig, tmp_path / "f.svg").stat().st_size > 1000


def test_verdict_uses_the_holm_adjusted_p_when_the_notebook_gives_it():
    row = compare(_runs(effect=-0.03), "control", "q_val_bpb").loc["qat_int4"].copy()
    row["p"] = 0.004  # significant alone at alpha 0.01
    assert "is lower by" in verdict(row, "qat_int4", "control", "q_val_bpb")
    family = with_holm(pd.DataFrame([row, row.copy().rename("other")]).assign(p=[0.004, 0.3]))
    assert family["p_holm"].tolist() == pytest.approx([0.008, 0.3])  # 2 tests: still significant
    text = verdict(family.iloc[0], "qat_int4", "control", "q_val_bpb")
    assert "is lower by" in text and "p = 0.004, Holm-adjusted 0.008" in text
    family = with_holm(pd.DataFrame([row] * 5))  # 5 tests: 0.02
    text = verdict(family.iloc[0], "qat_int4", "control", "q_val_bpb")
    assert text.startswith("not significant at this scale (α = 0.01)") and "Holm-adjusted 0.02" in text
