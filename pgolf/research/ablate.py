"""The ablation engine: a base config, named arms (overrides), seeds and a budget -> a tidy table.

    df = ablate("swiglu_vs_relu2", "tiny", {"relu2": {}, "swiglu": {"model.mlp": "swiglu"}},
                seeds=[0, 1, 2], budget_seconds=60)

Each (arm, seed) is one run folder ``runs/<ablation>/<arm>-s<seed>-<key>``. ``key``
(:func:`pgolf.research.runkey.run_key`) hashes the config entries that differ from the default ``Config()``
(``data.path`` left out) and the identity of the dataset the run reads (its ``dataset_sha256``); it does not
hash the code. A finished run is reused only while the current code behaves as the code that trained it: each
run folder holds ``behaviour.json``, the fingerprint of :mod:`pgolf.research.behaviour` (a few training steps
of the arm's model on synthetic tokens and the export round trip) written when the run finished, and before
reuse the fingerprint of the planned config is computed again (once per arm config and process) and compared
(relative tolerance :data:`~pgolf.research.behaviour.RTOL`). So a core change that keeps behaviour at existing
settings (a new switch, off by default) keeps every cached run, and one that changes it invalidates the runs
it affects. A finished run whose fingerprint differs, or that has no ``behaviour.json`` (made before
fingerprints), is stale: ``mode="train"`` trains it again, ``mode="reuse"`` raises :class:`StaleRunError`.
Rerunning a notebook thus trains only what changed; ``rerun=True`` trains again. A folder trained again is
moved aside (``.replaced-<time>``), not deleted.

With ``mode="reuse"`` the engine never trains: each (arm, seed) takes the finished run with the same key (its
folder, or another folder of the arm and seed whose ``config.json`` and ``dataset.json`` give that key); a
missing run is an error that says how to train it. The table's ``stale_code`` column is kept for older
notebooks and is always False (a stale run is never returned). ``mode=None`` (what the notebooks pass) takes
the mode from :func:`default_mode`, the one place that reads ``PGOLF_ABLATE_MODE``: the notebook runner's
switch (``notebooks/conftest.py`` sets it to ``reuse`` for nbval), read once per :func:`ablate` call at the API
boundary.

Before training, the plan is printed (:meth:`pgolf.research.launchers.StudyPlan.describe`: runs cached and to
train per arm, GPU-hours, the command or batch script); ``plan_only=True`` stops there (:class:`PlanOnly`).
The runs to train go to a launcher (:mod:`pgolf.research.launchers`): ``local`` (on CPU, independent runs in
parallel processes with one thread each, each a fresh fork of a persistent worker per slot,
:mod:`pgolf.research.worker_server`; on the 2-vCPU development machine two 1-thread processes trained
more tokens per second in total than one 2-thread process; multi-process runs, ``nproc_per_node > 1``,
through the torchrun launcher; on GPUs, slots of ``CUDA_VISIBLE_DEVICES``) or ``slurm`` (one job array,
:mod:`pgolf.research.slurm`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from pgolf.core.config import Config, apply_overrides
from pgolf.core.data.loader import DatasetNotFoundError
from pgolf.core.paths import runs_dir
from pgolf.core.records import RunRecordError, read_json_object
from pgolf.core.runs import read_status
from pgolf.core.runtime import training_process_env
from pgolf.research import ablate_worker, behaviour
from pgolf.research.ablate_worker import BEHAVIOUR, write_behaviour
from pgolf.research.launchers import PlanOnly, Resources, get_launcher, make_plan
from pgolf.research.results import read_run, runs_frame
from pgolf.research.runkey import config_delta, dataset_sha256, key_of, run_key
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


__all__ = ["PlanOnly", "StaleRunError", "ablate", "default_mode", "plan", "run_key", "stale_reason", "write_behaviour"]


class StaleRunError(RuntimeError):
    """A finished run that the current code no longer reproduces (reuse-only mode); the message names the folder,
    the arm and the first differing value."""


@dataclass
class PlannedRun:
    arm: str
    seed: int
    cfg: Config
    path: Path
    dataset: str = ""  # the dataset_sha256 in its key

    @property
    def finished(self) -> bool:
        st = read_status(self.path)
        return bool(st and st.get("status") == "finished" and (self.path / "summary.json").exists())


def plan(ablation: str, base: str | Config, arms: Mapping[str, Mapping[str, Any]], seeds: Sequence[int],
         budget_steps: int | None = None, budget_seconds: float | None = None,
         common: Mapping[str, Any] | None = None, runs_root: Path | None = None,
         seed_keys: Sequence[str] = ("train.seed",), missing_data_ok: bool = False) -> list[PlannedRun]:
    """One planned run per (arm, seed): the base config, ``common``, the budget, the arm's overrides, and each
    key of ``seed_keys`` set to the seed (default: the init seed only; the research protocol also sets the
    data-order seed). ``missing_data_ok`` (a plan that is only printed): a dataset that cannot be found gives
    runs with an empty ``dataset`` and provisional keys instead of an error."""
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
    datasets: dict[str, str] = {}  # the data section (and vocabulary) -> dataset_sha256, computed once each
    for arm, overrides in arms.items():
        for seed in seeds:
            cfg = apply_overrides(cfg0, {**budget, **overrides, **dict.fromkeys(seed_keys, seed)})
            where = json.dumps([cfg.to_dict()["data"], cfg.model.vocab_size], sort_keys=True)
            if where not in datasets:
                try:
                    datasets[where] = dataset_sha256(cfg)
                except DatasetNotFoundError:
                    if not missing_data_ok:
                        raise
                    datasets[where] = ""
            key = run_key(cfg, datasets[where])
            out.append(PlannedRun(arm, seed, cfg, root / f"{arm}-s{seed}-{key}", datasets[where]))
    return out


def stale_reason(run: PlannedRun) -> str | None:
    """Why the finished run in ``run.path`` cannot stand for ``run.cfg`` under the current code, or None: its
    ``behaviour.json`` is missing or unreadable, or differs from :func:`pgolf.research.behaviour.fingerprint`."""
    path = run.path / BEHAVIOUR
    if not path.is_file():
        return (f"no {BEHAVIOUR} (trained before behaviour fingerprints, or its worker stopped before writing it), so "
                "nothing shows that the current code reproduces it")
    try:
        stored = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"{BEHAVIOUR} is not valid JSON ({e})"
    diff = behaviour.compare(stored, behaviour.fingerprint(run.cfg))
    return None if diff is None else f"the current code's behaviour differs: {diff}"


def command(run: PlannedRun, ablation: str, nproc_per_node: int, write: bool = True) -> tuple[list[str], dict[str, str]]:
    """The command that trains ``run`` on this machine and its environment (one thread, unbuffered output and, unless
    on CUDA, :func:`~pgolf.core.runtime.training_process_env`'s malloc settings); ``write``: also write the config
    file the command names (``runs/<ablation>/.<run>.config.json``; a plan only shows the command)."""
    cfg_file = run.path.parent / f".{run.path.name}.config.json"
    if write:
        run.path.parent.mkdir(parents=True, exist_ok=True)
        cfg_file.write_text(run.cfg.to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **training_process_env(run.cfg)}
    if nproc_per_node > 1:
        cmd = [sys.executable, "-m", "pgolf", "train", "--config", str(cfg_file), "--run-dir", str(run.path),
               "--nproc-per-node", str(nproc_per_node), "--labels-json", labels_json(run, ablation)]
    else:
        cmd = [sys.executable, "-m", "pgolf.research.ablate_worker", str(cfg_file), str(run.path),
               labels_json(run, ablation)]
    return cmd, env


def labels_json(run: PlannedRun, ablation: str) -> str:
    """The labels every run of an ablation copies into its summary (ablation, arm, seed, key)."""
    return json.dumps({"ablation": ablation, "arm": run.arm, "seed": run.seed, "key": run.path.name.rsplit("-", 1)[1]})


def execute(todo: list[PlannedRun], ablation: str, slots: list[dict[str, str]], nproc_per_node: int = 1,
            log=print) -> list[str]:
    """Train ``todo`` on this machine, at most one run per slot at a time (a slot: the environment a run gets on
    top of this one, e.g. its ``CUDA_VISIBLE_DEVICES``); returns the failures. One-process CPU runs go to a
    persistent worker per slot (:mod:`pgolf.research.worker_pool`: imports paid once per slot, each run in a fresh
    fork); a CUDA run gets its own process, a multi-process run its own torchrun launcher."""
    from pgolf.core.runs import prepare_run_dir
    from pgolf.research.worker_pool import Worker, needs_new_worker
    log(f"ablation {ablation}: training {len(todo)} run(s), {len(slots)} at a time")
    pending = list(todo)
    free = list(range(len(slots)))
    workers: dict[int, Worker] = {}
    active: list[tuple[PlannedRun, Any, float, Path, int]] = []  # (run, Popen or Worker, start, output, slot)
    failures = []
    finished, t_start = 0, time.time()
    try:
        while pending or active:
            while pending and free:
                r, slot = pending.pop(0), free.pop(0)
                prepare_run_dir(r.path, overwrite=r.path.exists())
                cmd, env = command(r, ablation, nproc_per_node)
                env = {**env, **slots[slot]}
                out = r.path.parent / f".{r.path.name}.stdout"
                if nproc_per_node > 1 or r.cfg.train.device == "cuda":  # GPU runs: CUDA is not used across a fork
                    with open(out, "w") as f:
                        runner: Any = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
                else:
                    if needs_new_worker(workers.get(slot), env):
                        if slot in workers:
                            workers[slot].close(wait=False)
                        workers[slot] = Worker(env)
                    runner = workers[slot]
                    if not runner.submit(Path(cmd[3]), r.path, cmd[5], out):
                        runner.close(wait=False)
                        runner = workers[slot] = Worker(env)
                        runner.submit(Path(cmd[3]), r.path, cmd[5], out)
                active.append((r, runner, time.time(), out, slot))
            time.sleep(0.5)
            for item in list(active):
                r, runner, t0, out, slot = item
                code = runner.poll()
                if code is None:
                    continue
                active.remove(item)
                free.append(slot)
                finished += 1
                where = f"[{finished}/{len(todo)}] {r.path.name}"
                if code == 0:
                    if not (r.path / BEHAVIOUR).exists():  # the torchrun launcher's runs: recorded here, same code
                        write_behaviour(r.path, r.cfg)
                    log(f"  {where}: done in {time.time() - t0:.0f}s (elapsed {time.time() - t_start:.0f}s)")
                else:
                    failures.append(f"{r.path.name} (exit {code}; see {out})")
                    log(f"  {where}: FAILED exit {code}; output in {out}")
    finally:  # no new run starts; a run in progress ends on its own, as a run's own process would
        for w in workers.values():
            w.close(wait=not active)
    return failures


def _reuse(r: PlannedRun) -> PlannedRun:
    """The finished run with the key of ``r`` (its folder, else another folder of the arm and seed whose recorded
    config and dataset give that key), for reuse-only mode; :class:`StaleRunError` if the code no longer
    reproduces it."""
    found = r if r.finished else None
    key = r.path.name.rsplit("-", 1)[1]
    for cand in ([] if found else sorted(r.path.parent.glob(f"{r.arm}-s{r.seed}-*"), reverse=True)):
        if ".replaced-" in cand.name or not (cand / "config.json").exists() or not (cand / "dataset.json").exists():
            continue
        recorded = read_json_object(cand / "dataset.json").get("dataset_sha256")
        delta = config_delta(Config.from_json(cand / "config.json"))
        if key_of(delta, recorded) == key and PlannedRun(r.arm, r.seed, r.cfg, cand).finished:
            found = PlannedRun(r.arm, r.seed, r.cfg, cand, r.dataset)
            break
    if found is None:
        raise RuntimeError(f"ablate mode 'reuse' ({MODE_ENV}=reuse for notebooks): no finished run for arm {r.arm!r} "
                           f"seed {r.seed} with this config under {r.path.parent}; train it with mode='train' "
                           f"(notebooks: `pgolf notebooks run` without {MODE_ENV})")
    reason = stale_reason(found)
    if reason is not None:
        raise StaleRunError(f"{found.path}: cached run of arm {found.arm!r} seed {found.seed} is stale: {reason}. "
                            f"Train it again with mode='train' (notebooks: `pgolf notebooks run` without {MODE_ENV})")
    return found


def _finished_row(r: PlannedRun) -> dict[str, Any]:
    """The table row of a run the study expects: its records must read as a finished run (else
    :class:`~pgolf.core.records.RunRecordError` naming the file; a run is never silently left out)."""
    row = read_run(r.path)
    if row is None or row["status"] != "finished":
        state = "no run records" if row is None else f"status {row['status']!r}"
        raise RunRecordError(f"{r.path}: run of arm {r.arm!r} seed {r.seed} is not finished ({state})")
    return row


def ablate(ablation: str, base: str | Config, arms: Mapping[str, Mapping[str, Any]], seeds: Sequence[int] = (0, 1, 2),
           budget_steps: int | None = None, budget_seconds: float | None = None,
           common: Mapping[str, Any] | None = None, rerun: bool = False, jobs: int | None = None,
           nproc_per_node: int = 1, runs_root: Path | None = None, log=print,
           mode: AblateMode | None = None, seed_keys: Sequence[str] = ("train.seed",), *,
           launcher: str = "local", slurm: Mapping[str, Any] | None = None, plan_only: bool = False,
           resources: Resources | None = None) -> pd.DataFrame:
    """Run what is missing and return one row per (arm, seed) with the run's summary fields.

    ``mode``: ``"train"`` trains the missing runs, ``"reuse"`` only takes finished ones (see the module
    docstring); None: :func:`default_mode`. ``launcher``: ``local`` or ``slurm`` (with ``slurm``, its settings;
    :mod:`pgolf.research.launchers`). Before training, the plan (runs to train and reused, GPU-hours, the
    command or batch script) is printed; ``plan_only`` stops there with :class:`PlanOnly`. ``resources``: what
    one run needs (a scale's); default: ``nproc_per_node`` processes on the configs' device."""
    mode = default_mode() if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"ablate(mode={mode!r}): expected one of {', '.join(MODES)}")
    chosen = get_launcher(launcher, slurm, jobs)
    planned = plan(ablation, base, arms, seeds, budget_steps, budget_seconds, common, runs_root, seed_keys,
                   missing_data_ok=plan_only)
    if resources is None:
        cuda = any(r.cfg.train.device == "cuda" for r in planned)
        resources = Resources(device="cuda" if cuda else "cpu", nproc_per_node=nproc_per_node)
    if plan_only or mode == "train":
        missing = "" if all(r.dataset for r in planned) else planned[0].cfg.data.path or "the default dataset"
        study = make_plan(ablation, planned, resources, rerun, missing)
        log(study.describe(chosen))
        if plan_only:
            raise PlanOnly(f"plan_only=True: stopped after the plan of {ablation!r}; nothing was trained")
    if mode == "reuse":
        runs = [_reuse(r) for r in planned]
        log(f"ablation {ablation}: reuse-only mode, {len(runs)} finished runs found")
    else:
        runs = planned
        failures = chosen.run(study, log) if study.todo else []
        if failures:
            raise RuntimeError(f"ablation {ablation}: {len(failures)} run(s) failed: " + "; ".join(failures))
    table = runs_frame(_finished_row(r) for r in runs)  # exactly the planned runs, in plan order
    table["stale_code"] = False  # kept for older notebooks: a stale run is retrained or refused, never returned
    return table


if __name__ == "__main__":  # the worker's older entry point: pgolf.research.ablate_worker
    sys.exit(ablate_worker.main(sys.argv[1:]))
