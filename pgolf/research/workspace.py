"""Published results and scratch workspaces: a rerun never rewrites what the repository publishes.

The **published study** is what the repository commits under the output root (:func:`pgolf.core.paths.out_root`):
the run folders under ``runs/``, the stored analysis tables ``runs/<study>/analysis``, the executed notebooks
``runs/notebooks`` and ``figures/`` (which the README's results table is made from). ``pgolf notebooks run``
changes it only with ``--publish``.

Any other run of a notebook goes to a **scratch workspace** outside the tracked tree:
``$PGOLF_SCRATCH/<name>`` (default ``~/.cache/pgolf/scratch/<YYYYmmdd-HHMMSS>``), or a folder the user names.
It is an output root of its own (``<ws>/runs``, ``<ws>/figures``), so the notebook, ``pgolf figures`` and
``pgolf results`` run with ``PGOLF_OUT=<ws>`` read and write only there. Before the first run it receives a
copy of the published run folders and analysis tables (:func:`prepare_workspace`), so every finished run is
reused and nothing trains that the published study already has; copying only reads the published tree (no
lock is taken there, nothing there is moved or rewritten). A run retrained in the workspace (``rerun=True``,
a stale run) is moved aside and trained again inside the workspace only.

Raw weights (``final_model.pt``) are not committed. When a notebook in a workspace needs a stored analysis
table recomputed (other inputs than the stored ones) and a run's weights are not on disk, the table retrains
that run inside the workspace to restore them (:func:`restore_weights`, in train mode only; the marker file
:data:`MARKER` says the output root is a workspace) and says so. The weights are used only when the retrained
artifact is byte-identical to the recorded one; otherwise (another machine's numerics) the table's error says
to retrain the study's runs in the workspace (``-p rerun=True``). A table that only needs fewer runs than it stores takes their rows
without weights (:meth:`pgolf.research.tables.AnalysisTable.cached`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgolf.core.ownership import LOCK_FILE
from pgolf.core.paths import REPO_ROOT
from pgolf.core.runs import atomic_write_json

SCRATCH_ENV = "PGOLF_SCRATCH"
MARKER = "pgolf-workspace.json"  # in a workspace's root: what it was made from
NOT_COPIED = ("notebooks",)  # runs/notebooks: a workspace's executed notebooks are its own
ANALYSIS = "analysis"


class WorkspaceError(ValueError):
    """A workspace path that cannot be used (inside the repository's tracked tree)."""


def scratch_root() -> Path:
    """Where named workspaces live: ``$PGOLF_SCRATCH``, else ``~/.cache/pgolf/scratch``."""
    env = os.environ.get(SCRATCH_ENV)
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "pgolf" / "scratch"


def workspace_path(name: str | os.PathLike | None = None) -> Path:
    """The workspace folder for ``name``: a path (absolute, or with a ``/``) as given; a bare name under
    :func:`scratch_root`; None: a new timestamped name there. Never inside the repository."""
    if name is None:
        path = scratch_root() / time.strftime("%Y%m%d-%H%M%S")
    else:
        text = os.fspath(name)
        path = Path(text).expanduser() if ("/" in text or text.startswith("~")) else scratch_root() / text
    path = path.resolve()
    if path == REPO_ROOT or REPO_ROOT in path.parents:
        raise WorkspaceError(f"scratch workspace {path} is inside the repository {REPO_ROOT}: a rerun must not write "
                             f"into the tracked tree; name a folder outside it (or set {SCRATCH_ENV}), or publish "
                             "on purpose with --publish")
    return path


def _ignore(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n == LOCK_FILE or n.endswith(".tmp") or ".replaced-" in n}


def _copy_missing(src: Path, dst: Path) -> int:
    """Copy ``src`` to ``dst`` unless ``dst`` exists (a workspace's own files win); returns files copied."""
    if dst.exists() or dst.is_symlink():
        return 0
    if src.is_dir():
        shutil.copytree(src, dst, ignore=_ignore)  # links copied as files: nothing points back
        return sum(1 for p in dst.rglob("*") if p.is_file())
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return 1


def prepare_workspace(workspace: Path, published: Path) -> int:
    """Give ``workspace`` every published run folder and analysis table it lacks (copies; the workspace's own
    folders and tables are kept as they are); returns the number of files copied. ``published`` is the output
    root of the published study (``published/runs``); it is only read."""
    workspace, published = Path(workspace), Path(published)
    (workspace / "runs").mkdir(parents=True, exist_ok=True)
    (workspace / "figures").mkdir(parents=True, exist_ok=True)
    if not (workspace / MARKER).is_file():
        atomic_write_json(workspace / MARKER, {"published": str(published.resolve()),
                                               "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    src_runs = published / "runs"
    copied = 0
    if not src_runs.is_dir():
        return 0
    for study in sorted(p for p in src_runs.iterdir() if p.is_dir() and p.name not in NOT_COPIED):
        for entry in sorted(study.iterdir()):
            if _ignore(str(study), [entry.name]):
                continue
            target = workspace / "runs" / study.name / entry.name
            if entry.name == ANALYSIS and entry.is_dir():  # per table: one the workspace recomputed stays its own
                for table in sorted(entry.iterdir()):
                    if not _ignore(str(entry), [table.name]):
                        copied += _copy_missing(table, target / table.name)
            else:
                copied += _copy_missing(entry, target)
    return copied


@contextmanager
def output_root(path: Path) -> Iterator[Path]:
    """``PGOLF_OUT=path`` for the duration (the notebook kernels started inside inherit it), then restored."""
    old = os.environ.get("PGOLF_OUT")
    os.environ["PGOLF_OUT"] = str(path)
    try:
        yield Path(path)
    finally:
        if old is None:
            os.environ.pop("PGOLF_OUT", None)
        else:
            os.environ["PGOLF_OUT"] = old


def in_workspace(runs_root: Path) -> bool:
    """Whether ``runs_root`` is the ``runs/`` of a scratch workspace (never the repository's own)."""
    root = Path(runs_root).resolve().parent
    return (root / MARKER).is_file() and root != REPO_ROOT and REPO_ROOT not in root.parents


RAW_WEIGHTS = "final_model.pt"


def _sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def restore_weights(run_dir: Path, log=print) -> bool:
    """Train the finished run ``run_dir`` (a folder inside a workspace) again from its ``config.json``, the way the
    ablation engine trains (one process, one thread), in a temp folder beside it. When the retrained artifact is
    byte-identical to the recorded one and its val_bpb equal, the raw weights are the run's own: they are moved
    into ``run_dir`` (the rest of the folder is kept) and True is returned. Otherwise (another machine's numerics)
    nothing is kept, the difference is logged and False is returned: a table computed from other weights would
    disagree with the run's recorded numbers."""
    run_dir = Path(run_dir)
    if not in_workspace(run_dir.parent.parent):
        raise WorkspaceError(f"{run_dir}: weights are restored only inside a scratch workspace, never in the "
                             "published study")
    summary = json.loads((run_dir / "summary.json").read_text())
    tmp = run_dir.parent / f".{run_dir.name}.restore-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    log(f"{run_dir.name}: no {RAW_WEIGHTS} on disk; retraining the run in the workspace to restore it")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "pgolf.research.workspace", str(run_dir / "config.json"), str(tmp)],
                          env=env, capture_output=True, text=True)
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"{run_dir}: retraining to restore {RAW_WEIGHTS} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        new = json.loads((tmp / "summary.json").read_text())
        artifact = summary.get("artifact_file", "")
        same = bool(artifact) and (run_dir / artifact).is_file() and (tmp / artifact).is_file() and \
            _sha256(run_dir / artifact) == _sha256(tmp / artifact) and new["val_bpb"] == summary["val_bpb"]
        if same:
            os.replace(tmp / RAW_WEIGHTS, run_dir / RAW_WEIGHTS)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    took = f"{time.perf_counter() - t0:.0f}s"
    log(f"{run_dir.name}: restored {RAW_WEIGHTS} by retraining ({took}): artifact byte-identical to the recorded one, "
        "so these are the run's weights" if same else
        f"{run_dir.name}: retrained ({took}) but the run differs from the recorded one (val_bpb {new['val_bpb']:.8f} "
        f"vs {summary['val_bpb']:.8f}: another machine's numerics), so its weights are not used; `-p rerun=True` "
        "retrains the study's runs in this workspace, so that its runs and tables agree")
    return same


def _restore_worker(argv: list[str]) -> int:
    """``python -m pgolf.research.workspace CONFIG RUN_DIR``: train one run on one thread (its weights)."""
    import torch

    from pgolf.core.config import Config
    from pgolf.core.train import train
    cfg_file, run_dir = argv
    torch.set_num_threads(1)
    train(Config.from_json(cfg_file), run_dir, console=False)
    return 0


if __name__ == "__main__":
    sys.exit(_restore_worker(sys.argv[1:]))
