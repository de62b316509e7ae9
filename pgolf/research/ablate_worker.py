"""One single-process run of an ablation: ``python -m pgolf.research.ablate_worker CONFIG RUN_DIR LABELS_JSON``.

The process :func:`pgolf.research.ablate.command` gives for each run: it trains at one thread and records the
current code's behaviour fingerprint in the run folder (``behaviour.json``). The local launcher runs :func:`main`
in a fork of a persistent worker (:mod:`pgolf.research.worker_server`), which has imported all this once. Kept apart from
:mod:`pgolf.research.ablate` so that a run's process imports the trainer and the fingerprint only, not the
ablation engine's tables (pandas): about 0.3 CPU-s of each run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pgolf.core.config import Config
from pgolf.core.runs import atomic_write_json
from pgolf.research import behaviour

BEHAVIOUR = "behaviour.json"


def write_behaviour(run_dir: Path, cfg: Config) -> None:
    """Record the fingerprint of ``cfg`` under the current code in ``run_dir`` (atomically)."""
    atomic_write_json(Path(run_dir) / BEHAVIOUR, behaviour.fingerprint(cfg), allow_nan=False)


def main(argv: list[str]) -> int:
    import torch

    from pgolf.core.train import train
    cfg_file, run_dir, labels = argv
    torch.set_num_threads(1)
    cfg = Config.from_json(cfg_file)
    train(cfg, run_dir, labels=json.loads(labels))
    write_behaviour(Path(run_dir), cfg)  # the code that trained the run, at the run's config
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
