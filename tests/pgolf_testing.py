"""Helpers shared by test modules (imported by name: pytest puts tests/ on sys.path).

Kept out of conftest.py because ``notebooks/conftest.py`` would shadow ``import conftest``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import types
from contextlib import contextmanager
from pathlib import Path

from pgolf.core.config import Config, apply_overrides
from pgolf.running.presets import get_preset


def micro_config(dataset: Path, **overrides) -> Config:
    """A 2-layer width-64 model that trains a step in well under a second."""
    base = {
        "data.path": str(dataset), "model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4,
        "model.num_kv_heads": 2, "train.train_seq_len": 64, "train.train_batch_tokens": 1024,
        "train.grad_accum_steps": 1, "train.iterations": 8, "train.max_wallclock_seconds": 0.0,
        "train.warmup_steps": 0, "train.val_loss_every": 0, "train.val_batch_size": 16384,
        "train.train_log_every": 1, "schedule.warmdown_iters": 4, "optim.muon_momentum_warmup_steps": 4,
    }
    base.update(overrides)
    return apply_overrides(get_preset("tiny"), base)


def raise_at(step: int, error: BaseException | type[BaseException]):
    """A ``TrainerHooks.before_step`` fault: raise ``error`` before step ``step`` (0-based) is trained."""
    def before_step(s: int) -> None:
        if s == step:
            raise error
    return before_step


def reference_script_or_skip(env: str, what: str) -> str:
    """The path in ``env`` to a reference ``train_gpt.py`` (the official one or a PR's), or skip the module.

    The scripts are not part of pgolf (docs/parity.md says how to get them with ``git show``)."""
    import os

    import pytest

    path = os.environ.get(env, "")
    if not path or not Path(path).is_file():
        pytest.skip(f"{what} parity tests need {env}=<path to its train_gpt.py>"
                    + (f" (no file at {path!r})" if path else " (not set)"), allow_module_level=True)
    return path


CONTROL = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")  # the official control tensors


def random_state(model, seed: int = 0, control: tuple[str, ...] = CONTROL) -> dict:
    """Trained-looking weights for parity tests: matrices N(0, 0.02), control and vector tensors N(1, 0.25)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in model.state_dict().items():
        if t.ndim == 2 and not any(p in name for p in control):
            out[name] = torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.02
        else:
            out[name] = 1.0 + 0.25 * torch.randn(t.shape, generator=g, dtype=t.dtype)
    return out


def max_abs_diff(a, b) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


@contextmanager
def imported_script(path: str, name: str, env: dict[str, str] | None = None):
    """A reference script (official or PR ``train_gpt.py``) imported under the private module name ``name``.

    Its hyperparameters and module constants read the environment at import time, so while it imports every
    variable it reads (``os.environ.get("NAME", ...)``) is cleared and ``env`` (its run command's settings) is
    set; the environment is restored right after, so a stray ``SEED=...`` cannot change it and nothing leaks."""
    env = dict(env or {})
    read = set(re.findall(r"""os\.environ\.get\(\s*["']([A-Z0-9_]+)["']""", Path(path).read_text(encoding="utf-8")))
    saved = {k: os.environ.get(k) for k in read | set(env)}
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        for k in read:
            os.environ.pop(k, None)
        os.environ.update(env)
        try:
            spec.loader.exec_module(mod)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        yield mod
    finally:
        sys.modules.pop(name, None)


@contextmanager
def stubbed_modules(*names: str):
    """Empty stand-in modules for ``names`` in ``sys.modules`` while the block runs (e.g. flash-attention, which a
    reference script imports at import time but the compared functions never call); the previous entries are
    restored afterwards."""
    import sys
    import types

    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        stub = types.ModuleType(n)
        stub.flash_attn_func = None
        sys.modules[n] = stub
    try:
        yield
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod


class _AnyStub(types.ModuleType):
    """A stand-in module whose every attribute is a no-op decorator / placeholder (``triton.jit``,
    ``tl.constexpr`` in annotations), for the Triton kernels a record defines at import time and the CPU
    tests never launch."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _any_stub_value


def _any_stub_value(*args, **kwargs):
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]  # used as a bare decorator (@triton.jit): the function itself
    return _any_stub_value  # a decorator factory, a type or a value: never called by the compared code


@contextmanager
def record_pr1855_stubs():
    """The modules PR #1855's script imports at import time but cannot get on a CPU-only machine:
    flash-attention 3 (``flash_attn_func``, ``flash_attn_varlen_func``) and Triton (its fused CE and MLP
    kernels). The CPU tests compare functions that call neither. ``torch.compile`` is the identity meanwhile:
    the script compiles its Newton-Schulz function at import time, and compiling would import the real Triton
    (inductor); the tests compare eager math."""
    import torch

    names = ("flash_attn_interface", "triton", "triton.language", "triton.tools", "triton.tools.tensor_descriptor")
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        sys.modules[n] = _AnyStub(n)
    for n in names:  # ``import triton.language as tl`` reads the attribute of the parent module
        parent, _, child = n.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[n])
    compile_ = torch.compile
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    try:
        yield
    finally:
        torch.compile = compile_
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod


def gaussian_model_and_hessians(cfg: Config, std: float, batch_shape: tuple[int, int], n_batches: int = 2):
    """A model of ``cfg`` with N(0, std) weights and its GPTQ Hessians from ``n_batches`` random batches of
    ``batch_shape`` token ids (one generator, seed 0, for both)."""
    import torch

    from pgolf.core.gptq import collect_hessians
    from pgolf.core.model import build_model

    m = build_model(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    vocab = cfg.model.vocab_size
    return m, collect_hessians(m, [torch.randint(0, vocab, batch_shape, generator=g) for _ in range(n_batches)])


def slurm_unavailable_reason() -> str | None:
    """Why no SLURM cluster can be used here (``sinfo`` missing, failing, or no node up), or None."""
    import shutil
    import subprocess
    if not shutil.which("sinfo"):
        return "no SLURM here (sinfo not found); start a one-node cluster with .ci/slurm-up.sh (root)"
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed ({e}); start the cluster with .ci/slurm-up.sh"
    if p.returncode != 0 or not any(s.strip().rstrip("*") in ("idle", "mix", "alloc") for s in p.stdout.split()):
        return f"no SLURM node is up (sinfo: {(p.stderr or p.stdout).strip()!r}); start it with .ci/slurm-up.sh"
    return None
