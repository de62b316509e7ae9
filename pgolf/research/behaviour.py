"""A behaviour fingerprint of the training core at one config: what keeps a cached ablation run valid.

:func:`fingerprint` trains the arm's own model (its config as planned, with the fixed settings below) for
:data:`STEPS` optimizer steps on deterministic synthetic tokens through the Trainer's public stages
(:meth:`~pgolf.core.train.Trainer.setup_model`, :meth:`~pgolf.core.train.Trainer.step`), then applies the
weight average, switches QAT off, scores a held-out synthetic batch, exports the artifact, loads it back and
scores the batch again, projects the weights' change on a fixed random direction (``update_probe``), and scores
a synthetic validation stream (with synthetic byte counts) through both evaluators with the arm's ``eval.*``
settings (``eval_official``, ``eval_final``).
It reads no dataset and writes no files. The result is stored as ``behaviour.json``
in each ablation run folder; a cached run is reused only while the current code reproduces it
(:func:`compare`: relative tolerance :data:`RTOL` on every value).

**The same decision on every CPU.** The fingerprint trains and scores in float64 (``train.float64``: the model
initialized in float64 with the arm's init rules, float64 rotary tables, Muon's Newton-Schulz and the quantizers'
clip statistics in float64). In float32, CPU kernels (AVX-512, AVX2, the portable ``default``, ARM) sum in
different orders and round ``pow``/``randn``/``orthogonal_`` differently; a few optimizer steps amplified that to
relative differences of 3e-5 between ``ATEN_CPU_CAPABILITY=avx512`` and ``avx2`` (fingerprint version 2 used
float32 at rtol 1e-5, and 29 committed runs read as stale on an AVX2 machine). In float64 the same differences
are at most 4.7e-14 relative (measured over the fingerprints of all 103 committed runs under ``default``,
``avx2`` and ``avx512``, 1 and 2 threads), and rounding steps (int codes, fp16 scales) no longer flip, so
:data:`RTOL` = 1e-9 sits 2e4 times above that noise and far below any real change of behaviour
(``tests/test_behaviour_portable.py`` shows an eps, an init std, a one-step schedule shift and an export
rounding rule each moving some value by more than 1e-6).

Fixed for the fingerprint (so that it is fast, deterministic and the same for every seed of an arm):
``train.seed`` 0 (global RNGs seeded with it, then restored), ``train.iterations`` = :data:`STEPS` with
``train.max_wallclock_seconds`` 0 (the step-based schedule: the LR warmdown, QAT's ``start_frac`` and the
averaging window fall inside the few steps instead of depending on the clock), ``train.train_seq_len``
at most :data:`MAX_SEQ_LEN` and :data:`SEQS` sequences per step in one micro-batch, CPU, eager (no
compile), one thread, float64 (below), no compile priming, checkpoints or logging. The model, optimizer, QAT, averaging and
export settings are the arm's; the evaluation uses its ``eval.*`` settings with the window length capped at
:data:`MAX_EVAL_LEN` (and the stride at half of it). Not covered: data loading and the real byte tables,
CUDA/bf16 kernels, float32-only rounding (the fingerprint runs in float64), multi-process training and the
compressor's byte count.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pgolf.core.config import Config, apply_overrides

VERSION = 3  # bump when the recipe below changes: every stored fingerprint then no longer matches (3: float64)
STEPS = 4
MAX_SEQ_LEN = 64
SEQS = 2  # sequences per step
SEED = 0
MAX_EVAL_LEN = 128
EVAL_WINDOWS = 4  # the synthetic validation stream holds this many windows of the evaluation length
RTOL = 1e-9  # relative tolerance on every compared value (float64 noise between CPU kernels: <= 5e-14)
COMPARED = ("version", "losses", "loss", "q_loss", "update_probe", "eval_official", "eval_final")

_cache: dict[str, dict[str, Any]] = {}


class SyntheticTokens:
    """A fixed stream of token batches: a noisy deterministic successor rule (``next = 7 * t + 3 mod V``, else
    random), so a few steps lower the loss; ``next_batch`` as :class:`~pgolf.core.data.loader.DistributedTokenLoader`."""

    def __init__(self, vocab_size: int, seed: int = SEED):
        self.vocab_size, self.gen, self.i = vocab_size, torch.Generator().manual_seed(seed), 0

    def tokens(self, n: int) -> torch.Tensor:
        noise = torch.randint(0, self.vocab_size, (n,), generator=self.gen)
        keep = torch.rand(n, generator=self.gen) < 0.5
        out = torch.empty(n, dtype=torch.int64)
        out[0] = noise[0]
        for j in range(1, n):
            out[j] = (7 * out[j - 1] + 3) % self.vocab_size if keep[j] else noise[j]
        return out

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.tokens(global_tokens // grad_accum_steps + 1)
        self.i += 1
        return t[:-1].reshape(-1, seq_len), t[1:].reshape(-1, seq_len)


def fingerprint_config(cfg: Config) -> Config:
    """``cfg`` with the fixed settings of the module doc."""
    seq = min(cfg.train.train_seq_len, MAX_SEQ_LEN)
    return apply_overrides(cfg, {
        "train.seed": SEED, "train.iterations": STEPS, "train.max_wallclock_seconds": 0.0,
        "train.train_seq_len": seq, "train.train_batch_tokens": SEQS * seq, "train.grad_accum_steps": 1,
        "train.device": "cpu", "train.compile": "off", "train.num_threads": 1, "train.warmup_steps": 0,
        "train.checkpoint_every": 0, "train.train_log_every": 0, "train.val_loss_every": 0, "data.path": "",
        "train.float64": True,
    })


@contextlib.contextmanager
def _isolated() -> Iterator[None]:
    """Seed the global RNGs for the fingerprint and restore them (and the thread count) afterwards."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state(), torch.get_num_threads()
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        torch.set_num_threads(states[3])


def _compute(fcfg: Config) -> dict[str, Any]:
    from pgolf.core.export import export_artifact, load_artifact
    from pgolf.core.train import Trainer

    data = SyntheticTokens(fcfg.model.vocab_size)
    with _isolated(), Trainer(fcfg, None, console=False) as tr:
        tr.setup_model(loader=data)
        init = {k: v.detach().clone() for k, v in tr.base.state_dict().items()}
        losses = [tr.step().train_loss for _ in range(STEPS)]
        x, y = data.next_batch(fcfg.train.train_batch_tokens, fcfg.train.train_seq_len, 1)  # held out
        avg = tr.averager.averaged_state(tr.base)
        if avg is not None:
            tr.base.load_state_dict(avg, strict=True)
        tr.qat.switch_off()
        tr.base.eval()
        with torch.no_grad():
            loss = tr.base(x, y).item()
            state = {k: v.detach().to("cpu", copy=True) for k, v in tr.base.state_dict().items()}
            probe = _update_probe(init, state)
            blob, _ = export_artifact(state, fcfg.export, control=fcfg.model.control_patterns)
            tr.base.load_state_dict(load_artifact(blob), strict=True)
            q_loss = tr.base(x, y).item()
            tr.base.load_state_dict(state, strict=True)
            evals = _evaluations(tr.base, fcfg, data)
    return {"version": VERSION, "losses": losses, "loss": loss, "q_loss": q_loss, "update_probe": probe,
            **evals, "torch": torch.__version__}


def _evaluations(model: torch.nn.Module, fcfg: Config, data: SyntheticTokens) -> dict[str, list[float]]:
    """[val_loss, val_bpb] of the official evaluator and of the final evaluator with the arm's ``eval.*``
    settings, on a synthetic stream with random byte counts (1-4 bytes a token, random leading spaces)."""
    from pgolf.core.evaluate import ByteLUTs, eval_official, eval_windows

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(SEED)
    v = fcfg.model.vocab_size
    luts = ByteLUTs(torch.randint(1, 5, (v,), generator=g, dtype=torch.int16),
                    torch.rand(v, generator=g) < 0.3, torch.rand(v, generator=g) < 0.05)
    seq, ev = fcfg.train.train_seq_len, fcfg.eval
    eval_len = min(ev.seq_len or seq, MAX_EVAL_LEN)
    stride = min(ev.stride, eval_len // 2)
    tokens = data.tokens(EVAL_WINDOWS * max(seq, eval_len) + eval_len // 2 + 1)  # a partial last window
    official = eval_official(model, tokens, luts, seq, EVAL_WINDOWS * seq, 0, 1, 1, cpu, False)
    final = eval_windows(model, tokens, luts, eval_len, stride, ev.tail, ev.batch_seqs, 0, 1, cpu, False,
                         ev.window_rule)
    return {"eval_official": [official.val_loss, official.val_bpb], "eval_final": [final.val_loss, final.val_bpb]}


def _update_probe(init: dict[str, torch.Tensor], final: dict[str, torch.Tensor]) -> float:
    """``sum_k <final_k - init_k, r_k>`` with fixed Gaussian ``r_k``: the direction of the weights' change.

    The losses of a few small steps move by ~1e-3, so a change of the update (QAT's gradients, an optimizer
    detail) shifts them by little more than the tolerance; this projection of the update shifts by its
    relative size. Muon normalizes its updates, so the update's norm alone would not see such changes."""
    g = torch.Generator().manual_seed(SEED)
    total = 0.0
    for k in sorted(final):
        if final[k].is_floating_point():
            r = torch.randn(final[k].shape, generator=g, dtype=torch.float64)
            total += float(((final[k].double() - init[k].double()) * r).sum())
    return total


def fingerprint(cfg: Config, *, threads: int = 1) -> dict[str, Any]:
    """The behaviour fingerprint of ``cfg`` (module doc); computed once per fixed config in this process.
    ``threads``: the torch thread count it runs with (the result does not depend on it: tested)."""
    fcfg = apply_overrides(fingerprint_config(cfg), {"train.num_threads": threads})
    key = fcfg.to_json()
    if key not in _cache:
        _cache[key] = _compute(fcfg)
    return copy.deepcopy(_cache[key])


def compare(stored: Any, current: dict[str, Any]) -> str | None:
    """None when ``stored`` (a behaviour.json's content) matches ``current`` within :data:`RTOL`, else the first
    differing value, described."""
    if not isinstance(stored, dict):
        return f"behaviour.json holds {type(stored).__name__}, not a fingerprint"
    for k in COMPARED:
        a, b = stored.get(k), current[k]
        if k == "version":
            if a != b:
                return f"fingerprint version {a!r}, now {b!r} (the fingerprint's recipe changed)"
            continue
        pairs = list(zip(a, b)) if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) else None
        if isinstance(b, list) and pairs is None:
            return f"{k} {a!r}, now {b!r}"
        for i, (u, v) in enumerate(pairs if pairs is not None else [(a, b)]):
            where = f"{k}[{i}]" if pairs is not None else k
            if not isinstance(u, (int, float)) or not math.isclose(u, v, rel_tol=RTOL, abs_tol=0.0):
                return f"{where} {u!r}, now {v!r} (rtol {RTOL:g})"
    return None
