"""Byte compressors for the artifact. The format is detected from the blob's magic bytes.

``pergroup`` is PR #1855's per-group lrzip compressor (:mod:`pgolf.core.pergroup`): it reads the serialized
artifact object (weights-only), compresses the code matrices by group with the ``lrzip`` binary and the rest
with brotli; decompressing gives the serialized object back byte for byte.

``brotli`` is PR #1394's compressor (https://github.com/openai/parameter-golf/pull/1394): the payload's
bytes are first split into two planes (even-offset bytes, then odd-offset bytes, behind a 5-byte
``BSHF`` header), which puts the low and the high bytes of fp16 values apart, then brotli at quality 11.
A brotli stream has no magic bytes: a blob that is none of the others is read as brotli (brotli's first
byte holds the window size: 0x?b for the default 2^22 window, so it never looks like a zlib header).

Integrity. zlib streams end with an Adler-32 of the payload and xz streams carry a CRC-64, so a damaged blob
of either fails to decompress. zstd and brotli check nothing by default; ``compress(..., checked=True)`` (what
the export writes) adds zstd's frame checksum, and wraps brotli in pgolf's envelope: ``PGCK`` + the CRC-32 of
the brotli stream (4 bytes, little-endian) + the stream. ``checked=False`` gives exactly the bytes of the
official script and the records (zlib and xz bytes are the same either way). A blob without a check (a
record's zstd or brotli artifact) still loads: it is only as safe as its source, and a run folder's
``summary.json`` sha256 (:mod:`pgolf.core.records`) covers it. Every failure to decompress is an
:class:`ArtifactError`, one line naming the file.
"""

from __future__ import annotations

import lzma
import zlib

import numpy as np

class ArtifactError(ValueError):
    """An artifact cannot be read (damaged, truncated, not an artifact); the message names the file."""


DEFAULT_LEVEL = {"zlib": 9, "zstd": 22, "lzma": 9, "brotli": 11}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
CHECKED_MAGIC = b"PGCK"  # pgolf's envelope: magic + CRC-32 (little-endian) of the wrapped stream + stream
SHUFFLE_MAGIC = b"BSHF"
SHUFFLE_STRIDE = 2  # PR #1394's
PERGROUP_MAGIC = b"PGGR"  # pgolf.core.pergroup's container


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


def compress(raw: bytes, method: str = "zlib", level: int = -1, *, checked: bool = False) -> bytes:
    """``raw`` compressed by ``method``. ``checked``: make a zstd or brotli blob self-checking (zstd frame
    checksum; brotli inside pgolf's CRC-32 envelope); zlib and xz check themselves and are unchanged."""
    lvl = DEFAULT_LEVEL[method] if level < 0 and method in DEFAULT_LEVEL else level
    if method == "zlib":
        return zlib.compress(raw, level=lvl)
    if method == "zstd":
        import zstandard  # imported here: only zstd artifacts need the package (a zlib submission runs without it)
        return zstandard.ZstdCompressor(level=lvl, write_checksum=checked).compress(raw)
    if method == "lzma":
        return lzma.compress(raw, preset=lvl | lzma.PRESET_EXTREME)
    if method == "brotli":
        import brotli  # imported here: only brotli artifacts need the package
        blob = brotli.compress(byte_shuffle(raw), quality=lvl)
        return seal(blob) if checked else blob
    if method == "pergroup":
        from pgolf.core import pergroup  # lrzip per group of code matrices (PR #1855's); needs the lrzip binary
        blob = pergroup.compress(raw)
        return seal(blob) if checked else blob
    raise ValueError(f"compressor {method!r}: expected one of {sorted([*DEFAULT_LEVEL, 'pergroup'])}")


def seal(blob: bytes) -> bytes:
    """``blob`` in pgolf's envelope: ``PGCK`` + CRC-32 of ``blob`` (little-endian) + ``blob``."""
    return CHECKED_MAGIC + zlib.crc32(blob).to_bytes(4, "little") + blob


def unseal(blob: bytes, name: str = "artifact") -> bytes:
    """The stream inside pgolf's envelope, after checking its CRC-32; a blob without the envelope unchanged."""
    if not blob.startswith(CHECKED_MAGIC):
        return blob
    if len(blob) < 8:
        raise ArtifactError(f"{name}: damaged artifact: {len(blob)} bytes, shorter than pgolf's 8-byte header")
    body, want = blob[8:], int.from_bytes(blob[4:8], "little")
    got = zlib.crc32(body)
    if got != want:
        raise ArtifactError(f"{name}: damaged artifact: CRC-32 {got:08x} of its {len(body):,}-byte stream, the "
                            f"header says {want:08x}")
    return body


def _zlib_header(blob: bytes) -> bool:
    return len(blob) >= 2 and blob[0] & 0x0F == 8 and ((blob[0] << 8) | blob[1]) % 31 == 0


def detect(blob: bytes) -> str:
    """zstd and xz by magic; zlib by its 2-byte header; anything else is taken for brotli (no magic).
    A blob in pgolf's envelope is named by what it wraps."""
    if blob.startswith(CHECKED_MAGIC):
        return detect(blob[8:])
    if blob.startswith(_ZSTD_MAGIC):
        return "zstd"
    if blob.startswith(_XZ_MAGIC):
        return "lzma"
    if blob.startswith(PERGROUP_MAGIC):
        return "pergroup"
    if _zlib_header(blob):
        return "zlib"
    return "brotli"


def _brotli_decompress(blob: bytes, name: str) -> bytes:
    try:
        import brotli
    except ImportError:
        raise ArtifactError(f"{name}: not zlib, zstd or xz data, and brotli (the remaining choice) is not installed: "
                            "pip install brotli") from None
    try:
        return byte_unshuffle(brotli.decompress(blob))
    except brotli.error:
        raise ArtifactError(f"{name}: damaged or not an artifact: not zlib, zstd, xz or brotli data "
                            f"(unrecognized bytes)") from None


def decompress(blob: bytes, name: str = "artifact", *, pergroup: bool = True) -> bytes:
    """The payload of ``blob`` (format detected); :class:`ArtifactError` naming ``name`` when it is damaged.
    ``pergroup=False`` refuses a per-group blob (a caller that knows it wrote another format; the submission's
    bundle then leaves the per-group reader out)."""
    blob = unseal(blob, name)
    method = detect(blob)
    if method == "pergroup":
        if not pergroup:
            raise ArtifactError(f"{name}: a per-group (lrzip) artifact where another compressor's was expected")
        from pgolf.core import pergroup as groups
        return groups.decompress(blob, name)
    if method == "zstd":
        import zstandard
        try:
            return zstandard.ZstdDecompressor().decompress(blob)
        except zstandard.ZstdError as e:
            raise ArtifactError(f"{name}: damaged {method} artifact ({_one_line(e)})") from None
    if method == "lzma":
        try:
            return lzma.decompress(blob)
        except lzma.LZMAError as e:
            raise ArtifactError(f"{name}: damaged {method} artifact ({_one_line(e)})") from None
    if method == "zlib":
        try:
            return zlib.decompress(blob)
        except zlib.error as e:
            if blob.startswith(_ZLIB_STREAMS):  # a header zlib.compress writes: the stream is damaged
                raise ArtifactError(f"{name}: damaged zlib artifact ({_one_line(e)})") from None
            # pgolf's brotli blobs (window 2^22) start with low nibble 0xb, never 8: this is for foreign blobs
            return _brotli_decompress(blob, name)
    return _brotli_decompress(blob, name)


_ZLIB_STREAMS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")  # zlib.compress's headers, levels 0..9


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
