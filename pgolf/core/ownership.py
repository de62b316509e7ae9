"""Who owns a run folder or a temp file, and whether that owner is still alive.

- :func:`process_identity` is what a writer records about itself (pid, host, start time);
  :func:`writer_alive` answers "is that writer still running?" on this host (``None`` on another host:
  a pid from elsewhere cannot be checked, so callers must treat it as possibly alive).
- :class:`FolderLock` is an exclusive ``flock`` on ``<folder>/.lock``, held by one process for a whole run.
  The kernel drops it when the process ends, however it ends (SIGKILL included), so a lock never goes
  stale; the file itself stays and only records who held it last. The lock fd is not inherited by
  exec'd children (Python opens fds non-inheritable).
- Temp names carry their writer (``<pid>@<host>``), so leftovers of a dead writer can be told apart
  from a live writer's work in progress: :func:`temp_name` / :func:`remove_stale_temp_files`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# ".<name>.<pid>@<host>.tmp" (pgolf >= this module) or ".<name>.<pid>.tmp" (older: host unknown)
_TEMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9_.-]+))?\.tmp$")


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock; the message names the folder and the holder."""


def host_tag() -> str:
    """This host's name, made safe for file names."""
    return _HOST_UNSAFE.sub("_", socket.gethostname()) or "unknown"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None where /proc is unavailable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None  # field 22: start time since boot


def process_identity() -> dict[str, Any]:
    """pid, host and start time of this process: enough to tell later whether it still runs."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_start_ticks": _start_ticks(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Is process ``pid`` (of this host) alive? A zombie counts as dead; with ``start_ticks`` a reused pid too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _proc_stat(pid)
    if fields is None:
        return True
    if fields[0] in ("Z", "X"):
        return False
    return start_ticks is None or len(fields) <= 19 or int(fields[19]) == start_ticks


def writer_alive(pid: int, host: str | None, start_ticks: int | None = None) -> bool | None:
    """True/False for a writer on this host; None when it ran on another host (cannot be checked)."""
    if host is not None and _HOST_UNSAFE.sub("_", host) != host_tag():
        return None
    return pid_alive(pid, start_ticks)


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder or "pid" not in holder:
        return "another process (it has not recorded its pid yet)"
    return f"pid {holder['pid']} on host {holder.get('host', '?')} (since {holder.get('started', '?')})"


# -- the folder lock -----------------------------------------------------------------------------


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class FolderLock:
    """An exclusive lock on ``folder`` held until :meth:`release` or the end of the process."""

    def __init__(self, folder: Path, fd: int):
        self.folder = folder
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: Path, what: str = "run folder") -> "FolderLock":
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_flock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderLockedError(f"{folder}: {what} is in use by {describe_holder(holder)}; wait for that "
                                    f"process to end (or stop it), then retry")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(process_identity(), sort_keys=True) + "\n").encode(), 0)
        return cls(folder, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only fd drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def lock_holder(folder: Path) -> dict[str, Any] | None:
    """The holder record if another process holds ``folder``'s lock now (``{}`` if it wrote none yet), else None.

    Probes with a non-blocking flock that is dropped at once; a process that tries to take the lock in that
    instant is refused as if the folder were in use, which only happens when two processes claim one folder."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDWR)
    except (FileNotFoundError, PermissionError):  # never locked, or not ours to lock (then we cannot train there)
        return None
    try:
        if _try_flock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _read_holder(fd) or {}
    finally:
        os.close(fd)


# -- temp files ----------------------------------------------------------------------------------


def temp_name(path: Path) -> Path:
    """The hidden temp file an atomic write of ``path`` goes through, named after its writer."""
    return path.with_name(f".{path.name}.{os.getpid()}@{host_tag()}.tmp")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temp files under ``folder`` whose writer died on this host; returns what was removed.

    A temp file of a live process, or of another host (cannot be checked), is left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in sorted(folder.rglob(".*.tmp")):
        m = _TEMP_RE.match(p.name)
        if m is None or not p.is_file():
            continue
        if writer_alive(int(m["pid"]), m["host"]) is False:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
