"""The analyses the notebooks run on saved weights (pgolf.research.{rescore,bits_sweep,eval_sweep,compression,
smear_gates,tables}), on micro run folders holding random trained-looking weights."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from pgolf_testing import random_state

from pgolf.core.config import Config
from pgolf.core.data.loader import load_validation_tokens, resolve_dataset
from pgolf.core.export import export_artifact, load_artifact
from pgolf.core.model import build_model
from pgolf.research import bits_sweep, compression, eval_sweep, figures, smear_gates
from pgolf.research.rescore import load_final_state, score_state, validation_slice
from pgolf.research.tables import AnalysisTable, MissingWeightsError
from pgolf.running import scoring
from pgolf.running.presets import get_preset

N_TOKENS = 1500  # validation targets per score: a few windows of the micro model's 64 tokens
QUANTIZE_ALL = {"export.keep_float_max_numel": 1024}  # the micro model's matrices are all below the official 65,536


def _run(root: Path, study: str, arm: str, seed: int, cfg: Config) -> Path:
    """A finished run folder as the trainer leaves it, with random trained-looking weights (a fresh init's zero
    output projections would make every context length score the same)."""
    run_dir = root / study / f"{arm}-s{seed}-0000000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(cfg.to_json())
    torch.save(random_state(build_model(cfg), seed), run_dir / "final_model.pt")
    q = 4.0 + 0.01 * (seed + 1) * (len(arm) % 3 + 1)  # differs by arm and seed: paired differences have a spread
    summary = {"status": "finished", "name": run_dir.name, "arm": arm, "seed": seed, "steps": 8, "val_bpb": 4.0,
               "val_loss": 2.8, "q_val_bpb": q, "q_val_loss": q * 0.7, "quant_gap_bpb": q - 4.0, "artifact_bytes": 1000}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def _table(run_dirs: list[Path]) -> pd.DataFrame:
    """The ablation table the notebooks pass on (arm, seed, path)."""
    rows = [json.loads((d / "summary.json").read_text()) | {"path": str(d)} for d in run_dirs]
    return pd.DataFrame(rows)


@pytest.fixture
def qat_runs(tmp_path, micro):
    cfg = micro(**QUANTIZE_ALL)
    dirs = [_run(tmp_path, "qat", arm, seed, cfg) for arm in ("no_qat", "qat_int6") for seed in (0, 1)]
    return tmp_path, _table(dirs)


def test_validation_slice_is_the_head_of_the_scored_stream(micro, small_dataset):
    cfg = micro()
    tokens, luts = validation_slice(cfg=cfg, dataset=small_dataset, n_tokens=N_TOKENS)
    full = load_validation_tokens(resolve_dataset(cfg.data, 1024).val_files, 64, tail="score")
    assert torch.equal(tokens, full[: N_TOKENS + 1]) and luts.base_bytes.numel() == 1024
    with pytest.raises(ValueError, match=f"n_tokens={full.numel()}: expected 1..{full.numel() - 1}"):
        validation_slice(cfg=cfg, dataset=small_dataset, n_tokens=full.numel())


def test_score_state_equals_pgolf_eval_on_the_same_targets(micro, small_dataset):
    """Two paths to one number: the analyses' slice + scorer, and `pgolf eval` limited to the same targets."""
    cfg = micro()
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    tokens, luts = validation_slice(cfg=cfg, dataset=small_dataset, n_tokens=N_TOKENS)
    ours = score_state(cfg=cfg, state=state, tokens=tokens, luts=luts, stride=32, batch_seqs=8)
    eval_cfg = cfg.replace({"eval.max_tokens": N_TOKENS, "eval.tail": "score", "eval.stride": 32,
                            "eval.batch_seqs": 8})
    theirs, mode = scoring.score_state(eval_cfg, state)
    assert "stride=32" in mode and ours.tokens == theirs.tokens == N_TOKENS
    assert ours.val_bpb == pytest.approx(theirs.val_bpb, abs=1e-12)


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="final_model.pt: no raw weights") as err:
        load_final_state(tmp_path)
    assert err.value.path == tmp_path / "final_model.pt"


def test_bits_sweep_rows_and_an_independent_point(qat_runs, small_dataset):
    _, runs = qat_runs
    table = bits_sweep.bits_sweep(runs=runs, arms=["no_qat"], bits=[8, 4], eval_tokens=N_TOKENS,
                                  dataset=small_dataset)
    assert list(table.columns) == bits_sweep.TABLE.columns
    assert table[["arm", "seed", "bits"]].values.tolist() == [["no_qat", 0, 8], ["no_qat", 0, 4],
                                                              ["no_qat", 1, 8], ["no_qat", 1, 4]]
    assert (table["gap_bpb"] == table["q_val_bpb"] - table["val_bpb_fp"]).all()
    assert (table["tokens_scored"] == N_TOKENS).all()
    # seed 1 at 4 bits, recomputed through `pgolf eval`'s scorer from an artifact of the same export
    run1 = Path(runs["path"].iloc[1])
    cfg = Config.from_json(run1 / "config.json")
    blob, _ = export_artifact(load_final_state(run1), cfg.replace({"export.bits_attn": 4, "export.bits_mlp": 4}).export,
                              control=cfg.model.control_patterns)
    ref, _ = scoring.score_state(cfg.replace({"eval.max_tokens": N_TOKENS, "eval.tail": "score"}), load_artifact(blob))
    row = table[(table["seed"] == 1) & (table["bits"] == 4)].iloc[0]
    assert row["artifact_bytes"] == len(blob) and row["q_val_bpb"] == pytest.approx(ref.val_bpb, abs=1e-12)


def test_cached_table_needs_no_weights_until_its_inputs_change(qat_runs, small_dataset):
    root, runs = qat_runs
    kw = {"runs_root": root, "runs": runs, "arms": ["no_qat", "qat_int6"], "bits": [8], "dataset": small_dataset}
    first = bits_sweep.bits_sweep_table(**kw, eval_tokens=N_TOKENS)
    stored = json.loads(bits_sweep.TABLE.path(root).read_text())
    assert stored["inputs"]["runs"] == [f"qat/{Path(p).name}" for p in runs["path"]]
    assert stored["inputs"]["embedding_bits"] == 8
    for p in runs["path"]:
        (Path(p) / "final_model.pt").unlink()  # a fresh clone: raw weights are not committed
    pd.testing.assert_frame_equal(bits_sweep.bits_sweep_table(**kw, eval_tokens=N_TOKENS), first)
    with pytest.raises(MissingWeightsError) as err:
        bits_sweep.bits_sweep_table(**kw, eval_tokens=N_TOKENS - 1)
    message = str(err.value)
    assert str(bits_sweep.TABLE.path(root)) in message and "(differing: eval_tokens)" in message
    assert f"{runs['path'].iloc[0]}/final_model.pt" in message
    assert "`pgolf notebooks run 02 -p rerun=True`" in message


def test_a_stored_table_of_another_schema_is_recomputed_or_refused(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Row:
        x: int
        y: float

    table = AnalysisTable(study="s", name="t", row=Row, notebook="09")
    path = table.path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"inputs": {"a": 1}, "rows": [{"x": 1}]}))  # written by older code: no y
    with pytest.raises(ValueError, match=r"lacks the columns \['y'\] of Row.*pgolf notebooks run 09 -p rerun=True"):
        table.read(tmp_path)
    new = table.cached(runs_root=tmp_path, inputs={"a": 1}, compute=lambda: table.frame([Row(2, 0.5)]))
    assert new.to_dict("records") == [{"x": 2, "y": 0.5}] and table.read(tmp_path)[0] == {"a": 1}


def test_eval_sweep_scores_the_same_targets_in_every_setting(tmp_path, micro, small_dataset):
    run_dir = _run(tmp_path, "micro", "control", 0, micro())
    settings = eval_sweep.eval_settings(train_len=64, eval_lens=[64, 128], strides=[0, 32, 64])
    assert [(s.setting, s.stride) for s in settings] == [
        ("L=64", 0), ("L=64", 32), ("L=128 NTK", 0), ("L=128 NTK", 32), ("L=128 NTK", 64),
        ("L=128 no NTK", 0), ("L=128 no NTK", 32), ("L=128 no NTK", 64)]
    table = eval_sweep.eval_sweep(run_dirs=[run_dir], dataset=small_dataset, eval_tokens=N_TOKENS, strides=[0, 32],
                                  eval_lens=[64, 128], batch_seqs=8)
    assert list(table.columns) == eval_sweep.TABLE.columns
    assert (table["tokens_scored"] == N_TOKENS).all()
    assert table["ntk"].tolist() == ["n/a", "n/a", "on", "on", "off", "off"]
    # non-overlapping windows forward each target once; stride 32 at L=64 forwards about twice as many tokens
    assert table["forward_tokens"].iloc[0] == N_TOKENS and table["forward_tokens"].iloc[1] > 1.9 * N_TOKENS
    assert table["val_bpb"].iloc[0] != table["val_bpb"].iloc[1]
    assert (table["run"] == f"micro/{run_dir.name}").all() and (table["seed"] == micro().train.seed).all()


def test_eval_setting_differences_are_against_the_same_runs_official_evaluation():
    rows = [{"run": f"r{seed}", "seed": seed, "setting": setting, "eval_len": length, "ntk": ntk, "stride": stride,
             "val_bpb": bpb, "forward_tokens": 10, "tokens_scored": 10}
            for seed, base in ((0, 2.0), (1, 2.5))
            for setting, length, ntk, stride, bpb in (("L=64", 64, "n/a", 0, base), ("L=64", 64, "n/a", 32, base - 0.1),
                                                      ("L=128 NTK", 128, "on", 0, base + 0.2))]
    labelled, reference = eval_sweep.labelled(pd.DataFrame(rows))
    assert reference == "L=64 no overlap"
    assert labelled["arm"].tolist()[:3] == ["L=64 no overlap", "L=64 stride 32", "L=128 NTK no overlap"]
    diffs = eval_sweep.setting_differences(pd.DataFrame(rows))
    assert diffs["arm"].tolist() == ["L=64 stride 32", "L=128 NTK no overlap"] * 2
    assert diffs["diff"].round(6).tolist() == [-0.1, 0.2, -0.1, 0.2]
    with pytest.raises(ValueError, match="no non-overlapping evaluation at the training length"):
        eval_sweep.labelled(pd.DataFrame(rows[1:2]))


def test_compression_grid_and_tables(tmp_path, micro, small_dataset):
    grid = compression.compression_grid(bit_grid=[[8, 8], [6, 4]], compressors=["zlib", "lzma"],
                                        prune_fracs=[0.0, 0.03], bitpack_bits=[6, 4])
    assert len(grid) == 2 * 2 * 2 + 2 and all(s.bitpack for s in grid[-2:]) and grid[-1].bits == "6/4"
    run_dirs = [_run(tmp_path, "micro", "control", seed, micro(**QUANTIZE_ALL, **{"train.seed": seed}))
                for seed in (0, 1)]
    small = [s for s in grid if s.compressor == "zlib" and s.prune_frac == 0]
    trained = compression.trained_table(run_dirs=run_dirs, dataset=small_dataset, eval_tokens=N_TOKENS, grid=small)
    assert list(trained.columns) == compression.TRAINED.columns and len(trained) == 2 * len(small)
    assert trained["seed"].tolist() == [0] * len(small) + [1] * len(small)
    assert trained["run"].iloc[-1] == f"micro/{run_dirs[1].name}"
    assert (trained["trained_over_fresh"] == trained["artifact_bytes"] / trained["fresh_init_bytes"]).all()
    assert trained["artifact_bytes"].iloc[1] < trained["artifact_bytes"].iloc[0]  # 6/4 bits < 8/8 bits
    # the matrices alone: fewer bytes than the artifact, and a larger share of what the bits save
    assert (trained["matrix_bytes"] < trained["artifact_bytes"]).all()
    saved = trained[["artifact_bytes", "matrix_bytes"]].iloc[0] - trained[["artifact_bytes", "matrix_bytes"]].iloc[1]
    assert 0 < saved["matrix_bytes"] and saved["matrix_bytes"] / trained["matrix_bytes"].iloc[0] \
        > saved["artifact_bytes"] / trained["artifact_bytes"].iloc[0]
    rng = torch.get_rng_state()
    real = compression.real_scale_table(presets=["tiny"], grid=small, compressors=["zlib"], code_bytes=100)
    assert torch.equal(torch.get_rng_state(), rng)  # the fresh init leaves the caller's RNG alone
    params = sum(p.numel() for p in build_model(get_preset("tiny")).parameters())
    assert real["params"].tolist() == [params] * len(small) and (real["total_bytes"] == real["artifact_bytes"] + 100).all()
    with pytest.raises(ValueError, match="no baseline 8/8 zlib row"):
        compression.fresh_init_calibration(real)
    calib = compression.fresh_init_calibration(real.assign(preset="baseline"))
    assert calib["fresh_init_bytes"] == real["artifact_bytes"].iloc[0]
    assert calib["trained_over_fresh"] == 15_815_847 / real["artifact_bytes"].iloc[0]


def test_pareto_front_and_labels():
    t = pd.DataFrame({"artifact_bytes": [100, 200, 150, 300], "q_val_bpb": [2.0, 1.5, 2.1, 1.5],
                      "bits": ["4/4", "8/8", "6/5", "8/8"], "compressor": "zlib", "prune_frac": [0, 0, 0.03, 0],
                      "bitpack": [False, False, False, True]})
    assert pareto_front_rows(t) == [100, 200]
    assert [compression.setting_label(r) for r in t.to_dict("records")][2:] == ["6/5 zlib prune 0.03",
                                                                               "8/8 zlib bitpacked"]


def pareto_front_rows(t: pd.DataFrame) -> list[int]:
    return compression.pareto_front(t)["artifact_bytes"].tolist()


def test_gate_table_reads_the_gates_and_skips_models_without_one(tmp_path, micro):
    gated = _run(tmp_path, "smeargate", "per_dim", 0, micro(**{"model.smear_gate": "per_dim"}))
    plain = _run(tmp_path, "smeargate", "none", 0, micro())
    table = smear_gates.gate_table(runs=_table([plain, gated]))
    assert table["run"].tolist() == [gated.name] and table["params"].iloc[0] == 64
    expected = torch.sigmoid(load_final_state(gated)["smear.gate"].float())
    assert table["values"].iloc[0] == pytest.approx(expected.tolist())
    assert table["share_from_previous"].iloc[0] == pytest.approx(1 - expected.mean().item())


def test_gate_table_adds_a_new_arm_reading_only_the_new_runs_weights(tmp_path, micro):
    """Notebook 03 adds an arm to runs whose weights are gone: the stored rows are kept, the new run is read."""
    root = tmp_path / "runs"
    old = _run(root, "micro", "smear_per_dim", 0, micro(**{"model.smear_gate": "per_dim"}))
    first = smear_gates.gate_table_cached(runs_root=root, runs=_table([old]))
    (old / "final_model.pt").unlink()
    new = _run(root, "micro", "smear_per_dim_g095", 0, micro(**{"model.smear_gate": "per_dim",
                                                                   "model.smear_init": "identity"}))
    table = smear_gates.gate_table_cached(runs_root=root, runs=_table([old, new]))
    assert table["run"].tolist() == [old.name, new.name]
    assert table["values"].iloc[0] == pytest.approx(first["values"].iloc[0])
    expected = torch.sigmoid(load_final_state(new)["smear.gate"].float())
    assert table["values"].iloc[1] == pytest.approx(expected.tolist())
    assert smear_gates.TABLE.read(root)[0] == {"runs": [old.name, new.name]}


def test_gate_values_are_the_weight_on_the_current_token_in_either_form(tmp_path, micro):
    """The records' form (smear_gated=previous) weights x_{t-1} by sigmoid(gate); the table reports x_t's share."""
    records = _run(tmp_path, "smeargate", "scalar", 0, micro(**{"model.smear_gate": "scalar",
                                                              "model.smear_gated": "previous"}))
    logit = load_final_state(records)["smear.gate"].float()
    assert smear_gates.smear_gate_values(records) == pytest.approx((1 - torch.sigmoid(logit)).tolist())


def test_figures_read_the_stored_tables_without_weights(micro, small_dataset, tmp_path):
    """Runs in a scale folder shared by the studies, tables made by the package functions, then every weight
    deleted: the figures still show them."""
    root = tmp_path / "runs"
    cfg = micro(**QUANTIZE_ALL)
    control = [_run(root, "micro", "control", seed, cfg) for seed in (0, 1)]
    qat = [_run(root, "micro", "qat_int6", seed, cfg.replace({"export.bits_attn": 6, "export.bits_mlp": 6}))
           for seed in (0, 1)]
    gated = [_run(root, "micro", "smear_scalar", seed, cfg.replace({"model.smear_gate": "scalar"})) for seed in (0, 1)]
    for study, dirs in (("qat", control + qat), ("smeargate", control + gated), ("swiglu_vs_relu2", control + gated)):
        figures.write_selection(root, study, _table(dirs))
    assert json.loads((root / "qat" / "selection.json").read_text())["runs"][0]["run"] == f"micro/{control[0].name}"
    assert figures.selected_runs(root, "qat")["arm"].tolist() == ["control"] * 2 + ["qat_int6"] * 2
    bits_sweep.bits_sweep_table(runs_root=root, runs=_table(control), arms=["control"], bits=[8, 6],
                                eval_tokens=N_TOKENS, dataset=small_dataset)
    smear_gates.gate_table_cached(runs_root=root, runs=_table(gated))
    eval_sweep.eval_sweep_table(runs_root=root, run_dirs=control, dataset=small_dataset, eval_tokens=N_TOKENS,
                                strides=[0, 32], eval_lens=[64], batch_seqs=8)
    grid = compression.compression_grid(bit_grid=[[8, 8]], compressors=["zlib"], prune_fracs=[0.0],
                                        bitpack_bits=[6, 4])
    compression.trained_table_cached(runs_root=root, run_dirs=control, dataset=small_dataset, eval_tokens=N_TOKENS,
                                     grid=grid)
    for weights in root.rglob("final_model.pt"):
        weights.unlink()
    out = tmp_path / "figures"
    names = ["qat", "smeargate", "eval", "compression", "swiglu_vs_relu2"]
    paths = figures.regenerate(names, runs_root=root, out_dir=out)
    assert [p.name for p in paths] == [f"{n}.svg" for n in names]
    with_gates = (out / "smeargate.svg").read_bytes()
    smear_gates.TABLE.path(root).unlink()
    figures.regenerate(["smeargate"], runs_root=root, out_dir=out)
    assert (out / "smeargate.svg").read_bytes() != with_gates  # the gate panel was drawn from the stored table


def test_gptq_sweep_compares_quantizers_and_clips_on_the_same_weights(tmp_path, micro, small_dataset):
    from pgolf.research import gptq_sweep
    run_dir = _run(tmp_path, "micro", "control", 0, micro(**QUANTIZE_ALL))
    table = gptq_sweep.gptq_sweep(run_dirs=[run_dir], dataset=small_dataset, bits=[4], eval_tokens=N_TOKENS,
                                  calibration_batches=2)
    assert list(table.columns) == gptq_sweep.TABLE.columns and len(table) == 4
    assert sorted(gptq_sweep.labelled(table)["arm"]) == ["gptq quantile", "gptq sdclip", "rtn quantile", "rtn sdclip"]
    assert table["val_bpb_fp"].nunique() == 1 and table["q_val_bpb"].nunique() == 4  # four different exports
    assert (table["tokens_scored"] == N_TOKENS).all()


def test_rate_distortion_scores_every_setting_of_the_same_weights(tmp_path, micro, small_dataset):
    from pgolf.research import rate_distortion
    run_dir = _run(tmp_path, "micro", "control", 0, micro(**QUANTIZE_ALL))
    grid = rate_distortion.settings(quantizers=["rtn", "gptq"], quantile_bits=[4, 5], sdclip_bits=[4], sigmas=[3.0])
    table = rate_distortion.rate_distortion(run_dirs=[run_dir], dataset=small_dataset, grid=grid,
                                            eval_tokens=N_TOKENS, calibration_batches=2)
    assert list(table.columns) == rate_distortion.TABLE.columns and len(table) == 6
    assert table["val_bpb_fp"].nunique() == 1 and table["q_val_bpb"].nunique() == 6
    assert (table["tokens_scored"] == N_TOKENS).all() and (table["matrix_bytes"] < table["artifact_bytes"]).all()
    assert (table["gap_bpb"] == table["q_val_bpb"] - table["val_bpb_fp"]).all()
    sd = table[table["clip"] == "sdclip"]
    assert (sd["clipped_frac"] > 0).all()  # k = 3 clips the tails of random rows
