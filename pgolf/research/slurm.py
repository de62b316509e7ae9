"""The ``slurm`` launcher: a study's runs to train become one SLURM job array, one task per run.

    ablate(..., launcher="slurm", slurm={"partition": "gpu", "account": "abc", "max_parallel": 4})

- **Submission.** The runs to train are listed in a manifest (``<study>/.slurm/array-<stamp>.jsonl``: each
  line a run folder, its config and labels) and submitted as ``sbatch --array=0-(n-1)%K`` with the batch script
  :func:`array_script` beside it. Each task requests the scale's nodes, one launcher task per node, the scale's
  GPUs per node (``--gpus-per-node``) and CPUs, and the time limit :func:`time_limit_seconds` (the scale's
  run budget x (1 + ``time_margin``) + ``margin_seconds``). A task runs its run through ``srun`` + torchrun
  (``--standalone`` on one node, c10d rendezvous on the first node when a scale has several).
- **The run folder is the record.** A task reads nothing but its manifest line and writes only into its run
  folder (on a filesystem every node sees); whether a run is done is read from its ``status.json`` and
  ``summary.json``, as for local runs. Nothing is pickled between machines.
- **Requeue and preemption.** Tasks are ``--requeue``-able. A task that starts on a run folder with a
  ``checkpoint.pt`` resumes from it (``--resume``: the log rows written after the checkpoint are cut, so each
  row is written once); one without a checkpoint moves the partial folder aside and starts again; one whose run
  already finished exits at once.
- **Attach, don't resubmit.** Every submission is recorded in ``<study>/.slurm/jobs.json`` under a job name
  stable for the study folder (``pgolf-<study>-<hash>``). Running the study again looks those jobs up in
  ``squeue``: a run whose task is still queued or running is waited for, not submitted twice; only runs
  that are missing or whose task ended without finishing them (failed, cancelled, out of time) are submitted.
- **Waiting.** The caller polls ``squeue`` (no accounting database needed) and the run folders, and prints
  per arm how many runs are done, running, pending and failed whenever that changes. A task that ended without
  finishing its run is named with its log (``<study>/.slurm/logs/<job>_<task>.out``) and the run's error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgolf.core.runs import CHECKPOINT, atomic_write_json, prepare_run_dir, read_status

if TYPE_CHECKING:
    from pgolf.research.ablate import PlannedRun
    from pgolf.research.launchers import Resources, StudyPlan

STATE_DIR = ".slurm"  # in the study folder: scripts, manifests, logs, jobs.json
STATE_FILE = "jobs.json"
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD", "CONFIGURING",
          "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
ACTIVE = {"RUNNING", "COMPLETING"}
CPUS_PER_GPU = 4  # default CPUs per GPU process
RDZV_PORT = 29500  # + task id % 1000: tasks sharing a head node do not collide


class SlurmError(RuntimeError):
    """sbatch or squeue failed; the message has the command and its output."""


@dataclass(frozen=True)
class SlurmSettings:
    partition: str = ""  # --partition ("" = the cluster's default)
    account: str = ""  # --account
    qos: str = ""  # --qos
    max_parallel: int = 0  # K of --array=0-N%K: tasks running at once (0 = no limit)
    time_margin: float = 0.25  # the time limit is the run budget x (1 + time_margin) + margin_seconds
    margin_seconds: float = 300.0  # start-up on a busy node, checkpoint writes
    cpus_per_task: int = 0  # --cpus-per-task (0: processes per node x 1 on CPU, x 4 on GPUs)
    extra: tuple[str, ...] = ()  # more sbatch options, one per item: ["--constraint=h100", "--mem=0"]
    poll_seconds: float = 10.0  # how often squeue is asked while waiting
    python: str = ""  # the interpreter on the compute nodes ("" = this one, sys.executable)

    def __post_init__(self) -> None:
        for name in ("max_parallel", "cpus_per_task"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"slurm setting {name!r}: expected an integer >= 0, got {getattr(self, name)!r}")
        if self.time_margin < 0 or self.margin_seconds < 0 or self.poll_seconds <= 0:
            raise ValueError("slurm settings 'time_margin' and 'margin_seconds' must be >= 0 and 'poll_seconds' > 0, "
                             f"got {self.time_margin!r}, {self.margin_seconds!r}, {self.poll_seconds!r}")
        if not all(isinstance(x, str) and x.startswith("-") for x in self.extra):
            raise ValueError(f"slurm setting 'extra': expected a list of sbatch options like '--mem=0', got {self.extra!r}")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> SlurmSettings:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ValueError(f"slurm setting {unknown[0]!r}: unknown; expected some of {', '.join(names)}")
        values = dict(options)
        if isinstance(values.get("extra"), str):
            values["extra"] = shlex.split(values["extra"])
        if "extra" in values:
            values["extra"] = tuple(values["extra"])
        return cls(**values)


def time_limit_seconds(resources: Resources, settings: SlurmSettings) -> int:
    """A task's ``--time``: the run budget plus the stated margin, in whole minutes."""
    budget = resources.run_seconds or 3600.0
    return int(math.ceil((budget * (1 + settings.time_margin) + settings.margin_seconds) / 60) * 60)


def hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def job_name(study_dir: Path) -> str:
    """The job name of every array of this study folder: stable across notebook runs, unique per folder."""
    digest = hashlib.sha256(str(Path(study_dir).resolve()).encode()).hexdigest()[:8]
    return f"pgolf-{Path(study_dir).name}-{digest}"


def torchrun_line(resources: Resources, python: str) -> str:
    """The torchrun command each node runs (single-quoted for ``bash -c``; $RUN_DIR etc. expand on the node)."""
    n, p = resources.nnodes, resources.nproc_per_node
    if n == 1:
        head = f"{python} -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node {p}"
        logs = '"$RUN_DIR/launch/logs"'
    else:
        head = (f"{python} -m torch.distributed.run --nnodes {n} --nproc_per_node {p} --node_rank \"$SLURM_NODEID\" "
                f"--rdzv-backend c10d --rdzv-endpoint \"$HEAD_NODE:$RDZV_PORT\" --rdzv-id \"$SLURM_JOB_ID\"")
        logs = '"$RUN_DIR/launch/logs/node$SLURM_NODEID"'
    return (f"exec {head} --log-dir {logs} --redirects 3 --tee 3 -m pgolf.running.worker "
            f'--config "$RUN_DIR/launch/config.json" --run-dir "$RUN_DIR" --labels-json "$LABELS" $RESUME')


def array_script(study_dir: Path, manifest: Path, n_tasks: int, resources: Resources, settings: SlurmSettings,
                 name: str | None = None) -> str:
    """The batch script of one job array over the ``n_tasks`` runs listed in ``manifest``."""
    py = shlex.quote(settings.python or sys.executable)
    state = Path(study_dir).resolve() / STATE_DIR
    procs = resources.nproc_per_node
    cpus = settings.cpus_per_task or procs * (CPUS_PER_GPU if resources.device == "cuda" else 1)
    array = f"0-{n_tasks - 1}" + (f"%{settings.max_parallel}" if settings.max_parallel else "")
    sb = [f"--job-name={name or job_name(study_dir)}", f"--array={array}", f"--nodes={resources.nnodes}",
          "--ntasks-per-node=1", f"--cpus-per-task={cpus}"]
    if resources.device == "cuda":
        sb.append(f"--gpus-per-node={procs}")
    sb += [f"--time={hms(time_limit_seconds(resources, settings))}", "--requeue", "--open-mode=append",
           f"--output={state / 'logs' / '%A_%a.out'}"]
    sb += [f"--{k}={getattr(settings, k)}" for k in ("partition", "account", "qos") if getattr(settings, k)]
    sb += list(settings.extra)
    budget = f"{resources.run_seconds:,.0f} s" if resources.run_seconds else "unknown"
    lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in sb),
             f"# pgolf: one task per run of {Path(study_dir).name!r}"
             + (f" at scale {resources.scale}" if resources.scale else "")
             + f"; run budget {budget}, time limit = budget x {1 + settings.time_margin:g} + {settings.margin_seconds:g} s",
             f"# runs: {manifest}", "", "set -uo pipefail", "export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1",
             'echo "pgolf: task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname), '
             'start ${SLURM_RESTART_COUNT:-0}"',
             f'VARS=$({py} -m pgolf.research.slurm prepare {shlex.quote(str(manifest))} "$SLURM_ARRAY_TASK_ID") || exit 1',
             'eval "$VARS"',
             'if [ "$TASK_STATE" = finished ]; then echo "pgolf: $RUN_DIR already finished"; exit 0; fi',
             'export RUN_DIR RESUME LABELS HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
             f"export RDZV_PORT=$(({RDZV_PORT} + SLURM_ARRAY_TASK_ID % 1000))",
             'LOG="$RUN_DIR/launch/torchrun.${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.${SLURM_RESTART_COUNT:-0}.log"',
             f"srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c {shlex.quote(torchrun_line(resources, py))} "
             '2>&1 | tee "$LOG"',
             "rc=${PIPESTATUS[0]}",
             f'{py} -m pgolf.research.slurm finish "$RUN_DIR" "$rc" "$LOG"', "exit $?", ""]
    return "\n".join(lines)


# -- on the compute node --------------------------------------------------------------------------


def prepare_task(manifest: Path, index: int) -> dict[str, str]:
    """A task's first step (first node): the run folder made ready, and the shell variables for the rest.
    Finished: ``TASK_STATE=finished``. A checkpoint: ``RESUME=--resume``. A partial run without one: moved aside."""
    entry = json.loads(Path(manifest).read_text().splitlines()[index])
    run_dir = Path(entry["run_dir"])
    status = read_status(run_dir)
    out = {"RUN_DIR": str(run_dir), "LABELS": json.dumps(entry["labels"]), "RESUME": "", "TASK_STATE": "train"}
    if status and status.get("status") == "finished" and (run_dir / "summary.json").exists():
        return {**out, "TASK_STATE": "finished"}
    if status is not None and (run_dir / CHECKPOINT).exists():
        prepare_run_dir(run_dir, resume=True)
        out["RESUME"] = "--resume"
    else:
        prepare_run_dir(run_dir, overwrite=status is not None)  # a partial run without a checkpoint: moved aside
    (run_dir / "launch").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / "launch" / "ranks", ignore_errors=True)  # the ranks' records of an earlier attempt
    atomic_write_json(run_dir / "launch" / "config.json", entry["config"])
    return out


def finish_task(run_dir: Path, exit_code: int, log: Path | None) -> int:
    """A task's last step: the launcher's verdict on the run folder (:func:`pgolf.running.launch.finalize`) and,
    for a finished run, its behaviour fingerprint (the code that trained it)."""
    from pgolf.core.config import Config
    from pgolf.research.ablate import BEHAVIOUR, write_behaviour
    from pgolf.running.launch import finalize
    text = Path(log).read_text(errors="replace") if log and Path(log).is_file() else ""
    rc, message = finalize(Path(run_dir), exit_code, text)
    if rc == 0 and not (Path(run_dir) / BEHAVIOUR).exists():
        write_behaviour(Path(run_dir), Config.from_json(Path(run_dir) / "launch" / "config.json"))
    print(f"pgolf: {message}", file=sys.stderr if rc else sys.stdout, flush=True)
    return rc


# -- on the submitting machine -------------------------------------------------------------------


def _run(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError(f"`{shlex.join(cmd)}` could not run: {e}") from None
    if p.returncode != 0:
        raise SlurmError(f"`{shlex.join(cmd)}` failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()}")
    return p.stdout


def queue(name: str) -> dict[str, str]:
    """``{"<job>_<task>": state}`` of the array tasks named ``name`` still in the queue."""
    out = {}
    for line in _run(["squeue", "-h", "-r", f"--name={name}", "-o", "%i|%T"]).splitlines():
        task, _, state = line.strip().partition("|")
        if task:
            out[task] = state
    return out


def read_state(study_dir: Path) -> dict[str, Any]:
    path = Path(study_dir) / STATE_DIR / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {"jobs": []}


@dataclass
class SlurmLauncher:
    settings: SlurmSettings = field(default_factory=SlurmSettings)
    name: str = "slurm"

    def summary(self, plan: StudyPlan) -> str:
        s = self.settings
        where = ", ".join(f"{k} {getattr(s, k)}" for k in ("partition", "account", "qos") if getattr(s, k))
        return (f"slurm (one job array, one task per run to train"
                + (f", {s.max_parallel} at a time" if s.max_parallel else "")
                + f"; time limit {hms(time_limit_seconds(plan.resources, s))} per task"
                + (f"; {where}" if where else "") + "; runs still queued are attached to, not resubmitted)")

    def describe(self, plan: StudyPlan) -> str:
        study = plan.todo[0].path.parent
        manifest = study / STATE_DIR / "array-<stamp>.jsonl"
        script = array_script(study, manifest, len(plan.todo), plan.resources, self.settings)
        return (f"  batch script (written to {study / STATE_DIR}/array-<stamp>.sh and submitted with sbatch; "
                "a task still queued from an earlier submission is attached to instead):\n"
                + "\n".join(f"    {line}" for line in script.splitlines()))

    def run(self, plan: StudyPlan, log) -> list[str]:
        study = plan.todo[0].path.parent
        name = job_name(study)
        tasks = attach(study, plan.todo, name)
        if tasks:
            log(f"slurm: attached to {len(tasks)} task(s) already queued: " + ", ".join(sorted(set(tasks.values()))))
        missing = [r for r in plan.todo if r.path.name not in tasks]
        if missing:
            tasks.update(submit(study, missing, plan, self.settings, name, log))
        return wait(plan.todo, tasks, name, study, self.settings.poll_seconds, log)


def attach(study: Path, todo: list[PlannedRun], name: str) -> dict[str, str]:
    """Run folder name -> its task id, for the runs of ``todo`` whose task of an earlier submission is queued."""
    recorded = {}  # "<job>_<task>" -> run folder name, later submissions last
    for job in read_state(study)["jobs"]:
        for i, run_name in enumerate(job["runs"]):
            recorded[f"{job['job_id']}_{i}"] = run_name
    queued = queue(name) if recorded else {}
    wanted = {r.path.name for r in todo}
    return {recorded[t]: t for t in queued if t in recorded and recorded[t] in wanted}


def submit(study: Path, runs: list[PlannedRun], plan: StudyPlan, settings: SlurmSettings, name: str,
           log) -> dict[str, str]:
    """Write the manifest and batch script of ``runs`` and submit them as one array; run name -> task id."""
    from pgolf.research.ablate import labels_json
    state_dir = study / STATE_DIR
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    for r in runs:  # a finished run trained again (stale, or rerun): moved aside now, as the local launcher does
        if r.finished:
            prepare_run_dir(r.path, overwrite=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    manifest = state_dir / f"array-{stamp}.jsonl"
    manifest.write_text("".join(json.dumps({"run_dir": str(r.path.resolve()), "config": r.cfg.to_dict(),
                                            "labels": json.loads(labels_json(r, plan.ablation))}) + "\n" for r in runs))
    script = state_dir / f"array-{stamp}.sh"
    script.write_text(array_script(study, manifest, len(runs), plan.resources, settings, name))
    job_id = _run(["sbatch", "--parsable", str(script)]).strip().split(";")[0]
    state = read_state(study)
    state["jobs"].append({"job_id": job_id, "job_name": name, "script": str(script), "manifest": str(manifest),
                          "runs": [r.path.name for r in runs], "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
    atomic_write_json(state_dir / STATE_FILE, state)
    log(f"slurm: submitted job array {job_id} ({len(runs)} task(s)): {script}")
    return {r.path.name: f"{job_id}_{i}" for i, r in enumerate(runs)}


def task_states(runs: list[PlannedRun], tasks: dict[str, str], queued: dict[str, str]) -> dict[str, str]:
    """Run folder name -> done, running, pending or failed."""
    out = {}
    for r in runs:
        state = queued.get(tasks.get(r.path.name, ""))
        if state in ACTIVE:
            out[r.path.name] = "running"
        elif state is not None:
            out[r.path.name] = "pending"
        else:
            out[r.path.name] = "done" if r.finished else "failed"
    return out


def progress_line(runs: list[PlannedRun], states: dict[str, str]) -> str:
    per_arm: dict[str, dict[str, int]] = {}
    for r in runs:
        counts = per_arm.setdefault(r.arm, dict.fromkeys(("done", "running", "pending", "failed"), 0))
        counts[states[r.path.name]] += 1
    return " | ".join(f"{arm}: " + ", ".join(f"{n} {k}" for k, n in c.items()) for arm, c in per_arm.items())


def failure_report(run: PlannedRun, task: str, study: Path) -> str:
    status = read_status(run.path) or {}
    what = f"status {status.get('status')}: {status.get('error', '')}".rstrip(": ") if status else "never started"
    return (f"arm {run.arm!r} seed {run.seed}: task {task} ended without finishing {run.path} ({what}); "
            f"log {study / STATE_DIR / 'logs' / (task + '.out')}")


def wait(runs: list[PlannedRun], tasks: dict[str, str], name: str, study: Path, poll_seconds: float,
         log) -> list[str]:
    """Poll until no task of ``runs`` is queued; print per-arm progress when it changes; return the failures."""
    last, errors = "", 0
    while True:
        try:
            queued = queue(name)
            errors = 0
        except SlurmError as e:  # a busy controller times out now and then; give up after a few in a row
            errors += 1
            if errors >= 5:
                raise
            log(f"slurm: {e}; asking again in {poll_seconds:g} s")
            time.sleep(poll_seconds)
            continue
        states = task_states(runs, tasks, queued)
        line = progress_line(runs, states)
        if line != last:
            log(f"slurm {time.strftime('%H:%M:%S')}: {line}")
            last = line
        if not any(s in ("running", "pending") for s in states.values()):
            break
        time.sleep(poll_seconds)
    failures = [failure_report(r, tasks[r.path.name], study) for r in runs if states[r.path.name] == "failed"]
    for f in failures:
        log(f"  FAILED {f}")
    return failures


def main(argv: list[str] | None = None) -> int:
    """``python -m pgolf.research.slurm prepare MANIFEST INDEX`` (prints shell assignments) and
    ``... finish RUN_DIR EXIT_CODE [TORCHRUN_LOG]``: the steps of a batch script around srun + torchrun."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prepare"] and len(argv) == 3:
        for k, v in prepare_task(Path(argv[1]), int(argv[2])).items():
            print(f"{k}={shlex.quote(v)}")
        return 0
    if argv[:1] == ["finish"] and len(argv) in (3, 4):
        return finish_task(Path(argv[1]), int(argv[2]), Path(argv[3]) if len(argv) == 4 else None)
    print("usage: python -m pgolf.research.slurm prepare MANIFEST INDEX | finish RUN_DIR EXIT_CODE [LOG]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
