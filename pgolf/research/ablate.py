"""The ablation engine: a base config, named arms (overrides), seeds and a budget -> a tidy table.

    df = ablate("swiglu_vs_relu2", "tiny", {"relu2": {}, "swiglu": {"model.mlp": "swiglu"}},
                seeds=[0, 1, 2], budget_seconds=60)

Each (arm, seed) is one run folder ``runs/<ablation>/<arm>-s<seed>-<key>``, where ``key`` hashes the
resolved config and the code version (the sources of the training modules), so rerunning a notebook
reuses every finished run and trains only what changed; ``rerun=True`` trains again (the old folder is
moved aside, not deleted).

With ``mode="reuse"`` the engine never trains: each (arm, seed) takes the finished run whose config is
identical, even one made by older code, flagged ``stale_code`` in the table; a missing run is an error that
says how to train it. ``mode=None`` (what the notebooks pass) takes the mode from :func:`default_mode`, the
one place that reads ``PGOLF_ABLATE_MODE``: the notebook runner's switch (``notebooks/conftest.py`` sets it
to ``reuse`` for nbval), read once per :func:`ablate` call at the API boundary. On CPU, independent runs go to parallel processes with one thread each:
on the 2-vCPU development machine two 1-thread processes trained more tokens per second in total than
one 2-thread process. Multi-process runs (``nproc_per_node > 1``) go through the torchrun launcher.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import pandas as pd

from pgolf.core import accounting
from pgolf.core.config import Config, apply_overrides
from pgolf.core.paths import runs_dir
from pgolf.core.runs import read_status
from pgolf.research.results import load_runs
from pgolf.running.presets import get_preset

AblateMode = Literal["train", "reuse"]
MODES = ("train", "reuse")
MODE_ENV = "PGOLF_ABLATE_MODE"


def default_mode() -> AblateMode:
    """The mode of an :func:`ablate` call that names none: ``PGOLF_ABLATE_MODE`` (``train`` when unset), the
    notebook runner's switch. The only place pgolf reads that variable."""
    mode = os.environ.get(MODE_ENV, "train")
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV}={mode!r}: expected one of {', '.join(MODES)}")
    return mode  # type: ignore[return-value]


def code_version() -> str:
    """Hash of the training core's sources (``pgolf/core/``), which determine a run's result; the command line,
    notebooks and plotting are outside it."""
    h = hashlib.sha256()
    for p in accounting.core_sources():
        h.update(p.relative_to(accounting.CORE).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def run_key(cfg: Config) -> str:
    blob = json.dumps({"config": cfg.to_dict(), "code": code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass
class PlannedRun:
    arm: str
    seed: int
    cfg: Config
    path: Path

    @property
    def finished(self) -> bool:
        st = read_status(self.path)
        return bool(st and st.get("status") == "finished" and (self.path / "summary.json").exists())


def plan(ablation: str, base: str | Config, arms: Mapping[str, Mapping[str, Any]], seeds: Sequence[int],
         budget_steps: int | None = None, budget_seconds: float | None = None,
         common: Mapping[str, Any] | None = None, runs_root: Path | None = None) -> list[PlannedRun]:
    cfg0 = get_preset(base) if isinstance(base, str) else base
    if common:
        cfg0 = apply_overrides(cfg0, common)
    if not cfg0.data.path:
        # Build the embedded corpus once, before parallel workers need it. The config keeps data.path
        # empty (resolved at run time), so run keys do not depend on where the checkout lives.
        from pgolf.data.build import build_dataset
        build_dataset(None, None)
    budget: dict[str, Any] = {}
    if budget_steps is not None:
        budget["train.iterations"] = budget_steps
        if budget_seconds is None:
            budget["train.max_wallclock_seconds"] = 0.0
    if budget_seconds is not None:
        budget["train.max_wallclock_seconds"] = budget_seconds
    root = (runs_root or runs_dir()) / ablation
    out = []
    for arm, overrides in arms.items():
        for seed in seeds:
            cfg = apply_overrides(cfg0, {**budget, **overrides, "train.seed": seed})
            out.append(PlannedRun(arm, seed, cfg, root / f"{arm}-s{seed}-{run_key(cfg)}"))
    return out


def _command(run: PlannedRun, ablation: str, nproc_per_node: int) -> tuple[list[str], dict[str, str]]:
    run.path.parent.mkdir(parents=True, exist_ok=True)
    cfg_file = run.path.parent / f".{run.path.name}.config.json"
    cfg_file.write_text(run.cfg.to_json())
    labels = json.dumps({"ablation": ablation, "arm": run.arm, "seed": run.seed, "key": run.path.name.rsplit("-", 1)[1]})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if nproc_per_node > 1:
        cmd = [sys.executable, "-m", "pgolf", "train", "--config", str(cfg_file), "--run-dir", str(run.path),
               "--nproc-per-node", str(nproc_per_node), "--labels-json", labels]
    else:
        cmd = [sys.executable, "-m", "pgolf.research.ablate", str(cfg_file), str(run.path), labels]
    return cmd, env


def execute(runs: list[PlannedRun], ablation: str, jobs: int, nproc_per_node: int = 1, rerun: bool = False,
            log=print) -> list[str]:
    """Train the runs that are missing (all of them with ``rerun``); returns the failures."""
    from pgolf.core.runs import prepare_run_dir
    todo = [r for r in runs if rerun or not r.finished]
    log(f"ablation {ablation}: {len(runs) - len(todo)} cached, {len(todo)} to train ({jobs} parallel)")
    pending = list(todo)
    active: list[tuple[PlannedRun, subprocess.Popen, float, Any]] = []
    failures = []
    finished, t_start = 0, time.time()
    while pending or active:
        while pending and len(active) < (jobs if nproc_per_node == 1 else 1):
            r = pending.pop(0)
            prepare_run_dir(r.path, overwrite=r.path.exists())
            cmd, env = _command(r, ablation, nproc_per_node)
            r.path.parent.mkdir(parents=True, exist_ok=True)
            out = open(r.path.parent / f".{r.path.name}.stdout", "w")
            active.append((r, subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT), time.time(), out))
        time.sleep(0.5)
        for item in list(active):
            r, proc, t0, out = item
            if proc.poll() is None:
                continue
            out.close()
            active.remove(item)
            finished += 1
            where = f"[{finished}/{len(todo)}] {r.path.name}"
            if proc.returncode == 0:
                log(f"  {where}: done in {time.time() - t0:.0f}s (elapsed {time.time() - t_start:.0f}s)")
            else:
                failures.append(f"{r.path.name} (exit {proc.returncode}; see {out.name})")
                log(f"  {where}: FAILED exit {proc.returncode}; output in {out.name}")
    return failures


def _reuse(r: PlannedRun) -> PlannedRun:
    """The finished run with the same config as ``r`` (any code version), for reuse-only mode."""
    if r.finished:
        return r
    for cand in sorted(r.path.parent.glob(f"{r.arm}-s{r.seed}-*"), reverse=True):
        if ".replaced-" in cand.name or not (cand / "config.json").exists():
            continue
        if Config.from_json(cand / "config.json") == r.cfg and PlannedRun(r.arm, r.seed, r.cfg, cand).finished:
            return PlannedRun(r.arm, r.seed, r.cfg, cand)
    raise RuntimeError(f"ablate mode 'reuse' ({MODE_ENV}=reuse for notebooks): no finished run for arm {r.arm!r} "
                       f"seed {r.seed} with this config under {r.path.parent}; train it with mode='train' (notebooks: "
                       f"`pgolf notebooks run` without {MODE_ENV})")


def ablate(ablation: str, base: str | Config, arms: Mapping[str, Mapping[str, Any]], seeds: Sequence[int] = (0, 1, 2),
           budget_steps: int | None = None, budget_seconds: float | None = None,
           common: Mapping[str, Any] | None = None, rerun: bool = False, jobs: int | None = None,
           nproc_per_node: int = 1, runs_root: Path | None = None, log=print,
           mode: AblateMode | None = None) -> pd.DataFrame:
    """Run what is missing and return one row per (arm, seed) with the run's summary fields.

    ``mode``: ``"train"`` trains the missing runs, ``"reuse"`` only takes finished ones (see the module
    docstring); None: :func:`default_mode`."""
    mode = default_mode() if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"ablate(mode={mode!r}): expected one of {', '.join(MODES)}")
    planned = plan(ablation, base, arms, seeds, budget_steps, budget_seconds, common, runs_root)
    if mode == "reuse":
        runs = [_reuse(r) for r in planned]
        log(f"ablation {ablation}: reuse-only mode, {len(runs)} finished runs found")
    else:
        runs = planned
        cuda = any(r.cfg.train.device == "cuda" for r in runs)
        jobs = jobs or (1 if cuda else max(1, os.cpu_count() or 1))
        failures = execute(runs, ablation, jobs, nproc_per_node, rerun, log)
        if failures:
            raise RuntimeError(f"ablation {ablation}: {len(failures)} run(s) failed: " + "; ".join(failures))
    table = load_runs(runs[0].path.parent)
    table = table[table["path"].isin([str(r.path) for r in runs])]
    order = {str(r.path): i for i, r in enumerate(runs)}
    table = table.sort_values("path", key=lambda s: s.map(order)).reset_index(drop=True)
    table["stale_code"] = [str(r.path) != str(p.path) for r, p in zip(runs, planned)]
    return table


def _worker(argv: list[str]) -> int:
    """``python -m pgolf.research.ablate CONFIG RUN_DIR LABELS_JSON``: one single-process run of an ablation."""
    import torch

    from pgolf.core.train import train
    cfg_file, run_dir, labels = argv
    torch.set_num_threads(1)
    train(Config.from_json(cfg_file), run_dir, labels=json.loads(labels))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
