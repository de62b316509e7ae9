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


def default_dataset_dir(vocab_size: int = 1024) -> Path:
    """Where ``pgolf data build [--vocab-size N]`` puts the embedded default corpus (``default_sp<N>``)."""
    return data_root() / "datasets" / f"default_sp{vocab_size}"


def default_build_command(vocab_size: int = 1024) -> str:
    """The command that builds :func:`default_dataset_dir` for ``vocab_size`` (named in missing-data errors)."""
    return "pgolf data build" if vocab_size == 1024 else f"pgolf data build --vocab-size {vocab_size}"
