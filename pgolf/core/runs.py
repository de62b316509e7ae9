"""Self-contained run folders: ``runs/<name>/`` with config, environment, logs, metrics, summary,
checkpoint and artifact. Every file is written atomically (temp file, fsync, rename, fsync of the folder);
a finished run is never overwritten silently; a failed run is marked failed, never mistaken for a finished one.

Run states in ``status.json``: ``running`` (with the writer's pid, host and start time), ``finished``,
``failed`` and ``interrupted`` (Ctrl-C or SIGTERM). A process that dies without a word (SIGKILL, power loss) leaves
``running`` behind; :func:`read_status` reports such a run as ``interrupted`` when its pid is gone from this
host. That state is derived when reading and never written back (a reader must not race a writer); the
recorded value stays in ``recorded_status``. One process at a time owns a run folder: the trainer (rank 0)
holds ``<run>/.lock`` (:class:`pgolf.core.ownership.FolderLock`) for the whole run.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pgolf import __version__
from pgolf.core.ownership import (
    LOCK_FILE,
    FolderLock,
    FolderLockedError,
    describe_holder,
    lock_holder,
    remove_stale_temp_files,
    temp_name,
    writer_alive,
)
from pgolf.core.paths import REPO_ROOT
from pgolf.core.records import read_status_record

STATUS_FILE = "status.json"
CHECKPOINT = "checkpoint.pt"
TRAINING_END = "training_end.json"  # beside final_model.pt until the run finishes: --resume exports and scores it


class RunExistsError(RuntimeError):
    pass


class RunLockedError(RunExistsError):
    """Another live process is training in this run folder."""


class RunNameError(ValueError):
    """A run name (``--name``, ``RUN_ID``) that is not one folder name under ``runs/``."""


MAX_RUN_NAME = 200  # characters: a folder name (255 bytes on common filesystems) less room for ".replaced-<time>"


def check_run_name(name: str, source: str = "--name") -> str:
    """``name`` if it names one folder directly under ``runs/``; else :class:`RunNameError` (one line naming
    ``source``) pointing to ``--run-dir`` for a folder elsewhere: no path separators, no ``.``/``..``, not
    absolute, not empty, at most :data:`MAX_RUN_NAME` characters, no control characters."""
    why = None
    if not name:
        why = "is empty"
    elif len(name) > MAX_RUN_NAME:
        why = f"is {len(name)} characters long (at most {MAX_RUN_NAME})"
    elif "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        why = "holds a path separator"
    elif name in (".", ".."):
        why = f"is {name!r}"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        why = "holds a control character"
    if why is None:
        return name
    shown = name if len(name) <= 60 else name[:57] + "..."
    raise RunNameError(f"{source} {shown!r} {why}: a run name is one folder name under runs/; give an explicit "
                       f"location with --run-dir PATH")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (the new directory entry survives a crash)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """``write(f)`` into a temp file named after this process, fsync it, rename it over ``path``, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj: Any, *, allow_nan: bool = True) -> None:
    """``allow_nan=False`` refuses NaN/inf (bare ``NaN`` is not JSON) with an error naming the file."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=allow_nan)
    except ValueError as e:
        raise ValueError(f"{path}: refusing to write a non-finite number (NaN or inf) into JSON ({e})") from None
    atomic_write_bytes(path, (text + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def read_status(path: Path) -> dict[str, Any] | None:
    """The run's status; a ``running`` run whose process is gone from this host reads as ``interrupted``.
    A ``status.json`` that is not a JSON object with a string ``status`` is a :class:`RunRecordError` naming it."""
    f = Path(path) / STATUS_FILE
    if not f.exists():
        return None
    return derived_status(read_status_record(f))


def derived_status(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` as it is now: ``running`` with a dead writer becomes ``interrupted`` (the file is not changed).

    A writer on another host cannot be checked, so its run stays ``running``."""
    if status.get("status") != "running" or "pid" not in status:
        return status
    if writer_alive(int(status["pid"]), status.get("host"), status.get("pid_start_ticks")) is not False:
        return status
    return {**status, "status": "interrupted", "recorded_status": "running",
            "interrupted_reason": f"status.json says running but its process (pid {status['pid']} on "
                                  f"{status.get('host')}) is gone: killed or crashed without reporting"}


def prepare_run_dir(path: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check that ``path`` may be (re)used and return it.

    - a folder another live process trains in (holds its lock): always an error;
    - new folder: fine;
    - finished run: error unless ``overwrite``, which moves the old folder aside (nothing is lost);
    - running/failed/interrupted run: error unless ``resume`` (continue from its checkpoint) or ``overwrite``.
    """
    path = Path(path)
    holder = lock_holder(path) if path.is_dir() else None
    if holder is not None:
        raise RunLockedError(f"{path}: run folder is in use by {describe_holder(holder)}; wait for that run to "
                             f"end (or stop it) before resuming or replacing it")
    status = read_status(path)
    if status is None:
        # A folder holding only the launcher's ``launch/`` is a run being started under torchrun.
        if path.exists() and any(p.name not in ("launch", LOCK_FILE) for p in path.iterdir()) and not overwrite:
            raise RunExistsError(f"{path}: folder exists and is not a pgolf run; choose another run name")
        return path
    state = status.get("status")
    if overwrite:
        aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        return path
    if state == "finished":
        raise RunExistsError(f"{path}: run already finished; pass --overwrite to replace it (the old folder "
                             f"is kept beside it) or choose another name")
    if not resume:
        raise RunExistsError(f"{path}: run exists with status {state!r}; pass --resume to continue from its "
                             f"checkpoint or --overwrite to start again")
    if not (path / CHECKPOINT).exists() and not (path / TRAINING_END).exists():
        raise RunExistsError(f"{path}: --resume given but the run has no {CHECKPOINT} (train.checkpoint_every=0?) "
                             f"and its training did not end ({TRAINING_END})")
    return path


def claim_run_dir(path: Path, *, resume: bool = False) -> tuple[FolderLock, list[Path]]:
    """Check ``path`` (:func:`prepare_run_dir`), lock it for this process, and delete temp files that dead
    writers left behind. Returns the lock (hold it for the whole run) and the removed files."""
    path = Path(path)
    prepare_run_dir(path, resume=resume, overwrite=False)
    try:
        lock = FolderLock.acquire(path)
    except FolderLockedError as e:
        raise RunLockedError(str(e)) from None
    return lock, remove_stale_temp_files(path)


def git_info() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    sha = run("rev-parse", "HEAD")
    dirty = bool(run("status", "--porcelain", "--untracked-files=no", "--", "pgolf"))
    return {"git_sha": sha or None, "git_dirty": dirty}


def environment() -> dict[str, Any]:
    import numpy
    info: dict[str, Any] = {
        "pgolf": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "machine": platform.machine(),
        "hostname": socket.gethostname(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda, "gpus": [], **git_info(),
    }
    try:
        import sentencepiece
        info["sentencepiece"] = sentencepiece.__version__
    except ImportError:
        pass
    info.update(hardware())
    return info


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere what :func:`platform.processor` says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.split(":", 1)[0].strip() in ("model name", "Model", "Hardware"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_driver() -> str | None:
    """The NVIDIA driver version, from ``nvidia-smi`` (None where it is absent or fails)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def hardware() -> dict[str, Any]:
    """What a run's numbers may depend on besides the code: the CPU model, the kernels torch dispatches to
    (``cpu_capability``: DEFAULT / AVX2 / AVX512 ..., forced by ``ATEN_CPU_CAPABILITY`` when set), the thread
    count and, on CUDA, the GPUs, the driver and the CUDA / cuDNN versions."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY"), "torch_threads": torch.get_num_threads(),
        "gpus": [],
    }
    if torch.cuda.is_available():
        info.update(gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                    gpu_driver=gpu_driver(), cuda_runtime=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


LOG_FILES = ("train.log", "metrics.jsonl")  # append-only; a resume cuts what came after its checkpoint


class RunWriter:
    """What rank 0 writes into a run folder. Other ranks get a writer that writes nothing."""

    def __init__(self, path: Path | None, enabled: bool = True, console: bool = True):
        self.path = Path(path) if path is not None else None
        self.enabled = enabled and self.path is not None
        self.console = console and enabled
        if self.enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def log(self, msg: str, console: bool = True) -> None:
        if self.console and console:
            print(msg, flush=True)
        if self.enabled:
            with open(self.path / "train.log", "a", encoding="utf-8") as f:
                print(msg, file=f)

    def metric(self, **row: Any) -> None:
        if self.enabled:
            with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")

    def json(self, name: str, obj: Any) -> None:
        if self.enabled:  # strict JSON: a NaN must fail loudly, not be written as bare NaN
            atomic_write_json(self.path / name, obj, allow_nan=False)

    def artifact(self, filename: str, blob: bytes, report: dict[str, Any]) -> None:
        """The loop's artifact (:class:`pgolf.core.train_loop.Sink`) and ``export_report.json``."""
        self.bytes(filename, blob)
        self.json("export_report.json", report)

    def summary(self, summary: dict[str, Any]) -> None:
        """``summary.json``; the run is marked finished unless the summary says it failed (``export.require_fit``)."""
        self.json("summary.json", summary)
        if summary.get("status") == "finished":
            self.status("finished")

    def log_sizes(self) -> dict[str, int]:
        """Current byte sizes of the append-only logs (recorded in checkpoints)."""
        if not self.enabled:
            return {}
        return {n: (self.path / n).stat().st_size if (self.path / n).exists() else 0 for n in LOG_FILES}

    def cut_logs(self, start: dict[str, int] | None, end: dict[str, int]) -> list[str]:
        """Remove bytes ``start[n]:end[n]`` of each log, atomically: on resume, what the interrupted attempt
        wrote after its checkpoint (``start``: sizes saved in the checkpoint; ``end``: sizes when this process
        started). Returns one line per log saying what was cut (or why nothing could be)."""
        if not self.enabled or not start:
            return []
        notes = []
        for name in LOG_FILES:
            f = self.path / name
            data = f.read_bytes() if f.exists() else b""
            lo, hi = start.get(name, 0), end.get(name, 0)
            if not 0 <= lo <= hi <= len(data):
                notes.append(f"{name}: not cut (checkpoint says {lo} bytes, this attempt began at {hi}, the file "
                             f"has {len(data)}): the run folder was edited; rows after the checkpoint may repeat")
                continue
            if hi > lo:
                atomic_write_bytes(f, data[:lo] + data[hi:])
                lines = data[lo:hi].count(b"\n")
                notes.append(f"{name}: dropped {hi - lo} bytes ({lines} lines) written after the checkpoint "
                             f"by the interrupted attempt")
        return notes

    def bytes(self, name: str, data: bytes) -> None:
        if self.enabled:
            atomic_write_bytes(self.path / name, data)

    def torch_save(self, name: str, obj: Any) -> None:
        if self.enabled:
            atomic_torch_save(self.path / name, obj)

    def status(self, status: str, **extra: Any) -> None:
        self.json(STATUS_FILE, {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})
