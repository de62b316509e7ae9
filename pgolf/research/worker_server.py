"""A persistent run worker: ``python -m pgolf.research.worker_server`` trains one-process runs one after another.

The local launcher (:mod:`pgolf.research.worker_pool`) starts one per parallel slot, so ``import torch``, pgolf
and the trainer's modules are paid once per slot instead of once per run (measured: about 1 CPU-s, 3% of a
``micro`` run; docs/cli.md). It reads one JSON request a line from stdin, ``{"config": FILE, "run_dir": DIR, "labels": JSON,
"stdout": FILE}`` (the arguments of :func:`pgolf.research.ablate_worker.main` and the file the run's output goes
to), and answers each with one JSON line on stdout, ``{"run_dir": DIR, "returncode": N, "cpu_s": S}``, once the
run has ended; at the end of stdin it exits.

Nothing leaks from one run into the next: each run trains in a child forked from the server as it stood after its
imports, before any run (a fork server). The child starts from the state a fresh ``python -m
pgolf.research.ablate_worker`` process has when it reaches ``main`` (modules imported, one torch thread, no tensor
computed, no RNG drawn; the same environment), and its RNG states, thread settings, caches and environment die
with it, so a run trains the same bits as in its own process (``tests/test_worker_pool.py``). The server itself
computes nothing with torch: a fork after torch has started its thread pools would not be safe.

A run's output (stdout and stderr) goes to its ``stdout`` file and its exit status is the one its own process
would have: 0, 1 after an exception (its traceback in the file), and after Ctrl-C or SIGTERM (both mark the run
``interrupted``) what Python gives for the uncaught exception: killed by SIGINT (-2) for ``KeyboardInterrupt``,
1 for SIGTERM's ``StopRequested`` (a subclass). The server ignores SIGINT (a terminal's Ctrl-C reaches
the run, in the same process group); a SIGTERM sent to the server is passed on to the running run, and the server
ends after it.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import traceback
from typing import IO, Any

__all__ = ["serve", "server_command"]

# Modules a micro run imports after start-up (sys.modules before and after one): imported once here, not per run.
PRELOAD = ("pgolf.core.train", "pgolf.core.export", "pgolf.core.compress", "pgolf.core.evaluate",
           "pgolf.core.eager_optim", "pgolf.core.optim", "pgolf.core.averaging", "pgolf.core.data.permuted",
           "pgolf.submit.cache", "pgolf.research.ablate_worker", "sentencepiece", "brotli")


def server_command() -> list[str]:
    """The command that starts a worker server with this Python."""
    return [sys.executable, "-m", "pgolf.research.worker_server"]


def _preload() -> None:
    import importlib

    import torch
    for name in PRELOAD:
        importlib.import_module(name)
    torch.set_num_threads(1)  # as ablate_worker.main sets it before training; it starts no thread


def _child(request: dict[str, Any]) -> None:
    """In the forked child: the run's output to its file, the usual signal handlers, train; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        fd = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)  # the request pipe is the server's, never the run's
        os.dup2(null, 0)
        os.close(null)
        from pgolf.research import ablate_worker
        code = ablate_worker.main([request["config"], request["run_dir"], request["labels"]])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt as e:  # as Python ends on an uncaught one: killed by SIGINT, but 1 for a subclass
        traceback.print_exc()
        code = -signal.SIGINT if type(e) is KeyboardInterrupt else 1  # (SIGTERM's StopRequested)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            if code == -signal.SIGINT:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
            os._exit(code)


def serve(requests: IO[str], replies: IO[str]) -> int:
    """Train each request of ``requests`` in a forked child, one at a time, and answer on ``replies``."""
    _preload()
    running: list[int] = []  # the pid of the run in progress
    stop: list[int] = []

    def on_sigterm(signum, frame) -> None:
        stop.append(signum)
        for pid in running:
            os.kill(pid, signum)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)
    for line in requests:
        if stop:
            break
        if not line.strip():
            continue
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        replies.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        running.append(pid)
        _, status, usage = os.wait4(pid, 0)
        running.clear()
        replies.write(json.dumps({"run_dir": request["run_dir"], "returncode": os.waitstatus_to_exitcode(status),
                                  "cpu_s": usage.ru_utime + usage.ru_stime}) + "\n")
        replies.flush()
        if stop:  # SIGTERM: the run it reached has ended; take no other
            break
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.stdin, sys.stdout))
