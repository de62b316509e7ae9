"""Challenge shard format: round trip, memory map, and errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest

from pgolf.core.data.shards import (
    HEADER_BYTES,
    SHARD_MAGIC,
    ShardError,
    read_header,
    read_shard,
    shard_stats,
    total_stats,
    write_shard,
)


def test_round_trip_is_byte_exact_and_memory_mapped(tmp_path):
    tokens = np.array([1, 5, 65535, 0, 5, 5], dtype=np.uint16)
    path = write_shard(tmp_path / "fineweb_train_000000.bin", tokens)
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + 2 * tokens.size
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header[:3].tolist() == [SHARD_MAGIC, 1, tokens.size] and not header[3:].any()
    assert raw[HEADER_BYTES:] == tokens.astype("<u2").tobytes()

    loaded = read_shard(path)
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.uint16
    assert not loaded.flags.writeable
    np.testing.assert_array_equal(loaded, tokens)
    assert read_header(path)["num_tokens"] == tokens.size


def test_write_accepts_wider_ints_and_rejects_ids_over_uint16(tmp_path):
    write_shard(tmp_path / "a.bin", np.array([0, 1023], dtype=np.int64))
    np.testing.assert_array_equal(read_shard(tmp_path / "a.bin"), [0, 1023])
    with pytest.raises(ShardError, match=r"b\.bin.*65536"):
        write_shard(tmp_path / "b.bin", np.array([3, 65536]))
    with pytest.raises(ShardError, match="-1"):
        write_shard(tmp_path / "c.bin", np.array([-1]))
    assert not (tmp_path / "b.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temp files left behind


def test_empty_shard(tmp_path):
    path = write_shard(tmp_path / "e.bin", np.zeros(0, dtype=np.uint16))
    assert read_shard(path).size == 0
    assert shard_stats(path)["unique_ids"] == 0


def _corrupt(tmp_path, word=None, value=None, truncate_to=None):
    path = write_shard(tmp_path / "bad.bin", np.arange(10, dtype=np.uint16))
    raw = bytearray(path.read_bytes())
    if word is not None:
        raw[4 * word : 4 * word + 4] = np.int32(value).tobytes()
    if truncate_to is not None:
        raw = raw[:truncate_to]
    path.write_bytes(bytes(raw))
    return path


def test_wrong_magic_names_file_expected_and_got(tmp_path):
    path = _corrupt(tmp_path, word=0, value=12345)
    with pytest.raises(ShardError) as err:
        read_shard(path)
    msg = str(err.value)
    assert str(path) in msg and "20240520" in msg and "12345" in msg


def test_wrong_version(tmp_path):
    path = _corrupt(tmp_path, word=1, value=7)
    with pytest.raises(ShardError, match="version") as err:
        read_header(path)
    assert str(path) in str(err.value) and "7" in str(err.value)


def test_size_mismatch_gives_both_numbers(tmp_path):
    path = _corrupt(tmp_path, truncate_to=HEADER_BYTES + 2 * 10 - 3)
    with pytest.raises(ShardError) as err:
        read_shard(path)
    msg = str(err.value)
    assert str(path) in msg and str(HEADER_BYTES + 20 - 3) in msg and str(HEADER_BYTES + 20) in msg

    path = _corrupt(tmp_path, word=2, value=11)  # header claims one token more than stored
    with pytest.raises(ShardError, match="11 tokens"):
        read_shard(path)


def test_file_shorter_than_header(tmp_path):
    path = _corrupt(tmp_path, truncate_to=100)
    with pytest.raises(ShardError, match="shorter than the 1024-byte") as err:
        read_shard(path)
    assert str(path) in str(err.value)
    with pytest.raises(ShardError, match="does not exist"):
        read_shard(tmp_path / "missing.bin")


def test_stats(tmp_path):
    a = write_shard(tmp_path / "a.bin", np.array([7, 7, 7, 2, 9], dtype=np.uint16))
    b = write_shard(tmp_path / "b.bin", np.array([2, 2, 2, 2], dtype=np.uint16))
    s = shard_stats(a)
    assert (s["tokens"], s["bytes"], s["min_id"], s["max_id"], s["unique_ids"]) == (5, HEADER_BYTES + 10, 2, 9, 3)
    assert s["most_common"][0] == (7, 3)
    t = total_stats([a, b])
    assert (t["tokens"], t["unique_ids"], t["most_common"][0]) == (9, 3, (2, 5))
