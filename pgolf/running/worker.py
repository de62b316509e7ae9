"""Entry point of one training process: ``python -m pgolf.running.worker --config C.json --run-dir D``.

The launcher (:mod:`pgolf.running.launch`) starts it once per rank under torchrun; in-process runs call
:func:`pgolf.core.train.train`. ``main`` is wrapped in torchrun's ``@record``, so an exception is written to the
rank's ``error.json`` for torchrun's failure report. When the config lives in ``<run>/launch/`` (the launcher
wrote it), each rank also keeps its own state in ``<run>/launch/ranks/rank<R>.json`` (running, then
finished or failed with the error and traceback): a rank that is SIGKILLed stays "running" there, and the
launcher uses these records to name the rank that failed first. The run folder already holds ``launch/``
when rank 0 starts, which :func:`pgolf.core.runs.prepare_run_dir` allows.

Arguments besides the config and run folder: ``--labels-json`` (labels copied into ``summary.json``, e.g. the
ablation engine's arm and seed; ``pgolf train --labels-json`` passes them on) and two test-only fault
injections, which :func:`hooks_from_args` turns into :class:`pgolf.core.train.TrainerHooks` (``pgolf train`` passes
them on to every rank; never use them in a real run):

- ``--test-fail RANK:STEP:MODE`` (RANK a rank or ``all``; MODE ``raise``, ``interrupt``, ``kill``, ``nan`` or
  ``term``): before rank RANK trains step STEP (0-based, that is after STEP optimizer steps and the checkpoint of
  step STEP) it raises a RuntimeError, raises KeyboardInterrupt (as Ctrl-C), SIGKILLs itself, sends itself
  SIGTERM (as a scheduler; the step is still taken, then every rank stops), or takes that step
  with a NaN learning rate (its weights turn NaN, so the train loss of the next step is NaN and the trainer
  raises NonFiniteLossError).
- ``--test-clock-skew RANK:MS``: rank RANK's QAT and loop switches read its elapsed training time MS milliseconds ahead
  (``TrainerHooks.clock_skew_ms``), as if its clock disagreed with the others'.

A finished rank's record also holds its ``qat_step`` and ``loop_step`` (the steps QAT and depth recurrence
switched on).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from pgolf.core import train as train_mod
from pgolf.core.config import Config
from pgolf.core.runs import atomic_write_json
from pgolf.core.train import TrainerHooks

FAIL_MODES = ("raise", "interrupt", "kill", "nan", "term")


def parse_test_fail(spec: str) -> tuple[str, int, str]:
    """``RANK:STEP:MODE`` -> (rank or "all", step, mode); a clear error otherwise."""
    parts = spec.split(":")
    if len(parts) != 3 or not (parts[0] == "all" or parts[0].isdigit()) or not parts[1].isdigit() \
            or parts[2] not in FAIL_MODES:
        raise ValueError(f"--test-fail {spec!r}: expected RANK:STEP:MODE with RANK a rank or 'all', STEP >= 0 and "
                         f"MODE one of {', '.join(FAIL_MODES)}, e.g. 1:3:raise")
    return parts[0], int(parts[1]), parts[2]


def parse_test_clock_skew(spec: str) -> tuple[int, float]:
    """``RANK:MS`` -> (rank, milliseconds); a clear error otherwise."""
    try:
        target, ms = spec.split(":")
        return int(target), float(ms)
    except ValueError:
        raise ValueError(f"--test-clock-skew {spec!r}: expected RANK:MILLISECONDS, e.g. 1:600000") from None


def hooks_from_args(rank: int, fail: str | None = None, clock_skew: str | None = None) -> tuple[TrainerHooks, str | None]:
    """Test-only: the trainer hooks for this rank from ``--test-fail`` / ``--test-clock-skew`` (see the module
    docstring), and a description of the armed fault (None: none on this rank). Announced on stderr."""
    hooks, desc = TrainerHooks(), None
    if fail:
        target, fail_step, mode = parse_test_fail(fail)
        if target == "all" or int(target) == rank:
            hooks.before_step = _fault(rank, fail_step, mode)
            desc = f"TEST FAULT ARMED: rank {rank} mode {mode} at step {fail_step}"
            print(f"pgolf.running.worker: {desc}", file=sys.stderr, flush=True)
    if clock_skew:
        skew_rank, skew_ms = parse_test_clock_skew(clock_skew)
        if skew_rank == rank:
            hooks.clock_skew_ms = skew_ms
            print(f"pgolf.running.worker: TEST CLOCK SKEW: rank {rank} QAT clock +{skew_ms:g} ms", file=sys.stderr,
                  flush=True)
    return hooks, desc


def _fault(rank: int, fail_step: int, mode: str):
    def before_step(step: int) -> float | None:
        if step != fail_step:
            return None
        if mode == "raise":
            raise RuntimeError(f"test fault injected on rank {rank} at step {step} (--test-fail mode raise)")
        if mode == "interrupt":
            raise KeyboardInterrupt  # as Ctrl-C would
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "term":  # as a scheduler would; the trainer stops after this step
            os.kill(os.getpid(), signal.SIGTERM)
            return None
        return float("nan")  # this step's LR scale
    return before_step


def parse_labels(text: str | None) -> dict:
    """``--labels-json``: a JSON object (labels for summary.json)."""
    if not text:
        return {}
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--labels-json: not valid JSON ({e}): {text!r}") from None
    if not isinstance(labels, dict):
        raise ValueError(  # noqa: TRY004 - a bad command-line value
            f"--labels-json: expected a JSON object, got {type(labels).__name__}: {text!r}")
    return labels


def add_worker_args(p: argparse.ArgumentParser) -> None:
    """The worker's optional arguments, shared with ``pgolf train``, which passes them on to every rank."""
    p.add_argument("--labels-json", help="JSON object copied into summary.json (e.g. an ablation's arm and seed)")
    p.add_argument("--test-fail", metavar="RANK:STEP:MODE", help=argparse.SUPPRESS)  # test-only, module docstring
    p.add_argument("--test-clock-skew", metavar="RANK:MS", help=argparse.SUPPRESS)  # test-only, module docstring


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The worker arguments of :func:`add_worker_args` that ``args`` sets, as command-line words."""
    out = []
    for flag in ("labels_json", "test_fail", "test_clock_skew"):
        value = getattr(args, flag, None)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", value]
    return out


class RankRecord:
    """``<run>/launch/ranks/rank<R>.json``: this rank's own view of how it ended."""

    def __init__(self, run_dir: Path, rank: int):
        self.path = Path(run_dir) / "launch" / "ranks" / f"rank{rank}.json"
        err_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
        self.base = {"rank": rank, "local_rank": int(os.environ.get("LOCAL_RANK", "0")), "pid": os.getpid(),
                     "host": socket.gethostname(), "log_dir": str(Path(err_file).parent) if err_file else None}

    def write(self, status: str, **extra) -> None:
        atomic_write_json(self.path, {**self.base, "status": status, "time": time.time(),
                                      "time_iso": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


@record
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pgolf.running.worker")
    p.add_argument("--config", required=True, help="resolved config JSON")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--resume", action="store_true")
    add_worker_args(p)
    a = p.parse_args(argv)
    run_dir = Path(a.run_dir).resolve()
    rank = int(os.environ.get("RANK", "0"))
    launched = Path(a.config).resolve().parent == run_dir / "launch"
    rec = RankRecord(run_dir, rank) if launched else None
    if rec:
        rec.write("running")
    fault = None
    try:
        hooks, fault = hooks_from_args(rank, a.test_fail, a.test_clock_skew)
        cfg = Config.from_json(a.config)
        summary = train_mod.train(cfg, run_dir, resume=a.resume, labels=parse_labels(a.labels_json), hooks=hooks)
    except BaseException as e:
        if rec:
            rec.write("failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                      **({"test_fault": fault} if fault else {}))
        raise
    if rec:
        rec.write("finished", qat_step=summary["qat_step"], loop_step=summary.get("loop_step"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
