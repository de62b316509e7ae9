"""Stopping a run on request and reading back what a stopped run saved.

SIGTERM (what schedulers send before they kill a job) is handled as Ctrl-C is: :class:`StopRequested` is a
``KeyboardInterrupt``, so everything that marks a Ctrl-C'd run ``interrupted`` does the same for it. While the
trainer's steps run, :class:`StopSignals` only records the signal, and the trainer stops at the next step
boundary, agreed across ranks, after a checkpoint (:meth:`pgolf.core.train.Trainer.run`); anywhere else the
signal raises at once. :func:`load_record` reads a checkpoint or ``final_model.pt``, a damaged one as one line
naming the file.
"""

from __future__ import annotations

import hashlib
import pickle
import signal
import threading
from pathlib import Path
from typing import Any, Self

from pgolf.core.safe_load import UnsafeFileError, load_plain

STOP_SIGNALS = (signal.SIGTERM,)  # what schedulers send before they kill a job (Ctrl-C stays KeyboardInterrupt)


class StopRequested(KeyboardInterrupt):
    """The run was asked to stop by a signal (SIGTERM): handled as Ctrl-C is (status ``interrupted``, resumable),
    after a final checkpoint when it came during training."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        super().__init__(self.signal_name)


class CheckpointError(ValueError):
    """A checkpoint or final-weights record cannot be read (damaged, truncated, another format)."""


class StopSignals:
    """SIGTERM while this is entered: during the training steps (``deferred``) it only records the signal, and the
    loop stops at the next step boundary, all ranks together; anywhere else it raises :class:`StopRequested` at
    once, as Ctrl-C raises KeyboardInterrupt. Installed only in the main thread; the old handlers come back."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferred = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum
        if not self.deferred:
            raise StopRequested(signum)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_record(path: Path, kind: str, map_location: Any) -> Any:
    """A checkpoint or final_model.pt, or one line naming the file when it is damaged or truncated."""
    try:
        return load_plain(path, name=path, kind=kind, map_location=map_location)
    except UnsafeFileError:
        raise
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: cannot be read as a {kind} ({type(exc).__name__}: {first}); the file is "
                              f"damaged or truncated; restore it, or start the run again with --overwrite") from None
