"""Per-group compression, PR #1855's ``COMPRESSOR=pergroup`` (https://github.com/openai/parameter-golf/tree/main/
records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611), as a compressor of
pgolf's serialized artifact object (``export.compressor=pergroup``).

The int8 code matrices of the same kind are concatenated across layers and each group is compressed on its own
by ``lrzip -z -L 9`` (ZPAQ, the record's command): the embedding ``tok_emb.weight`` and the six block matrices
``attn.c_q/c_k/c_v/proj.weight``, ``mlp.fc/proj.weight`` of ``blocks.N``. Each matrix enters its group
transposed (column by column); before that the rows of the embedding, ``c_q`` and ``mlp.fc`` are put in a
greedy nearest-neighbour order (L1 distance, starting at row 0: :func:`similarity_order`, the record's
``_similarity_sort_l1``), and the permutation is stored. Everything else (scales, float tensors, LQER factors,
int8 gates, bit-packed codes, the manifest) is the rest of pgolf's artifact object, ``torch.save``d and
compressed by brotli-11 (window 2^24), as the record's remainder; the permutations are brotli-11 too.

Container: ``PGGR`` + u32 stream count + u32 length per stream + the streams (the record's ``PGRP`` layout under
its own magic, so a record's artifact is never mistaken for pgolf's): stream 0 the rest, stream 1 the
permutations (uint16 per row, uint32 above 65,536 rows), then one lrzip stream per group in the manifest's
order. :func:`decompress` gives back the serialized object byte for byte. The rest is read with the
weights-only loader; lrzip runs as a subprocess on files in a private temporary folder. lrzip's own header
carries an MD5 of each group; pgolf's CRC-32 envelope (``compress(..., checked=True)``) covers the whole blob.

lrzip is a program, not a Python package: without it on ``PATH`` export and load stop with one line saying
how to install it (``apt-get install lrzip``).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from pgolf.core.compress import PERGROUP_MAGIC as MAGIC
from pgolf.core.compress import ArtifactError
TOP_GROUPS = ("tok_emb.weight",)
BLOCK_GROUPS = ("attn.c_k.weight", "attn.c_q.weight", "attn.c_v.weight", "attn.proj.weight",
                "mlp.fc.weight", "mlp.proj.weight")
SORTED_GROUPS = frozenset({"tok_emb.weight", "attn.c_q.weight", "mlp.fc.weight"})  # the record's _SIMSORT_KEYS
LRZIP_COMPRESS = ("-z", "-L", "9")  # ZPAQ, level 9 (the record's)
INSTALL_HINT = "install it (apt-get install lrzip)"


class PergroupError(ArtifactError):
    """lrzip is missing or failed; one line."""


def lrzip_path(what: str) -> str:
    """The lrzip binary, or :class:`PergroupError` saying ``what`` needs it and how to install it."""
    path = shutil.which("lrzip")
    if path is None:
        raise PergroupError(f"{what} needs the lrzip binary, which is not on PATH; {INSTALL_HINT}")
    return path


def is_pergroup(blob: bytes) -> bool:
    return blob[:4] == MAGIC


# -- row order -------------------------------------------------------------------------------------------

def similarity_order(matrix: np.ndarray) -> np.ndarray:
    """Greedy L1 nearest-neighbour order of ``matrix``'s rows from row 0; ties go to the lowest row index (the
    record's ``_similarity_sort_l1``: its float32 sums of integer distances are exact, so the order is the same).
    The remaining rows are kept in ascending order and compacted whenever half of them are used."""
    n = matrix.shape[0]
    rest = np.arange(n)
    rows = matrix.astype(np.int16)
    alive = np.ones(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    order[0], cur = 0, rows[0]
    alive[0] = False
    live = n - 1
    for i in range(1, n):
        if live * 2 < len(rest):  # compact: drop the used rows, keep ascending order
            rest, rows, alive = rest[alive], rows[alive], np.ones(live, dtype=bool)
        d = np.abs(rows - cur).sum(axis=1, dtype=np.int64)
        d[~alive] = np.iinfo(np.int64).max
        j = int(np.argmin(d))
        order[i], cur = rest[j], rows[j]
        alive[j] = False
        live -= 1
    return order


def _perm_dtype(rows: int) -> type:
    return np.uint16 if rows <= 1 << 16 else np.uint32


# -- lrzip -----------------------------------------------------------------------------------------------

def _lrzip(args: tuple[str, ...], data: bytes, what: str) -> bytes:
    exe = lrzip_path(what)
    with tempfile.TemporaryDirectory(prefix="pgolf_lrzip_") as d:
        src, dst = os.path.join(d, "in"), os.path.join(d, "out")
        with open(src, "wb") as f:
            f.write(data)
        done = subprocess.run([exe, "-q", *args, "-o", dst, src], capture_output=True)
        if done.returncode != 0 or not os.path.isfile(dst):
            msg = " ".join((done.stderr or done.stdout).decode(errors="replace").split())[:200]
            raise PergroupError(f"{what}: lrzip exited with status {done.returncode} ({msg or 'no message'})")
        with open(dst, "rb") as f:
            return f.read()


def _parallel(fn, jobs: list) -> list:
    if len(jobs) <= 1:
        return [fn(*j) for j in jobs]
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda j: fn(*j), jobs))


# -- grouping --------------------------------------------------------------------------------------------

def group_of(name: str) -> tuple[str, int] | None:
    """``(group, layer)`` of a tensor name (``blocks.3.mlp.fc.weight`` -> ``("mlp.fc.weight", 3)``), or None."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        key = ".".join(parts[2:])
        return (key, int(parts[1])) if key in BLOCK_GROUPS else None
    return (name, 0) if name in TOP_GROUPS else None


def _groups(obj: dict[str, Any]) -> dict[str, list[str]]:
    """Group -> tensor names (by layer) of the int8 code matrices of ``obj['quantized']`` that are not bit-packed."""
    packed = obj.get("packed", {})
    found: dict[str, list[tuple[int, str]]] = {}
    for name, q in obj.get("quantized", {}).items():
        g = group_of(name)
        if g and isinstance(q, torch.Tensor) and q.dtype == torch.int8 and q.ndim == 2 and name not in packed:
            found.setdefault(g[0], []).append((g[1], name))
    order = [*TOP_GROUPS, *BLOCK_GROUPS]
    return {g: [n for _, n in sorted(found[g])] for g in order if g in found}


def _save(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def pack(obj: dict[str, Any]) -> bytes:
    """pgolf's artifact object as a per-group blob (see the module docstring)."""
    import brotli

    lrzip_path("export.compressor=pergroup")
    groups = _groups(obj)
    grouped = {n for names in groups.values() for n in names}
    quantized = obj["quantized"]
    perms, streams = [], []
    for g, names in groups.items():
        parts = []
        for n in names:
            arr = quantized[n].numpy()
            if g in SORTED_GROUPS:
                order = similarity_order(arr)
                perms.append(order.astype(_perm_dtype(arr.shape[0])).tobytes())
                arr = arr[order]
            parts.append(np.ascontiguousarray(arr.T).tobytes())
        streams.append(b"".join(parts))
    lrz = _parallel(lambda data, g: _lrzip(LRZIP_COMPRESS, data, f"lrzip of group {g}"),
                    [(s, g) for s, g in zip(streams, groups)])
    stub = {n: (None if n in grouped else q) for n, q in quantized.items()}  # keeps the key order
    rest = {k: (stub if k == "quantized" else v) for k, v in obj.items()}
    manifest = {"groups": {g: [[n, *quantized[n].shape] for n in names] for g, names in groups.items()}}
    rest_blob = brotli.compress(_save({"obj": rest, "pergroup": manifest}), quality=11, lgwin=24)
    perm_blob = brotli.compress(b"".join(perms), quality=11) if perms else b""
    out = [rest_blob, perm_blob, *lrz]
    return MAGIC + struct.pack(f"<{len(out) + 1}I", len(out), *map(len, out)) + b"".join(out)


def unpack(blob: bytes, name: str = "artifact") -> dict[str, Any]:
    """The artifact object of a per-group blob; :class:`~pgolf.core.compress.ArtifactError` naming ``name`` when
    it is damaged or malformed, :class:`PergroupError` when lrzip is missing."""
    import brotli

    from pgolf.core.safe_load import load_plain

    def bad(why: str) -> ArtifactError:
        return ArtifactError(f"{name}: damaged per-group artifact: {why}")

    if len(blob) < 8 or not is_pergroup(blob):
        raise bad("no PGGR header")
    (n,) = struct.unpack_from("<I", blob, 4)
    if n < 2 or len(blob) < 8 + 4 * n:
        raise bad(f"{n} streams in a {len(blob):,}-byte blob")
    lengths = struct.unpack_from(f"<{n}I", blob, 8)
    off, streams = 8 + 4 * n, []
    for ln in lengths:
        streams.append(blob[off:off + ln])
        off += ln
    if off != len(blob):
        raise bad(f"the stream lengths add up to {off:,} bytes, the blob has {len(blob):,}")
    try:
        rest_raw = brotli.decompress(streams[0])
        perms = brotli.decompress(streams[1]) if streams[1] else b""
    except brotli.error:
        raise bad("its brotli streams do not decompress") from None
    state = load_plain(io.BytesIO(rest_raw), name=name, kind="per-group artifact")
    try:
        obj, groups = state["obj"], state["pergroup"]["groups"]
        quantized = obj["quantized"]
        items = list(groups.items())
    except (TypeError, KeyError, AttributeError):
        raise bad("its manifest is not pgolf's") from None
    if len(items) != n - 2:
        raise bad(f"{len(items)} groups in the manifest, {n - 2} lrzip streams")
    for g, entries in items:
        if not (isinstance(entries, list) and all(
                isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)
                and all(isinstance(x, int) and x > 0 for x in e[1:]) for e in entries)):
            raise bad(f"group {g!r}: the manifest's entries are not [name, rows, cols]")
    lrzip_path(f"{name}: a per-group artifact")
    raw = _parallel(lambda data, g: _lrzip(("-d", "-f"), data, f"{name}: lrzip of group {g}"),
                    [(streams[2 + i], g) for i, (g, _) in enumerate(items)])
    poff = 0
    for (g, entries), data in zip(items, raw):
        codes = np.frombuffer(data, dtype=np.int8)
        coff = 0
        for tname, rows, cols in entries:
            if quantized.get(tname, 0) is not None or coff + rows * cols > codes.size:
                raise bad(f"group {g!r}: tensor {tname!r} does not fit the manifest")
            arr = codes[coff:coff + rows * cols].reshape(cols, rows).T
            coff += rows * cols
            if g in SORTED_GROUPS:
                dt = np.dtype(_perm_dtype(rows))
                perm = np.frombuffer(perms, dtype=dt, count=rows, offset=poff).astype(np.int64) \
                    if poff + rows * dt.itemsize <= len(perms) else None
                poff += rows * dt.itemsize
                if perm is None or not np.array_equal(np.sort(perm), np.arange(rows)):
                    raise bad(f"the row order of {tname!r} is not a permutation of {rows} rows")
                out = np.empty_like(arr)
                out[perm] = arr
                arr = out
            quantized[tname] = torch.from_numpy(np.ascontiguousarray(arr))
        if coff != codes.size:
            raise bad(f"group {g!r} holds {codes.size:,} codes, the manifest {coff:,}")
    if poff != len(perms):
        raise bad(f"{len(perms):,} bytes of row orders, the manifest needs {poff:,}")
    missing = [k for k, v in quantized.items() if v is None]
    if missing:
        raise bad(f"tensor {missing[0]!r} is in no group")
    return obj


def compress(raw: bytes) -> bytes:
    """The per-group blob of a serialized artifact object (pgolf's own bytes: read weights-only)."""
    from pgolf.core.safe_load import load_plain

    return pack(load_plain(io.BytesIO(raw), name="artifact object", kind="pgolf artifact object"))


def decompress(blob: bytes, name: str = "artifact") -> bytes:
    """The serialized artifact object of a per-group blob (the bytes :func:`compress` was given)."""
    return _save(unpack(blob, name))


def group_sizes(blob: bytes) -> dict[str, int]:
    """Bytes per stream of a per-group blob (sealed or not): ``rest``, ``perms`` and each group (for reports)."""
    import brotli

    from pgolf.core.compress import unseal
    from pgolf.core.safe_load import load_plain
    blob = unseal(blob)
    (n,) = struct.unpack_from("<I", blob, 4)
    lengths = struct.unpack_from(f"<{n}I", blob, 8)
    rest = load_plain(io.BytesIO(brotli.decompress(blob[8 + 4 * n:8 + 4 * n + lengths[0]])),
                      name="artifact", kind="per-group artifact")
    return {"rest": lengths[0], "perms": lengths[1], **dict(zip(rest["pergroup"]["groups"], lengths[2:]))}
