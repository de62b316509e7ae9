"""However a notebook is named on pytest's command line, it runs only under nbval, in reuse mode, against a
copy of the runs: never imported as a test module (which executed its cells in the pytest process, outside
reuse mode, and trained into the repository's runs/). Checked on a copy of the repository's pytest settings
and notebooks/conftest.py with a toy notebook that records where and how it ran."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.core.paths import REPO_ROOT

NOTEBOOK = '''# %%
import json, os, pathlib
record = {{"mode": os.environ.get("PGOLF_ABLATE_MODE"), "out": os.environ.get("PGOLF_OUT")}}
pathlib.Path({markers!r}, f"{{os.getpid()}}.json").write_text(json.dumps(record))

# %%
print("ran")
'''


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("target", ["notebooks/07_new.py", "notebooks/", "notebooks/07_new.py::Cell 0"])
def test_a_notebook_named_on_the_command_line_runs_only_under_nbval_in_reuse_mode(tmp_path, target):
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    (repo / "notebooks").mkdir(parents=True)
    markers.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", repo)
    shutil.copy(REPO_ROOT / "notebooks" / "conftest.py", repo / "notebooks")
    (repo / "notebooks" / "07_new.py").write_text(NOTEBOOK.format(markers=str(markers)))
    (repo / "runs" / "micro" / "control-s0-k").mkdir(parents=True)
    (repo / "runs" / "micro" / "control-s0-k" / "summary.json").write_text("{}")
    before = _tree(repo)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO_ROOT)}
    for key in ("PGOLF_OUT", "PGOLF_ABLATE_MODE"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", target], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in markers.iterdir()]
    assert len(records) == 1, records  # once, in a kernel: not also imported by pytest
    (record,) = records
    assert record["mode"] == "reuse"  # the ablation engine in the kernel never trains
    out = Path(record["out"])
    assert repo not in out.parents and not out.exists()  # a temp copy, removed at the end of the session
    assert _tree(repo) == before  # nothing written into the (copied) repository


@pytest.mark.slow
def test_pytest_on_one_real_notebook_leaves_the_repository_as_it_was():
    """``pytest notebooks/03_smeargate.py`` on the repository itself: all cells pass in reuse mode and neither
    ``git status`` nor any file under runs/ or figures/ (ignored ones included) changes (~1 min)."""
    def state():
        status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout
        return status, _tree(REPO_ROOT / "runs"), _tree(REPO_ROOT / "figures")

    before = state()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO_ROOT)}
    for key in ("PGOLF_OUT", "PGOLF_ABLATE_MODE"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "notebooks/03_smeargate.py"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "7 passed" in proc.stdout
    assert state() == before
