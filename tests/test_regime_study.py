"""Notebook 08's analyses (pgolf.research.regime_study), its figure and its rows of `pgolf results`, on a synthetic
runs folder: regime runs of the control and the three arms, micro runs of 06's loop and 02's QAT, and the stored
int6 sweeps. No training, no dataset."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from pgolf.core.config import apply_overrides
from pgolf.core.model import build_model
from pgolf.research import bits_sweep, figures, gptq_sweep, protocol, results_table
from pgolf.research import regime_study as rs
from pgolf.research.results import load_runs
from pgolf.research.tables import write_table

REGIME_SEEDS, MICRO_SEEDS = range(5), range(4)
# per arm: (q_val_bpb shift vs control, val_bpb shift, step time factor)
REGIME_ARMS = {"control": (0.0, 0.0, 1.0), rs.LOOP: (-0.010, -0.010, 1.4), rs.SKIP: (-0.002, -0.002, 1.05),
               rs.QAT: (-0.006, 0.001, 1.2)}
MICRO_ARMS = {"control": (0.0, 0.0, 1.0), rs.MICRO_LOOP: (0.002, 0.002, 1.5), rs.QAT: (0.0, 0.0, 1.1)}


def _noise(arm, seed):
    """Each arm's per-seed scatter around its shift (none for the control)."""
    return 0.0 if arm == "control" else 0.0003 * ((5 * seed + len(arm)) % 4)


@functools.cache
def _config_json(scale, overrides_json):
    return apply_overrides(protocol.control_config(scale), json.loads(overrides_json)).to_json()


def _write_run(root, scale, arm, seed, shift, overrides):
    q_shift, v_shift, slow = shift
    base = 2.5 + 0.01 * seed + 0.0003 * seed**2
    val = base + v_shift + 0.0002 * (seed % 2) + _noise(arm, seed)
    q = base + 0.001 + q_shift + 0.0001 * (seed % 3) + _noise(arm, seed)
    run = root / scale / f"{arm}-s{seed}-k"
    run.mkdir(parents=True)
    (run / "config.json").write_text(_config_json(scale, json.dumps(overrides, sort_keys=True)))
    (run / "summary.json").write_text(json.dumps({
        "status": "finished", "name": run.name, "arm": arm, "seed": seed, "steps": 750 if scale == "regime" else 400,
        "val_bpb": val, "val_loss": val / 0.6, "q_val_bpb": q, "q_val_loss": q / 0.6, "artifact_bytes": 1000,
        "code_bytes": 1, "step_avg_ms": 100.0 * slow * (1 + 0.01 * seed), "train_time_ms": 75_000.0 * slow,
        "val_tokens_scored": 1000, "qat_step": 640 if arm == rs.QAT else None,
        "loop_step": 375 if arm == rs.LOOP else None}))
    on = {rs.LOOP: 375, rs.QAT: 640}.get(arm)  # the technique's step time applies from its switch on
    ms = [100.0 * (slow if on is not None and step > on else 1.0 if on is not None else slow) for step in range(1, 751)]
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "train_loss": 3.0, "train_time_ms": t}) + "\n"
                                               for i, t in enumerate(np.cumsum(ms))))
    sha = "b" * 40 if arm == rs.SKIP else "a" * 40  # the skip-gate runs: trained by later code
    (run / "environment.json").write_text(json.dumps({"git_sha": sha, "git_dirty": False}))
    (run / "train.log").write_text(f"final_int8_zlib_roundtrip val_loss:1 val_bpb:{q:.4f} eval_time:{5000 + seed}ms\n")


def _sweep_rows(scale, seeds, gap):
    rows = []
    for s in seeds:
        base = 2.5 + 0.01 * s + 0.0003 * s**2
        for bits, g in ((8, 0.0005), (6, gap + 0.0001 * s)):
            rows.append(bits_sweep.BitsSweepRow(scale=scale, arm="control", seed=s, bits=bits, val_bpb_fp=base,
                                                q_val_bpb=base + g, gap_bpb=g, artifact_bytes=900, tokens_scored=1000))
    return rows


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("regime") / "runs"
    arms = {"control": {}, **rs.arms()}
    for arm, shift in REGIME_ARMS.items():
        for s in REGIME_SEEDS:
            _write_run(root, "regime", arm, s, shift, arms[arm])
    micro_arms = {"control": {}, rs.MICRO_LOOP: {"model.loop_layers": [1], "model.loop_count": 1},
                  rs.QAT: rs.arms()[rs.QAT]}
    for arm, shift in MICRO_ARMS.items():
        for s in MICRO_SEEDS:
            _write_run(root, "micro", arm, s, shift, micro_arms[arm])
    regime = load_runs(root / "regime")
    micro = load_runs(root / "micro")
    figures.write_selection(root, rs.STUDY, regime)
    figures.write_selection(root, "frontier", micro[micro["arm"] != rs.QAT])
    figures.write_selection(root, "qat", micro[micro["arm"] != rs.MICRO_LOOP])
    write_table(rs.BITS_TABLE.path(root), {}, rs.BITS_TABLE.frame(_sweep_rows("regime", REGIME_SEEDS, 0.008)))
    write_table(bits_sweep.TABLE.path(root), {}, bits_sweep.TABLE.frame(_sweep_rows("micro", MICRO_SEEDS, 0.002)))
    gptq = []
    for s in REGIME_SEEDS:
        base = 2.5 + 0.01 * s + 0.0003 * s**2
        for quantizer, clip, gap in (("rtn", "quantile", 0.009 + 0.0001 * s), ("gptq", "quantile", 0.004 + 0.0002 * s),
                                     ("rtn", "sdclip", 0.02), ("gptq", "sdclip", 0.015)):
            gptq.append(gptq_sweep.GPTQSweepRow(run=f"regime/control-s{s}-k", seed=s, bits=6, quantizer=quantizer,
                                                clip=clip, val_bpb_fp=base, q_val_bpb=base + gap, gap_bpb=gap,
                                                artifact_bytes=800, tokens_scored=1000))
    write_table(rs.GPTQ_TABLE.path(root), {}, rs.GPTQ_TABLE.frame(gptq))
    return root


@pytest.fixture
def root(template, tmp_path):
    """A fresh copy of the synthetic runs folder (selection files name runs relative to it)."""
    return Path(shutil.copytree(template, tmp_path / "runs"))


def _regime(root):
    return figures.with_control(figures.selected_runs(root, rs.STUDY))


def test_the_loop_sits_at_the_unet_middle_and_the_gates_are_trained_parameters():
    cfg = apply_overrides(protocol.control_config("regime"), rs.arms()[rs.LOOP])
    encoder = cfg.model.num_layers // 2
    assert cfg.model.loop_layers == (encoder - 1, encoder) and cfg.model.loop_count == 2  # three passes
    gated = apply_overrides(protocol.control_config("regime"), rs.arms()[rs.SKIP])
    import torch
    with torch.device("meta"):
        names = dict(build_model(gated).named_parameters())
    assert names["skip_gates"].shape == (encoder, gated.model.model_dim)
    qat = apply_overrides(protocol.control_config("regime"), rs.arms()[rs.QAT])
    assert (qat.qat.enabled, qat.export.bits_attn, qat.export.bits_mlp) == (True, rs.QAT_BITS, rs.QAT_BITS)


def test_scale_difference_is_welchs_test_with_its_interval():
    a, b = np.array([-0.010, -0.012, -0.009, -0.011, -0.013]), np.array([0.002, 0.001, 0.003, 0.002])
    got = rs.scale_difference(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert got["p"] == pytest.approx(ref.pvalue) and got["t"] == pytest.approx(ref.statistic)
    assert got["diff"] == pytest.approx(a.mean() - b.mean()) and got["ci_low"] < got["diff"] < got["ci_high"]
    ci = ref.confidence_interval(0.95)
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    with pytest.raises(ValueError, match="at least 2 values per sample"):
        rs.scale_difference(a, b[:1])


def test_effect_pairs_put_each_technique_at_both_regimes_side_by_side(root):
    micro_bits = bits_sweep.TABLE.read(root)[1]
    micro = {study: figures.with_control(figures.selected_runs(root, study)) for study in ("frontier", "qat")}
    pairs = rs.effect_pairs(_regime(root), rs.BITS_TABLE.read(root)[1], micro["frontier"], micro["qat"], micro_bits)
    order = list(dict.fromkeys(zip(pairs["technique"], pairs["scale"])))
    assert order == [("depth recurrence", "regime"), ("depth recurrence", "micro"), ("late QAT int6", "regime"),
                     ("late QAT int6", "micro"), ("int6 gap without QAT", "regime"), ("int6 gap without QAT", "micro")]
    loop = pairs[(pairs["technique"] == "depth recurrence") & (pairs["scale"] == "regime")]
    loop_noise = np.array([_noise(rs.LOOP, s) for s in REGIME_SEEDS])
    assert loop["diff"].to_numpy() == pytest.approx(-0.010 + loop_noise)
    gap = pairs[(pairs["technique"] == "int6 gap without QAT") & (pairs["scale"] == "micro")]
    assert gap["diff"].to_numpy() == pytest.approx(0.002 + 0.0001 * np.arange(4))
    tests = rs.scale_tests(pairs)
    assert list(tests.index) == ["depth recurrence", "late QAT int6", "int6 gap without QAT"]
    micro_noise = np.array([_noise(rs.MICRO_LOOP, s) for s in MICRO_SEEDS])
    assert tests.loc["depth recurrence", "diff"] == pytest.approx(-0.012 + loop_noise.mean() - micro_noise.mean())
    assert tests.loc["int6 gap without QAT", "diff"] == pytest.approx(0.006 + 0.0001 * (2 - 1.5))
    # without 06's and 02's micro runs only the regime's own rows remain
    alone = rs.effect_pairs(_regime(root), rs.BITS_TABLE.read(root)[1], None, None, None)
    assert set(alone["scale"]) == {"regime"} and rs.scale_tests(alone).empty


def test_the_int6_routes_qat_and_gptq_and_the_gap_each_closes(root):
    runs, bits, gptq = _regime(root), rs.BITS_TABLE.read(root)[1], rs.GPTQ_TABLE.read(root)[1]
    qat = rs.qat_tests(runs, bits)
    assert list(qat.index) == ["score", "gap", "pre_quant"] and set(qat["reference"]) == {"control@int6"}
    seeds = np.arange(5)
    base = 2.5 + 0.01 * seeds + 0.0003 * seeds**2
    noise = np.array([_noise(rs.QAT, s) for s in seeds])
    qat_q = base + 0.001 - 0.006 + 0.0001 * (seeds % 3) + noise
    assert qat.loc["score", "diff"] == pytest.approx(np.mean(qat_q - (base + 0.008 + 0.0001 * seeds)))
    g = rs.gptq_tests(gptq)
    assert g.loc["score", "diff"] == pytest.approx(np.mean(-0.005 + 0.0001 * seeds))
    closed = rs.gap_closed(runs, bits, gptq)
    assert closed.loc["GPTQ (same weights)", "closed_share"] == pytest.approx(0.0048 / 0.0092)
    qat_gap = np.mean(qat_q - (base + 0.001 + 0.0002 * (seeds % 2) + noise))
    assert closed.loc[f"QAT ({rs.QAT})", "gap_with"] == pytest.approx(qat_gap)
    routes = rs.qat_vs_gptq(runs, gptq)
    assert routes["diff"] == pytest.approx(np.mean(qat_q - (base + 0.004 + 0.0002 * seeds)))
    short = gptq.assign(tokens_scored=500)
    with pytest.raises(ValueError, match="scored \\[500\\] targets, the QAT runs 1000"):
        rs.qat_vs_gptq(runs, short)


def test_costs_step_time_ratios_by_seed_and_the_timed_seconds(root, tmp_path):
    runs = _regime(root)
    steps = rs.step_time_summary(runs)
    assert steps.loc[rs.LOOP, "mean"] == pytest.approx(1.4) and int(steps.loc[rs.LOOP, "n"]) == 5
    assert steps.loc[rs.LOOP, "on_mean"] == pytest.approx(1.4) and steps.loc[rs.QAT, "on_min"] == pytest.approx(1.2)
    assert (steps.loc[rs.LOOP, "from_step"], steps.loc[rs.QAT, "from_step"]) == (375, 640)
    assert np.isnan(steps.loc[rs.SKIP, "on_mean"])  # on from the start (and other code)
    assert (steps.loc[rs.LOOP, "n"], steps.loc[rs.SKIP, "n"], steps.loc[rs.SKIP, "n_all"]) == (5, 0, 5)
    assert np.isnan(steps.loc[rs.SKIP, "mean"])  # trained by other code than the control: not compared
    seconds = rs.run_seconds(runs)
    control = seconds[seconds["arm"] == "control"].sort_values("seed")
    assert control["timed_s"].to_numpy() == pytest.approx(75.0 + 5.0 + 0.001 * np.arange(5))
    broken = runs.iloc[:1].copy()
    (tmp_path / "nolog").mkdir()
    broken["path"] = str(tmp_path / "nolog")
    with pytest.raises(ValueError, match="train.log: no 'final_..._roundtrip"):
        rs.run_seconds(broken)


def test_the_sweeps_store_their_tables_under_the_study_that_names_them(root, monkeypatch):
    runs = _regime(root)
    controls = runs[runs["arm"] == "control"]
    stored = rs.BITS_TABLE.read(root)[1]
    monkeypatch.setattr(bits_sweep, "bits_sweep", lambda **kw: stored)
    rs.BITS_TABLE.path(root).unlink()
    bits_sweep.bits_sweep_table(runs_root=root, runs=controls, arms=["control"], bits=[8, 6], eval_tokens=1000,
                                dataset="unused", table=rs.BITS_TABLE, log=lambda _: None)
    assert rs.BITS_TABLE.path(root).is_file() and rs.BITS_TABLE.path(root).parent.parent.name == rs.STUDY
    assert json.loads(bits_sweep.TABLE.path(root).read_text())["inputs"] == {}  # 02's table untouched
    gptq = rs.GPTQ_TABLE.read(root)[1]
    monkeypatch.setattr(gptq_sweep, "gptq_sweep", lambda **kw: gptq)
    rs.GPTQ_TABLE.path(root).unlink()
    gptq_sweep.gptq_sweep_table(runs_root=root, run_dirs=list(controls["path"]), dataset="unused", bits=[6],
                                eval_tokens=1000, calibration_batches=2, table=rs.GPTQ_TABLE, log=lambda _: None)
    assert rs.GPTQ_TABLE.path(root).is_file() and not gptq_sweep.TABLE.path(root).exists()


def test_the_figure_is_built_from_runs_alone_and_byte_identical(root, tmp_path):
    out = tmp_path / "figs"
    paths = figures.regenerate([rs.STUDY], runs_root=root, out_dir=out)
    assert [p.name for p in paths] == [f"{rs.STUDY}.svg"] and paths[0].stat().st_size > 1000
    text = paths[0].read_text()
    assert all(f'id="axes_{i}"' in text for i in (1, 2, 3))  # arms, the int6 routes, regime vs micro
    first = paths[0].read_bytes()
    assert figures.regenerate([rs.STUDY], runs_root=root, out_dir=out)[0].read_bytes() == first
    for study in ("frontier", "qat"):  # without 06's and 02's micro runs and sweep: no regime-vs-micro panel
        (root / study / figures.SELECTION_FILE).unlink()
    bits_sweep.TABLE.path(root).unlink()
    for run in (root / "micro").iterdir():
        (run / "summary.json").unlink()
    assert 'id="axes_3"' not in figures.regime_figure(root, out)[0].read_text()
    assert figures.regime_figure(tmp_path / "empty", out) == []


def test_pgolf_results_lists_the_regime_rows(root):
    rows = [r for r in results_table.results_rows(root) if r.startswith("| 08 regime_study")]
    refs = [r.split(" | ")[2:4] for r in rows]
    assert refs == [["`loop_middle`", "`control`"], ["`qat_int6`", "`control`"], ["`skip_gates`", "`control`"],
                    ["`qat_int6`", "`control@int6`"], ["`gptq quantile`", "`rtn quantile`"]]  # selection order
    loop = -0.010 + np.mean([_noise(rs.LOOP, s) for s in REGIME_SEEDS])
    assert f"| {loop:+.4f} |" in rows[0] and "| 5 |" in rows[0]


def test_the_figure_keeps_its_titles_and_labels_inside_and_apart(root, tmp_path, monkeypatch):
    from test_figures import _captured, _texts
    seen = _captured(monkeypatch)
    figures.regime_figure(root, tmp_path / "figs")
    ((stem, fig),) = seen
    assert stem == rs.STUDY and fig.get_figwidth() <= 7.0
    texts, box = _texts(fig)
    for i, (a, ea) in enumerate(texts):
        assert box.x0 - 1 <= ea.x0 and ea.x1 <= box.x1 + 1 and box.y0 - 1 <= ea.y0 and ea.y1 <= box.y1 + 1, a
        for b, eb in texts[i + 1:]:
            assert not ea.overlaps(eb), (a, b)
