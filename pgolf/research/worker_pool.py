"""The launcher's side of a persistent run worker (:mod:`pgolf.research.worker_server`): start one, hand it a
run, see whether the run has ended.

One :class:`Worker` per parallel slot of the local launcher (CPU runs), started with the environment the slot's
runs need (:func:`pgolf.research.ablate.command`'s: one thread, unbuffered output, the malloc settings); a run
that needs another environment gets a new worker. A worker that dies (killed, or it could not start) fails the
run it had with its exit status, and its own error output is added to that run's output file; the next run
starts a new worker.
"""

from __future__ import annotations

import json
import select
import subprocess
import tempfile
from pathlib import Path

from pgolf.research.worker_server import server_command

__all__ = ["Worker", "needs_new_worker"]


class Worker:
    """A worker server with at most one run in progress."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._errors = tempfile.TemporaryFile()  # the server's own error output (a run's goes to its file)
        self.proc = subprocess.Popen(server_command(), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._errors, text=True, bufsize=1)
        self.stdout_file: Path | None = None  # the output file of the run in progress

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, config: Path, run_dir: Path, labels: str, stdout_file: Path) -> bool:
        """Hand the worker a run (its output truncated first); False if the worker has already ended."""
        stdout_file.write_text("")
        self.stdout_file = stdout_file
        request = {"config": str(config), "run_dir": str(run_dir), "labels": labels, "stdout": str(stdout_file)}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def poll(self, timeout: float = 0.0) -> int | None:
        """The run's exit status once it has ended (the worker's, if the worker died first), else None."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if line:
            return int(json.loads(line)["returncode"])
        return self._died()

    def _died(self) -> int:
        code = self.proc.wait()
        self._errors.seek(0)
        errors = self._errors.read().decode(errors="replace")
        if self.stdout_file is not None:
            with open(self.stdout_file, "a") as out:
                out.write(f"\n[pgolf worker server exited with status {code}]\n{errors}")
        return code or 1

    def close(self, wait: bool = True) -> None:
        """No more runs: the server ends once its run in progress has (``wait``: wait for that)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if wait:
            self.proc.wait()
            self.proc.stdout.close()
        self._errors.close()


def needs_new_worker(worker: Worker | None, env: dict[str, str]) -> bool:
    """Whether a run with ``env`` needs a new worker instead of ``worker`` (none, ended, or another environment)."""
    return worker is None or not worker.alive or worker.env != env

