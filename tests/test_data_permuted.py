"""data.order="permuted": seeded per-epoch block order, rank slices, resume, and the default left alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pgolf_testing import micro_config, raise_at

from pgolf.core.config import Config, ConfigError, apply_overrides
from pgolf.core.data.loader import DistributedTokenLoader
from pgolf.core.data.permuted import PermutedBlockLoader, epoch_order, make_train_loader
from pgolf.core.data.shards import ShardError, write_shard
from pgolf.core.train import TrainerHooks, train

SEQ = 7  # blocks of 8 tokens
SIZES = (1000, 0, 777, 1231)  # 3008 tokens = 376 blocks exactly; an empty shard and blocks across boundaries
N_BLOCKS = sum(SIZES) // (SEQ + 1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Token i of the concatenated stream is i, so a block shows where it came from."""
    root = tmp_path_factory.mktemp("perm")
    starts = np.cumsum((0, *SIZES))
    return [write_shard(root / f"fineweb_train_{i:06d}.bin", np.arange(starts[i], starts[i + 1], dtype=np.uint16))
            for i in range(len(SIZES))]


def _loader(shards, seed=0, rank=0, world=1):
    return PermutedBlockLoader(shards, rank, world, SEQ, seed)


def _blocks(x):
    return (x[:, 0] // (SEQ + 1)).tolist()


def test_batches_are_whole_blocks_deterministic_and_seeded(shards):
    a, b, c = _loader(shards, 5), _loader(shards, 5), _loader(shards, 6)
    for _ in range(4):
        (xa, ya), (xb, yb), (xc, _) = (ld.next_batch(8 * SEQ, SEQ, 1) for ld in (a, b, c))
        assert xa.shape == (8, SEQ) and xa.dtype == torch.int64
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)
        assert torch.equal(ya, xa + 1) and torch.equal(xa[:, 1:], xa[:, :-1] + 1)  # contiguous stream pieces
        assert all(t % (SEQ + 1) == 0 for t in xa[:, 0].tolist())  # block-aligned


def test_every_block_once_per_epoch_and_a_new_order_next_epoch(shards):
    ld = _loader(shards, 1)
    epochs = []
    for _ in range(2):
        seen = []
        for _ in range(N_BLOCKS // 8):
            seen += _blocks(ld.next_batch(8 * SEQ, SEQ, 1)[0])
        assert sorted(seen) == list(range(N_BLOCKS))
        epochs.append(seen)
    assert epochs[0] != epochs[1]
    assert epochs[0] == epoch_order(N_BLOCKS, 1, 0).tolist() and epochs[1] == epoch_order(N_BLOCKS, 1, 1).tolist()
    # a batch that crosses the epoch end takes the rest of this epoch, then the start of the next
    ld = _loader(shards, 1)
    ld.next_blocks(N_BLOCKS - 3)
    assert _blocks(ld.next_batch(8 * SEQ, SEQ, 1)[0]) == epochs[0][-3:] + epochs[1][:5]


@pytest.mark.parametrize("world,accum", [(2, 1), (2, 2), (4, 2), (1, 4)])
def test_rank_slices_are_disjoint_and_make_the_single_process_batch(shards, world, accum):
    """Per optimizer step the same blocks as one process without accumulation, whatever the split."""
    single = _loader(shards, 9)
    loaders = [_loader(shards, 9, r, world) for r in range(world)]
    glob = 16 * SEQ
    for _ in range(3):
        want = single.next_batch(glob, SEQ, 1)[0]
        got = [ld.next_batch(glob, SEQ, accum)[0] for _ in range(accum) for ld in loaders]  # micro-step major
        assert all(g.shape == (16 // (world * accum), SEQ) for g in got)
        assert torch.equal(torch.cat(got), want)
        assert len(set(_blocks(torch.cat(got)))) == 16  # disjoint


def test_resume_gives_the_identical_next_batch(shards):
    ld = _loader(shards, 2)
    for _ in range(N_BLOCKS // 8 + 3):  # past an epoch end
        ld.next_batch(8 * SEQ, SEQ, 1)
    state = json.loads(json.dumps(ld.state_dict()))  # plain data, as a checkpoint stores it
    fresh = _loader(shards, 2)
    fresh.load_state_dict(state)
    for _ in range(5):
        assert torch.equal(fresh.next_batch(8 * SEQ, SEQ, 1)[0], ld.next_batch(8 * SEQ, SEQ, 1)[0])
    with pytest.raises(ValueError, match="does not match this loader"):
        _loader(shards, 3).load_state_dict(state)
    with pytest.raises(ValueError, match="not a permuted loader's"):
        _loader(shards, 2).load_state_dict({"file_idx": 0, "pos": 0})


def test_errors_name_the_problem(shards, tmp_path):
    with pytest.raises(ValueError, match="built for seq_len=7, asked for 8"):
        _loader(shards).next_batch(64, 8, 1)
    with pytest.raises(ValueError, match="positive multiple of seq_len"):
        _loader(shards).next_batch(10, SEQ, 1)
    with pytest.raises(ValueError, match="fewer than one block"):
        PermutedBlockLoader(shards[:1], 0, 1, 2000, 0)
    checked = PermutedBlockLoader(shards, 0, 1, SEQ, 0, vocab_size=1000)
    with pytest.raises(ShardError, match=r"fineweb_train_00000[23].bin: token id \d+ at token \d+ is outside the model's"):
        for _ in range(N_BLOCKS):
            checked.next_batch(8 * SEQ, SEQ, 1)
    with pytest.raises(ConfigError, match="data.order"):
        apply_overrides(Config(), {"data.order": "shuffled"})
    with pytest.raises(ConfigError, match="data.order_seed: expected an integer >= 0"):
        apply_overrides(Config(), {"data.order_seed": -1})


def test_default_is_the_official_sequential_loader(shards):
    cfg = Config()
    assert (cfg.data.order, cfg.data.order_seed) == ("sequential", 0)
    assert type(make_train_loader(cfg, shards, 0, 1, "cpu")) is DistributedTokenLoader
    perm = apply_overrides(cfg, {"data.order": "permuted", "data.order_seed": 4, "train.train_seq_len": SEQ})
    ld = make_train_loader(perm, shards, 0, 1, "cpu")
    assert isinstance(ld, PermutedBlockLoader) and (ld.order_seed, ld.seq_len) == (4, SEQ)


@pytest.mark.parametrize("order", ["permuted", "record_shuffled"])
def test_trainer_resume_continues_the_loader_order(small_dataset, tmp_path, order):
    """Interrupted at step 5 (checkpoint at 4) and resumed: the same train losses as one uninterrupted run, for
    each seeded loader."""
    cfg = micro_config(small_dataset, **{"data.order": order, "data.order_seed": 3, "train.checkpoint_every": 2,
                                         "train.iterations": 6, "export.keep_float_max_numel": 1 << 30})
    full = train(cfg, tmp_path / "full", console=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", console=False, hooks=TrainerHooks(before_step=raise_at(5, KeyboardInterrupt)))
    resumed = train(cfg, tmp_path / "cut", resume=True, console=False)
    rows = {r: [json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
            for r in ("full", "cut")}
    losses = {r: {x["step"]: x["train_loss"] for x in rows[r] if "train_loss" in x} for r in rows}
    assert losses["cut"] == losses["full"] and len(losses["full"]) == 6
    assert resumed["val_loss"] == full["val_loss"]
    assert (full["data_order"], full["data_order_seed"], full["init_seed"]) == (order, 3, cfg.train.seed)
    sequential = train(micro_config(small_dataset, **{"train.iterations": 6}), tmp_path / "seq", console=False)
    assert sequential["val_loss"] != full["val_loss"]  # the switch changes what is read
