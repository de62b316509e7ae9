"""The ``slurm`` launcher against a real one-node SLURM cluster (``.ci/slurm-up.sh``; CI starts it).

One module-scoped scenario, shared by the tests: a micro study (2 arms x 2 seeds, 2 gloo processes per run,
30 steps of a 2-layer d64 model, a checkpoint every 5 steps) goes through one job array, 2 tasks at a time.
While it runs, a second call of the same study attaches to the queued tasks instead of submitting them again;
one task is requeued after its first checkpoint (and resumes from it); one pending task is cancelled, so both
calls end naming it; a third call resubmits only that run. The same study through the local launcher is the
reference table. Without a reachable SLURM (``sinfo`` fails) these tests skip.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pgolf_testing import slurm_unavailable_reason

from pgolf.research import protocol
from pgolf.research.scales import Scale
from pgolf.research.slurm import STATE_DIR, STATE_FILE, queue


REASON = slurm_unavailable_reason()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

ARMS = {"swiglu": {"model.mlp": "swiglu"}}
WAIT = 600  # seconds for each stage: generous, the scheduler and the runs share 2 CPUs with the rest of the suite
SETTINGS = {"poll_seconds": 0.5, "max_parallel": 2, "cpus_per_task": 1, "margin_seconds": 60}


def gloo_scale(dataset: Path) -> Scale:
    return Scale("gloo2", "tiny", {
        "data.path": str(dataset), "model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4,
        "model.num_kv_heads": 2, "train.train_seq_len": 64, "train.train_batch_tokens": 1024,
        "train.grad_accum_steps": 1, "train.iterations": 30, "train.max_wallclock_seconds": 0.0,
        "train.warmup_steps": 0, "train.val_loss_every": 0, "train.val_batch_size": 4096, "eval.max_tokens": 4096,
        "train.train_log_every": 1, "schedule.warmdown_iters": 5, "optim.muon_momentum_warmup_steps": 5,
        "train.checkpoint_every": 5, "train.save_raw_model": False, "export.keep_float_max_numel": 1024,
    }, (0, 1), device="cpu", nproc_per_node=2, run_seconds=60.0)


def _until(what, timeout: float, step: float = 0.2):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = what()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Call(threading.Thread):
    """One study() call in a thread: its log lines, and its table or error."""

    def __init__(self, scale: Scale, root: Path):
        super().__init__(daemon=True)
        self.scale, self.root, self.logs, self.table, self.error = scale, root, [], None, None

    def run(self):
        try:
            self.table = protocol.study(self.scale, ARMS, runs_root=self.root, launcher="slurm", slurm=SETTINGS,
                                        log=self.logs.append)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            self.error = e


@pytest.fixture(scope="module")
def scenario(small_dataset, tmp_path_factory):
    scale, root = gloo_scale(small_dataset), tmp_path_factory.mktemp("slurm_study")
    study_dir = root / scale.name
    local: dict = {}  # the reference table, trained meanwhile (the runs mostly wait on imports)
    reference = threading.Thread(target=lambda: local.update(table=protocol.study(
        scale, ARMS, runs_root=tmp_path_factory.mktemp("local_study"), jobs=2, log=lambda m: None)), daemon=True)
    reference.start()
    first = Call(scale, root)
    first.start()
    threads, job = [reference, first], None
    state = study_dir / STATE_DIR / STATE_FILE
    try:
        _until(lambda: state.is_file(), WAIT)
        (job,) = json.loads(state.read_text())["jobs"]
        job_id, names = job["job_id"], job["runs"]
        second = Call(scale, root)  # the notebook run again while the first is waiting: attaches
        second.start()
        threads.append(second)
        _until(lambda: any("attached to" in m for m in second.logs), WAIT)
        cancelled = f"{job_id}_3"  # pending (2 tasks at a time)
        subprocess.run(["scancel", cancelled], check=True)
        requeued, run_a = f"{job_id}_0", study_dir / names[0]
        _until(lambda: (run_a / "checkpoint.pt").exists(), WAIT, 0.1)
        subprocess.run(["scontrol", "requeue", requeued], check=True)
        # SLURM holds a requeued job for a while (BeginTime); release it at once, as a scheduler would after preemption
        _until(lambda: subprocess.run(["scontrol", "update", f"JobId={requeued}", "StartTime=now"],
                                      capture_output=True).returncode == 0 and queue(job["job_name"]).get(requeued)
               in ("PENDING", "RUNNING"), WAIT, 0.5)
        first.join(WAIT)
        second.join(WAIT)
        jobs_after_attach = json.loads(state.read_text())["jobs"]
        third = Call(scale, root)  # the notebook run once more: resubmits only the cancelled run
        third.run()
        reference.join(WAIT)
    except BaseException:
        # Nothing of the scenario may outlive it: its threads compute behaviour fingerprints in this process (which
        # set and restore the global RNG and thread count), so a thread left running would change later tests.
        if job is not None:
            subprocess.run(["scancel", "--name", job["job_name"]], capture_output=True)
        for t in threads:
            t.join(WAIT)
        raise
    return {"first": first, "second": second, "third": third, "local": local["table"], "job_id": job_id, "names": names,
            "cancelled": cancelled, "requeued": requeued, "study_dir": study_dir, "jobs_after_attach": jobs_after_attach,
            "jobs": json.loads(state.read_text())["jobs"]}


def test_job_array_gives_the_local_launchers_table(scenario):
    slurm, local = scenario["third"].table, scenario["local"]
    assert scenario["third"].error is None, scenario["third"].error
    assert list(zip(slurm["arm"], slurm["seed"])) == list(zip(local["arm"], local["seed"])) and len(slurm) == 4
    assert [Path(p).name for p in slurm["path"]] == [Path(p).name for p in local["path"]]  # same keys
    for metric in ("val_bpb", "q_val_bpb"):
        assert (slurm[metric] - local[metric]).abs().max() <= 1e-6, (metric, slurm[metric], local[metric])
    assert (slurm["world_size"] == 2).all() and (slurm["steps"] == 30).all()


def test_rerun_attaches_to_queued_tasks_instead_of_submitting_twice(scenario):
    second = scenario["second"]
    to_train = re.search(r"(\d+) to train", second.logs[0])[1]  # runs that finished meanwhile are cached
    assert int(to_train) >= 2 and any(f"attached to {to_train} task(s)" in m for m in second.logs), second.logs
    assert not any("submitted job array" in m for m in second.logs)
    assert len(scenario["jobs_after_attach"]) == 1  # one array until the cancelled run is resubmitted


def test_requeued_task_resumes_from_its_checkpoint_with_each_log_row_once(scenario):
    run = scenario["study_dir"] / scenario["names"][0]
    log = (run / "train.log").read_text()
    assert "resume:step:" in log, "the requeued task did not resume from checkpoint.pt"
    task_log = (scenario["study_dir"] / STATE_DIR / "logs" / f"{scenario['requeued']}.out").read_text()
    assert "start 0" in task_log and "start 1" in task_log  # SLURM_RESTART_COUNT: ran twice
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "train_loss" in r]
    assert steps == list(range(1, 31)), steps  # every training row once, in order
    step_lines = [ln for ln in log.splitlines() if ln.startswith("step:") and "train_loss" in ln]
    assert len(step_lines) == 30 == len(set(step_lines))


def test_cancelled_task_is_named_and_only_it_is_resubmitted(scenario):
    cancelled, names = scenario["cancelled"], scenario["names"]
    for call in (scenario["first"], scenario["second"]):
        assert isinstance(call.error, RuntimeError) and "1 run(s) failed" in str(call.error), call.error
        assert f"task {cancelled} ended without finishing" in str(call.error)
        assert f"logs/{cancelled}.out" in str(call.error)
    third = scenario["third"]
    assert any("3 cached, 1 to train" in m for m in third.logs), third.logs
    assert any("submitted job array" in m and "(1 task(s))" in m for m in third.logs)
    assert [j["runs"] for j in scenario["jobs"]] == [names, [names[3]]]
