"""Parity with the 2026-04-27 record, PR #1855 (https://github.com/openai/parameter-golf/tree/main/records/
track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611): its ``train_gpt.py`` imported
from ``PGOLF_PR1855_TRAIN_GPT`` (the module skips without it), with flash-attention 3 and Triton stubbed and
``torch.compile`` the identity while it imports (:func:`pgolf_testing.record_pr1855_stubs`): the functions
compared here are eager PyTorch.

Covered: the environment names pgolf maps, the LR schedule with MIN_LR, Polar Express Newton-Schulz."""

from __future__ import annotations

import ast
import math
import re
import textwrap
import types
from pathlib import Path

import pytest
import torch

from pgolf_testing import imported_script, record_pr1855_stubs, reference_script_or_skip

PR_PATH = reference_script_or_skip("PGOLF_PR1855_TRAIN_GPT", "PR #1855")

from pgolf.core.config import Config, apply_overrides, from_env  # noqa: E402
from pgolf.core.config_env import ENV_KEYS, ENV_LOOP, ENV_SPECIAL  # noqa: E402

CONFIG_ONLY = {"TOKENIZER_PATH", "DATA_PATH"}  # paths: the record derives them from DATA_DIR / CASEOPS_ENABLED


@pytest.fixture(scope="module")
def rec():
    with record_pr1855_stubs(), imported_script(PR_PATH, "_pr1855_train_gpt") as mod:
        yield mod


def _field(cfg: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def test_every_mapped_name_the_record_reads_takes_the_records_value(rec):
    """Each name pgolf maps one-to-one that the record reads, set to the record's default: pgolf's field gets that
    value (pgolf's own defaults differ for most of them, e.g. GPTQ_RESERVE_SECONDS 12 vs 4, COMPRESSOR)."""
    read = set(re.findall(r"""os\.environ\.get\(\s*["']([A-Z0-9_]+)["']""", Path(PR_PATH).read_text()))
    h = rec.Hyperparameters()
    names = sorted(n for n in read & set(ENV_KEYS) if n not in CONFIG_ONLY)
    env = {n: str(getattr(h, n.lower())) for n in names}
    cfg = from_env(apply_overrides(Config(), {"model.vocab_size": 8192}), env)
    for n in names:
        want = getattr(h, n.lower())
        assert _field(cfg, ENV_KEYS[n]) == (pytest.approx(want) if isinstance(want, float) else want), n
    assert {"GPTQ_RESERVE_SECONDS", "GPTQ_CALIBRATION_BATCHES", "MATRIX_CLIP_SIGMAS", "EMBED_CLIP_SIGMAS",
            "COMPRESSOR", "VAL_BATCH_TOKENS", "MIN_LR"} <= set(names)
    loop = from_env(Config(), {n: str(getattr(h, n.lower())) for n in ENV_LOOP} | {"NUM_LAYERS": str(h.num_layers)})
    assert (loop.model.loop_layers, loop.model.loop_count) == (tuple(range(h.loop_start, h.loop_end + 1)),
                                                               h.num_loops)
    bits = from_env(Config(), {"MATRIX_BITS": str(h.matrix_bits), "EMBED_BITS": str(h.embed_bits)}).export
    assert (bits.bits_attn, bits.bits_mlp, bits.bits_other) == (h.matrix_bits, h.matrix_bits, h.embed_bits)
    assert {"MATRIX_BITS", "EMBED_BITS"} <= set(ENV_SPECIAL)


# -- Polar Express Newton-Schulz --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 128), (128, 64), (96, 96)])
@pytest.mark.parametrize("steps", [3, 5, 7])
def test_polar_express_orthogonalization_equals_the_records(rec, shape, steps):
    """optim.muon_ns_coeffs=polar_express: pgolf's Newton-Schulz in bf16 gives the record's output bit for bit,
    for wide, tall and square matrices, fewer steps than coefficients and more (the record runs all 5 then)."""
    from pgolf.core.optim import POLAR_EXPRESS_COEFFS, zeropower_via_newtonschulz5

    assert POLAR_EXPRESS_COEFFS == rec._PE_COEFFS
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(steps))
    theirs = rec.zeropower_via_newtonschulz5(g, steps=steps)
    ours = zeropower_via_newtonschulz5(g, steps=steps, dtype=torch.bfloat16, coeffs="polar_express")
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert torch.equal(ours, theirs)
    official = zeropower_via_newtonschulz5(g, steps=steps, dtype=torch.bfloat16)
    assert not torch.equal(official, theirs)


# -- MIN_LR: the LR schedule --------------------------------------------------------------------------------

def _records_schedule(h, max_wallclock_ms):
    """The record's ``training_frac`` and ``lr_mul`` (closures inside its ``train_model``), compiled from its own
    source with ``h`` and the reserve-shortened ``max_wallclock_ms`` they close over."""
    tree = ast.parse(Path(PR_PATH).read_text())
    train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_model")
    defs = [n for n in train.body if isinstance(n, ast.FunctionDef) and n.name in ("training_frac", "lr_mul")]
    assert len(defs) == 2
    ns = {"h": h, "max_wallclock_ms": max_wallclock_ms}
    exec(compile(ast.Module(body=defs, type_ignores=[]), PR_PATH, "exec"), ns)  # noqa: S102
    return lambda step, elapsed_ms: ns["lr_mul"](ns["training_frac"](step, elapsed_ms))


@pytest.mark.parametrize("cap_s", [600.0, 0.0])
@pytest.mark.parametrize("min_lr", [0.0, 0.1])
def test_min_lr_schedule_equals_the_records(cap_s, min_lr):
    """schedule.min_lr_frac (MIN_LR) with schedule.warmdown_frac (WARMDOWN_FRAC) and the GPTQ reserve is the
    record's rule: 1 before the warmdown, then max((1 - frac) / warmdown_frac, MIN_LR), frac measured against the
    cap less GPTQ_RESERVE_SECONDS (or iterations without a cap)."""
    from pgolf.core.optim import lr_multiplier

    env = {"WARMDOWN_FRAC": "0.85", "MIN_LR": str(min_lr), "GPTQ_RESERVE_SECONDS": "0.5",
           "MAX_WALLCLOCK_SECONDS": str(cap_s), "ITERATIONS": "5000"}
    with record_pr1855_stubs(), imported_script(PR_PATH, "_pr1855_schedule", env) as mod:
        h = mod.Hyperparameters()
    theirs = _records_schedule(h, 1e3 * (cap_s - h.gptq_reserve_seconds) if cap_s > 0 else None)
    cfg = from_env(apply_overrides(Config(), {"export.quantizer": "gptq"}), env)
    assert (cfg.schedule.min_lr_frac, cfg.schedule.warmdown_frac) == (min_lr, 0.85)
    points = [(s, 1e3 * cap_s * s / 5000) for s in range(0, 5200, 37)]
    diffs = [abs(lr_multiplier(s, ms, cfg) - theirs(s, ms)) for s, ms in points]
    assert max(diffs) < 1e-12
    assert min(lr_multiplier(s, ms, cfg) for s, ms in points) == pytest.approx(min_lr, abs=1e-12)
