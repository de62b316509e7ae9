"""Loader parity with PR #1394 (https://github.com/openai/parameter-golf/pull/1394, record 2026-04-05): pgolf's
``data.order="record_shuffled"`` gives the same (x, y) batches as the record's own shuffled sequence loader class,
imported from ``PGOLF_PR1394_TRAIN_GPT`` (the module skips without it), for the same shards, rank and world size.

The script imports flash-attention 3 at import time; a stub module stands in for it while these tests run (the
loader never calls it). Everything runs on CPU."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pgolf_testing import imported_script, reference_script_or_skip

PR_PATH = reference_script_or_skip("PGOLF_PR1394_TRAIN_GPT", "PR #1394")

from pgolf.core.data.shards import write_shard  # noqa: E402
from pgolf.core.data.shuffled import RecordShuffledLoader  # noqa: E402

SEQ = 16
# A shard with no window (10 tokens), one with a phase bound below seq_len - 1 (20 tokens: phase in [0, 3]),
# and full-size ones; 5 shards so ranks of 2 and 3 get different numbers of shards.
SIZES = (997, 10, 20, 1500, 613)


@pytest.fixture(scope="module")
def rec():
    saved = sys.modules.get("flash_attn_interface")
    stub = types.ModuleType("flash_attn_interface")
    stub.flash_attn_func = None  # only the attention forward calls it
    sys.modules["flash_attn_interface"] = stub
    try:
        with imported_script(PR_PATH, "_pr1394_train_gpt_loader") as mod:
            yield mod
    finally:
        if saved is None:
            sys.modules.pop("flash_attn_interface", None)
        else:
            sys.modules["flash_attn_interface"] = saved


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Token j of shard i is 10_000 * i + j (mod 2**16), so a window shows where it came from."""
    root = tmp_path_factory.mktemp("rec_shards")
    return [write_shard(root / f"fineweb_train_{i:06d}.bin", (10_000 * i + np.arange(n)) % 65536)
            for i, n in enumerate(SIZES)]


def _theirs(rec, shards, rank, world):
    h = SimpleNamespace(world_size=world, rank=rank, train_seq_len=SEQ,
                        train_files=str(shards[0].parent / "fineweb_train_*.bin"))
    return rec.ShuffledSequenceLoader(h, torch.device("cpu"))


@pytest.mark.parametrize("world, accum", [(1, 1), (1, 4), (2, 1), (3, 2)])
def test_same_shards_same_rank_same_batches(rec, shards, world, accum):
    """Enough batches to use up every rank's windows more than twice (so the redraws are compared too)."""
    global_tokens = world * accum * SEQ * 5  # 5 sequences per rank and micro-step
    for rank in range(world):
        theirs = _theirs(rec, shards, rank, world)
        ours = RecordShuffledLoader(shards, rank, world, SEQ)
        windows = sum((n - 1) // SEQ for n in SIZES[rank::world])
        for _ in range(3 * windows // 5 + 2):
            x0, y0 = theirs.next_batch(global_tokens, accum)
            x1, y1 = ours.next_batch(global_tokens, SEQ, accum)
            assert x1.dtype == x0.dtype == torch.int64 and x1.shape == x0.shape == (5, SEQ)
            assert torch.equal(x1, x0) and torch.equal(y1, y0)
        assert ours.epoch >= 2


def test_record_seeds_by_rank_only(rec, shards):
    """The record's order depends on the rank alone; pgolf's order_seed=0 is that order, others differ."""
    theirs = _theirs(rec, shards, 0, 1).next_batch(SEQ * 8, 1)[0]
    assert torch.equal(RecordShuffledLoader(shards, 0, 1, SEQ, order_seed=0).next_batch(SEQ * 8, SEQ, 1)[0], theirs)
    assert not torch.equal(RecordShuffledLoader(shards, 0, 1, SEQ, order_seed=1).next_batch(SEQ * 8, SEQ, 1)[0], theirs)
