"""A real two-process torchrun (gloo, CPU) matches the single-process run of the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.core.train import train

TOLERANCE = 1e-5  # val_loss, absolute: reduction order differs (DDP all-reduce vs local accumulation)


def val_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}


def run_two_ranks(cfg, run_dir: Path, *worker_args: str, launch_layout: bool = False) -> subprocess.CompletedProcess:
    """Train ``cfg`` under torchrun with 2 gloo processes into ``run_dir`` (extra ``worker_args`` for
    ``pgolf.running.worker``); fails with the ranks' stderr. ``launch_layout``: the config goes where the launcher
    puts it, ``run_dir/launch/config.json``, so the ranks keep their records in ``launch/ranks/``."""
    if launch_layout:
        (run_dir / "launch").mkdir(parents=True)
        cfg_path = run_dir / "launch" / "config.json"
    else:
        cfg_path = run_dir.parent / f"{run_dir.name}.cfg.json"
    cfg_path.write_text(cfg.to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pgolf.running.worker", "--config", str(cfg_path), "--run-dir", str(run_dir), *worker_args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("order", ["sequential", "permuted"])
def test_two_process_gloo_matches_single_process(micro, tmp_path, order):
    # grad_accum_steps=0 is the official rule 8 // world_size: 8 micro-batches on 1 rank, 4 on each of 2
    cfg = micro(**{"train.grad_accum_steps": 0, "train.val_loss_every": 2, "train.iterations": 6,
                   "data.order": order, "data.order_seed": 5})
    single = train(cfg, tmp_path / "single", console=False)
    run_two_ranks(cfg, tmp_path / "ddp")
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["steps"] == single["steps"] == 6
    a, b = val_losses(tmp_path / "single"), val_losses(tmp_path / "ddp")
    assert sorted(a) == sorted(b) == [0, 2, 4, 6]
    for step in a:
        assert abs(a[step] - b[step]) < TOLERANCE, (step, a[step], b[step])
    assert abs(single["q_val_loss"] - ddp["q_val_loss"]) < TOLERANCE
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert "world_size:2 grad_accum_steps:4" in log


def test_ranks_whose_clocks_disagree_switch_qat_on_the_same_step(micro, tmp_path):
    """Under a wallclock cap each rank measures its own progress. Rank 1's QAT clock runs 30 minutes ahead
    (the worker's test-only --test-clock-skew), so alone it would switch QAT on at step 0 and rank 0
    never; the switch is agreed across ranks, so both switch on at step 0 and the run finishes."""
    cfg = micro(**{"qat.enabled": True, "qat.start_frac": 0.5, "train.max_wallclock_seconds": 3600.0,
                   "train.iterations": 4, "export.keep_float_max_numel": 1000, "export.bits_mlp": 6,
                   "export.bits_attn": 6})
    run = tmp_path / "ddp"
    proc = run_two_ranks(cfg, run, "--test-clock-skew", "1:1800000", launch_layout=True)
    assert "TEST CLOCK SKEW: rank 1" in proc.stderr
    records = [json.loads((run / "launch" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["status"], r["qat_step"]) for r in records] == [("finished", 0), ("finished", 0)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4 and summary["qat_step"] == 0
    assert "qat:enabled step:0 layers:" in (run / "train.log").read_text()


def test_ranks_whose_clocks_disagree_switch_looping_on_the_same_step(micro, tmp_path):
    """Depth recurrence (model.loop_layers) switches on the step the first rank is due, on every rank."""
    cfg = micro(**{"model.num_layers": 3, "model.loop_layers": "1", "model.loop_count": 1,
                   "model.loop_start_frac": 0.5, "train.max_wallclock_seconds": 3600.0, "train.iterations": 3})
    run = tmp_path / "ddp"
    run_two_ranks(cfg, run, "--test-clock-skew", "1:1800000", launch_layout=True)
    records = [json.loads((run / "launch" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["status"], r["loop_step"]) for r in records] == [("finished", 0), ("finished", 0)]
    assert "layer_loop:enabled step:0 " in (run / "train.log").read_text()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through Linux /proc")
def test_process_group_and_its_threads_are_gone_when_train_returns(micro, tmp_path):
    """destroy_process_group must really release the gloo group: its worker and TCP threads are joined while
    the interpreter is alive. Left to interpreter exit, a worker thread that still needs the GIL aborts the
    rank ("terminate called without an active exception"). Before the fix, torch._dynamo (imported by DDP)
    pinned the group and three gloo threads outlived train(). One rank, torchrun's environment, world size 1."""
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(micro(**{"train.iterations": 2}).to_json())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import json, os\n"
        "from pgolf.core.config import Config\n"
        "from pgolf.core.train import train\n"
        f"s = train(Config.from_json({str(cfg_path)!r}), {str(tmp_path / 'run')!r}, console=False)\n"
        "threads = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
        "print(json.dumps({'world_size': s['world_size'], 'threads': threads}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["world_size"] == 1
    assert [t for t in out["threads"] if "gloo" in t or "tcpstore" in t] == [], out["threads"]


def test_two_process_gptq_export_is_the_artifact_every_rank_scores(micro, tmp_path, capsys):
    """export.quantizer=gptq under DDP: the ranks average their Hessians, so each exports the artifact rank 0
    writes; scoring that file in one process gives the run's own round-trip loss."""
    pytest.importorskip("brotli")
    from pgolf.running.cli import main

    cfg = micro(**{"train.iterations": 2, "export.quantizer": "gptq", "export.clip": "sdclip",
                   "export.scale_floor": False, "export.bits_attn": 6, "export.bits_mlp": 6,
                   "export.keep_float_max_numel": 1000, "export.gptq_calibration_batches": 2,
                   "export.compressor": "brotli"})
    run_two_ranks(cfg, tmp_path / "ddp")
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["artifact_file"].endswith(".brotli.ptz")
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "ddp"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["val_loss"] == pytest.approx(summary["q_val_loss"], abs=TOLERANCE)


@pytest.mark.slow  # two torchrun launches (~20 s)
def test_sigterm_on_one_rank_stops_every_rank_after_the_same_step(micro, tmp_path):
    """Only rank 1 gets SIGTERM (before its step 3): the stop is agreed across ranks (a MAX all-reduce per step,
    as the wallclock stop), so both finish step 4, write one checkpoint together and the run is marked interrupted
    by SIGTERM; the same launch with --resume then finishes the run. Before: rank 1 died on the signal and
    torchrun tore the job down (no checkpoint, status left running)."""
    from pgolf.core.runs import read_status

    cfg = micro(**{"train.grad_accum_steps": 0, "train.iterations": 6})
    run = tmp_path / "ddp"
    cfg_path = tmp_path / "ddp.cfg.json"
    cfg_path.write_text(cfg.to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pgolf.running.worker", "--config", str(cfg_path), "--run-dir", str(run)]
    proc = subprocess.run([*cmd, "--test-fail", "1:3:term"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    status = read_status(run)
    assert (status["status"], status["signal"], status["checkpoint"]) == ("interrupted", "SIGTERM", True), status
    log = (run / "train.log").read_text()
    assert "stop_requested: SIGTERM step:4/6; writing a checkpoint" in log and "step:5/6" not in log
    import torch

    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 4
    proc = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 6 and summary["world_size"] == 2
