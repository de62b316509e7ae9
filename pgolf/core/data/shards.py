"""The challenge shard format, read and written byte-compatibly with openai/parameter-golf.

A shard is a header of 256 little-endian int32 words followed by little-endian uint16 token ids:
word 0 is the magic 20240520, word 1 the version 1, word 2 the token count; the rest are zero.
The file size is therefore exactly ``1024 + 2 * count`` bytes, which every reader checks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_WORDS = 256
HEADER_DTYPE = np.dtype("<i4")
TOKEN_DTYPE = np.dtype("<u2")
HEADER_BYTES = HEADER_WORDS * HEADER_DTYPE.itemsize  # 1024
MAX_TOKENS_PER_SHARD = 2**31 - 1  # the count is an int32


class ShardError(ValueError):
    """A shard file is malformed; the message names the file and what is wrong."""


def write_shard(path: str | Path, tokens: np.ndarray) -> Path:
    """Write ``tokens`` as a shard at ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ShardError(f"{path}: tokens must be a 1-D array, got shape {tokens.shape}")
    if tokens.size > MAX_TOKENS_PER_SHARD:
        raise ShardError(f"{path}: {tokens.size} tokens do not fit the int32 count of one shard")
    if tokens.dtype != np.uint16 and tokens.size:
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ShardError(f"{path}: tokens must be integers, got dtype {tokens.dtype}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= 2**16:
            bad = lo if lo < 0 else hi
            raise ShardError(f"{path}: token id {bad} does not fit uint16 (ids must be in [0, 65535])")
    header = np.zeros(HEADER_WORDS, dtype=HEADER_DTYPE)
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.tobytes())
            f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_header(path: str | Path) -> dict:
    """Validate a shard's header and size; return ``{"magic", "version", "num_tokens", "file_bytes"}``."""
    path = Path(path)
    try:
        file_bytes = path.stat().st_size
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file does not exist") from None
    if file_bytes < HEADER_BYTES:
        raise ShardError(f"{path}: file is {file_bytes} bytes, shorter than the {HEADER_BYTES}-byte shard header")
    header = np.fromfile(path, dtype=HEADER_DTYPE, count=HEADER_WORDS)
    magic, version, num_tokens = int(header[0]), int(header[1]), int(header[2])
    if magic != SHARD_MAGIC:
        raise ShardError(f"{path}: wrong magic number: expected {SHARD_MAGIC}, got {magic} (not a challenge shard)")
    if version != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version: expected {SHARD_VERSION}, got {version}")
    if num_tokens < 0:
        raise ShardError(f"{path}: negative token count {num_tokens} in header")
    expected = HEADER_BYTES + num_tokens * TOKEN_DTYPE.itemsize
    if file_bytes != expected:
        raise ShardError(
            f"{path}: file size {file_bytes} bytes does not match the header's {num_tokens} tokens "
            f"(expected {HEADER_BYTES} + 2*{num_tokens} = {expected} bytes; truncated or corrupt)"
        )
    return {"magic": magic, "version": version, "num_tokens": num_tokens, "file_bytes": file_bytes}


def read_shard(path: str | Path) -> np.ndarray:
    """The tokens of a shard as a read-only uint16 memory map (no copy; validated header first)."""
    num_tokens = read_header(path)["num_tokens"]
    if num_tokens == 0:  # np.memmap refuses empty maps
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(num_tokens,))


def shard_stats(path: str | Path, top_k: int = 10) -> dict:
    """Summary numbers for ``pgolf data inspect``: counts, id range, distinct ids, most common ids."""
    header = read_header(path)
    out = _summarize(np.bincount(read_shard(path), minlength=1), top_k)
    return {"path": str(path), "tokens": header["num_tokens"], "bytes": header["file_bytes"], **out}


def total_stats(paths: list[str | Path], top_k: int = 10) -> dict:
    """The same numbers as :func:`shard_stats`, exact over the union of several shards."""
    counts = np.zeros(1, dtype=np.int64)
    total_bytes = 0
    for path in paths:
        total_bytes += read_header(path)["file_bytes"]
        c = np.bincount(read_shard(path), minlength=1)
        if c.size > counts.size:
            c[: counts.size] += counts
            counts = c
        else:
            counts[: c.size] += c
    return {"shards": len(paths), "tokens": int(counts.sum()), "bytes": total_bytes, **_summarize(counts, top_k)}


def _summarize(counts: np.ndarray, top_k: int) -> dict:
    nonzero = np.flatnonzero(counts)
    order = nonzero[np.argsort(-counts[nonzero], kind="stable")][:top_k]
    return {
        "min_id": int(nonzero[0]) if nonzero.size else None,
        "max_id": int(nonzero[-1]) if nonzero.size else None,
        "unique_ids": int(nonzero.size),
        "most_common": [(int(i), int(counts[i])) for i in order],
    }
