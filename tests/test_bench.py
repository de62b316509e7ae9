"""pgolf.running.bench on a tiny CPU config: sane numbers, the FLOPs formula by hand, the option costs."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from pgolf.core.config import apply_overrides
from pgolf.core.model import build_model
from pgolf.running.bench import bench, bench_options, flops_per_token, matmul_params
from pgolf.running.cli import main as cli_main
from pgolf.running.presets import get_preset

SMALL = ["model.num_layers=2", "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2",
         "model.vocab_size=384", "train.train_seq_len=128", "train.train_batch_tokens=1024",
         "train.grad_accum_steps=1"]


def small(*extra: str):
    return apply_overrides(get_preset("tiny"), [*SMALL, *extra])


def test_flops_formula_by_hand():
    # per block: c_q 64*64 + c_k 64*32 + c_v 64*32 + proj 64*64 + fc 64*128 + proj 128*64 = 28,672
    # 2 blocks = 57,344; tied head 384*64 = 24,576 -> N_matmul = 81,920
    # 6 * 81,920 + 12 * L(2) * T(128) * d(64) = 491,520 + 196,608 = 688,128
    cfg = small()
    assert matmul_params(build_model(cfg)) == 81_920
    assert flops_per_token(cfg, 81_920) == 688_128
    # an untied head is a CastedLinear of the same size; a BigramHash adds only its projection (8*64)
    cfg2 = small("model.tie_embeddings=false", "model.bigram_buckets=16", "model.bigram_dim=8")
    assert matmul_params(build_model(cfg2)) == 81_920 + 512


def test_bench_tiny_cpu_numbers_are_sane():
    r = bench(small(), steps=2, warmup=1)
    assert r["device"] == "cpu" and r["compile"] is False and r["compile_ms"] is None
    assert r["step_ms"] > 0 and r["first_step_ms"] > 0 and r["step_ms_min"] <= r["step_ms_median"]
    assert r["tokens_per_step"] == 1024
    assert r["tokens_per_s"] == pytest.approx(1024 / (r["step_ms"] / 1000))
    assert r["flops_per_token"] == 688_128 and r["flops_formula_values"] == "6 * 81920 + 12 * 2 * 128 * 64"
    assert 0 < r["mfu"] < 2 and r["peak_flops"] > 0 and r["peak_memory_mb"] > 0
    assert r["projected_8gpu_step_ms"] is None  # grad_accum_steps 1 cannot be split over 8 GPUs


def test_projection_from_grad_accum_8():
    r = bench(small("train.grad_accum_steps=8"), steps=1, warmup=1)
    assert r["grad_accum_steps"] == 8
    assert r["projected_8gpu_step_ms"] == pytest.approx(r["step_ms"] / 8 + r["projected_8gpu_comm_ms"])
    assert 0 < r["projected_8gpu_comm_ms"] < 1


def test_option_costs():
    cfg = small("model.smear_gate=per_dim", "eval.batch_seqs=8")
    base = bench(cfg, steps=1, warmup=1)
    o = bench_options(cfg, steps=1, warmup=1, base=base, eval_windows_count=4)
    rows = {r["option"]: r for r in o["options"]}
    assert set(rows) == {"qat", "smear_gate", "bigram_hash"}
    assert rows["smear_gate"]["in_config"] and rows["smear_gate"]["step_ms_with"] == base["step_ms_median"]
    assert not rows["qat"]["in_config"] and rows["qat"]["step_ms_without"] == base["step_ms_median"]
    assert all(r["step_ms_with"] > 0 and r["step_ms_without"] > 0 for r in rows.values())
    assert o["averaging"]["swa_snapshot_ms"] > 0 and o["averaging"]["ema_update_ms_per_step"] > 0
    ev = o["eval"]
    assert ev["non_overlapping"]["tokens_scored"] == 4 * 128 == ev["sliding"]["tokens_scored"]
    assert ev["sliding"]["stride"] == 64 and ev["sliding"]["tokens_per_s"] > 0


def test_cli_bench_json():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["bench", "tiny", *SMALL, "--steps", "1", "--warmup", "1", "--json"]) == 0
    r = json.loads(buf.getvalue())["bench"]
    assert r["flops_per_token"] == 688_128 and r["step_ms"] > 0


def test_bench_loop_plans_each_variant_from_its_own_code_and_strips_the_benchs_env(tmp_path, monkeypatch):
    """The new variant's command is its ablation engine's, with the malloc settings; the bench's own MALLOC_*
    and PYTHONPATH never reach a run (the baseline would otherwise inherit them)."""
    from pathlib import Path

    import pgolf
    from pgolf.running.bench_loop import Variant, child_env, plan
    tree = Path(pgolf.__file__).resolve().parents[1]
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "1")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = child_env(tree, {"X": "1"})
    assert "MALLOC_MMAP_MAX_" not in env and env["PYTHONPATH"] == str(tree) and env["X"] == "1"
    cmd, extra = plan(Variant("new", "working tree", tree), "micro", 3, tmp_path)
    assert cmd[1:3] == ["-m", "pgolf.research.ablate_worker"] and cmd[3] == str(tmp_path / "new.config.json")
    assert cmd[4] == str(tmp_path / "new-probe")
    assert extra["MALLOC_MMAP_MAX_"] == "0" and extra["OMP_NUM_THREADS"] == "1"
    cfg = json.loads((tmp_path / "new.config.json").read_text())
    assert cfg["train"]["seed"] == cfg["data"]["order_seed"] == 3 and cfg["model"]["model_dim"] == 64


def test_bench_loop_report_says_whether_the_scores_agree(tmp_path):
    from pgolf.running.bench_loop import Timing, format_loop_report, summarize
    same = {"val_loss": 3.8, "val_bpb": 2.1, "q_val_loss": 3.9, "q_val_bpb": 2.2, "artifact_bytes": 5,
            "artifact_sha256": "ab" * 32}
    ts = [Timing("baseline", 0, 60.0, 9.0, 70.0, 1400.0, 1.0, 1.5, same),
          Timing("new", 0, 30.0, 1.0, 40.0, 700.0, 1.5, 1.2, same),
          Timing("new", 1, 40.0, 1.0, 44.0, 700.0, 1.0, 1.0, same),
          Timing("baseline", 1, 50.0, 9.0, 60.0, 1400.0, 1.0, 1.0, {**same, "val_bpb": 2.1000000001})]
    r = summarize(ts, {"baseline": "d82e96a", "new": "working tree"}, "micro", 0, tmp_path)
    assert r["cpu_ratio"] == pytest.approx(55.0 / 35.0) and r["wall_ratio"] == pytest.approx(65.0 / 42.0)
    assert not r["scores_identical"] and r["score_differences"] == ["baseline round 1: val_bpb 2.1000000001 != 2.1"]
    text = format_loop_report(r)
    assert "cpu_ratio (baseline / new): 1.571x" in text and "SCORES DIFFER" in text
    assert summarize(ts[:3], {"baseline": "b", "new": "w"}, "micro", 0, tmp_path)["scores_identical"]


def test_bench_loop_refuses_an_unknown_revision(capsys):
    assert cli_main(["bench", "loop", "--baseline-rev", "no-such-rev-h22f"]) == 2
    assert "--baseline-rev 'no-such-rev-h22f'" in capsys.readouterr().err


def test_bench_loop_times_a_batch_in_one_persistent_worker_and_names_a_failed_run(micro, tmp_path):
    """--study-runs: the new code's batch goes through one worker server, whose wait4 usage covers its runs."""
    from pgolf.research.ablate import PlannedRun, command
    from pgolf.running.bench_loop import run_scores, timed_server
    cfgs = [micro(**{"train.iterations": 2, "train.seed": s}) for s in (0, 1)]
    cmds = [command(PlannedRun("c", i, c, tmp_path / "plan" / f"c-s{i}-k"), "b", 1)[0] for i, c in enumerate(cfgs)]
    env = command(PlannedRun("c", 0, cfgs[0], tmp_path / "plan" / "c-s0-k"), "b", 1)[1]
    dirs = [tmp_path / "r-s0", tmp_path / "r-s1"]
    cpu, sys_s, wall, rss = timed_server(cmds, env, tmp_path, dirs, tmp_path / "new-r0.log")
    assert cpu > 2 and 0 <= sys_s < cpu and wall > 0 and rss > 100  # the runs' CPU time, not only the server's
    assert run_scores(dirs[0])["val_bpb"] != run_scores(dirs[1])["val_bpb"]  # each run its own seed
    bad = [cmds[0][:3] + [str(tmp_path / "missing.json")] + cmds[0][4:]]
    with pytest.raises(RuntimeError, match=r"run r-s9 in the persistent worker failed \(1\); see .*new-r1-r-s9.log"):
        timed_server(bad, env, tmp_path, [tmp_path / "r-s9"], tmp_path / "new-r1.log")


def test_bench_loop_study_report_compares_each_seed_across_batches(tmp_path):
    from pgolf.running.bench_loop import Timing, format_loop_report, summarize
    one = {"val_loss": 3.8, "val_bpb": 2.1, "q_val_loss": 3.9, "q_val_bpb": 2.2, "artifact_bytes": 5,
           "artifact_sha256": "ab" * 32}
    batch = {f"s{s}.{k}": (v + s if k == "val_bpb" else v) for s in (3, 4) for k, v in one.items()}
    ts = [Timing("baseline", 0, 48.0, 13.0, 60.0, 1400.0, 1.0, 1.0, batch),
          Timing("new", 0, 30.0, 0.3, 31.0, 500.0, 1.0, 1.0, batch)]
    text = format_loop_report(summarize(ts, {"baseline": "d82e96a", "new": "working tree"}, "micro", 3, tmp_path, 2))
    assert "study_runs:2" in text and "batches:1 of 2 runs cpu_mean:48.0s" in text
    assert "scores identical in every run: seed 3 val_bpb:5.1 " in text and "(and 1 more seeds" in text
    ts[1] = Timing("new", 0, 30.0, 0.3, 31.0, 500.0, 1.0, 1.0, {**batch, "s4.val_bpb": 6.0})
    r = summarize(ts, {"baseline": "d82e96a", "new": "working tree"}, "micro", 3, tmp_path, 2)
    assert r["score_differences"] == ["new round 0: s4.val_bpb 6.0 != 6.1"]
