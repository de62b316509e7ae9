"""Byte compressors for the artifact. The format is detected from the blob's magic bytes."""

from __future__ import annotations

import lzma
import zlib

import zstandard

DEFAULT_LEVEL = {"zlib": 9, "zstd": 22, "lzma": 9}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"


def compress(raw: bytes, method: str = "zlib", level: int = -1) -> bytes:
    lvl = DEFAULT_LEVEL[method] if level < 0 else level
    if method == "zlib":
        return zlib.compress(raw, level=lvl)
    if method == "zstd":
        return zstandard.ZstdCompressor(level=lvl).compress(raw)
    if method == "lzma":
        return lzma.compress(raw, preset=lvl | lzma.PRESET_EXTREME)
    raise ValueError(f"compressor {method!r}: expected one of {sorted(DEFAULT_LEVEL)}")


def detect(blob: bytes) -> str:
    if blob.startswith(_ZSTD_MAGIC):
        return "zstd"
    if blob.startswith(_XZ_MAGIC):
        return "lzma"
    if len(blob) >= 2 and blob[0] & 0x0F == 8 and ((blob[0] << 8) | blob[1]) % 31 == 0:
        return "zlib"
    raise ValueError("artifact: not zlib, zstd or xz data (unrecognized magic bytes)")


def decompress(blob: bytes) -> bytes:
    method = detect(blob)
    if method == "zstd":
        return zstandard.ZstdDecompressor().decompress(blob)
    if method == "lzma":
        return lzma.decompress(blob)
    return zlib.decompress(blob)
