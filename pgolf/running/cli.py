"""The ``pgolf`` command line. Each sub-command is a thin shell over a library call."""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import shlex
import signal
import sys
import time
from pathlib import Path

from pgolf.core.config import Config, ConfigError, apply_overrides, from_env, parse_override
from pgolf.core.paths import runs_dir
from pgolf.running.presets import PRESETS, describe, get_preset


def resolve_config(preset: str | None, overrides: list[str], config_file: str | None = None,
                   environ: dict[str, str] | None = None) -> Config:
    """preset (or --config JSON) < official environment names < dotted command-line overrides."""
    if config_file and preset:
        raise ConfigError(f"preset {preset!r} and --config {config_file}: the config file replaces the preset; "
                          f"give one or the other")
    cfg = Config.from_json(config_file) if config_file else get_preset(preset or "baseline")
    cfg = from_env(cfg, environ if environ is not None else os.environ)
    return apply_overrides(cfg, dict(parse_override(o) for o in overrides))


def split_config_items(items: list[str], config_file: str | None, presets: bool = True) -> tuple[str | None, list[str]]:
    """Positional words -> (preset, overrides). A word with ``=`` is always an override; a word without
    one is the preset (at most one; none on a command without presets). No preset: ``baseline``, or
    None with --config (a preset given with --config is refused by :func:`resolve_config`)."""
    overrides = [i for i in items if "=" in i]
    names = [i for i in items if "=" not in i]
    for n in names:
        if "." in n:  # presets have no dots: an override without its value, or a file meant for --config
            raise ConfigError(f"{n!r}: expected a preset name or section.key=value (a config file goes after "
                              f"--config)")
    if names and not presets:
        raise ConfigError(f"{names[0]!r}: this command takes no preset; expected section.key=value overrides")
    if len(names) > 1:
        raise ConfigError(f"more than one preset given: {names}; expected one preset and section.key=value overrides")
    return (names[0] if names else None if config_file else "baseline"), overrides


def run_path(args: argparse.Namespace, default_name: str, environ: dict[str, str] | None = None) -> Path:
    """``--run-dir`` as given, else ``runs/<name>`` for ``--name``, ``RUN_ID`` or ``default_name``; a name that
    would leave ``runs/`` (a path separator, ``..``, an absolute path) or is too long is refused."""
    from pgolf.core.runs import check_run_name
    if getattr(args, "run_dir", None):
        return Path(args.run_dir).resolve()
    env = os.environ if environ is None else environ
    if args.name:
        name = check_run_name(args.name, "--name")
    elif env.get("RUN_ID"):
        name = check_run_name(env["RUN_ID"], "RUN_ID")
    else:
        name = check_run_name(default_name, "run name")
    return runs_dir() / name


def _add_config_args(p: argparse.ArgumentParser, presets: bool = True) -> None:
    """[PRESET] and section.key=value overrides, in any order, also between and after the options.

    argparse gives the positional words up to the first option to ``items`` and returns the later ones as
    unrecognized; :func:`main` appends those (the ``config_items`` marker) and splits them with
    :func:`split_config_items`, so no override is taken for a preset name or dropped."""
    if presets:
        p.add_argument("items", nargs="*", metavar="PRESET|KEY=VALUE",
                       help=f"a preset (one of {sorted(PRESETS)}; default baseline) and dotted overrides, "
                            f"e.g. model.num_layers=11")
        p.add_argument("--config", help="start from this resolved config JSON instead of a preset")
    else:
        p.add_argument("items", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.seed=1")
    p.set_defaults(config_items=presets, config=None)


def interrupted(path: Path, exc: BaseException | None = None) -> int:
    """Ctrl-C or SIGTERM during a run: one line saying where the run is and how to go on; exit code 130 (SIGINT)
    or 128 + the signal's number (143 for SIGTERM), as a shell reports a process stopped by it."""
    from pgolf.core.runs import CHECKPOINT, TRAINING_END
    signum = getattr(exc, "signum", signal.SIGINT)
    by = f" by {signal.Signals(signum).name}" if signum != signal.SIGINT else ""
    if (path / TRAINING_END).exists():
        how = (f"training had finished; export and score final_model.pt with: pgolf train --config "
               f"{shlex.quote(str(path / 'config.json'))} --run-dir {shlex.quote(str(path))} --resume")
    elif (path / CHECKPOINT).exists():
        how = (f"continue with: pgolf train --config {shlex.quote(str(path / 'config.json'))} "
               f"--run-dir {shlex.quote(str(path))} --resume")
    else:
        how = "it has no checkpoint (train.checkpoint_every=0), so start it again with --overwrite"
    print(f"pgolf: interrupted{by}: run folder {path}; {how}", file=sys.stderr)
    return 128 + int(signum)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.preset, args.overrides, args.config)
    stem = Path(args.config).stem if args.config else args.preset
    path = run_path(args, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    nproc, nnodes = args.nproc_per_node, args.nnodes
    if nproc > 1 or nnodes > 1 or args.dry_run or args.slurm:
        from pgolf.running.launch import launch
        return launch(cfg, path, args)
    from pgolf.core.runs import prepare_run_dir
    from pgolf.core.train import train
    from pgolf.running.worker import hooks_from_args, parse_labels
    labels = parse_labels(args.labels_json)
    hooks, _ = hooks_from_args(0, args.test_fail, args.test_clock_skew)
    prepare_run_dir(path, resume=args.resume, overwrite=args.overwrite)
    try:
        summary = train(cfg, path, resume=args.resume, labels=labels, hooks=hooks)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (pgolf.core.train.StopRequested)
        return interrupted(path, exc)
    print(json.dumps({k: summary[k] for k in ("val_bpb", "q_val_bpb", "artifact_bytes", "total_bytes")}))
    print(f"run folder: {path}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    """Build the embedded corpus, train ``tiny`` on CPU for a fixed number of steps (pgolf.running.quickstart), export,
    score, and compare with a unigram model."""
    from pgolf.core.train import TrainerHooks, train
    from pgolf.data.build import build_dataset
    from pgolf.running.quickstart import QUICKSTART_BUDGET, choose_threads, progress

    t0 = time.perf_counter()
    if hasattr(sys.stdout, "reconfigure"):  # a pipe or a log sees each line as it is printed, not at the end
        sys.stdout.reconfigure(line_buffering=True)
    print(f"pgolf quickstart: building (or reusing) the embedded corpus, then training `tiny` on CPU for "
          f"{QUICKSTART_BUDGET['train.iterations']} steps", flush=True)
    ds_dir = build_dataset(None, None)
    manifest = json.loads((Path(ds_dir) / "manifest.json").read_text())
    cfg = apply_overrides(get_preset("tiny"), {"data.path": str(ds_dir), **QUICKSTART_BUDGET})
    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = apply_overrides(cfg, overrides)
    cfg, labels = (cfg, {}) if "train.num_threads" in overrides else choose_threads(cfg)
    path = run_path(args, f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        with progress(cfg.train.iterations) as on_step:
            s = train(cfg, path, labels=labels, hooks=TrainerHooks(on_step=on_step))
    except KeyboardInterrupt as exc:
        return interrupted(path, exc)
    unigram = manifest.get("unigram_val_bpb")
    print("\n== pgolf quickstart ==")
    print(f"val_bpb before quantization: {s['val_bpb']:.4f}")
    print(f"val_bpb after {s['artifact_format']} roundtrip: {s['q_val_bpb']:.4f} (gap {s['quant_gap_bpb']:+.4f})")
    if unigram is not None:
        print(f"unigram model of the corpus: {unigram:.4f} bpb")
    print(f"artifact: {s['artifact_bytes']:,} bytes + code {s['code_bytes']:,} = {s['total_bytes']:,} "
          f"of 16,000,000 ({'fits' if s['fits_16mb'] else 'DOES NOT FIT'})")
    print(f"steps: {s['steps']}  threads: {cfg.train.num_threads or 1}  train time: {s['train_time_ms'] / 1000:.1f}s  "
          f"total: {time.perf_counter() - t0:.1f}s")
    print(f"run folder: {path}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """Every preset with its parameter count and the first line of its docstring; one preset in full."""
    from pgolf.running.presets import param_count
    if args.name:
        print(f"{args.name}: {param_count(get_preset(args.name)):,} parameters\n\n{describe(args.name)}")
        return 0
    width = max(map(len, PRESETS))
    print(f"{'preset':<{width}}  {'params':>11}  description (pgolf presets NAME for all of it)")
    for n in sorted(PRESETS):
        print(f"{n:<{width}}  {param_count(get_preset(n)):>11,}  {describe(n).splitlines()[0]}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(resolve_config(args.preset, args.overrides, args.config).to_json())
    return 0


def cmd_size(args: argparse.Namespace) -> int:
    """Predicted artifact bytes: a table headed by the trained-weight estimate, or with --json the full report."""
    from pgolf.running import sizing
    cfg = resolve_config(args.preset, args.overrides, args.config)
    run = Path(args.run) if args.run else None
    if args.json:
        print(json.dumps(sizing.size_report_for(cfg, run_dir=run, detail=not args.fast), indent=2))
    else:
        name = args.config or args.preset
        print(sizing.format_table(f"pgolf size {name}", sizing.size_estimate(cfg, run_dir=run, detail=not args.fast)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgolf", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train, export and score one run")
    _add_config_args(t)
    t.add_argument("--name", help="run name under runs/ (default: <preset>-<time>, or $RUN_ID)")
    t.add_argument("--run-dir", help="explicit run folder (instead of runs/<name>)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run (old folder kept aside)")
    from pgolf.running.launch import add_launch_args
    from pgolf.running.worker import add_worker_args
    add_launch_args(t)
    add_worker_args(t)
    t.set_defaults(func=cmd_train)

    q = sub.add_parser("quickstart", help="build the embedded corpus, train `tiny` on CPU for a fixed number "
                                                    "of steps, export and score")
    _add_config_args(q, presets=False)
    q.add_argument("--name")
    q.set_defaults(func=cmd_quickstart, run_dir=None)

    pr = sub.add_parser("presets", help="list the named presets with their parameter counts")
    pr.add_argument("name", nargs="?", help="print this preset's whole description")
    pr.set_defaults(func=cmd_presets)

    c = sub.add_parser("config", help="print a resolved config as JSON")
    _add_config_args(c)
    c.set_defaults(func=cmd_config)

    s = sub.add_parser("size", help="predicted artifact bytes against the 16,000,000-byte cap, per tensor class")
    _add_config_args(s)
    s.add_argument("--run", help="use the trained weights of this run folder (its final_model.pt)")
    s.add_argument("--json", action="store_true", help="the full report as JSON (fresh init and trained estimate)")
    s.add_argument("--fast", action="store_true", help="skip compressing each tensor class on its own (halves the "
                                                       "time at zstd-22 / lzma; the artifact total stays exact)")
    s.set_defaults(func=cmd_size)

    for module in ("pgolf.data.cli", "pgolf.research.notebooks", "pgolf.research.figures", "pgolf.research.results_table", "pgolf.running.bench", "pgolf.running.scoring", "pgolf.running.doctor", "pgolf.submit.cli"):
        __import__(module, fromlist=["register"]).register(sub)
    return p


def _dispatch(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "config_items"):
        stray = [e for e in extra if e.startswith("-")]
    elif hasattr(args, "overrides"):  # other commands with overrides take them after options too
        stray = [e for e in extra if e.startswith("-") or "=" not in e]
    else:
        stray = extra
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    try:
        if hasattr(args, "config_items"):
            args.preset, args.overrides = split_config_items(args.items + extra, args.config, args.config_items)
        elif extra:  # e.g. ``pgolf eval RUN --stride 64 model.x=1``: overrides after options
            args.overrides = [*args.overrides, *extra]
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError) as e:  # SubmitError is a ValueError
        print(f"pgolf: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:
            raise
        # e.g. PGOLF_OUT on a read-only file system, a full disk, a folder without write permission
        print(f"pgolf: error: {e.filename}: {e.strerror or e} (runs go under PGOLF_OUT={os.environ.get('PGOLF_OUT', '')!r} "
              f"or --run-dir; it must be writable)" if e.errno in _WRITE_ERRNOS else
              f"pgolf: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"pgolf: interrupted{'' if signum == signal.SIGINT else ' by ' + signal.Signals(signum).name}",
              file=sys.stderr)
        return 128 + int(signum)
    except Exception as e:  # noqa: BLE001
        from pgolf.core.accounting import OverCapError
        from pgolf.core.runs import RunExistsError
        if isinstance(e, RunExistsError):
            print(f"pgolf: error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, OverCapError):  # the run is complete but failed; its folder says so
            print(f"pgolf: run failed: {e}", file=sys.stderr)
            return 1
        raise


_WRITE_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. A reader that leaves early (``pgolf presets | head -1``) ends the
    command quietly with 141 (128 + SIGPIPE), the status a shell reports for ``seq`` or ``cat`` there.

    SIGPIPE stays ignored (Python's default), so a closed socket or child pipe is still an error; only a
    BrokenPipeError while stdout's reader is gone is taken for this case (the recipe of the Python docs,
    "Note on SIGPIPE", with 141 instead of 1)."""
    try:
        rc = _dispatch(argv)
        sys.stdout.flush()  # output still buffered meets the closed pipe here, not at interpreter exit
        return rc
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush must not fail
        return 128 + signal.SIGPIPE


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe (or socket) whose reading end is closed: poll reports an error on it."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured in tests)
        return False


if __name__ == "__main__":
    sys.exit(main())
