"""Run the jupytext notebooks (``notebooks/NN_*.py``) as nbval tests, each once.

    pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

nbval only collects ``.ipynb``; here each ``NN_*.py`` notebook is read with ``jupytext.read`` instead,
and the gitignored ``.ipynb`` copies are skipped so nothing runs twice. Helper modules and this file are
not notebooks. The notebooks run with their default (tiny) parameters. Unless ``PGOLF_OUT`` is already
set, it is pointed at a fresh temp dir so that smoke runs never write into the repo's ``runs/`` or
``figures/``; set it yourself to keep the outputs.
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
from nbval.plugin import IPyNbFile

NOTEBOOK_NAME = re.compile(r"[0-9][0-9]_.*\.py")
_temp_out: str | None = None


class JupytextNbFile(IPyNbFile):
    def collect(self):
        # nbval reads the file with nbformat.read inside collect(); hand it jupytext's reader instead.
        reader = types.SimpleNamespace(read=lambda path, as_version: jupytext.read(path))
        with mock.patch("nbval.plugin.nbformat", reader):
            return list(super().collect())


def pytest_configure(config):
    global _temp_out
    if config.option.nbval or config.option.nbval_lax:
        if "PGOLF_OUT" not in os.environ:
            _temp_out = tempfile.mkdtemp(prefix="pgolf-nbval-")
            os.environ["PGOLF_OUT"] = _temp_out  # kernels inherit it when they start


def pytest_unconfigure(config):
    if _temp_out is not None:
        os.environ.pop("PGOLF_OUT", None)
        shutil.rmtree(_temp_out, ignore_errors=True)


def pytest_ignore_collect(collection_path: Path, config):
    if collection_path.suffix == ".ipynb" or collection_path.name == ".ipynb_checkpoints":
        return True  # paired copies of the .py notebooks (gitignored)
    return None


def pytest_collect_file(file_path: Path, parent):
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and NOTEBOOK_NAME.fullmatch(file_path.name):
        return JupytextNbFile.from_parent(parent, path=file_path)
    return None
