"""The process a run trains in: rank, device and process group (:class:`Dist`), the gradient-accumulation rule,
whether to compile, and the RNG states a checkpoint saves and restores."""

from __future__ import annotations

import importlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pgolf.core.config import Config


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_dist(cfg: Config) -> Dist:
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if distributed and not dist.is_initialized():
        # torch.distributed.nn.functional binds ``group.WORLD`` as default arguments when first imported, and
        # torch._dynamo imports it, lazily, from DDP's constructor. Imported after init_process_group it would
        # pin the group past destroy_process_group, into interpreter exit (see release_dist). Imported
        # first, those defaults are None.
        importlib.import_module("torch._dynamo")
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
        dist.barrier()
    return Dist(rank, world_size, local_rank, device, distributed)


# glibc malloc settings for a CPU training process. By default glibc serves each buffer of more than 128 KiB to
# 32 MiB (the logits, 2,048 x 1,024 fp32 = 8 MiB at micro scale) with its own mmap, or returns the top of the heap to
# the kernel once more than twice that is free, so every step maps, page-faults (5-11 k faults a step) and zeroes
# its big buffers again. With no mmap and a trim threshold above any run's heap the freed buffers stay in the heap
# and are reused: a micro run loses about 13 of its 46 CPU-s (docs/cli.md, pgolf bench loop), its numbers unchanged
# (malloc places memory, it computes nothing), at a higher peak RSS. glibc reads these variables once, when the
# process starts, so they go into the environment of the processes pgolf starts; a value already set wins.
CPU_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


def training_process_env(cfg: Config, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables to add to ``environ`` for a process that trains ``cfg``: :data:`CPU_MALLOC_ENV` unless the run
    is on CUDA (``train.device=cuda``) or ``environ`` already sets them."""
    environ = os.environ if environ is None else environ
    if cfg.train.device == "cuda":
        return {}
    return {k: v for k, v in CPU_MALLOC_ENV.items() if k not in environ}


def grad_accum_steps(cfg: Config, world_size: int) -> int:
    if cfg.train.grad_accum_steps:
        return cfg.train.grad_accum_steps
    if 8 % world_size != 0:
        raise ValueError(f"WORLD_SIZE={world_size} must divide 8 (official grad_accum rule) or set "
                         f"train.grad_accum_steps")
    return 8 // world_size


def use_compile(cfg: Config, device: torch.device) -> bool:
    return cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda")


def rng_state() -> dict[str, Any]:
    """The torch, numpy and python RNG states as tensors and plain values (checkpoints load weights-only)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


def start_due(progress: float, start_frac: float, distributed: bool, device: torch.device) -> bool:
    """Whether a mid-run switch (QAT, depth recurrence) turns on now, with the same answer on every rank.

    ``progress`` is this rank's training fraction (wallclock under a time cap, else steps). Each rank
    reads its own clock, so near ``start_frac`` ranks can disagree by a step; a rank that quantizes (or
    loops) while another does not trains a silently different model, and under compile the switch rebuilds
    DDP on one rank only. So every rank calls this on every step until the switch is on (all ranks together,
    one 1-element all-reduce), and the MAX makes all of them switch on the step the first rank is due.
    """
    due = progress >= start_frac
    if not distributed:
        return due
    flag = torch.tensor(int(due), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
