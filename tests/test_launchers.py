"""GPU scales, the launcher registry, the printed plan and plan_only, local GPU slots, and the batch script a
GPU scale gets (text only: this machine has no GPU for SLURM to schedule). The job array itself runs against
a real SLURM in tests/test_slurm.py."""

from __future__ import annotations

import re
import subprocess

import pytest
from pgolf_testing import slurm_unavailable_reason

from pgolf.research import protocol
from pgolf.research.launchers import PlanOnly, get_launcher, gpu_slots
from pgolf.research.scales import SCALES
from pgolf.research.slurm import SlurmSettings, array_script, hms, time_limit_seconds


def test_gpu_scales_state_device_processes_budget_and_cost():
    big, one, short = SCALES["8xh100"], SCALES["1xh100"], SCALES["1xh100-short"]
    assert (big.device, big.nproc_per_node, big.nnodes, big.gpus_per_run) == ("cuda", 8, 1, 8)
    assert (one.gpus_per_run, short.gpus_per_run) == (1, 1)
    assert big.config().train.max_wallclock_seconds == one.config().train.max_wallclock_seconds == 600
    assert short.config().train.max_wallclock_seconds == 120 and short.gpu_seconds_per_run < one.gpu_seconds_per_run
    assert big.gpu_seconds_per_run == 8 * big.run_seconds and big.run_seconds >= 600
    assert big.config().eval.max_tokens == 0  # the full validation split
    assert len(short.seeds) >= 10
    for sc in (big, one, short):  # a requeued or preempted task has a checkpoint to resume from
        assert sc.config().train.checkpoint_every > 0 and sc.config().train.device == "cuda"
        assert "GPU-s per run" in sc.describe()
    assert SCALES["micro"].gpus_per_run == 0 and SCALES["micro"].config().train.checkpoint_every == 0


def test_plan_only_states_runs_and_gpu_hours_and_writes_nothing(tmp_path):
    logs = []
    with pytest.raises(PlanOnly):
        protocol.studies({"8xh100": {"gate": {"model.smear_gate": "per_dim"}}}, plan_only=True,
                         runs_root=tmp_path, log=logs.append)
    (plan,) = logs
    assert "6 planned, 0 cached, 6 to train" in plan  # control + 1 arm, the scale's 3 default seeds
    hours = 6 * 8 * SCALES["8xh100"].run_seconds / 3600
    assert f"GPU-hours to train: {hours:,.1f} (6 runs x 8 GPUs" in plan
    assert "--nproc-per-node 8" in plan  # the local command: torchrun with the scale's processes
    assert list(tmp_path.iterdir()) == []


def test_slurm_plan_shows_the_batch_script(tmp_path):
    logs = []
    with pytest.raises(PlanOnly):
        protocol.study("1xh100", {}, [0, 1], plan_only=True, runs_root=tmp_path, log=logs.append, launcher="slurm",
                       slurm={"partition": "gpu", "max_parallel": 1})
    assert "#SBATCH --array=0-1%1" in logs[0] and "#SBATCH --partition=gpu" in logs[0]
    assert list(tmp_path.iterdir()) == []


def test_local_gpu_slots_share_the_machine():
    gpus = [str(i) for i in range(8)]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in gpu_slots(gpus, 1)] == gpus  # 8 one-GPU runs at once
    assert [s["CUDA_VISIBLE_DEVICES"] for s in gpu_slots(gpus, 2)] == ["0,1", "2,3", "4,5", "6,7"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in gpu_slots(gpus, 8)] == ["0,1,2,3,4,5,6,7"]
    assert len(gpu_slots(gpus, 1, jobs=3)) == 3
    assert [s["CUDA_VISIBLE_DEVICES"] for s in gpu_slots(["4", "6"], 1)] == ["4", "6"]  # a restricted machine
    with pytest.raises(ValueError, match="needs 8 GPUs, this machine has 2 visible"):
        gpu_slots(["0", "1"], 8)


def test_launcher_and_settings_errors_name_the_key():
    with pytest.raises(ValueError, match="launcher 'pbs': unknown; expected one of local, slurm"):
        get_launcher("pbs")
    with pytest.raises(ValueError, match="launcher 'local' takes no slurm settings"):
        get_launcher("local", {"partition": "gpu"})
    with pytest.raises(ValueError, match="slurm setting 'partiton': unknown"):
        SlurmSettings.from_dict({"partiton": "gpu"})
    with pytest.raises(ValueError, match="'extra'"):
        SlurmSettings.from_dict({"extra": ["mem=0"]})
    assert SlurmSettings.from_dict({"extra": "--mem=0 --exclusive"}).extra == ("--mem=0", "--exclusive")


def test_8xh100_batch_script_asks_for_8_gpus_runs_8_processes_with_the_scales_time_limit(tmp_path):
    res = protocol.resources("8xh100")
    settings = SlurmSettings(partition="h100", account="golf", qos="high", extra=("--exclusive",), max_parallel=4)
    script = array_script(tmp_path, tmp_path / "runs.jsonl", 30, res, settings)
    limit = time_limit_seconds(res, settings)
    assert limit == 22 * 60  # 780 s x 1.25 + 300 s, rounded up to whole minutes
    header = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    for line in ("--gpus-per-node=8", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=32", f"--time={hms(limit)}",
                 "--array=0-29%4", "--requeue", "--partition=h100", "--account=golf", "--qos=high", "--exclusive"):
        assert f"#SBATCH {line}" in header, line
    assert re.search(r"srun .*torch\.distributed\.run --standalone --nnodes 1 --nproc_per_node 8 ", script)
    assert "pgolf.running.worker" in script and "$RESUME" in script
    two_nodes = array_script(tmp_path, tmp_path / "runs.jsonl", 2, protocol.Resources("cuda", 8, 2, 780.0), settings)
    assert "#SBATCH --nodes=2" in two_nodes and "--rdzv-backend c10d" in two_nodes and "--standalone" not in two_nodes
    if slurm_unavailable_reason() is None:  # the node has no GPU: check every other directive with the real sbatch
        cpu_only = "\n".join(ln for ln in script.splitlines()
                             if not ln.startswith(("#SBATCH --gpus", "#SBATCH --partition", "#SBATCH --account",
                                                   "#SBATCH --qos", "#SBATCH --cpus")))
        (tmp_path / "job.sh").write_text(cpu_only)
        p = subprocess.run(["sbatch", "--test-only", str(tmp_path / "job.sh")], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and "to start at" in p.stderr, p.stderr


def test_a_task_resumes_from_a_checkpoint_restarts_a_partial_run_and_skips_a_finished_one(tmp_path):
    import json

    from pgolf.research.slurm import prepare_task
    runs = {name: tmp_path / name for name in ("done", "ckpt", "partial", "new")}
    manifest = tmp_path / "array.jsonl"
    manifest.write_text("".join(json.dumps({"run_dir": str(p), "config": {"train": {"seed": i}}, "labels": {"arm": n}})
                                + "\n" for i, (n, p) in enumerate(runs.items())))
    for name, status in (("done", "finished"), ("ckpt", "failed"), ("partial", "failed")):
        runs[name].mkdir()
        (runs[name] / "status.json").write_text(json.dumps({"status": status}))
    (runs["done"] / "summary.json").write_text("{}")
    (runs["ckpt"] / "checkpoint.pt").write_bytes(b"x")
    assert prepare_task(manifest, 0)["TASK_STATE"] == "finished"
    ckpt = prepare_task(manifest, 1)
    assert ckpt["RESUME"] == "--resume" and (runs["ckpt"] / "checkpoint.pt").exists()
    assert json.loads((runs["ckpt"] / "launch" / "config.json").read_text()) == {"train": {"seed": 1}}
    partial = prepare_task(manifest, 2)
    assert partial["RESUME"] == "" and partial["TASK_STATE"] == "train"
    assert len(list(tmp_path.glob("partial.replaced-*"))) == 1  # the partial run moved aside, not deleted
    assert json.loads(prepare_task(manifest, 3)["LABELS"]) == {"arm": "new"}
