"""The local launcher's persistent workers: runs back to back in one worker train the bits of their own processes."""

import hashlib
import json
import subprocess
from pathlib import Path

from pgolf.research import worker_pool
from pgolf.research.ablate import PlannedRun, command, execute


def _record(run_dir):
    """What a bit-identical run repeats: every metrics line but its times, the scores and the artifact's hash."""
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [{k: v for k, v in json.loads(line).items() if "time" not in k and not k.endswith("_ms")}
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    artifact = hashlib.sha256((run_dir / summary["artifact_file"]).read_bytes()).hexdigest()
    scores = {k: summary[k] for k in ("val_loss", "val_bpb", "q_val_loss", "q_val_bpb", "artifact_bytes")}
    return metrics, scores, artifact


def test_runs_back_to_back_in_one_worker_equal_their_own_processes_and_a_failure_poisons_nothing(
        micro, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(worker_pool.Worker, "__init__", _counting(worker_pool.Worker.__init__, started))
    a = micro(**{"train.iterations": 3, "train.seed": 1})
    b = micro(**{"train.iterations": 2, "train.seed": 2, "model.mlp": "swiglu", "data.order_seed": 5})
    bad = micro(**{"train.iterations": 2, "data.path": str(tmp_path / "no-such-dataset")})
    root = tmp_path / "pool"
    runs = [PlannedRun("a", 1, a, root / "a-s1-k1"), PlannedRun("bad", 0, bad, root / "bad-s0-k2"),
            PlannedRun("b", 2, b, root / "b-s2-k3")]
    logs = []
    failures = execute(runs, "pool", [{}], log=logs.append)
    assert len(started) == 1  # one worker trained all three
    assert "MALLOC_MMAP_MAX_" in started[0] and started[0]["OMP_NUM_THREADS"] == "1"  # the runs' own environment
    assert "step:3/3" in (root / ".a-s1-k1.stdout").read_text()  # each run's output in its own file
    stdout = root / ".bad-s0-k2.stdout"
    assert failures == [f"bad-s0-k2 (exit 1; see {stdout})"]
    assert "Traceback" in stdout.read_text() and "no-such-dataset" in stdout.read_text()
    assert "a-s1-k1: done" in logs[1] and "bad-s0-k2: FAILED exit 1" in logs[2] and "b-s2-k3: done" in logs[3]
    alone = tmp_path / "alone"
    for r in (runs[2], runs[0]):  # each in its own process, as before the workers
        own = PlannedRun(r.arm, r.seed, r.cfg, alone / r.path.name)
        cmd, env = command(own, "alone", 1)
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        assert _record(own.path) == _record(r.path), r.path.name
    assert (root / "b-s2-k3" / "behaviour.json").exists()


def _counting(init, started):
    def wrapped(self, env):
        started.append(env)
        init(self, env)
    return wrapped


def test_sigterm_to_the_worker_reaches_its_run_which_stops_as_in_its_own_process(micro, tmp_path):
    """The run is marked interrupted and ends with the status its own process has (1: Python's for an uncaught
    StopRequested, a KeyboardInterrupt subclass); the worker takes no other run and ends."""
    import os
    import signal
    import time

    from pgolf.core.runs import read_status
    run = PlannedRun("a", 0, micro(**{"train.iterations": 10_000}), tmp_path / "a-s0-k")
    cmd, env = command(run, "t", 1)
    worker = worker_pool.Worker(env)
    out = tmp_path / ".a-s0-k.stdout"
    assert worker.submit(Path(cmd[3]), run.path, cmd[5], out)
    deadline = time.time() + 120
    while "step:2/" not in (out.read_text() if out.exists() else "") and time.time() < deadline:
        time.sleep(0.2)
    os.kill(worker.proc.pid, signal.SIGTERM)
    code = None
    while code is None and time.time() < deadline:
        code = worker.poll(timeout=1.0)
    assert code == 1 and "StopRequested: SIGTERM" in out.read_text()
    assert read_status(run.path)["status"] == "interrupted"
    worker.close()
    assert worker.proc.returncode == 0
