"""Start a run under torchrun (one node, or one node of a multi-node job) and make failures loud.

``launch(cfg, run_dir, args)`` claims the run folder (:func:`pgolf.core.runs.prepare_run_dir`), writes
``launch/config.json`` and ``launch/launch.json``, and runs

    python -m torch.distributed.run --standalone --nproc_per_node N --log-dir <run>/launch/logs
        --redirects 3 --tee 3 -m pgolf.running.worker --config <run>/launch/config.json --run-dir <run>

with the venv's own interpreter, in this environment plus, for a run not on CUDA, glibc's malloc settings
(:func:`pgolf.core.runtime.training_process_env`), plus ``--env``. Every rank's stdout/stderr stays in
``launch/logs/<id>/attempt_0/<local rank>/``, torchrun's own output in ``launch/torchrun.log``, and each rank's
last state in ``launch/ranks/rank<R>.json`` (written by :mod:`pgolf.running.worker`).

When torchrun exits non-zero the launcher names the failing rank and its error and marks the run failed.
A dead rank makes its peers fail too ("connection closed by peer") a moment later, so
:func:`find_failure` picks the cause from torchrun's failure table and the rank records: a silent signal
death (SIGKILL, SIGSEGV) or a rank's own error first, a peer-disconnect error last. ``status.json`` then
says ``failed`` with that rank and error. If rank 0's trainer already marked the run failed for the same
rank, its record is kept as it is; if it blamed itself for a peer's death, the launcher writes the real
cause and keeps the trainer's record under ``rank0_status``. A run whose summary says finished but whose
job failed afterwards gets its summary marked failed too. Ctrl-C on the launcher stops the job and marks the
run ``interrupted`` (resumable), never leaving it ``running``. A folder that another live run has locked
(:mod:`pgolf.core.ownership`) is never marked: this job did not own it.

``--resume`` with the same command continues from ``checkpoint.pt``; ``--slurm FILE`` writes a batch script
(:func:`slurm_script`) instead of launching; ``--dry-run`` prints the command and starts nothing
(:func:`dry_run`: it checks the dataset and writes the config file the command names).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.core.config import Config
from pgolf.core.ownership import describe_holder, lock_holder
from pgolf.core.runs import RunExistsError, RunWriter, atomic_write_json, prepare_run_dir, read_status
from pgolf.core.runtime import training_process_env
from pgolf.running.worker import worker_argv

LAUNCH_DIR = "launch"  # the launcher's files inside a run folder
RANKS_DIR = "ranks"  # launch/ranks/rank<R>.json: each rank's own state, written by pgolf.running.worker
TORCHRUN_LOG = "torchrun.log"
# Variables that reach every rank anyway (inherited) and are worth recording in launch.json.
PASSTHROUGH_PREFIXES = ("NCCL_", "TORCH_", "PGOLF_", "CUDA_", "OMP_", "MKL_", "GLOO_", "TORCHINDUCTOR_")
SLURM_RDZV_PORT = 29500


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("launch (torchrun)")
    g.add_argument("--nproc-per-node", type=int, default=1, help="processes (GPUs) per node")
    g.add_argument("--nnodes", type=int, default=1, help="nodes in the job")
    g.add_argument("--node-rank", type=int, default=0, help="this node's rank (multi-node)")
    g.add_argument("--rdzv-endpoint", help="HOST:PORT of the c10d rendezvous (multi-node; the first node)")
    g.add_argument("--rdzv-id", help="job id shared by all nodes (default: the run folder's name)")
    g.add_argument("--dry-run", action="store_true",
                   help="check the data, write the run's config, print the command; start nothing")
    g.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set a variable for every rank (repeatable); NCCL_* etc. already set pass through anyway")
    g.add_argument("--slurm", metavar="FILE", help="write a SLURM batch script for this run instead of launching")


# -- commands ------------------------------------------------------------------------------------


def _opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default) if getattr(args, name, None) is not None else default


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"--env {item!r}: expected KEY=VALUE with a valid variable name")
        env[key] = value
    return env


def torchrun_command(run_dir: Path, *, nproc_per_node: int = 1, nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None, rdzv_id: str | None = None, resume: bool = False,
                     python: str | None = None, worker_args: list[str] | None = None) -> list[str]:
    """The torchrun command for this node. One node: ``--standalone``; several: c10d rendezvous.
    ``worker_args``: more arguments for every rank's worker (``pgolf.running.worker.add_worker_args``)."""
    run_dir = Path(run_dir)
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"--nproc-per-node ({nproc_per_node}) and --nnodes ({nnodes}) must be >= 1")
    cmd = [python or sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        cmd += ["--standalone", "--nproc_per_node", str(nproc_per_node)]
        log_dir = run_dir / LAUNCH_DIR / "logs"
    else:
        if not rdzv_endpoint:
            raise ValueError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the first node)")
        if not 0 <= node_rank < nnodes:
            raise ValueError(f"--node-rank must be in [0, {nnodes}), got {node_rank}")
        cmd += ["--nnodes", str(nnodes), "--nproc_per_node", str(nproc_per_node), "--node_rank", str(node_rank),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", rdzv_id or run_dir.name]
        log_dir = run_dir / LAUNCH_DIR / "logs" / f"node{node_rank}"
    cmd += ["--log-dir", str(log_dir), "--redirects", "3", "--tee", "3",
            "-m", "pgolf.running.worker", "--config", str(run_dir / LAUNCH_DIR / "config.json"), "--run-dir", str(run_dir)]
    if resume:
        cmd.append("--resume")
    return cmd + list(worker_args or [])


def passthrough_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {k: v for k, v in sorted(environ.items()) if k.startswith(PASSTHROUGH_PREFIXES)}


# -- failures ------------------------------------------------------------------------------------


@dataclass
class RankFailure:
    rank: int | None
    error: str
    log: str | None = None  # folder with that rank's stdout.log / stderr.log


_FAILURE_RE = re.compile(
    r"rank\s*:\s*(?P<rank>\d+) \(local_rank: (?P<local>\d+)\)\s*\n\s*exitcode\s*:\s*(?P<code>-?\d+) \(pid: \d+\)"
    r"[^\n]*\n\s*error_file:[^\n]*\n\s*traceback\s*:(?P<msg>.*?)(?=\n\[\d+\]:|\n-{20}|\n={20}|\Z)", re.S)


def parse_torchrun_failures(text: str) -> tuple[dict[int, tuple[int, str]], int | None]:
    """{rank: (exitcode, message)} from torchrun's ChildFailedError table, and its root-cause rank."""
    failures: dict[int, tuple[int, str]] = {}
    root = None
    head, sep, root_part = text.rpartition("Root Cause (first observed failure):")
    for part, is_root in ((head if sep else text, False), (root_part if sep else "", True)):
        for m in _FAILURE_RE.finditer(part):
            lines = [ln.strip() for ln in m["msg"].strip().splitlines() if ln.strip()]
            failures[int(m["rank"])] = (int(m["code"]), lines[-1] if lines else "")
            if is_root and root is None:
                root = int(m["rank"])
    return failures, root


def read_rank_records(run_dir: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for f in sorted((Path(run_dir) / LAUNCH_DIR / RANKS_DIR).glob("rank*.json")):
        try:
            rec = json.loads(f.read_text())
            out[int(rec["rank"])] = rec
        except (ValueError, KeyError, OSError):
            continue
    return out


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


# Errors a rank raises because a *peer* died; they rank below a peer's own error or death.
COLLATERAL_ERRORS = ("Connection closed by peer", "remote worker crash", "Connection reset by peer", "Broken pipe",
                     "NCCL communicator was aborted", "Watchdog caught collective operation timeout")
TERMINATION_SIGNALS = (-signal.SIGTERM, -signal.SIGINT)  # what torchrun sends the survivors


def find_failure(run_dir: Path, torchrun_text: str, exit_code: int) -> RankFailure:
    """The rank that brought the job down and its error. A dead rank makes its peers fail a moment later
    (torchrun's own "first observed failure" has one-second resolution and often names a peer), so in order:
    1. a rank that died from a signal such as SIGKILL or SIGSEGV without reporting an error;
    2. the earliest rank record with an error of its own;
    3. a rank that was terminated (SIGTERM/SIGINT) without reporting an error;
    4. the earliest rank record with a collateral error (a peer disconnected);
    5. torchrun's root cause;
    6. torchrun itself stopped by a signal (the job was cancelled), or an unknown failure.
    """
    records = read_rank_records(run_dir)
    failures, root = parse_torchrun_failures(torchrun_text)
    log = lambda r: (records.get(r) or {}).get("log_dir")  # noqa: E731
    silent = {r: code for r, (code, _) in failures.items()
              if code < 0 and (records.get(r) or {}).get("status") != "failed"}
    failed = sorted((rec.get("time", 0.0), r) for r, rec in records.items() if rec.get("status") == "failed")
    own = [r for _, r in failed if not any(p in records[r].get("error", "") for p in COLLATERAL_ERRORS)]

    def killed(r: int) -> RankFailure:
        return RankFailure(r, f"killed by {_signal_name(silent[r])} (exit code {silent[r]})", log(r))

    def reported(r: int) -> RankFailure:
        return RankFailure(r, records[r].get("error", "unknown error"), log(r))

    hard = sorted(r for r, code in silent.items() if code not in TERMINATION_SIGNALS)
    if hard:
        return killed(hard[0])
    if own:
        return reported(own[0])
    if silent:
        return killed(min(silent))
    if failed:
        return reported(failed[0][1])
    if root is not None:
        code, msg = failures[root]
        return RankFailure(root, f"exit code {code}: {msg}", log(root))
    stopped = re.search(r"SignalException: Process \d+ got signal: (\d+)", torchrun_text)
    if stopped:
        return RankFailure(None, f"job stopped: torchrun got {_signal_name(-int(stopped[1]))} and terminated the ranks")
    return RankFailure(None, f"torchrun exited with code {exit_code} before any rank reported a failure "
                             f"(see {Path(run_dir) / LAUNCH_DIR / TORCHRUN_LOG})")


def mark_failed(run_dir: Path, failure: RankFailure) -> dict[str, Any]:
    """Make sure the run folder says failed, naming ``failure``'s rank; returns the final status."""
    run_dir = Path(run_dir)
    status = read_status(run_dir) or {}
    if status.get("status") == "failed" and status.get("rank") == failure.rank:
        return status  # rank 0's trainer already recorded this very failure
    extra: dict[str, Any] = {"rank": failure.rank, "error": failure.error, "marked_by": "launcher"}
    if failure.log:
        extra["rank_log"] = failure.log
    if status.get("status") == "failed":
        extra["rank0_status"] = status
    writer = RunWriter(run_dir, console=False)
    writer.status("failed", **extra)
    writer.log(f"run_failed rank:{failure.rank} error:{failure.error} (marked by launcher)", console=False)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():  # a rank died after rank 0 finished: the summary must not read finished
        summary = json.loads(summary_path.read_text())
        if summary.get("status") == "finished":
            summary.update(status="failed", failed_rank=failure.rank, failed_error=failure.error)
            atomic_write_json(summary_path, summary)
    return read_status(run_dir) or {}


def mark_interrupted(run_dir: Path) -> dict[str, Any]:
    """After Ctrl-C stopped the job: the run folder says ``interrupted`` (a failure recorded first is kept
    under ``previous_status``)."""
    run_dir = Path(run_dir)
    status = read_status(run_dir) or {}
    extra: dict[str, Any] = {"marked_by": "launcher", "error": "KeyboardInterrupt (the launcher was interrupted)"}
    if status.get("status") == "failed":
        extra["previous_status"] = status
    writer = RunWriter(run_dir, console=False)
    writer.status("interrupted", **extra)
    writer.log("run_interrupted (marked by launcher)", console=False)
    return read_status(run_dir) or {}


def finalize(run_dir: Path, exit_code: int, torchrun_text: str = "", mark: bool = True,
             interrupted: bool = False) -> tuple[int, str]:
    """After torchrun ends: (exit code, message). Marks the folder failed when the job failed, or interrupted
    when the launcher got Ctrl-C (``mark``: only node 0 does; ``status.json`` is rank 0's)."""
    run_dir = Path(run_dir)
    status = (read_status(run_dir) or {}).get("status")
    if exit_code == 0 and status == "finished":
        return 0, f"run finished: {run_dir}"
    holder = lock_holder(run_dir) if mark and run_dir.is_dir() else None
    if holder is not None:  # all of node 0's ranks have exited, so another run owns the folder now
        return exit_code or 1, (f"this job failed (exit code {exit_code}); run folder {run_dir} is in use by "
                                f"{describe_holder(holder)}, so it was left as it is")
    if interrupted and status != "finished":
        if mark:
            mark_interrupted(run_dir)
        return 130, f"interrupted: run folder {run_dir} marked interrupted; continue with the same command and --resume"
    recorded = read_status(run_dir) or {}
    if status == "interrupted" and recorded.get("signal"):  # the ranks stopped together on SIGTERM, checkpointed
        signum = getattr(signal, recorded["signal"], signal.SIGTERM)
        return 128 + int(signum), (f"interrupted by {recorded['signal']}: run folder {run_dir} marked interrupted "
                                   f"by the trainer; continue with the same command and --resume")
    if exit_code == 0:
        exit_code = 1
        failure = RankFailure(0, f"every rank exited 0 but the run status is {status!r}")
    else:
        failure = find_failure(run_dir, torchrun_text, exit_code)
    if mark:
        mark_failed(run_dir, failure)
    where = f" (rank log: {failure.log})" if failure.log else ""
    name = f"rank {failure.rank}" if failure.rank is not None else "torchrun"
    marked = f"run folder {run_dir} marked failed" if mark else "node 0's launcher marks the run folder"
    return exit_code, f"run failed: {name}: {failure.error}{where}; {marked}"


# -- launching -----------------------------------------------------------------------------------


def _stream(proc: subprocess.Popen, log_path: Path) -> str:
    """Copy torchrun's output to our stdout and to ``log_path``; return it."""
    chunks = []
    with open(log_path, "a", encoding="utf-8") as log:
        assert proc.stdout is not None
        for line in proc.stdout:
            chunks.append(line)
            log.write(line)
            log.flush()
            sys.stdout.write(line)
            sys.stdout.flush()
    return "".join(chunks)


def _run_torchrun(cmd: list[str], env: dict[str, str], log_path: Path) -> tuple[int, str, bool]:
    """Run torchrun to the end; SIGTERM to us is passed on (torchrun stops the ranks), so we still finalize.
    Returns (exit code, output, whether we got Ctrl-C)."""
    start = log_path.stat().st_size if log_path.exists() else 0  # earlier attempts' output stays above
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1)
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    except ValueError:  # not the main thread
        previous = None
    interrupted = False
    try:
        text = _stream(proc, log_path)
        rc = proc.wait()
    except KeyboardInterrupt:
        interrupted = True
        # From a terminal, torchrun got the same SIGINT and is stopping the ranks; otherwise pass it on.
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            rc = proc.wait()
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        rc = rc or 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return rc, text, interrupted


def launch(cfg: Config, run_dir: Path, args: argparse.Namespace) -> int:
    """Launch (or with --dry-run print, or with --slurm script) a torchrun job for ``cfg``; exit code."""
    run_dir = Path(run_dir).resolve()
    nproc, nnodes = _opt(args, "nproc_per_node", 1), _opt(args, "nnodes", 1)
    node_rank, resume = _opt(args, "node_rank", 0), bool(_opt(args, "resume", False))
    env_overrides = parse_env(_opt(args, "env", []))
    check_world_size(cfg, nproc * nnodes)  # what every rank would refuse, refused here (dry runs too)
    if _opt(args, "slurm"):
        return write_slurm(cfg, run_dir, args, env_overrides)
    cmd = torchrun_command(run_dir, nproc_per_node=nproc, nnodes=nnodes, node_rank=node_rank,
                           rdzv_endpoint=_opt(args, "rdzv_endpoint"), rdzv_id=_opt(args, "rdzv_id"), resume=resume,
                           worker_args=worker_argv(args))
    if _opt(args, "dry_run", False):
        return dry_run(cfg, run_dir, cmd, env_overrides, resume=resume, overwrite=bool(_opt(args, "overwrite", False)))

    launch_dir = run_dir / LAUNCH_DIR
    if node_rank == 0:  # with a shared folder, node 0 alone claims it; the others only add to launch/
        prepare_run_dir(run_dir, resume=resume, overwrite=bool(_opt(args, "overwrite", False)))
    launch_dir.mkdir(parents=True, exist_ok=True)
    if node_rank == 0:  # records of an earlier attempt must not be read as this one's
        shutil.rmtree(launch_dir / RANKS_DIR, ignore_errors=True)
    atomic_write_json(launch_dir / "config.json", cfg.to_dict())
    record = {"command": cmd, "command_str": shlex.join(cmd), "env_overrides": env_overrides,
              "env_inherited": passthrough_env(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "host": socket.gethostname(), "node_rank": node_rank, "nnodes": nnodes, "nproc_per_node": nproc,
              "resume": resume}
    atomic_write_json(launch_dir / ("launch.json" if node_rank == 0 else f"launch.node{node_rank}.json"), record)
    with open(launch_dir / "launches.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")

    env = {**os.environ, **training_process_env(cfg), **env_overrides}
    print(f"launch: {shlex.join(cmd)}", flush=True)
    log_path = launch_dir / (TORCHRUN_LOG if node_rank == 0 else f"torchrun.node{node_rank}.log")
    rc, text, interrupted = _run_torchrun(cmd, env, log_path)
    if node_rank != 0 and rc == 0:
        return 0  # node 0's launcher judges the run's final state
    rc, message = finalize(run_dir, rc, text, mark=node_rank == 0, interrupted=interrupted)
    print(f"pgolf: {message}", file=sys.stderr if rc else sys.stdout, flush=True)
    return rc


def dry_run(cfg: Config, run_dir: Path, cmd: list[str], env_overrides: dict[str, str], *, resume: bool,
            overwrite: bool) -> int:
    """Print a command that can be pasted, with the files it names in place; start nothing.

    The dataset must resolve (an error names ``data.path``), and the run folder must be one the launch
    would accept (the same refusal); then the resolved config is written to ``<run>/launch/config.json``,
    the file the command names, and the log folder made. A folder holding only ``launch/`` is one a
    later launch accepts. ``--env`` variables are part of the command (``env K=V ...``)."""
    data = check_data(cfg)
    if overwrite and read_status(run_dir) is not None:
        raise RunExistsError(f"{run_dir}: holds a run, which --overwrite moves aside when launched; a dry run "
                             f"changes nothing there, so it cannot write the config the command names; launch "
                             f"without --dry-run or choose another --name")
    prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)  # no side effect unless overwrite and a run
    config_path = Path(cmd[cmd.index("--config") + 1])
    atomic_write_json(config_path, cfg.to_dict())
    Path(cmd[cmd.index("--log-dir") + 1]).mkdir(parents=True, exist_ok=True)
    print(shlex.join(["env", *(f"{k}={v}" for k, v in env_overrides.items()), *cmd] if env_overrides else cmd))
    for k, v in passthrough_env().items():
        print(f"env (inherited) {k}={v}")
    print(f"config: {config_path} (written)")
    print(f"data: {data}")
    print("pasted, the command runs the job; `pgolf train` without --dry-run also records launch.json and names "
          "a failing rank")
    return 0


def check_world_size(cfg: Config, world_size: int) -> None:
    """The refusals a rank makes at start-up for this world size, made before anything is launched: the
    official gradient-accumulation rule (8 must divide by the world size unless ``train.grad_accum_steps``
    is set) and each rank's micro-batch being a whole number of ``train.train_seq_len`` sequences."""
    from pgolf.core.runtime import grad_accum_steps
    accum = grad_accum_steps(cfg, world_size)
    t = cfg.train
    local = t.train_batch_tokens // (world_size * accum)
    if local <= 0 or local % t.train_seq_len:
        raise ValueError(f"train.train_batch_tokens={t.train_batch_tokens} gives each of the {world_size} ranks "
                         f"{local} tokens per micro-step (// world_size * grad_accum_steps={accum}), which must be a "
                         f"positive multiple of train.train_seq_len={t.train_seq_len}")


def check_data(cfg: Config) -> str:
    """A line describing the dataset the run will read; an error naming ``data.path`` if it cannot be found."""
    from pgolf.core.data.loader import DatasetNotFoundError, resolve_dataset
    try:
        ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    except DatasetNotFoundError as e:
        which = f"data.path={cfg.data.path}" if cfg.data.path else "data.path is empty (the default dataset)"
        raise DatasetNotFoundError(f"{which}: {e}; the run would stop there") from None
    return (f"{ds.root} ({len(ds.train_files)} train and {len(ds.val_files)} val shards, "
            f"tokenizer {ds.tokenizer_path})")


# -- SLURM ---------------------------------------------------------------------------------------


def slurm_script(cfg_path: Path, run_dir: Path, nnodes: int, nproc_per_node: int, *, job_name: str = "pgolf",
                 time_limit: str = "00:30:00", env: dict[str, str] | None = None, python: str | None = None,
                 rdzv_port: int = SLURM_RDZV_PORT, partition: str | None = None,
                 cpus_per_task: int | None = None, worker_args: list[str] | None = None) -> str:
    """A batch script: one srun task per node, each running torchrun with c10d rendezvous on the first node.

    Assumes ``run_dir`` is on a filesystem every node sees. The script resumes from ``checkpoint.pt`` when the
    run has one (so a requeued job continues) and refuses to rerun a finished run. After srun, node-side
    failures (a killed rank never reports) are turned into a ``failed`` status by ``pgolf.running.launch finalize``.
    """
    py = shlex.quote(python or sys.executable)
    run = shlex.quote(str(Path(run_dir).resolve()))
    cfg = shlex.quote(str(Path(cfg_path).resolve()))
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --nodes={nnodes}",
             "#SBATCH --ntasks-per-node=1", f"#SBATCH --gpus-per-node={nproc_per_node}",
             f"#SBATCH --time={time_limit}",
             f"#SBATCH --output={Path(run_dir).resolve() / LAUNCH_DIR / 'slurm-%j.out'}"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={cpus_per_task}")
    lines += ["", "set -uo pipefail", f"RUN_DIR={run}",
              'if grep -q \'"status": "finished"\' "$RUN_DIR/status.json" 2>/dev/null; then',
              '  echo "pgolf: $RUN_DIR already finished; not rerunning"; exit 0', "fi",
              'RESUME=""', 'if [ -f "$RUN_DIR/checkpoint.pt" ]; then RESUME="--resume"; fi',
              'export HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
              "export RESUME"]
    for k, v in (env or {}).items():
        lines.append(f"export {k}={shlex.quote(v)}")
    torchrun = (f"exec {py} -m torch.distributed.run --nnodes {nnodes} --nproc_per_node {nproc_per_node} "
                f'--node_rank "$SLURM_NODEID" --rdzv-backend c10d --rdzv-endpoint "$HEAD_NODE:{rdzv_port}" '
                f'--rdzv-id "$SLURM_JOB_ID" --log-dir {run}/{LAUNCH_DIR}/logs/node"$SLURM_NODEID" '
                f"--redirects 3 --tee 3 -m pgolf.running.worker --config {cfg} --run-dir {run} $RESUME"
                + "".join(f" {shlex.quote(w)}" for w in worker_args or []))
    lines += ["", f"srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c {shlex.quote(torchrun)} "
                  f'2>&1 | tee "$RUN_DIR/{LAUNCH_DIR}/torchrun.$SLURM_JOB_ID.log"',
              "rc=${PIPESTATUS[0]}",
              f'{py} -m pgolf.running.launch finalize --run-dir "$RUN_DIR" --exit-code "$rc" '
              f'--torchrun-log "$RUN_DIR/{LAUNCH_DIR}/torchrun.$SLURM_JOB_ID.log"',
              "exit $?", ""]
    return "\n".join(lines)


def write_slurm(cfg: Config, run_dir: Path, args: argparse.Namespace, env: dict[str, str]) -> int:
    """Claim the run folder, write its config, and write the batch script to ``args.slurm``."""
    resume = bool(_opt(args, "resume", False))
    prepare_run_dir(run_dir, resume=resume, overwrite=bool(_opt(args, "overwrite", False)))
    cfg_path = run_dir / LAUNCH_DIR / "config.json"
    atomic_write_json(cfg_path, cfg.to_dict())
    script = slurm_script(cfg_path, run_dir, _opt(args, "nnodes", 1), _opt(args, "nproc_per_node", 1),
                          job_name=run_dir.name, env=env, worker_args=worker_argv(args))
    out = Path(args.slurm).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(script)
    atomic_write_json(run_dir / LAUNCH_DIR / "launch.json", {
        "slurm_script": str(out), "env_overrides": env, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "nnodes": _opt(args, "nnodes", 1), "nproc_per_node": _opt(args, "nproc_per_node", 1)})
    print(f"wrote {out}; submit with: sbatch {shlex.quote(str(out))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pgolf.running.launch finalize --run-dir D --exit-code N``: the SLURM script's last step."""
    p = argparse.ArgumentParser(prog="python -m pgolf.running.launch")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("finalize", help="mark a run failed after its job ended with a non-zero exit code")
    f.add_argument("--run-dir", required=True)
    f.add_argument("--exit-code", type=int, required=True)
    f.add_argument("--torchrun-log", help="torchrun's captured output (for killed ranks)")
    a = p.parse_args(argv)
    text = Path(a.torchrun_log).read_text(errors="replace") if a.torchrun_log and Path(a.torchrun_log).exists() else ""
    rc, message = finalize(Path(a.run_dir), a.exit_code, text)
    print(f"pgolf: {message}", file=sys.stderr if rc else sys.stdout)
    return rc


if __name__ == "__main__":
    sys.exit(main())
