"""The scales a study runs at: three CPU scales for many cheap seeds, three GPU scales for the challenge's setting.

A :class:`Scale` is a preset, overrides and default replicates, plus what one run needs and costs: the device,
processes per node, nodes, the time budget of a run (training cap plus what comes after it: start-up,
compilation, validation, export) and so its GPU-seconds. The launchers (:mod:`pgolf.research.launchers`) take
the resources from here; the protocol (:mod:`pgolf.research.protocol`) is the same at every scale.

- ``micro``, ``small``: CPU, one process per run (see :mod:`pgolf.research.protocol`); times measured on one
  core of the 2-vCPU development machine. Both train far fewer tokens per parameter than the challenge
  (:func:`regime`: micro 6.6 per parameter, small 1.0; the PR #1394 record about 109, the official baseline
  about 423), so they test early training, not the challenge's regime.
- ``regime``: CPU, in the challenge's regime: at least 100 training tokens per non-embedding parameter, inside
  one epoch of the embedded corpus (2.13M training tokens), and 8 layers deep so structural techniques can sit
  where the records put them (a loop at the U-Net middle, layers 3-4; gated skips). That forces a narrow model
  (d=16, 2 heads of 8): 750 steps of 2,048 tokens, 1.54M tokens, 103 per non-embedding parameter. Measured: one
  run took 123 CPU-s (96.6 user + 26.8 sys; 337 s wall at load average 6.6-8.9 on the 2-vCPU AMD EPYC machine),
  about twice a micro run.
- ``8xh100``: the challenge itself, the baseline preset's record settings: 600 s of training on 8 GPUs of one
  node (``train.max_wallclock_seconds=600``, 524,288 tokens per step), the full validation split, int8 + zlib.
- ``1xh100``: the same run on one GPU for 600 s (grad_accum 8, so the same global batch at a eighth of the
  steps): what most records used for their own ablations.
- ``1xh100-short``: one GPU, 120 s of training at 131,072 tokens per step, validation on the first 4M tokens:
  cheap enough for 10+ seeds per arm.

GPU scales read the official FineWeb export (``pgolf data fetch``: ``<data root>/datasets/fineweb10B_sp1024``)
and write a checkpoint every few hundred steps, so that a preempted or requeued SLURM task resumes. Their time
budgets are estimates (training cap + a stated allowance), not measurements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pgolf.core.config import Config, apply_overrides
from pgolf.core.paths import data_root
from pgolf.running.presets import get_preset

PROTOCOL: dict[str, Any] = {"data.order": "permuted", "model.init_seeding": "per_name"}
FINEWEB_SP1024 = "fineweb10B_sp1024"  # the official export's folder under <data root>/datasets


@dataclass(frozen=True)
class Scale:
    name: str  # also the folder under runs/ that holds the scale's runs
    preset: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)  # the default replicates
    description: str = ""
    device: Literal["cpu", "cuda"] = "cpu"
    nproc_per_node: int = 1  # processes per node of one run (GPUs per node on cuda)
    nnodes: int = 1  # nodes of one run
    run_seconds: float = 60.0  # wall time budget of one run: training cap + start-up, compile, validation, export
    dataset: str = ""  # folder under <data root>/datasets; "" = the embedded default corpus

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1 or self.run_seconds <= 0:
            raise ValueError(f"scale {self.name!r}: nproc_per_node, nnodes and run_seconds must be positive")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"scale {self.name!r}: device {self.device!r}, expected 'cpu' or 'cuda'")

    @property
    def processes(self) -> int:
        """Processes of one run (ranks): processes per node x nodes."""
        return self.nproc_per_node * self.nnodes

    @property
    def gpus_per_run(self) -> int:
        return self.processes if self.device == "cuda" else 0

    @property
    def gpu_seconds_per_run(self) -> float:
        return self.gpus_per_run * self.run_seconds

    def config(self) -> Config:
        """The control's config: preset, the scale's overrides and the protocol switches."""
        data = {"data.path": str(data_root() / "datasets" / self.dataset)} if self.dataset else {}
        return apply_overrides(get_preset(self.preset), {**self.overrides, **data, **PROTOCOL})

    def describe(self) -> str:
        gpus = f"{self.gpus_per_run} GPU(s), {self.gpu_seconds_per_run:,.0f} GPU-s per run" if self.gpus_per_run \
            else "no GPU"
        return (f"{self.name}: {self.device}, {self.nproc_per_node} process(es)/node x {self.nnodes} node(s), "
                f"about {self.run_seconds:,.0f} s per run, {gpus}, default seeds {list(self.seeds)}")


GPU_RUN_ALLOWANCE_S = 180.0  # start-up, compile priming, full validation, export and round-trip eval (estimate)

SCALES: dict[str, Scale] = {s.name: s for s in (
    Scale("micro", "micro", {"export.keep_float_max_numel": 1024}, tuple(range(10)),
          "micro preset: 2L d64 2H/1KV, seq 128, 2,048 tokens/step, 400 steps (0.82M tokens)", run_seconds=40.0),
    Scale("small", "tiny", {
        "train.train_batch_tokens": 4096, "train.iterations": 150, "train.max_wallclock_seconds": 0.0,
        "schedule.warmdown_iters": 40, "train.val_loss_every": 75, "optim.muon_momentum_warmup_steps": 50,
        "export.keep_float_max_numel": 4096,
    }, (0, 1, 2), "tiny preset's model: 4L d128 4H/2KV, seq 256, 4,096 tokens/step, 150 steps (0.61M tokens)",
          run_seconds=90.0),
    Scale("regime", "micro", {
        "model.num_layers": 8, "model.model_dim": 16, "train.iterations": 750, "schedule.warmdown_iters": 190,
        "optim.muon_momentum_warmup_steps": 190, "export.keep_float_max_numel": 128,
    }, tuple(range(10)), "micro preset at 8L d16 2H/1KV, seq 128, 2,048 tokens/step, 750 steps (1.54M tokens, "
          "103 per non-embedding parameter)", run_seconds=130.0),
    Scale("8xh100", "baseline", {"train.device": "cuda", "train.checkpoint_every": 1000}, (0, 1, 2),
          "the challenge: baseline preset (9L d512), 600 s on 8 GPUs, 524,288 tokens/step, full validation",
          device="cuda", nproc_per_node=8, run_seconds=600.0 + GPU_RUN_ALLOWANCE_S, dataset=FINEWEB_SP1024),
    Scale("1xh100", "baseline", {"train.device": "cuda", "train.checkpoint_every": 200}, (0, 1, 2, 3, 4),
          "baseline preset on one GPU: 600 s, 524,288 tokens/step (grad accum 8), full validation",
          device="cuda", nproc_per_node=1, run_seconds=600.0 + GPU_RUN_ALLOWANCE_S, dataset=FINEWEB_SP1024),
    Scale("1xh100-short", "baseline", {
        "train.device": "cuda", "train.checkpoint_every": 200, "train.max_wallclock_seconds": 120.0,
        "train.train_batch_tokens": 131_072, "train.val_loss_every": 0, "eval.max_tokens": 4_194_304,
        "schedule.warmdown_iters": 300,
    }, tuple(range(10)), "baseline preset on one GPU: 120 s, 131,072 tokens/step, validation on 4M tokens",
          device="cuda", nproc_per_node=1, run_seconds=120.0 + 90.0, dataset=FINEWEB_SP1024),
)}


def regime(cfg: Config, steps: int | None = None) -> dict[str, float]:
    """Where a config trains, in the challenge's terms: training tokens (``steps`` x tokens per step; without
    ``steps``, ``train.iterations``, which overcounts a run that the wallclock cap stops: pass the steps it ran),
    parameters, non-embedding parameters (the tied embedding and an untied head excluded) and tokens per each.
    Builds the model on the meta device."""
    import torch

    from pgolf.core.model import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("tok_emb.", "lm_head.")))
    tokens = (cfg.train.iterations if steps is None else steps) * cfg.train.train_batch_tokens
    return {"tokens": tokens, "params": params, "non_embedding_params": params - embedding,
            "tokens_per_param": tokens / params, "tokens_per_non_embedding_param": tokens / (params - embedding)}


def get_scale(scale: str | Scale) -> Scale:
    """A scale by name (or the scale itself)."""
    if isinstance(scale, Scale):
        return scale
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r}: unknown; expected one of {sorted(SCALES)}")
    return SCALES[scale]
