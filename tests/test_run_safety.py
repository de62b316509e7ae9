"""Nothing lost, nothing silent: trained weights survive a failing export, bad eval settings fail before
training, a killed or Ctrl-C'd run does not stay "running", one process per run folder, a resume does not
repeat rows, stale temp files are cleaned up, and a non-finite score fails the run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pgolf_testing import raise_at

from pgolf.core import train_loop as train_mod
from pgolf.core.config import ConfigError
from pgolf.core.evaluate import EvalResult
from pgolf.core.finite import check_finite_score
from pgolf.core.ownership import FolderLock, host_tag, lock_holder
from pgolf.core.runs import (
    RunExistsError,
    RunLockedError,
    RunWriter,
    atomic_torch_save,
    claim_run_dir,
    prepare_run_dir,
    read_status,
)
from pgolf.core.train import (
    NonFiniteScoreError,
    TrainerHooks,
    train,
)
from pgolf.research.results import load_runs
from pgolf.running.cli import main as cli_main
from pgolf.running.launch import finalize

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def rows(run: Path) -> list[dict]:
    f = run / "metrics.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


# -- 1. trained weights are kept; settings checked before training -------------------------------------


@pytest.mark.parametrize("save_raw_model", [True, False])
def test_failing_export_keeps_the_trained_weights(micro, tmp_path, monkeypatch, save_raw_model):
    exported = {}

    def broken_export(state, cfg, *, control, hessians=None, detail=False):
        exported.update({k: v.clone() for k, v in state.items()})
        raise RuntimeError("simulated export failure")
    monkeypatch.setattr(train_mod, "export_artifact", broken_export)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated export failure"):
        train(micro(**{"train.save_raw_model": save_raw_model}), run, console=False)
    assert read_status(run)["status"] == "failed"
    saved = torch.load(run / "final_model.pt", weights_only=True)
    assert saved.keys() == exported.keys()
    for k in saved:
        assert torch.equal(saved[k], exported[k]), k
    assert max(r["step"] for r in rows(run) if "train_loss" in r) == 8  # these are the trained weights


@pytest.mark.parametrize("override,key", [
    ({"eval.seq_len": 100_000}, "eval.seq_len"),
    ({"eval.stride": 32, "eval.max_tokens": 40}, "train.train_seq_len"),
    ({"train.val_batch_size": 32}, "train.val_batch_size"),
])
def test_eval_settings_that_do_not_fit_the_data_fail_before_training(micro, tmp_path, override, key):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(micro(**override), run, console=False)
    assert read_status(run)["status"] == "failed"
    assert not [r for r in rows(run) if "train_loss" in r]  # not a single step was trained
    assert not (run / "final_model.pt").exists()


# -- 2. killed and interrupted runs --------------------------------------------------------------------


def test_running_status_of_a_dead_process_reads_interrupted(tmp_path):
    run = tmp_path / "abl" / "killed"
    run.mkdir(parents=True)
    raw = json.dumps({"status": "running", "pid": dead_pid(), "host": socket.gethostname()})
    (run / "status.json").write_text(raw)
    st = read_status(run)
    assert st["status"] == "interrupted" and st["recorded_status"] == "running"
    assert (run / "status.json").read_text() == raw  # derived when read, never written back
    with pytest.raises(RunExistsError, match="status 'interrupted'"):
        prepare_run_dir(run)
    assert list(load_runs(tmp_path, status="interrupted")["name"]) == ["killed"]
    assert load_runs(tmp_path).empty  # not finished
    alive = tmp_path / "abl" / "alive"
    alive.mkdir()
    (alive / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid(),
                                                   "host": socket.gethostname()}))
    assert read_status(alive)["status"] == "running"


def test_ctrl_c_marks_the_run_interrupted_and_the_cli_says_how_to_resume(micro, tmp_path, capsys):
    cfg_file, run = tmp_path / "cfg.json", tmp_path / "run"
    cfg_file.write_text(micro(**{"train.checkpoint_every": 2}).to_json())
    # Ctrl-C before the 4th step (the checkpoint is step 2's)
    rc = cli_main(["train", "--config", str(cfg_file), "--run-dir", str(run), "--test-fail", "0:3:interrupt"])
    armed, err = capsys.readouterr().err.split("\n", 1)
    assert rc == 130 and armed == "pgolf.running.worker: TEST FAULT ARMED: rank 0 mode interrupt at step 3"
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"interrupted: run folder {run}" in err and "--resume" in err
    st = read_status(run)
    assert st["status"] == "interrupted" and st["checkpoint"] is True
    assert cli_main(["train", "--config", str(run / "config.json"), "--run-dir", str(run), "--resume"]) == 0
    assert read_status(run)["status"] == "finished"


def test_launcher_marks_an_interrupted_job_and_leaves_a_locked_folder_alone(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "running", "pid": dead_pid(), "host": socket.gethostname()}))
    rc, msg = finalize(run, 130, "", interrupted=True)
    assert rc == 130 and "marked interrupted" in msg
    assert read_status(run)["status"] == "interrupted"
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"  # written, not derived

    other = tmp_path / "other"
    lock = FolderLock.acquire(other)
    try:
        (other / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid()}))
        rc, msg = finalize(other, 1, "")
        assert rc == 1 and "in use by pid" in msg
        assert read_status(other)["status"] == "running"  # another live run's folder: untouched
    finally:
        lock.release()


# -- 3. one process per run folder -----------------------------------------------------------------------

PAUSING_RUN = """
import pathlib, sys, time
from pgolf.core.config import Config
from pgolf.core.train import TrainerHooks, train
def pause(step):
    if step == 2:  # after the checkpoint of step 2
        pathlib.Path(sys.argv[3]).touch()
        time.sleep(600)
train(Config.from_json(sys.argv[1]), sys.argv[2], console=False, hooks=TrainerHooks(before_step=pause))
"""


def test_a_second_process_cannot_train_into_a_running_folder(micro, tmp_path):
    cfg = micro(**{"train.checkpoint_every": 2})
    cfg_file, run, ready = tmp_path / "cfg.json", tmp_path / "run", tmp_path / "ready"
    cfg_file.write_text(cfg.to_json())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_RUN, str(cfg_file), str(run), str(ready)], env=env)
    try:
        deadline = time.time() + 300
        while not ready.exists():
            assert proc.poll() is None, "the first run ended early"
            assert time.time() < deadline, "the first run never reached step 2"
            time.sleep(0.2)
        assert read_status(run)["status"] == "running"
        for resume in (True, False):
            in_use = rf"{re.escape(str(run))}: run folder is in use by pid {proc.pid} on host "
            with pytest.raises(RunLockedError, match=in_use):
                train(cfg, run, resume=resume, console=False)
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            prepare_run_dir(run, overwrite=True)  # must not move a live run's folder aside
        assert run.exists() and read_status(run)["status"] == "running"
    finally:
        proc.kill()  # SIGKILL: no chance to clean up; the kernel drops the lock
        proc.wait()
    assert lock_holder(run) is None
    assert read_status(run)["status"] == "interrupted"
    s = train(cfg, run, resume=True, console=False)
    assert s["steps"] == 8 and read_status(run)["status"] == "finished"
    assert lock_holder(run) is None  # released when the run returned
    FolderLock.acquire(run).release()


# -- 4. a resume does not repeat rows ------------------------------------------------------------------


def test_resume_cuts_the_rows_written_after_the_checkpoint(micro, tmp_path):
    cfg = micro(**{"train.iterations": 6, "train.checkpoint_every": 2, "train.val_loss_every": 5,
                   "schedule.warmdown_iters": 3})
    train(cfg, tmp_path / "full", console=False)

    # after step 5 was trained, logged and validated; the last checkpoint is step 4
    crash = TrainerHooks(before_step=raise_at(5, RuntimeError("simulated crash")))
    run = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, run, console=False, hooks=crash)
    assert any(r.get("step") == 5 for r in rows(run))
    stale = run / f".summary.json.{dead_pid()}@{host_tag()}.tmp"
    stale.write_text("{")
    train(cfg, run, resume=True, console=False)

    def timeless(rs):
        return [{k: v for k, v in r.items() if k != "train_time_ms"} for r in rs]
    assert timeless(rows(run)) == timeless(rows(tmp_path / "full"))
    log = (run / "train.log").read_text()
    for step in range(1, 7):
        assert log.count(f"step:{step}/6 train_loss:") == 1, step
    assert log.count("step:5/6 val_loss:") == 1
    assert "resume:metrics.jsonl: dropped" in log and "cleanup: removed .summary.json." in log
    assert not stale.exists()


# -- 5. stale temp files -----------------------------------------------------------------------------------


def test_claiming_a_run_folder_removes_only_dead_writers_temp_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "failed"}))
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "launch").mkdir()
    pid = dead_pid()
    dead = [run / f".metrics.jsonl.{pid}@{host_tag()}.tmp", run / f".summary.json.{pid}.tmp",
            run / "launch" / f".config.json.{pid}@{host_tag()}.tmp"]
    kept = [run / f".status.json.{os.getpid()}@{host_tag()}.tmp",  # a live writer
            run / f".status.json.{pid}@some-other-host.tmp"]  # cannot be checked from here
    for p in dead + kept:
        p.write_text("partial")
    lock, removed = claim_run_dir(run, resume=True)
    lock.release()
    assert sorted(removed) == sorted(dead)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in dead)


def test_failed_atomic_write_leaves_no_temp_file(tmp_path):
    with pytest.raises(Exception):
        atomic_torch_save(tmp_path / "x.pt", {"f": lambda: 0})  # lambdas cannot be pickled
    assert list(tmp_path.iterdir()) == []


# -- 6. non-finite scores ------------------------------------------------------------------------------------


def test_overflowing_run_fails_naming_the_tensors(micro, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteScoreError, match=r"artifact: .*blocks\.0\.attn\.c_q\.weight .*fp16"):
        train(micro(**{"optim.matrix_lr": 1e6}), run, console=False)
    st = read_status(run)
    assert st["status"] == "failed" and "NonFiniteScoreError" in st["error"]
    assert not (run / "summary.json").exists() and (run / "final_model.pt").exists()
    assert not list(run.glob("*.ptz"))


def test_non_finite_score_check_names_metric_and_weights():
    state = {"a": torch.ones(2), "b": torch.tensor([1.0, float("inf")])}
    expected = r"final_prequant: val_loss=nan val_bpb=nan \(non-finite weights: b\)"
    with pytest.raises(NonFiniteScoreError, match=expected):
        check_finite_score("final_prequant", EvalResult(float("nan"), float("nan"), 10, 20), state)
    check_finite_score("ok", EvalResult(1.0, 2.0, 10, 20), state)


def test_run_folder_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError, match=r"summary\.json: refusing to write a non-finite number"):
        RunWriter(tmp_path).json("summary.json", {"q_val_bpb": float("nan")})
    assert not (tmp_path / "summary.json").exists()
