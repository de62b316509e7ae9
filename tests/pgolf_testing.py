"""Helpers shared by test modules (imported by name: pytest puts tests/ on sys.path).

Kept out of conftest.py because ``notebooks/conftest.py`` would shadow ``import conftest``.
"""

from __future__ import annotations

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

    The scripts are not part of pgolf (the README says how to get them with ``git show``)."""
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
