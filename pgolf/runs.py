"""Self-contained run folders: ``runs/<name>/`` with config, environment, logs, metrics, summary,
checkpoint and artifact. Every file is written atomically; a finished run is never overwritten
silently; a failed run is marked failed, never mistaken for a finished one.
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

from . import __version__
from .paths import REPO_ROOT

STATUS_FILE = "status.json"
CHECKPOINT = "checkpoint.pt"


class RunExistsError(RuntimeError):
    pass


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    f = Path(path) / STATUS_FILE
    if not f.exists():
        return None
    return json.loads(f.read_text())


def prepare_run_dir(path: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check that ``path`` may be (re)used and return it.

    - new folder: fine;
    - finished run: error unless ``overwrite``, which moves the old folder aside (nothing is lost);
    - running/failed run: error unless ``resume`` (continue from its checkpoint) or ``overwrite``.
    """
    path = Path(path)
    status = read_status(path)
    if status is None:
        # A folder holding only the launcher's ``launch/`` is a run being started under torchrun.
        if path.exists() and any(p.name != "launch" for p in path.iterdir()) and not overwrite:
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
    if not (path / CHECKPOINT).exists():
        raise RunExistsError(f"{path}: --resume given but the run has no {CHECKPOINT} (train.checkpoint_every=0?)")
    return path


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
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


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
        if self.enabled:
            atomic_write_json(self.path / name, obj)

    def bytes(self, name: str, data: bytes) -> None:
        if self.enabled:
            atomic_write_bytes(self.path / name, data)

    def torch_save(self, name: str, obj: Any) -> None:
        if self.enabled:
            atomic_torch_save(self.path / name, obj)

    def status(self, status: str, **extra: Any) -> None:
        self.json(STATUS_FILE, {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})
