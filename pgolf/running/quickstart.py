"""What ``pgolf quickstart`` adds to a ``tiny`` run: a fixed step budget, the CPU thread count measured
fastest here, and a progress bar on a terminal.

The budget is a number of optimizer steps with no wallclock cap, so every machine trains the same run
(the same val_bpb, up to floating-point differences between CPUs and thread counts); the ``tiny`` preset
itself keeps its 150 s cap. Threads: a few synthetic-token steps of the run's own model at 1 thread and
at every CPU this process may use (:func:`calibrate_threads`), the faster one wins.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from pgolf.core.config import Config, apply_overrides

QUICKSTART_STEPS = 100  # optimizer steps of 8,192 tokens; see README "Quick start" for the time it takes
QUICKSTART_BUDGET = {"train.iterations": QUICKSTART_STEPS, "train.max_wallclock_seconds": 0.0}


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def calibrate_threads(cfg: Config, steps: int = 2) -> dict[int, float]:
    """Fastest of ``steps`` training steps (ms) of ``cfg``'s model at 1 thread and at :func:`usable_cpus`
    threads, on synthetic tokens, after one untimed step each (the fastest: a shared machine's stragglers
    are noise, not the thread count's cost). The run's own seeding comes later, so this changes
    nothing in the run."""
    import time

    import torch

    from pgolf.running.bench import SyntheticTokens, build_trainer
    out: dict[int, float] = {}
    for threads in sorted({1, usable_cpus()}):
        c = apply_overrides(cfg, {"train.num_threads": threads})
        # sets torch's thread count from train.num_threads, as the trainer does
        tr = build_trainer(c, loader=SyntheticTokens(c.model.vocab_size, torch.device("cpu"), seed=c.train.seed))
        tr.step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            tr.step()
            times.append(1000.0 * (time.perf_counter() - t0))
        out[threads] = min(times)
    return out


def choose_threads(cfg: Config) -> tuple[Config, dict[str, Any]]:
    """``cfg`` with ``train.num_threads`` set to the faster count, and labels for ``summary.json``;
    prints the calibration line (``threads:1 ms/step:... threads:2 ms/step:...``)."""
    ms = calibrate_threads(cfg)
    best = min(ms, key=lambda k: (ms[k], k))
    print(" ".join(f"threads:{k} ms/step:{v:.1f}" for k, v in ms.items()) + f" -> train.num_threads={best}",
          flush=True)
    return (apply_overrides(cfg, {"train.num_threads": best}),
            {"thread_calibration_ms_per_step": {str(k): v for k, v in ms.items()}})


class _AboveBar(io.TextIOBase):
    """A stdout that prints each finished line above the progress bar (tqdm.write), so both stay readable."""

    def __init__(self, stream: TextIO):
        self.stream, self.pending = stream, ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        from tqdm import tqdm
        *lines, self.pending = (self.pending + s).split("\n")
        for line in lines:
            tqdm.write(line, file=self.stream)
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def progress(total: int, stream: TextIO | None = None) -> Iterator[Callable[[int, int], None] | None]:
    """On a terminal, a bar counting the run's ``total`` steps (yields the trainer's ``on_step``; what the
    trainer prints goes above the bar). Elsewhere no bar (yields None), so logs stay clean."""
    stream = stream or sys.stdout
    if not stream.isatty():
        yield None
        return
    from tqdm import tqdm
    with tqdm(total=total, unit="step", desc="train", file=stream, dynamic_ncols=True) as bar, \
            contextlib.redirect_stdout(_AboveBar(stream)):
        yield lambda step, _total: bar.update(step - bar.n)
