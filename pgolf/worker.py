"""Entry point of one training process: ``python -m pgolf.worker --config C.json --run-dir D``.

The launcher starts it once per rank under torchrun; in-process runs call :func:`pgolf.train.train`.
"""

from __future__ import annotations

import argparse
import sys

from .config import Config
from .train import train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pgolf.worker")
    p.add_argument("--config", required=True, help="resolved config JSON")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    train(Config.from_json(a.config), a.run_dir, resume=a.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
