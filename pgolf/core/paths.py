"""Repository-anchored locations, so nothing depends on the current working directory.

``PGOLF_OUT`` moves ``runs/`` and ``figures/`` (tests and notebook smoke runs point it at a temp dir);
``PGOLF_DATA`` moves the dataset cache.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def out_root() -> Path:
    env = os.environ.get("PGOLF_OUT")
    return Path(env).resolve() if env else REPO_ROOT


def runs_dir() -> Path:
    return out_root() / "runs"


def figures_dir() -> Path:
    return out_root() / "figures"


def notebooks_dir() -> Path:
    return REPO_ROOT / "notebooks"


def data_root() -> Path:
    env = os.environ.get("PGOLF_DATA")
    return Path(env).resolve() if env else REPO_ROOT / "data"


def default_dataset_dir() -> Path:
    """Where ``pgolf data build`` with no arguments puts the embedded default corpus."""
    return data_root() / "datasets" / "default_sp1024"
