"""Run the jupytext notebooks (``notebooks/NN_*.py``) as nbval tests, each once.

    pytest --nbval-lax --nbval-current-env notebooks/      (also part of the plain ``pytest`` run)

nbval only collects ``.ipynb``; here each ``NN_*.py`` notebook is read with ``jupytext.read`` instead,
and the gitignored ``.ipynb`` copies are skipped so nothing runs twice. Helper modules and this file are
not notebooks. However a notebook is named (``pytest notebooks/``, ``pytest notebooks/07_new.py``), it runs
only this way: pytest imports a ``.py`` file named on its command line as a test module whatever its name,
which would execute the notebook's cells in the pytest process, outside reuse mode and the temp output
folder (it trained into the repository's ``runs/``); :func:`pytest_pycollect_makemodule` gives pytest an
empty placeholder for a notebook instead of a module, so the nbval item below is the notebook's only test.
The notebooks run with their default parameters, which are the real study settings: they are cheap here
because the committed runs are reused. Each notebook's kernel starts with
- ``PGOLF_ABLATE_MODE=reuse``: the ablation engine never trains; a missing run fails the notebook;
- ``PGOLF_OUT`` = a temp dir holding a copy of the repo's ``runs/``, so the notebooks see the committed
  runs and nothing is written into the repository.
Both are set only while a notebook kernel starts, so other tests in the same session are unaffected.
The training path inside the notebooks is exercised by ``tests/test_notebooks_papermill.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import types
from pathlib import Path
from unittest import mock

import jupytext
import pytest
from nbval.plugin import IPyNbFile

NOTEBOOK_NAME = re.compile(r"[0-9][0-9]_.*\.py")
REPO_RUNS = Path(__file__).resolve().parents[1] / "runs"
_temp_out: str | None = None


def _nbval_out() -> str:
    global _temp_out
    if _temp_out is None:
        _temp_out = tempfile.mkdtemp(prefix="pgolf-nbval-")
        if REPO_RUNS.is_dir():
            shutil.copytree(REPO_RUNS, Path(_temp_out) / "runs", ignore=shutil.ignore_patterns(".lock"))
    return _temp_out


def _nbval_on(config) -> bool:
    return bool(getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False))


class NotebookNotAModule(pytest.File):
    """What pytest's Python collection gets for a notebook: no tests (nbval runs it), never an import."""

    def collect(self):
        if not _nbval_on(self.config):
            raise pytest.UsageError(f"{self.path.name} is a notebook: pytest runs it only under nbval in reuse mode "
                                    "(--nbval-lax, in the default addopts of pyproject.toml), never as a module")
        return []


class JupytextNbFile(IPyNbFile):
    def collect(self):
        # nbval reads the file with nbformat.read inside collect(); hand it jupytext's reader instead.
        reader = types.SimpleNamespace(read=lambda path, as_version: jupytext.read(path))
        with mock.patch("nbval.plugin.nbformat", reader):
            return list(super().collect())

    def setup(self):
        env = {"PGOLF_ABLATE_MODE": "reuse", "PGOLF_OUT": _nbval_out()}
        with mock.patch.dict(os.environ, env):  # the kernel inherits the environment when it starts
            super().setup()


def pytest_unconfigure(config):
    if _temp_out is not None:
        shutil.rmtree(_temp_out, ignore_errors=True)


def pytest_ignore_collect(collection_path: Path, config):
    if collection_path.suffix == ".ipynb" or collection_path.name == ".ipynb_checkpoints":
        return True  # paired copies of the .py notebooks (gitignored)
    return None


def pytest_pycollect_makemodule(module_path: Path, parent):
    if NOTEBOOK_NAME.fullmatch(module_path.name):
        return NotebookNotAModule.from_parent(parent, path=module_path)
    return None


def pytest_collect_file(file_path: Path, parent):
    if _nbval_on(parent.config) and NOTEBOOK_NAME.fullmatch(file_path.name):
        return JupytextNbFile.from_parent(parent, path=file_path)
    return None
