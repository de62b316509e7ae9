"""Where a study's runs train: a small registry of launchers, and the plan printed before anything starts.

- ``local``: this machine. On CPU as before (independent one-process runs in parallel, one thread each;
  multi-process runs one at a time through torchrun). One-process CPU runs go through a persistent worker per
  parallel slot (:mod:`pgolf.research.worker_server`): it imports torch and pgolf once and trains each run in a
  fresh fork of itself, so a run trains the bits it would in its own process at a few CPU-s less. On GPUs, a
  run that needs fewer GPUs than the machine has shares it: the visible GPUs are cut into slots of the run's size and each running run gets its own
  ``CUDA_VISIBLE_DEVICES`` (8 one-GPU runs at once on an 8-GPU node); a run that needs all of them goes
  through torchrun with the scale's processes per node, one at a time.
- ``slurm``: the runs to train become one job array (:mod:`pgolf.research.slurm`).

:func:`make_plan` sorts a study's planned runs into reused and to train; :meth:`StudyPlan.describe` states
them, what they cost (GPU-hours) and how they will be launched (the command or the batch script). With
``plan_only`` the engine raises :class:`PlanOnly` after printing it: nothing is trained or written.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pgolf.research.ablate import PlannedRun

__all__ = ["LAUNCHERS", "PlanOnly", "Resources", "StudyPlan", "get_launcher", "gpu_slots", "make_plan"]


class PlanOnly(Exception):
    """Raised after the plan is printed when ``plan_only=True``: stops a notebook before anything trains."""


@dataclass(frozen=True)
class Resources:
    """What one run of a study needs (from its :class:`~pgolf.research.scales.Scale`)."""
    device: str = "cpu"  # "cpu" or "cuda"
    nproc_per_node: int = 1
    nnodes: int = 1
    run_seconds: float | None = None  # wall time budget of one run (None: unknown)
    scale: str = ""  # the scale's name, for the plan

    @property
    def gpus_per_run(self) -> int:
        return self.nproc_per_node * self.nnodes if self.device == "cuda" else 0

    def gpu_hours(self, runs: int) -> float:
        return runs * self.gpus_per_run * (self.run_seconds or 0.0) / 3600


@dataclass
class StudyPlan:
    ablation: str
    runs: list[PlannedRun]  # every planned (arm, seed), in order
    todo: list[PlannedRun]  # the runs to train
    stale: dict[str, str] = field(default_factory=dict)  # run folder name -> why its finished run is not reused
    resources: Resources = field(default_factory=Resources)
    missing_dataset: str = ""  # the dataset could not be found: keys (folder names) are provisional

    @property
    def reused(self) -> list[PlannedRun]:
        names = {r.path.name for r in self.todo}
        return [r for r in self.runs if r.path.name not in names]

    def per_arm(self) -> dict[str, tuple[int, int]]:
        """arm -> (reused, to train)."""
        out: dict[str, list[int]] = {}
        todo = {r.path.name for r in self.todo}
        for r in self.runs:
            out.setdefault(r.arm, [0, 0])[r.path.name in todo] += 1
        return {a: (n[0], n[1]) for a, n in out.items()}

    def describe(self, launcher: Launcher) -> str:
        res = self.resources
        what = (f"{res.device}, {res.nproc_per_node} process(es)/node x {res.nnodes} node(s)"
                + (f", about {res.run_seconds:,.0f} s per run" if res.run_seconds else ""))
        lines = [f"plan: study {self.ablation!r}" + (f" at scale {res.scale}" if res.scale else "") + f" ({what})",
                 f"  launcher: {launcher.summary(self)}",
                 f"  runs: {len(self.runs)} planned, {len(self.reused)} cached, {len(self.todo)} to train"
                 + (f" ({len(self.stale)} of them stale)" if self.stale else "") + " (cached runs are reused)"]
        lines += [f"    {arm}: {n_reused} cached, {n_todo} to train" for arm, (n_reused, n_todo) in self.per_arm().items()]
        if self.missing_dataset:
            lines.append(f"  dataset not found ({self.missing_dataset}): run keys are provisional and every run is "
                         "counted as to train; fetch it before launching (`pgolf data fetch`)")
        if res.gpus_per_run:
            lines.append(f"  GPU-hours to train: {res.gpu_hours(len(self.todo)):,.1f} ({len(self.todo)} runs x "
                         f"{res.gpus_per_run} GPUs x {res.run_seconds:,.0f} s); all {len(self.runs)} runs: "
                         f"{res.gpu_hours(len(self.runs)):,.1f} GPU-hours")
        else:
            cpu_s = f", about {len(self.todo) * res.run_seconds / 60:,.0f} CPU-core-minutes" if res.run_seconds else ""
            lines.append(f"  GPU-hours to train: 0 (CPU runs{cpu_s})")
        for name, reason in self.stale.items():
            lines.append(f"  {name}: stale, training it again ({reason})")
        if self.todo:
            lines.append(launcher.describe(self))
        return "\n".join(lines)


def make_plan(ablation: str, runs: list[PlannedRun], resources: Resources, rerun: bool = False,
              missing_dataset: str = "") -> StudyPlan:
    """Sort ``runs`` into reused (finished, and the current code reproduces them) and to train."""
    from pgolf.research.ablate import stale_reason
    todo, stale = [], {}
    for r in runs:
        if rerun or missing_dataset or not r.finished:
            todo.append(r)
            continue
        reason = stale_reason(r)
        if reason is not None:
            stale[r.path.name] = reason
            todo.append(r)
    return StudyPlan(ablation, runs, todo, stale, resources, missing_dataset)


class Launcher(Protocol):
    name: str

    def summary(self, plan: StudyPlan) -> str: ...  # one line: how the runs will be launched

    def describe(self, plan: StudyPlan) -> str: ...  # the command or batch script, indented

    def run(self, plan: StudyPlan, log) -> list[str]: ...  # train plan.todo; returns the failures


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every device torch sees."""
    environ = os.environ if environ is None else environ
    if environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return [g.strip() for g in environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(gpus: list[str], per_run: int, jobs: int | None = None) -> list[dict[str, str]]:
    """Disjoint ``CUDA_VISIBLE_DEVICES`` slots of ``per_run`` GPUs each (at most ``jobs``); an error when a run
    needs more GPUs than there are."""
    if per_run > len(gpus):
        raise ValueError(f"a run needs {per_run} GPUs, this machine has {len(gpus)} visible ({','.join(gpus) or 'none'});"
                         " use a scale with fewer processes per node, or launcher='slurm'")
    n = len(gpus) // per_run
    n = min(n, jobs) if jobs else n
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * per_run:(i + 1) * per_run])} for i in range(n)]


@dataclass
class LocalLauncher:
    jobs: int | None = None  # parallel runs (CPU: default one per CPU; GPU: default as many slots as fit)
    name: str = "local"

    def slots(self, plan: StudyPlan) -> list[dict[str, str]]:
        res = plan.resources
        if res.nnodes > 1:
            raise ValueError(f"scale {res.scale!r} needs {res.nnodes} nodes; the local launcher runs on one machine "
                             "(use launcher='slurm')")
        if res.device == "cuda":
            return gpu_slots(visible_gpus(), res.nproc_per_node, self.jobs)
        if res.nproc_per_node > 1:  # multi-process CPU runs: one at a time unless jobs says otherwise
            return [{}] * (self.jobs or 1)
        return [{}] * max(1, self.jobs or os.cpu_count() or 1)

    def summary(self, plan: StudyPlan) -> str:
        res = plan.resources
        if res.device == "cuda":
            try:
                slots = self.slots(plan)
                where = f"{len(slots)} run(s) at a time, GPUs " + " | ".join(s["CUDA_VISIBLE_DEVICES"] for s in slots)
            except ValueError as e:
                where = f"cannot run here: {e}"
        else:
            where = f"{len(self.slots(plan))} parallel process(es)"
        via = ("torchrun" if res.nproc_per_node > 1 else "one process per run" if res.device == "cuda"
               else "a persistent worker per slot, each run in a fresh fork")
        return f"local ({via}, {where})"

    def describe(self, plan: StudyPlan) -> str:
        from pgolf.research.ablate import command
        cmd, _ = command(plan.todo[0], plan.ablation, plan.resources.nproc_per_node, write=False)
        how = ("" if plan.resources.nproc_per_node > 1 or plan.resources.device == "cuda" else
               "; each trains as this command would, in a fork of a `python -m pgolf.research.worker_server`")
        return f"  command (first run to train; the others alike{how}):\n    {shlex.join(cmd)}"

    def run(self, plan: StudyPlan, log) -> list[str]:
        from pgolf.research.ablate import execute
        return execute(plan.todo, plan.ablation, self.slots(plan), plan.resources.nproc_per_node, log=log)


def _slurm(options: Mapping[str, Any] | None, jobs: int | None):
    from pgolf.research.slurm import SlurmLauncher, SlurmSettings
    return SlurmLauncher(SlurmSettings.from_dict(options or {}))


LAUNCHERS = {"local": lambda options, jobs: LocalLauncher(jobs), "slurm": _slurm}


def get_launcher(name: str, options: Mapping[str, Any] | None = None, jobs: int | None = None) -> Launcher:
    """The launcher ``name`` (``local`` or ``slurm``); ``options``: the SLURM settings (a dict)."""
    if name not in LAUNCHERS:
        raise ValueError(f"launcher {name!r}: unknown; expected one of {', '.join(LAUNCHERS)}")
    if name == "local" and options:
        raise ValueError(f"launcher 'local' takes no slurm settings, got {dict(options)!r}; pass launcher='slurm'")
    return LAUNCHERS[name](options, jobs)


def hours(seconds: float) -> str:
    """``HH:MM:SS`` (minutes rounded up), the form of SLURM's ``--time``."""
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"
