"""The torchrun launcher on CPU with gloo: commands, a finished 2-process job, failing ranks (raise,
SIGKILL, NaN loss), and an interrupted run resumed with --resume giving the uninterrupted losses."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.core.runs import read_status
from pgolf.running.cli import main as cli_main
from pgolf.running.launch import parse_torchrun_failures, slurm_script, torchrun_command

OVERRIDES = [
    "model.num_layers=2", "model.model_dim=64", "train.iterations=6", "train.max_wallclock_seconds=0",
    "train.val_loss_every=0", "train.train_batch_tokens=2048", "train.train_seq_len=128",
    "train.val_batch_size=8192", "train.checkpoint_every=2", "train.train_log_every=1",
]


def _launch(run_dir: Path, dataset: Path, *extra: str, fail: tuple[int, int, str] | None = None) -> tuple[int, str]:
    """``pgolf train tiny ... --nproc-per-node 2`` in-process; returns (exit code, everything printed)."""
    argv = ["train", "tiny", *OVERRIDES, f"data.path={dataset}", "--run-dir", str(run_dir),
            "--nproc-per-node", "2", "--env", "OMP_NUM_THREADS=1", *extra]
    if fail:
        rank, step, mode = fail
        argv += ["--test-fail", f"{rank}:{step}:{mode}"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = cli_main(argv)
    return rc, buf.getvalue()


def _train_losses(run_dir: Path) -> dict[int, float]:
    """step -> train_loss (a resumed run drops the rows written after its checkpoint)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "train_loss" in row:
            out[row["step"]] = row["train_loss"]
    return out


def _assert_failed(run_dir: Path, rc: int, out: str, rank: int, error: str) -> dict:
    assert rc != 0
    assert f"run failed: rank {rank}: " in out and error in out.rsplit("run failed:", 1)[1]
    status = read_status(run_dir)
    assert status["status"] == "failed" and status["rank"] == rank and error in status["error"], status
    summary = run_dir / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["status"] != "finished"
    return status


# -- commands -----------------------------------------------------------------------------------------


def _named_paths(cmd: list[str]) -> list[Path]:
    """Every absolute path a command names (its own words and the values of its --flags)."""
    return [Path(w) for w in cmd if w.startswith("/")]


def test_dry_run_prints_a_command_whose_files_exist(tmp_path, small_dataset, capsys):
    run = tmp_path / "r"
    assert cli_main(["train", "tiny", f"data.path={small_dataset}", "--run-dir", str(run), "--nproc-per-node", "4",
                     "--dry-run", "--env", "NCCL_DEBUG=INFO"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cmd = shlex.split(lines[0])
    assert cmd == ["env", "NCCL_DEBUG=INFO", sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", "4", "--log-dir", str(run / "launch" / "logs"), "--redirects", "3", "--tee", "3",
                   "-m", "pgolf.running.worker", "--config", str(run / "launch" / "config.json"), "--run-dir", str(run)]
    missing = [p for p in _named_paths(cmd) if p != run and not p.exists()]
    assert not missing, missing  # the run folder itself is created by the run
    assert json.loads((run / "launch" / "config.json").read_text())["data"]["path"] == str(small_dataset)
    assert f"config: {run / 'launch' / 'config.json'} (written)" in lines
    assert any(ln.startswith(f"data: {small_dataset.resolve()} (") for ln in lines)
    assert {p.name for p in run.iterdir()} == {"launch"}  # nothing else: the real launch accepts this folder
    # the launch that follows takes the folder as it is (a run would refuse a foreign one)
    from pgolf.core.runs import prepare_run_dir
    assert prepare_run_dir(run) == run


@pytest.mark.parametrize("path, needle", [
    ("{tmp}/nowhere", "data.path={tmp}/nowhere: dataset folder {tmp}/nowhere does not exist; the run would stop "
                      "there"),
    ("", "data.path is empty (the default dataset): dataset folder {data}/datasets/default_sp1024 does not exist "
         "(build it with `pgolf data build`)"),
])
def test_dry_run_reports_missing_data_and_writes_nothing(path, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PGOLF_DATA", str(tmp_path / "data"))  # no default dataset built there
    run = tmp_path / "r"
    assert cli_main(["train", "tiny", f"data.path={path.replace('{tmp}', str(tmp_path))}", "--run-dir", str(run),
                     "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert needle.replace("{tmp}", str(tmp_path)).replace("{data}", str(tmp_path / "data")) in captured.err
    assert captured.out == "" and not run.exists()


def test_dry_run_refuses_a_folder_the_launch_would_refuse(tmp_path, small_dataset, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "finished"}))
    argv = ["train", "tiny", f"data.path={small_dataset}", "--run-dir", str(run), "--dry-run"]
    assert cli_main(argv) == 2 and "run already finished" in capsys.readouterr().err
    assert cli_main([*argv, "--overwrite"]) == 2 and "a dry run changes nothing there" in capsys.readouterr().err
    assert {p.name for p in run.iterdir()} == {"status.json"}


def test_dry_run_prints_multi_node_command(tmp_path, small_dataset, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "failed"}))
    (run / "checkpoint.pt").write_bytes(b"")
    assert cli_main(["train", "tiny", f"data.path={small_dataset}", "--run-dir", str(run), "--nproc-per-node", "8",
                     "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "node0:29400", "--rdzv-id", "job7",
                     "--resume", "--dry-run"]) == 0
    cmd = shlex.split(capsys.readouterr().out.splitlines()[0])
    assert "--standalone" not in cmd
    flags = dict(zip(cmd[3:19:2], cmd[4:20:2]))
    assert flags == {"--nnodes": "2", "--nproc_per_node": "8", "--node_rank": "1", "--rdzv-backend": "c10d",
                     "--rdzv-endpoint": "node0:29400", "--rdzv-id": "job7",
                     "--log-dir": str(run / "launch" / "logs" / "node1"), "--redirects": "3"}
    assert cmd[-1] == "--resume" and all(p.exists() for p in _named_paths(cmd))
    with pytest.raises(ValueError, match="rdzv-endpoint"):
        torchrun_command(run, nnodes=2)


def test_slurm_script(tmp_path):
    script = slurm_script(tmp_path / "r" / "launch" / "config.json", tmp_path / "r", nnodes=2, nproc_per_node=8,
                          env={"NCCL_DEBUG": "INFO"})
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=8" in script
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1' in script
    assert "srun " in script and '--node_rank "$SLURM_NODEID"' in script and "--rdzv-backend c10d" in script
    assert '--rdzv-endpoint "$HEAD_NODE:29500"' in script and "export NCCL_DEBUG=INFO" in script
    assert "pgolf.running.launch finalize" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_parse_torchrun_failure_table():
    text = """Failures:
[1]:
  time      : 2026-01-01_00:00:00
  host      : h
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 11) (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 11
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-01-01_00:00:00
  host      : h
  rank      : 3 (local_rank: 1)
  exitcode  : 1 (pid: 12)
  error_file: /x/error.json
  traceback : Traceback (most recent call last):
    File "x.py", line 1, in <module>
  ValueError: boom
  
============================================================"""
    failures, root = parse_torchrun_failures(text)
    assert failures == {0: (-15, "Signal 15 (SIGTERM) received by PID 11"), 3: (1, "ValueError: boom")}
    assert root == 3


# -- real 2-process jobs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(small_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("launch") / "finished"
    rc, out = _launch(run, small_dataset)
    return run, rc, out


@pytest.fixture(scope="module")
def killed_run(small_dataset, tmp_path_factory):
    """Rank 1 SIGKILLs itself after step 4 (checkpoints every 2 steps)."""
    run = tmp_path_factory.mktemp("launch") / "killed"
    rc, out = _launch(run, small_dataset, fail=(1, 4, "kill"))
    return run, rc, out


def test_two_process_run_finishes_and_keeps_rank_logs(finished_run):
    run, rc, out = finished_run
    assert rc == 0, out
    assert read_status(run)["status"] == "finished"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2 and summary["steps"] == 6
    assert sorted(_train_losses(run)) == [1, 2, 3, 4, 5, 6]
    for rank in (0, 1):
        (log_dir,) = run.glob(f"launch/logs/*/attempt_0/{rank}")
        assert (log_dir / "stdout.log").exists() and (log_dir / "stderr.log").exists()
        assert json.loads((run / "launch" / "ranks" / f"rank{rank}.json").read_text())["status"] == "finished"
    (rank0,) = run.glob("launch/logs/*/attempt_0/0/stdout.log")
    assert "step:6/6 train_loss:" in rank0.read_text()
    launch = json.loads((run / "launch" / "launch.json").read_text())
    assert launch["command"][1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert launch["env_overrides"] == {"OMP_NUM_THREADS": "1"}
    assert json.loads((run / "launch" / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    assert "run finished" in out and (run / "launch" / "torchrun.log").exists()


def test_raising_rank_fails_the_job(small_dataset, tmp_path):
    run = tmp_path / "raise"
    rc, out = _launch(run, small_dataset, fail=(1, 3, "raise"))
    status = _assert_failed(run, rc, out, 1, "RuntimeError: test fault injected on rank 1 at step 3")
    assert Path(status["rank_log"]).name == "1"
    rec = json.loads((run / "launch" / "ranks" / "rank1.json").read_text())
    assert rec["status"] == "failed" and "test fault injected" in rec["traceback"]


def test_killed_rank_fails_the_job(killed_run):
    run, rc, out = killed_run
    _assert_failed(run, rc, out, 1, "killed by SIGKILL")
    # rank 1 never reported; its record still says running
    assert json.loads((run / "launch" / "ranks" / "rank1.json").read_text())["status"] == "running"


def test_resume_after_kill_matches_uninterrupted_run(killed_run, finished_run, small_dataset, tmp_path):
    killed, _, _ = killed_run
    run = tmp_path / "resumed"
    shutil.copytree(killed, run)
    assert max(_train_losses(run)) == 4
    rc, out = _launch(run, small_dataset, "--resume")
    assert rc == 0, out
    assert read_status(run)["status"] == "finished"
    assert _train_losses(run) == _train_losses(finished_run[0])
    assert "resume:step:4" in (run / "train.log").read_text()


def test_nan_loss_fails_the_job(small_dataset, tmp_path):
    run = tmp_path / "nan"
    rc, out = _launch(run, small_dataset, fail=(1, 2, "nan"))
    _assert_failed(run, rc, out, 1, "NonFiniteLossError")


def test_labels_and_test_faults_reach_every_rank_as_worker_arguments(tmp_path, small_dataset, capsys):
    """``pgolf train --labels-json/--test-fail`` are passed on to each rank's worker command (no env side channel)."""
    run = tmp_path / "r"
    assert cli_main(["train", "tiny", f"data.path={small_dataset}", "--run-dir", str(run), "--nproc-per-node", "2",
                     "--dry-run", "--labels-json", '{"arm": "a"}', "--test-fail", "1:2:raise"]) == 0
    cmd = shlex.split(capsys.readouterr().out.splitlines()[0])
    assert cmd[cmd.index("pgolf.running.worker"):] == [
        "pgolf.running.worker", "--config", str(run / "launch" / "config.json"), "--run-dir", str(run),
        "--labels-json", '{"arm": "a"}', "--test-fail", "1:2:raise"]
    script = slurm_script(run / "launch" / "config.json", run, nnodes=2, nproc_per_node=8,
                          worker_args=["--labels-json", '{"arm": "a"}'])
    (srun,) = [line for line in script.splitlines() if line.startswith("srun ")]
    inner = shlex.split(srun)[shlex.split(srun).index("-c") + 1]  # the torchrun command bash -c runs
    assert inner.endswith("$RESUME --labels-json '{\"arm\": \"a\"}'")
    assert shlex.split(inner)[-2:] == ["--labels-json", '{"arm": "a"}']
