"""Entry point of one training process: ``python -m pgolf.running.worker --config C.json --run-dir D``.

The launcher (:mod:`pgolf.running.launch`) starts it once per rank under torchrun; in-process runs call
:func:`pgolf.core.train.train`. ``main`` is wrapped in torchrun's ``@record``, so an exception is written to the
rank's ``error.json`` for torchrun's failure report. When the config lives in ``<run>/launch/`` (the launcher
wrote it), each rank also keeps its own state in ``<run>/launch/ranks/rank<R>.json`` (running, then
finished or failed with the error and traceback): a rank that is SIGKILLed stays "running" there, and the
launcher uses these records to name the rank that failed first. The run folder already holds ``launch/``
when rank 0 starts, which :func:`pgolf.core.runs.prepare_run_dir` allows.

Test-only fault injection (``tests/test_launch.py``; never set these in a real run):
``PGOLF_TEST_FAIL_RANK=R`` (or ``all``), ``PGOLF_TEST_FAIL_STEP=S`` (default 1) and
``PGOLF_TEST_FAIL_MODE=raise|kill|nan`` make rank R, when the trainer asks for the LR scale of step S
(that is, after S optimizer steps and the checkpoint of step S), raise a RuntimeError, SIGKILL itself,
or take step S+1 with a NaN learning rate (its weights turn NaN, so the train loss of step S+2 is NaN and
the trainer raises NonFiniteLossError). The hook replaces ``pgolf.core.optim.lr_multiplier`` in that process.
``PGOLF_TEST_CLOCK_SKEW=R:MS`` makes rank R's QAT switch read its elapsed training time MS milliseconds
ahead (``train(test_clock_skew_ms=MS)``), as if its clock disagreed with the others'
(``tests/test_distributed.py``). A finished rank's record also holds its ``qat_step``.
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

from pgolf.core import optim
from pgolf.core import train as train_mod
from pgolf.core.config import Config
from pgolf.core.runs import atomic_write_json


def install_test_fault(rank: int, environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Test-only: arm the fault described by PGOLF_TEST_FAIL_* for this rank; returns its description."""
    target = environ.get("PGOLF_TEST_FAIL_RANK")
    if target is None or (target != "all" and int(target) != rank):
        return None
    fail_step = int(environ.get("PGOLF_TEST_FAIL_STEP", "1"))
    mode = environ.get("PGOLF_TEST_FAIL_MODE", "raise")
    if mode not in ("raise", "kill", "nan"):
        raise ValueError(f"PGOLF_TEST_FAIL_MODE={mode!r}: expected raise, kill or nan")
    real = optim.lr_multiplier

    def lr_multiplier(step: int, elapsed_ms: float, cfg: Config) -> float:
        if step == fail_step:
            if mode == "raise":
                raise RuntimeError(f"test fault injected on rank {rank} at step {step} (PGOLF_TEST_FAIL_MODE=raise)")
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            return float("nan")
        return real(step, elapsed_ms, cfg)

    optim.lr_multiplier = lr_multiplier  # the trainer calls optim.lr_multiplier once per step
    desc = f"TEST FAULT ARMED: rank {rank} mode {mode} at step {fail_step}"
    print(f"pgolf.running.worker: {desc}", file=sys.stderr, flush=True)
    return desc


def read_test_clock_skew(rank: int, environ: dict[str, str] | os._Environ = os.environ) -> float:
    """Test-only: the skew PGOLF_TEST_CLOCK_SKEW=R:MS asks for on this rank (0.0 when unset or another rank)."""
    spec = environ.get("PGOLF_TEST_CLOCK_SKEW")
    if not spec:
        return 0.0
    try:
        target, ms = spec.split(":")
        skew_rank, skew_ms = int(target), float(ms)
    except ValueError:
        raise ValueError(f"PGOLF_TEST_CLOCK_SKEW={spec!r}: expected RANK:MILLISECONDS, e.g. 1:600000") from None
    if skew_rank != rank:
        return 0.0
    print(f"pgolf.running.worker: TEST CLOCK SKEW: rank {rank} QAT clock +{skew_ms:g} ms", file=sys.stderr, flush=True)
    return skew_ms


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
    a = p.parse_args(argv)
    run_dir = Path(a.run_dir).resolve()
    rank = int(os.environ.get("RANK", "0"))
    launched = Path(a.config).resolve().parent == run_dir / "launch"
    rec = RankRecord(run_dir, rank) if launched else None
    if rec:
        rec.write("running")
    fault = None
    try:
        fault = install_test_fault(rank)
        cfg = Config.from_json(a.config)
        labels = json.loads(os.environ.get("PGOLF_RUN_LABELS", "{}"))  # set by the ablation engine
        summary = train_mod.train(cfg, run_dir, resume=a.resume, labels=labels,
                                  test_clock_skew_ms=read_test_clock_skew(rank))
    except BaseException as e:
        if rec:
            rec.write("failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                      **({"test_fault": fault} if fault else {}))
        raise
    if rec:
        rec.write("finished", qat_step=summary["qat_step"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
