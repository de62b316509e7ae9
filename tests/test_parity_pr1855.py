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
