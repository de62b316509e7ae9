"""The training stream and batch slicing follow the official loader token for token."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pgolf.core.data.loader import (
    DatasetNotFoundError,
    DistributedTokenLoader,
    TokenStream,
    load_validation_tokens,
    resolve_dataset,
)
from pgolf.core.data.shards import write_shard

SHARD_SIZES = [37, 0, 23, 51]  # an empty shard in the middle is skipped like the official loader does


@pytest.fixture()
def shards(tmp_path):
    """Shards written out of order on disk; each token value is unique so order errors show."""
    values = np.arange(1, sum(SHARD_SIZES) + 1, dtype=np.uint16)
    files, start = [], 0
    for i, n in enumerate(SHARD_SIZES):
        files.append(write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", values[start : start + n]))
        start += n
    return files[::-1], values  # handed over unsorted: the stream must sort them


class ReferenceStream:
    """The official semantics written out by hand: sorted shards, concatenated, repeated forever."""

    def __init__(self, values):
        self.values, self.pos = values.astype(np.int64), 0

    def take(self, n):
        idx = (self.pos + np.arange(n)) % self.values.size
        self.pos += n
        return self.values[idx]


def test_take_matches_reference_across_boundaries_and_wraparound(shards):
    files, values = shards
    stream, ref = TokenStream(files), ReferenceStream(values)
    for n in [1, 36, 1, 22, 5, 60, 111, 3, 200, 7]:  # hits exact shard ends, spans 2+ shards, wraps twice
        got = stream.take(n)
        assert got.dtype == torch.uint16 and got.numel() == n
        np.testing.assert_array_equal(got.to(torch.int64).numpy(), ref.take(n))


def test_two_ranks_are_disjoint_cover_the_chunk_and_shift_by_one(shards):
    files, values = shards
    seq_len, world, accum = 4, 2, 2
    global_tokens = 32  # local_tokens = 32 // (2*2) = 8 = 2 sequences of 4
    loaders = [DistributedTokenLoader(files, rank, world, "cpu") for rank in range(world)]
    ref = ReferenceStream(values)
    for _ in range(9):  # enough steps to cross every shard and wrap
        chunk = ref.take((8 + 1) * world)
        spans = []
        for rank, loader in enumerate(loaders):
            x, y = loader.next_batch(global_tokens, seq_len, accum)
            assert x.dtype == torch.int64 and x.shape == (2, seq_len) == y.shape
            local = np.concatenate([x.reshape(-1).numpy(), y.reshape(-1).numpy()[-1:]])
            np.testing.assert_array_equal(y.reshape(-1).numpy()[:-1], x.reshape(-1).numpy()[1:])
            spans.append(local)
        np.testing.assert_array_equal(np.concatenate(spans), chunk)  # rank 0 then rank 1, nothing skipped
        assert not set(spans[0].tolist()) & set(spans[1].tolist())  # values are unique within one lap


def test_bad_batch_geometry_is_a_clear_error(shards):
    loader = DistributedTokenLoader(shards[0], 0, 2, "cpu")
    with pytest.raises(ValueError, match="seq_len=4"):
        loader.next_batch(global_tokens=30, seq_len=4, grad_accum_steps=1)  # 15 per rank
    with pytest.raises(ValueError, match="positive multiple"):
        loader.next_batch(global_tokens=3, seq_len=4, grad_accum_steps=1)
    with pytest.raises(ValueError, match="rank"):
        DistributedTokenLoader(shards[0], 2, 2, "cpu")


def test_state_dict_resume_gives_identical_batches(shards):
    files, _ = shards
    a = DistributedTokenLoader(files, 1, 2, "cpu")
    for _ in range(5):
        a.next_batch(24, 3, 1)
    state = json.loads(json.dumps(a.state_dict()))  # must survive a JSON checkpoint
    assert set(state) == {"file_idx", "pos"}
    b = DistributedTokenLoader(files, 1, 2, "cpu")
    b.load_state_dict(state)
    for _ in range(6):
        (xa, ya), (xb, yb) = a.next_batch(24, 3, 1), b.next_batch(24, 3, 1)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="file_idx=9"):
        b.load_state_dict({"file_idx": 9, "pos": 0})


def test_validation_tokens_drop_and_score_tails(tmp_path):
    v0 = write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(10, dtype=np.uint16))
    v1 = write_shard(tmp_path / "fineweb_val_000001.bin", np.arange(10, 23, dtype=np.uint16))
    dropped = load_validation_tokens([v1, v0], seq_len=5)
    assert dropped.dtype == torch.uint16
    assert dropped.tolist() == list(range(21))  # ((23 - 1) // 5) * 5 + 1
    assert load_validation_tokens([v0, v1], seq_len=5, tail="score").tolist() == list(range(23))
    assert load_validation_tokens([v0, v1], seq_len=11).numel() == 23  # 22 is a multiple: nothing dropped
    with pytest.raises(ValueError, match=r"seq_len=23.*23 tokens"):
        load_validation_tokens([v0, v1], seq_len=23)
    with pytest.raises(ValueError, match="tail"):
        load_validation_tokens([v0], seq_len=2, tail="keep")


def _cfg(path="", tokenizer_path=""):
    return SimpleNamespace(path=str(path), train_pattern="fineweb_train_*.bin", val_pattern="fineweb_val_*.bin",
                           tokenizer_path=str(tokenizer_path))


def test_resolve_dataset_finds_files_and_tokenizer_in_documented_order(tmp_path):
    root = tmp_path / "data" / "datasets" / "fineweb10B_sp1024"
    for name in ["fineweb_train_000001.bin", "fineweb_train_000000.bin", "fineweb_val_000000.bin"]:
        write_shard(root / name, np.arange(4, dtype=np.uint16))
    official_tok = tmp_path / "data" / "tokenizers" / "fineweb_1024_bpe.model"
    with pytest.raises(DatasetNotFoundError) as err:
        resolve_dataset(_cfg(root), 1024)
    assert str(root / "tokenizer.model") in str(err.value) and str(official_tok) in str(err.value)

    official_tok.parent.mkdir(parents=True)
    official_tok.write_bytes(b"x")
    ds = resolve_dataset(_cfg(root), 1024)
    assert [p.name for p in ds.train_files] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]
    assert ds.tokenizer_path == official_tok.resolve() and ds.manifest is None

    (root / "manifest.json").write_text(json.dumps({"tokenizer": "tok/custom.model"}))
    (root / "tok").mkdir()
    (root / "tok" / "custom.model").write_bytes(b"x")
    assert resolve_dataset(_cfg(root), 1024).tokenizer_path.name == "custom.model"
    (root / "tokenizer.model").write_bytes(b"x")
    ds = resolve_dataset(_cfg(root), 1024)
    assert ds.tokenizer_path.name == "tokenizer.model" and ds.manifest == {"tokenizer": "tok/custom.model"}
    assert resolve_dataset(_cfg(root, official_tok), 1024).tokenizer_path == official_tok.resolve()
    with pytest.raises(DatasetNotFoundError, match="data.tokenizer_path"):
        resolve_dataset(_cfg(root, tmp_path / "nope.model"), 1024)


def test_resolve_dataset_errors_name_folder_pattern_and_build_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("PGOLF_DATA", str(tmp_path / "pgdata"))
    with pytest.raises(DatasetNotFoundError, match="pgolf data build") as err:
        resolve_dataset(_cfg(), 1024)
    assert "default_sp1024" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"fineweb_train_\*\.bin") as err:
        resolve_dataset(_cfg(tmp_path / "empty"), 1024)
    assert str(tmp_path / "empty") in str(err.value) and "pgolf data build" not in str(err.value)
