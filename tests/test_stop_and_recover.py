"""Stopping and recovering a run: SIGTERM handled like Ctrl-C (checkpoint, status, the --resume line), an
interrupted export finished from final_model.pt, damaged checkpoints and unwritable output folders as one line,
tokens_seen counting what was trained, and dry runs refusing the world sizes a launch refuses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgolf.core.runs import CHECKPOINT, TRAINING_END, read_status
from pgolf.core.train import CheckpointError, StopRequested, TrainerHooks, train
from pgolf.running.cli import main as cli_main

MICRO_OVERRIDES = {  # pgolf_testing.micro_config, as command-line words for a subprocess
    "model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
    "train.train_seq_len": 64, "train.train_batch_tokens": 1024, "train.grad_accum_steps": 1,
    "train.max_wallclock_seconds": 0.0, "train.warmup_steps": 0, "train.val_loss_every": 0,
    "train.val_batch_size": 16384, "train.train_log_every": 1, "schedule.warmdown_iters": 4,
    "optim.muon_momentum_warmup_steps": 4,
}


def _rows(run: Path, key: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


def _term_at(step: int):
    """A before_step hook that sends this process SIGTERM (as a scheduler would) before step ``step``."""
    def before_step(s: int) -> None:
        if s == step:
            os.kill(os.getpid(), signal.SIGTERM)
    return before_step


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, small_dataset):
    """The uninterrupted reference run (8 micro steps)."""
    from pgolf_testing import micro_config

    run = tmp_path_factory.mktemp("full") / "run"
    summary = train(micro_config(small_dataset), run, console=False)
    return run, summary


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_resume_matches(micro, full_run, tmp_path):
    """SIGTERM during training: the step under way finishes, a checkpoint is written (even with
    train.checkpoint_every=0), the run is marked interrupted by SIGTERM, and --resume continues to the same losses
    as the uninterrupted run. Before: SIGTERM killed the process at once (status left 'running', no checkpoint)."""
    run = tmp_path / "cut"
    cfg = micro()
    with pytest.raises(StopRequested) as err:
        train(cfg, run, console=False, hooks=TrainerHooks(before_step=_term_at(3)))
    assert isinstance(err.value, KeyboardInterrupt) and err.value.signal_name == "SIGTERM"
    status = read_status(run)
    assert (status["status"], status["signal"], status["checkpoint"]) == ("interrupted", "SIGTERM", True)
    ck = torch.load(run / CHECKPOINT, weights_only=True)
    assert ck["step"] == 4  # the step under way when the signal came was finished
    assert "stop_requested: SIGTERM step:4/8; writing a checkpoint" in (run / "train.log").read_text()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the trainer's handler is gone again

    summary = train(cfg, run, resume=True, console=False)
    assert summary["steps"] == 8
    assert _rows(run, "train_loss") == _rows(full_run[0], "train_loss")  # bit-identical on CPU
    assert summary["q_val_bpb"] == full_run[1]["q_val_bpb"]


def test_interrupted_export_is_finished_from_final_model_without_training(micro, full_run, tmp_path):
    """Stopped after training ended, during export: --resume exports and scores final_model.pt, without a
    training step, to the uninterrupted run's artifact and score. Before: --resume refused (no checkpoint) or,
    with one, trained again from it."""
    run = tmp_path / "cut"
    cfg = micro()

    def term() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(StopRequested):
        train(cfg, run, console=False, hooks=TrainerHooks(before_export=term))
    status = read_status(run)
    assert (status["status"], status["training_finished"], status["checkpoint"]) == ("interrupted", True, False)
    assert (run / "final_model.pt").is_file() and (run / TRAINING_END).is_file()
    assert not (run / "summary.json").exists()
    rows_before = (run / "metrics.jsonl").read_text()

    def no_training(step: int) -> None:
        raise AssertionError(f"step {step} trained on a resume whose training had finished")

    summary = train(cfg, run, resume=True, console=False, hooks=TrainerHooks(before_step=no_training))
    assert summary["status"] == "finished" and summary["steps"] == 8
    assert (run / "metrics.jsonl").read_text().startswith(rows_before)  # no step row written again
    assert _rows(run, "train_loss") == _rows(full_run[0], "train_loss")
    ref = full_run[1]
    assert (summary["val_bpb"], summary["q_val_bpb"], summary["artifact_bytes"]) == (
        ref["val_bpb"], ref["q_val_bpb"], ref["artifact_bytes"])
    assert (run / ref["artifact_file"]).read_bytes() == (full_run[0] / ref["artifact_file"]).read_bytes()
    log = (run / "train.log").read_text()
    assert "resume:training_finished step:8" in log and log.count("final_prequant") == 1
    assert not (run / TRAINING_END).exists() and read_status(run)["status"] == "finished"


@pytest.mark.slow  # a fresh process (~10 s)
def test_cli_sigterm_from_outside_prints_the_resume_line(small_dataset, tmp_path):
    """`pgolf train` in its own process, SIGTERM sent from outside mid-training: exit 143, status interrupted,
    a checkpoint, and the --resume command on stderr."""
    import pgolf

    run = tmp_path / "run"
    here = str(Path(pgolf.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    words = [f"{k}={v}" for k, v in MICRO_OVERRIDES.items()]
    cmd = [sys.executable, "-m", "pgolf.running.cli", "train", "tiny", f"data.path={small_dataset}", *words,
           "train.iterations=100000", "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step:3/"):
                proc.send_signal(signal.SIGTERM)
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"pgolf: interrupted by SIGTERM: run folder {run}; continue with: pgolf train --config "
        f"{run / 'config.json'} --run-dir {run} --resume")
    status = read_status(run)
    assert (status["status"], status["signal"], status["checkpoint"]) == ("interrupted", "SIGTERM", True)
    assert torch.load(run / CHECKPOINT, weights_only=True)["step"] >= 3


def test_cli_sigterm_exit_code_and_resume_line(micro, tmp_path, capsys, monkeypatch):
    """`pgolf train` (in-process) stopped by SIGTERM: exit 128 + 15 and one line naming the --resume command."""
    from pgolf.running import worker

    run = tmp_path / "run"
    monkeypatch.setattr(worker, "hooks_from_args", lambda rank, fail, skew: (TrainerHooks(before_step=_term_at(2)), None))
    words = [f"{k}={v}" for k, v in MICRO_OVERRIDES.items()]
    rc = cli_main(["train", "tiny", f"data.path={micro().data.path}", *words, "train.iterations=8",
                   "--run-dir", str(run)])
    assert rc == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"pgolf: interrupted by SIGTERM: run folder {run}; continue with: pgolf train --config "
                       f"{run / 'config.json'} --run-dir {run} --resume")


def test_truncated_checkpoint_on_resume_is_one_line(micro, tmp_path, capsys):
    """Before: torch's 'PytorchStreamReader failed reading zip archive' traceback."""
    run = tmp_path / "run"
    cfg = micro(**{"train.checkpoint_every": 2})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, console=False, hooks=TrainerHooks(before_step=_raise_keyboard_interrupt_at(3)))
    ck = run / CHECKPOINT
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{ck}: cannot be read as a pgolf checkpoint .*damaged or truncated"):
        train(cfg, run, resume=True, console=False)
    assert read_status(run)["status"] == "failed"
    rc = cli_main(["train", "--config", str(run / "config.json"), "--run-dir", str(run), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"pgolf: error: {ck}: cannot be read" in err


def _raise_keyboard_interrupt_at(step: int):
    def before_step(s: int) -> None:
        if s == step:
            raise KeyboardInterrupt
    return before_step


def _read_only_mount_works() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o ro tmpfs $d && "
                            "! touch $d/x 2>/dev/null"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


@pytest.mark.slow  # a fresh process (~8 s)
@pytest.mark.skipif(not _read_only_mount_works(), reason="needs unshare -rm and a tmpfs mount (user namespaces)")
def test_pgolf_out_on_a_read_only_file_system_is_one_line(tmp_path):
    """PGOLF_OUT on a file system mounted read-only (a real one: root ignores permission bits, not EROFS).
    Before: a PermissionError/OSError traceback from the run folder's lock."""
    import pgolf

    ro = tmp_path / "ro"
    ro.mkdir()
    here = str(Path(pgolf.__file__).resolve().parents[1])
    script = (f"mount -t tmpfs -o ro tmpfs {ro} && PGOLF_OUT={ro} PYTHONPATH={here}:$PYTHONPATH "
              f"{sys.executable} -m pgolf.running.cli train tiny --name x")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pgolf: error: {ro / 'runs'}") and "Read-only file system" in lines[0]


def test_unwritable_output_folder_is_one_line_in_process(tmp_path, monkeypatch, capsys):
    """The same refusal where no read-only mount can be made: the file system answers EROFS (simulated at
    os.mkdir, the first write of a run)."""
    import errno

    ro = tmp_path / "ro"
    monkeypatch.setenv("PGOLF_OUT", str(ro))
    real_mkdir = os.mkdir

    def read_only_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(ro)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    rc = cli_main(["train", "tiny", "--name", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"pgolf: error: {ro}") and "Read-only file system" in err and "PGOLF_OUT" in err


def test_tokens_seen_counts_the_tokens_trained(micro, tmp_path):
    """1,030 tokens per step over 16 micro-batches of 64-token sequences: each micro-batch is 1,030 // 16 = 64
    tokens, so a step trains 1,024 (before: tokens_seen said 8 * 1,030 = 8,240)."""
    cfg = micro(**{"train.train_batch_tokens": 1030, "train.grad_accum_steps": 16, "eval.max_tokens": 4096})
    summary = train(cfg, tmp_path / "run", console=False)
    assert summary["tokens_seen"] == 8 * 1024


@pytest.mark.parametrize("argv, needle", [
    (["--nproc-per-node", "3", "train.grad_accum_steps=0"], "WORLD_SIZE=3 must divide 8"),
    (["--nproc-per-node", "2", "train.grad_accum_steps=1", "train.train_batch_tokens=8300"],
     "train.train_batch_tokens=8300 gives each of the 2 ranks 4150 tokens per micro-step"),
])
def test_dry_run_refuses_a_world_size_the_launch_refuses(small_dataset, tmp_path, capsys, argv, needle):
    """Before: the dry run printed a command (exit 0) whose ranks then stopped at start-up."""
    run = tmp_path / "r"
    rc = cli_main(["train", "tiny", f"data.path={small_dataset}", "--run-dir", str(run), "--dry-run", *argv])
    captured = capsys.readouterr()
    assert rc == 2 and needle in captured.err and captured.out == ""
    assert not run.exists()


def test_launcher_keeps_a_sigterm_stop_interrupted_not_failed(tmp_path):
    """Under `pgolf train --nproc-per-node N`, ranks stopped by SIGTERM exit non-zero after rank 0 marked the run
    interrupted (with its checkpoint); the launcher must not turn that into 'failed'."""
    from pgolf.core.runs import atomic_write_json
    from pgolf.running.launch import finalize

    run = tmp_path / "run"
    atomic_write_json(run / "status.json", {"status": "interrupted", "signal": "SIGTERM", "checkpoint": True})
    rc, message = finalize(run, 1, "")
    assert rc == 143 and message.startswith(f"interrupted by SIGTERM: run folder {run}")
    assert "--resume" in message and read_status(run)["status"] == "interrupted"
