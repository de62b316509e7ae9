"""data.order="record_shuffled" (PR #1394's sampling): windows, per-rank shards, seeding, resume, errors, and the
default left alone. Parity with the record's own class: tests/test_parity_pr1394_loader.py."""

from __future__ import annotations

import io
import json
from itertools import pairwise

import numpy as np
import pytest
import torch
from pgolf_testing import micro_config

from pgolf.core.config import Config, ConfigError, apply_overrides
from pgolf.core.data.loader import DistributedTokenLoader
from pgolf.core.data.permuted import make_train_loader
from pgolf.core.data.shards import ShardError, write_shard
from pgolf.core.data.shuffled import RecordShuffledLoader
from pgolf.core.safe_load import load_plain

SEQ = 8
SIZES = (400, 8, 250, 333)  # the 8-token shard has no window of SEQ + 1 tokens


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Token j of shard i is 1000 * i + j, so a window shows its shard and offset."""
    root = tmp_path_factory.mktemp("shuffled")
    return [write_shard(root / f"fineweb_train_{i:06d}.bin", 1000 * i + np.arange(n)) for i, n in enumerate(SIZES)]


def _windows(loader, n_batches, per_batch=4):
    out = []
    for _ in range(n_batches):
        x, y = loader.next_batch(per_batch * SEQ, SEQ, 1)
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
        out += [(int(r[0]) // 1000, int(r[0]) % 1000) for r in x]
    return out


def test_each_epoch_visits_every_window_of_the_ranks_shards_once(shards):
    ld = RecordShuffledLoader(shards, 0, 1, SEQ)
    per_shard = [s.size for s in ld.starts]
    assert per_shard[1] == 0 and all(n > 0 for i, n in enumerate(per_shard) if i != 1)
    total = sum(per_shard)
    first = _windows(ld, -(-total // 4) + 3)[:total]  # a little past the end of the first epoch
    assert len(set(first)) == total and ld.epoch == 1
    for s in (0, 2, 3):
        offs = sorted(o for t, o in first if t == s)
        assert len(offs) == per_shard[s] and 0 <= offs[0] < SEQ  # one random phase...
        assert all(b - a == SEQ for a, b in pairwise(offs))  # ...then back-to-back windows
        assert offs[-1] + SEQ + 1 <= SIZES[s] < offs[-1] + 2 * SEQ + 1  # as many as fit


def test_ranks_read_disjoint_shards_and_seeds_differ(shards):
    r0, r1 = (RecordShuffledLoader(shards, r, 2, SEQ) for r in (0, 1))
    assert [f.name for f in r0.files] == ["fineweb_train_000000.bin", "fineweb_train_000002.bin"]
    assert {s for s, _ in _windows(r0, 10)} <= {0, 2} and {s for s, _ in _windows(r1, 10)} <= {1, 3}
    a, b = (_windows(RecordShuffledLoader(shards, 0, 1, SEQ, order_seed=s), 5) for s in (0, 1))
    assert a != b and a == _windows(RecordShuffledLoader(shards, 0, 1, SEQ, order_seed=0), 5)


@pytest.mark.parametrize("batches", [3, 40])  # inside the first epoch, and a few epochs on
def test_resume_gives_the_identical_next_batches(shards, batches):
    ld = RecordShuffledLoader(shards, 1, 2, SEQ, order_seed=5)
    _windows(ld, batches)
    buf = io.BytesIO()
    torch.save({"loader": ld.state_dict()}, buf)  # as a checkpoint stores it, read back by the safe loader
    state = load_plain(io.BytesIO(buf.getvalue()), name="ck", kind="test checkpoint")["loader"]
    assert json.loads(json.dumps(state)) == state  # plain values only
    fresh = RecordShuffledLoader(shards, 1, 2, SEQ, order_seed=5)
    fresh.load_state_dict(state)
    assert fresh.epoch == ld.epoch and _windows(fresh, 30) == _windows(ld, 30)
    # the gathered form a distributed checkpoint holds: each rank takes its own entry
    other = RecordShuffledLoader(shards, 0, 2, SEQ, order_seed=5)
    _windows(other, 7)
    both = {"order": "record_shuffled", "by_rank": [other.state_dict(), ld.state_dict()]}
    r0, r1 = RecordShuffledLoader(shards, 0, 2, SEQ, order_seed=5), RecordShuffledLoader(shards, 1, 2, SEQ, order_seed=5)
    r0.load_state_dict(both)
    r1.load_state_dict(both)
    assert _windows(r0, 5) == _windows(other, 5) and _windows(r1, 5) == _windows(ld, 5)


def test_state_of_another_loader_is_refused(shards):
    state = RecordShuffledLoader(shards, 0, 1, SEQ).state_dict()
    with pytest.raises(ValueError, match="does not match this loader"):
        RecordShuffledLoader(shards, 0, 1, SEQ, order_seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="does not match this loader"):
        RecordShuffledLoader(shards[:3], 0, 1, SEQ).load_state_dict(state)
    with pytest.raises(ValueError, match="saved by 1 ranks, this run has 2"):
        RecordShuffledLoader(shards, 0, 2, SEQ).load_state_dict({"order": "record_shuffled", "by_rank": [state]})
    with pytest.raises(ValueError, match="not a record_shuffled loader's"):
        RecordShuffledLoader(shards, 0, 1, SEQ).load_state_dict({"file_idx": 0, "pos": 0})


def test_errors_name_the_problem(shards):
    with pytest.raises(ValueError, match="built for seq_len=8, asked for 9"):
        RecordShuffledLoader(shards, 0, 1, SEQ).next_batch(72, 9, 1)
    with pytest.raises(ValueError, match="positive multiple of seq_len"):
        RecordShuffledLoader(shards, 0, 1, SEQ).next_batch(10, SEQ, 1)
    with pytest.raises(ValueError, match=r"4 shard\(s\) leave rank 4 of 5 none; use at least 5 train shards"):
        RecordShuffledLoader(shards, 4, 5, SEQ)
    with pytest.raises(ValueError, match="no shard has a window of train_seq_len"):
        RecordShuffledLoader(shards[1:2], 0, 1, SEQ)
    checked = RecordShuffledLoader(shards, 0, 1, SEQ, vocab_size=2000)
    with pytest.raises(ShardError, match=r"fineweb_train_00000[23].bin: token id \d+ at token \d+ is outside the model's"):
        _windows(checked, 100)
    with pytest.raises(ConfigError, match=r"data.order: expected one of \['sequential', 'permuted', 'record_shuffled', 'doc_packing'\]"):
        apply_overrides(Config(), {"data.order": "shuffled"})


def test_switch_is_off_by_default_and_builds_the_loader(shards):
    cfg = Config()
    assert cfg.data.order == "sequential" and type(make_train_loader(cfg, shards, 0, 1, "cpu")) is DistributedTokenLoader
    on = apply_overrides(cfg, {"data.order": "record_shuffled", "data.order_seed": 2, "train.train_seq_len": SEQ})
    ld = make_train_loader(on, shards, 1, 2, "cpu")
    assert isinstance(ld, RecordShuffledLoader) and (ld.rank, ld.world_size, ld.seq_len, ld.order_seed) == (1, 2, SEQ, 2)


def test_two_process_checkpoint_keeps_every_ranks_position(small_dataset, tmp_path):
    """A real 2-process torchrun (gloo): the checkpoint holds each rank's own loader state (gathered), equal to
    that rank's loader advanced by the batches it drew, and each rank resumes from its own entry."""
    import os
    import subprocess
    import sys

    from pgolf.core.data.loader import resolve_dataset
    from pgolf.core.runs import CHECKPOINT

    cfg = micro_config(small_dataset, **{"data.order": "record_shuffled", "data.order_seed": 1, "train.iterations": 2,
                                         "train.checkpoint_every": 2, "train.grad_accum_steps": 0})
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pgolf.running.worker", "--config", str(tmp_path / "cfg.json"), "--run-dir", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_plain(tmp_path / "ddp" / CHECKPOINT, name="ck", kind="pgolf checkpoint")
    assert ck["step"] == 2 and ck["loader"]["order"] == "record_shuffled" and len(ck["loader"]["by_rank"]) == 2
    files = resolve_dataset(cfg.data, cfg.model.vocab_size).train_files
    seq, batch = cfg.train.train_seq_len, cfg.train.train_batch_tokens
    for rank in range(2):
        mine = RecordShuffledLoader(files, rank, 2, seq, order_seed=1)
        for _ in range(2 * 4):  # 2 steps of 8 // world_size = 4 micro-batches
            mine.next_batch(batch, seq, 4)
        assert ck["loader"]["by_rank"][rank] == mine.state_dict()
        resumed = RecordShuffledLoader(files, rank, 2, seq, order_seed=1)
        resumed.load_state_dict(ck["loader"])
        assert torch.equal(resumed.next_batch(batch, seq, 4)[0], mine.next_batch(batch, seq, 4)[0])
