"""The generated script's entry point: what ``python train_gpt.py`` (or torchrun) runs.

This module is bundled last into the script (:mod:`pgolf.submit.bundle`). The configuration is ``Config``'s
defaults updated with ``DEFAULTS``, where the generator writes the submitted configuration's values that differ
from them (pgolf's own copy of this module: none); the official environment names
(``NUM_LAYERS=11 SEED=42 DATA_PATH=... TOKENIZER_PATH=...``, mapped in :mod:`pgolf.core.config_env`)
override it at run time. The script runs pgolf's training loop alone (:class:`pgolf.core.train_loop.TrainLoop`,
none of pgolf's run-folder code) and writes what the official script writes: the ``key:value`` lines on stdout
and in ``logs/<RUN_ID>.txt``, and the artifact it scores in the current directory (:class:`ScriptSink`).

Names defined here replace the core's names of the same spelling in the bundle (``code_bytes``,
``CODE_BYTES_NOTE``, ``REPO_ROOT``): the script counts itself as code, as the records do.

The script holds only the code paths of its configuration's switches (:mod:`pgolf.submit.fold`): ``FOLDED``
(switch -> value) and ``FOLDED_ON_OFF`` (number -> on) are what it was generated with, and an environment
that changes one of them is refused in one line (:func:`check_folded`). pgolf itself folds nothing (empty).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from pgolf.core.config import Config, ConfigError, env_names, from_env
from pgolf.core.train_loop import TrainLoop

DEFAULTS: dict[str, Any] = {}  # the generator writes the configuration here (its values that differ from Config())
CODE_BYTES_NOTE = "this script's own bytes"
REPO_ROOT = Path(__file__).resolve().parent
FOLDED: dict[str, Any] = {}  # the generator writes the folded switches here (dotted key -> value)
FOLDED_ON_OFF: dict[str, bool] = {}  # and the on/off state of the numbers it folded as such


def code_bytes(cfg: Config | None = None) -> int:
    """The script's own size: the packed file when it is run packed, as the cap counts it."""
    return len(Path(__file__).read_bytes())


def check_folded(cfg: Config, environ) -> None:
    """Refuse a configuration whose folded switches differ from the script's (the code of the other value
    is not in it), naming the environment variable that changed it."""
    def get(key):
        sec, name = key.split(".")
        return getattr(getattr(cfg, sec), name)

    wrong = [(k, v, repr(v), repr(get(k))) for k, v in FOLDED.items() if get(k) != v]
    generated = Config.from_dict(DEFAULTS)
    wrong += [(k, v, f"{getattr(getattr(generated, k.split('.')[0]), k.split('.')[1])!r} ({'on' if v else 'off'})",
               f"{get(k)!r} ({'on' if bool(get(k)) else 'off'})")
              for k, v in FOLDED_ON_OFF.items() if bool(get(k)) != v]
    if wrong:
        key, _, had, got = wrong[0]
        name = env_names(environ).get(key, "the environment")
        raise ConfigError(f"{name}={environ.get(name, '')!r} sets {key}={got}, but this script was generated with "
                          f"{key}={had}; regenerate it with pgolf submit")


class ScriptSink:
    """The official script's outputs (rank 0): each log line printed and appended to ``logfile``, each metrics row
    appended as one JSON line to ``<logfile stem>.metrics.jsonl`` beside it (exact floats; the log prints 4
    decimals), the artifact written under its name in the current directory (through a temporary file, so a crash
    never leaves a partial artifact under the real name). The summary is not kept: the log lines carry it, as the
    official script's do."""

    def __init__(self, logfile: Path):
        self.logfile = logfile
        self.metrics = logfile.with_name(logfile.stem + ".metrics.jsonl")

    def _append(self, path: Path, line: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            print(line, file=f)

    def log(self, msg: str, console: bool = True) -> None:
        if console:
            print(msg, flush=True)
        self._append(self.logfile, msg)

    def metric(self, **row: Any) -> None:
        self._append(self.metrics, json.dumps(row))

    def artifact(self, filename: str, blob: bytes, report: dict[str, Any]) -> None:
        tmp = Path(f"{filename}.{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, filename)

    def summary(self, summary: dict[str, Any]) -> None:
        pass


def script_config(environ=os.environ) -> Config:
    cfg = from_env(Config.from_dict(DEFAULTS), environ)
    check_folded(cfg, environ)
    return cfg


def main() -> int:
    try:
        cfg = script_config()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_id = os.environ.get("RUN_ID") or str(uuid.uuid4())
    with TrainLoop(cfg, ScriptSink(Path("logs") / f"{run_id}.txt")) as loop:
        summary = loop.run()
    return 0 if summary.get("status") == "finished" else 1
