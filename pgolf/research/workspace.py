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
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgolf.core.ownership import LOCK_FILE
from pgolf.core.paths import REPO_ROOT

SCRATCH_ENV = "PGOLF_SCRATCH"
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


def is_published(runs_root: Path) -> bool:
    """Whether ``runs_root`` is the repository's own ``runs/`` (the tracked, published study)."""
    return Path(runs_root).resolve() == REPO_ROOT / "runs"
