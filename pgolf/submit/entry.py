"""The generated script's entry point: what ``python train_gpt.py`` (or torchrun) runs.

This module is bundled last into the script (:mod:`pgolf.submit.bundle`). The configuration is ``DEFAULTS``,
which the generator replaces with the submitted configuration; the official environment names
(``NUM_LAYERS=11 SEED=42 DATA_PATH=... TOKENIZER_PATH=...``, mapped in :mod:`pgolf.core.config_env`)
override it at run time. The run writes its folder (log, artifact, summary) to ``logs/<RUN_ID>/`` under the
current directory, as the official script writes ``logs/<RUN_ID>.txt``.

Names defined here replace the core's names of the same spelling in the bundle (``code_bytes``,
``CODE_BYTES_NOTE``, ``REPO_ROOT``): the script counts itself as code, as the records do.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from pgolf.core.config import Config, ConfigError, from_env
from pgolf.core.train import train

DEFAULTS: dict[str, Any] = Config().to_dict()  # the generator writes the submitted configuration here
CODE_BYTES_NOTE = "this script's own bytes"
REPO_ROOT = Path(__file__).resolve().parent


def code_bytes(cfg: Config | None = None) -> int:
    """The script's own size: the packed file when it is run packed, as the cap counts it."""
    return len(Path(__file__).read_bytes())


def script_config(environ=os.environ) -> Config:
    return from_env(Config.from_dict(DEFAULTS), environ)


def main() -> int:
    try:
        cfg = script_config()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_id = os.environ.get("RUN_ID") or str(uuid.uuid4())
    summary = train(cfg, Path("logs") / run_id)
    return 0 if summary.get("status") == "finished" else 1
