"""``pgolf submit``: a record folder from finished runs of one configuration, or the code alone from a preset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_submit(args: argparse.Namespace) -> int:
    from pgolf.core.config import ConfigError
    from pgolf.running.cli import resolve_config
    from pgolf.running.presets import PRESETS
    from pgolf.submit.record import read_runs, write_record

    runs = [i for i in args.items if "=" not in i and Path(i).is_dir()]
    rest = [i for i in args.items if i not in runs]
    if runs and (rest or args.config):
        raise ConfigError(f"{rest or args.config}: run folders carry their own configuration; give run folders "
                          f"alone, or a preset / --config with overrides")
    if runs:
        cfg, seed_runs = read_runs([Path(r) for r in runs])
        source = f"the pgolf runs {', '.join(Path(r).name for r in runs)}"
    else:
        names = [i for i in rest if "=" not in i]
        for n in names:
            if n not in PRESETS:
                raise ConfigError(f"{n!r}: neither a run folder nor a preset (one of {sorted(PRESETS)})")
        if len(names) > 1:
            raise ConfigError(f"more than one preset given: {names}")
        preset = names[0] if names else (None if args.config else "baseline")
        cfg = resolve_config(preset, [i for i in rest if "=" in i], args.config, environ={})
        seed_runs = []
        source = f"preset {preset}" if preset else f"--config {args.config}"
    sub = write_record(Path(args.out), cfg, seed_runs, name=args.name, blurb=args.blurb, source=source)
    keys = ("bytes_code", "val_bpb", "val_bpb_std", "bytes_total", "fits_16mb")
    print(json.dumps({k: sub[k] for k in keys if k in sub}))
    print(f"record folder: {args.out}")
    return 0


def register(subparsers) -> None:
    s = subparsers.add_parser("submit", help="write a record folder (packed train_gpt.py, README, submission.json, "
                                             "logs) from finished runs, or the code alone from a preset")
    s.add_argument("items", nargs="*", metavar="RUN_DIR|PRESET|KEY=VALUE",
                   help="finished run folders of one configuration (one per seed), or a preset and dotted overrides")
    s.add_argument("--config", help="a resolved config JSON instead of a preset (code alone)")
    s.add_argument("--out", required=True, help="the record folder to create (refused if it exists)")
    s.add_argument("--name", help="submission.json name (default: the preset or runs)")
    s.add_argument("--blurb", help="submission.json blurb")
    s.set_defaults(func=cmd_submit)
