"""Byte compressors for the artifact. The format is detected from the blob's magic bytes.

``brotli`` is PR #1394's compressor (https://github.com/openai/parameter-golf/pull/1394): the payload's
bytes are first split into two planes (even-offset bytes, then odd-offset bytes, behind a 5-byte
``BSHF`` header), which puts the low and the high bytes of fp16 values apart, then brotli at quality 11.
A brotli stream has no magic bytes: a blob that is none of the others is read as brotli (brotli's first
byte holds the window size: 0x?b for the default 2^22 window, so it never looks like a zlib header).
"""

from __future__ import annotations

import lzma
import zlib

import numpy as np

DEFAULT_LEVEL = {"zlib": 9, "zstd": 22, "lzma": 9, "brotli": 11}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
SHUFFLE_MAGIC = b"BSHF"
SHUFFLE_STRIDE = 2  # PR #1394's


def byte_shuffle(raw: bytes, stride: int = SHUFFLE_STRIDE) -> bytes:
    """``BSHF`` + stride byte + byte planes (bytes at offsets p, p+stride, ... for p = 0..stride-1).
    Input shorter than ``stride`` (or stride < 2) is returned unchanged, without a header."""
    if stride < 2 or len(raw) < stride:
        return raw
    a = np.frombuffer(raw, dtype=np.uint8)
    return SHUFFLE_MAGIC + bytes([stride]) + b"".join(a[p::stride].tobytes() for p in range(stride))


def byte_unshuffle(data: bytes) -> bytes:
    """Inverse of :func:`byte_shuffle`; data without the ``BSHF`` header is returned unchanged."""
    if len(data) < 5 or not data.startswith(SHUFFLE_MAGIC):
        return data
    stride = data[4]
    body = np.frombuffer(data, dtype=np.uint8, offset=5)
    if stride < 2:
        return body.tobytes()
    out = np.empty_like(body)
    start = 0
    for p in range(stride):
        n = len(range(p, body.size, stride))  # plane p's length
        out[p::stride] = body[start:start + n]
        start += n
    return out.tobytes()


def compress(raw: bytes, method: str = "zlib", level: int = -1) -> bytes:
    lvl = DEFAULT_LEVEL[method] if level < 0 and method in DEFAULT_LEVEL else level
    if method == "zlib":
        return zlib.compress(raw, level=lvl)
    if method == "zstd":
        import zstandard  # imported here: only zstd artifacts need the package (a zlib submission runs without it)
        return zstandard.ZstdCompressor(level=lvl).compress(raw)
    if method == "lzma":
        return lzma.compress(raw, preset=lvl | lzma.PRESET_EXTREME)
    if method == "brotli":
        import brotli  # imported here: only brotli artifacts need the package
        return brotli.compress(byte_shuffle(raw), quality=lvl)
    raise ValueError(f"compressor {method!r}: expected one of {sorted(DEFAULT_LEVEL)}")


def _zlib_header(blob: bytes) -> bool:
    return len(blob) >= 2 and blob[0] & 0x0F == 8 and ((blob[0] << 8) | blob[1]) % 31 == 0


def detect(blob: bytes) -> str:
    """zstd and xz by magic; zlib by its 2-byte header; anything else is taken for brotli (no magic)."""
    if blob.startswith(_ZSTD_MAGIC):
        return "zstd"
    if blob.startswith(_XZ_MAGIC):
        return "lzma"
    if _zlib_header(blob):
        return "zlib"
    return "brotli"


def _brotli_decompress(blob: bytes) -> bytes:
    try:
        import brotli
    except ImportError:
        raise ValueError("artifact: not zlib, zstd or xz data, and brotli (the remaining choice) is not installed: "
                         "pip install brotli") from None
    try:
        return byte_unshuffle(brotli.decompress(blob))
    except brotli.error:
        raise ValueError("artifact: not zlib, zstd, xz or brotli data (unrecognized bytes)") from None


def decompress(blob: bytes) -> bytes:
    method = detect(blob)
    if method == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().decompress(blob)
    if method == "lzma":
        return lzma.decompress(blob)
    if method == "zlib":
        try:
            return zlib.decompress(blob)
        except zlib.error:  # defensive: pgolf's brotli blobs (window 2^22) start with low nibble 0xb, never 8
            return _brotli_decompress(blob)
    return _brotli_decompress(blob)
