"""The research protocol every ablation notebook uses: scales, one shared control, common random numbers.

- **Scales.** ``micro`` (the ``micro`` preset: 2 layers, d=64, 400 steps of 2,048 tokens) is cheap enough for
  many seeds on 2 CPUs; ``small`` (the ``tiny`` preset's model: 4 layers, d=128, 150 steps of 4,096 tokens) has
  4.8x micro's parameters but trains 1.0 token per parameter against micro's 6.6: it is further from the
  challenge's regime (the records train about 100-600 tokens per parameter), not closer, and two scales say
  whether an effect differs between them only through a test that compares them. ``regime`` (8 layers, d=16,
  750 steps) trains 103 tokens per non-embedding parameter within one epoch: the CPU scale in the challenge's
  regime (:func:`pgolf.research.scales.regime` computes these numbers). Each scale quantizes
  every block matrix at export (at these widths the official 65,536-element threshold would keep them all fp16).
- **One shared control.** Every study's control arm is the same runs, ``runs/<scale>/control-s<seed>-<key>``:
  the scale's config with no override. Studies add their arms beside it in the same folder, so a notebook
  that compares against the control reuses the runs every other notebook made (and says so).
- **Common random numbers.** Replicate ``s`` sets the initialization seed (``train.seed``) and the data-order
  seed (``data.order_seed``) to ``s``; training data is read in a seeded permutation of fixed-length blocks
  (``data.order=permuted``) and every parameter is initialized from its own generator seeded by its name
  (``model.init_seeding=per_name``). An arm that adds a module (a SwiGLU gate, a SmearGate) therefore sees the
  same batches in the same order as the control, with every tensor they share initialized identically; arms
  are compared seed by seed (paired).

The GPU scales (``8xh100``, ``1xh100``, ``1xh100-short``; :mod:`pgolf.research.scales`) use the same protocol,
control and statistics; :func:`study` trains their runs through a launcher (``local`` or ``slurm``,
:mod:`pgolf.research.launchers`).

The official baseline's own behaviour (sequential data, one global RNG for init) stays the default of
:class:`~pgolf.core.config.Config`; the protocol is these switches, turned on here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pgolf.core.config import Config, apply_overrides
from pgolf.research.ablate import AblateMode, PlanOnly, ablate
from pgolf.research.launchers import Resources
from pgolf.research.scales import PROTOCOL, SCALES, Scale, get_scale
from pgolf.research.stats import compare, paired_differences, rule_threshold
from pgolf.running.presets import param_count

__all__ = ["CONTROL", "PROTOCOL", "SCALES", "SEED_KEYS", "Scale", "comparisons", "control_config", "deltas",
           "get_scale", "param_matched_hidden", "studies", "study"]

CONTROL = "control"
SEED_KEYS = ("train.seed", "data.order_seed")  # replicate s sets both to s


def control_config(scale: str | Scale, overrides: Mapping[str, Any] | None = None) -> Config:
    """The shared control's config at ``scale``, with ``overrides`` on top (what :func:`study` trains)."""
    return apply_overrides(get_scale(scale).config(), dict(overrides or {}))


def resources(scale: str | Scale) -> Resources:
    """What one run at ``scale`` needs, for the launchers."""
    sc = get_scale(scale)
    return Resources(sc.device, sc.nproc_per_node, sc.nnodes, sc.run_seconds, sc.name)


def study(scale: str | Scale, arms: Mapping[str, Mapping[str, Any]], seeds: Sequence[int] | None = None, *,
          overrides: Mapping[str, Any] | None = None, rerun: bool = False, jobs: int | None = None, mode: AblateMode | None = None,
          runs_root: Path | None = None, log=print, launcher: str = "local", slurm: Mapping[str, Any] | None = None,
          plan_only: bool = False) -> pd.DataFrame:
    """The shared control and ``arms`` at ``scale``, one run per arm and replicate (trained if missing).

    Rows gain ``scale`` and ``shared_control`` (True for the control's runs). ``seeds``: the scale's
    default replicates when None. ``overrides`` apply to every arm on top of the scale (the real studies pass
    none; smoke tests shrink the budget with them). ``launcher``/``slurm``: where the missing runs train
    (:mod:`pgolf.research.launchers`), with the scale's processes, nodes and time budget; the plan is printed
    first, and ``plan_only`` stops there (:class:`~pgolf.research.launchers.PlanOnly`)."""
    if CONTROL in arms:
        raise ValueError(f"arm name {CONTROL!r} is the shared control; give the study's arms other names")
    sc = get_scale(scale)
    seeds = list(sc.seeds if seeds is None else seeds)
    runs = ablate(sc.name, control_config(sc, overrides), {CONTROL: {}, **arms}, seeds=seeds, rerun=rerun, jobs=jobs,
                  mode=mode, runs_root=runs_root, log=log, seed_keys=SEED_KEYS, launcher=launcher, slurm=slurm,
                  plan_only=plan_only, resources=resources(sc))
    runs["scale"] = sc.name
    runs["shared_control"] = runs["arm"] == CONTROL
    return runs


def studies(arms: Mapping[str, Mapping[str, Mapping[str, Any]]], seeds: Mapping[str, Sequence[int]] | None = None, *,
            plan_only: bool = False, log=print, **kwargs: Any) -> pd.DataFrame:
    """:func:`study` at each scale of ``arms`` (scale -> arms), one table. ``seeds``: scale -> replicates (a
    scale not named: its defaults). With ``plan_only`` every scale's plan is printed, then
    :class:`~pgolf.research.launchers.PlanOnly` is raised; nothing is trained."""
    seeds = seeds or {}
    if plan_only:
        for sc, sc_arms in arms.items():
            try:
                study(sc, sc_arms, seeds.get(sc), plan_only=True, log=log, **kwargs)
            except PlanOnly:
                pass
        raise PlanOnly(f"plan_only=True: stopped after the plans of {', '.join(arms)}; nothing was trained")
    return pd.concat([study(sc, sc_arms, seeds.get(sc), log=log, **kwargs) for sc, sc_arms in arms.items()],
                     ignore_index=True)


def param_matched_hidden(cfg: Config, mlp: str, *, tolerance: float = 0.01) -> int:
    """The hidden width of MLP variant ``mlp`` whose model's total parameter count is closest to ``cfg``'s
    (which keeps its own MLP); an error if the closest is not within ``tolerance`` (relative)."""
    target = param_count(cfg)
    probe = {h: param_count(cfg.replace({"model.mlp": mlp, "model.mlp_hidden": h})) for h in (64, 128)}
    per_unit = (probe[128] - probe[64]) / 64
    hidden = max(1, round(64 + (target - probe[64]) / per_unit))
    got = param_count(cfg.replace({"model.mlp": mlp, "model.mlp_hidden": hidden}))
    if abs(got - target) > tolerance * target:
        raise ValueError(f"no {mlp} hidden width matches {target:,} parameters within {tolerance:.0%} "
                         f"(closest: {hidden} -> {got:,})")
    return hidden


def comparisons(runs: pd.DataFrame, metric: str = "q_val_bpb", control: str = CONTROL) -> pd.DataFrame:
    """:func:`pgolf.research.stats.compare` per scale: one row per (scale, arm) against that scale's control."""
    frames = {sc: compare(group, control, metric) for sc, group in runs.groupby("scale", sort=False)}
    return pd.concat(frames, names=["scale"])


def deltas(runs: pd.DataFrame, metric: str = "q_val_bpb", control: str = CONTROL) -> pd.DataFrame:
    """Per-seed paired differences (arm - control) per scale, with the scale's rule threshold in the metric's
    units (0.005 nats) as a column."""
    frames = []
    for sc, group in runs.groupby("scale", sort=False):
        pairs = paired_differences(group, control, metric)
        pairs.insert(0, "scale", sc)
        pairs["threshold"] = rule_threshold(group, metric)
        frames.append(pairs)
    return pd.concat(frames, ignore_index=True)
