"""Dataset identity and the checks that keep a run from training on the wrong data without a word.

**Identity** (``dataset_sha256``, recorded in the run folder's ``dataset.json``, ``summary.json`` and
``checkpoint.pt``):

- a folder with a pgolf manifest (``pgolf data build`` or ``pgolf data fetch`` wrote it): the SHA-256 of
  the ``manifest.json`` bytes. The manifest lists every shard's and the tokenizer's SHA-256 and the
  vocabulary size, and holds nothing that varies between identical builds, so an identical rebuild keeps
  the identity and any change of a shard, the tokenizer or the shard list changes it;
- a folder without one (shards copied by hand, an official download made before ``fetch`` wrote
  manifests): the SHA-256 of the JSON ``{"rule": NO_MANIFEST_RULE, "shards": [[relative path, bytes,
  header token count], ...] (sorted), "tokenizer_sha256": ...}`` over the shards the run uses. It covers
  the shard list, their sizes and the tokenizer, not the shard contents; the run log says so.

**Checks before training** (:func:`verify_dataset`; each error names the file):

- every shard's header (magic, version, token count) and its file size against the header;
- the tokenizer's SHA-256 against the manifest's (a different tokenizer of the same size gives other ids
  and a wrong val_bpb), the manifest's vocabulary size against ``model.vocab_size``;
- every shard must be listed in the manifest with the same size and token count, and the vocabulary size
  and tokenizer SHA-256 recorded for it must be the dataset's (a shard of another vocabulary mixed in);
- token ids below the vocabulary size: the manifest records each shard's largest id at build/fetch time,
  so this costs nothing; shards read in full here (below) get it computed; train shards of a folder
  without a recorded value are checked by :class:`~pgolf.core.data.loader.TokenStream` chunk by chunk as it
  reads them (one ``max`` over tokens that are read anyway);
- contents: val shards are always read in full (evaluation reads them all anyway) and train shards when
  they total at most :data:`FULL_CHECK_MAX_BYTES`; what is read is hashed and compared with the manifest.
  Bigger train sets (the full FineWeb export is ~16 GB, ~10-30 s to hash on every start) are checked by
  header, size and token count against the manifest only, and ``dataset.json`` says ``train_hashed: false``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pgolf.core.data.shards import HEADER_BYTES, TOKEN_DTYPE, ShardError, read_header
from pgolf.core.data.tokenizer import atomic_write_bytes

BUILT_MANIFEST = "pgolf-dataset"  # format of a manifest written by pgolf.data.build
FETCHED_MANIFEST = "pgolf-fetch"  # format of a manifest written by pgolf.data.fetch
MANIFEST_NAME = "manifest.json"
FULL_CHECK_MAX_BYTES = 2 << 30  # train shards up to this total are hashed before every run (~1-3 s)
MANIFEST_RULE = "sha256 of manifest.json (lists the sha256 of every shard and of the tokenizer)"
NO_MANIFEST_RULE = ("no manifest.json: sha256 of JSON {rule, shards: [[relative path, bytes, header tokens]] sorted, "
                    "tokenizer_sha256}; shard contents not covered")
_BLOCK = 1 << 20  # even, so every block after the header holds whole uint16 tokens


class DatasetMismatchError(ValueError):
    """The data are not the data the manifest, the model or the checkpoint expects; the message names both sides."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def scan_shard(path: str | Path) -> tuple[str, int | None]:
    """``(sha256, largest token id or None if empty)`` of a shard, read once; the header is validated first."""
    read_header(path)
    h = hashlib.sha256()
    top = -1
    with Path(path).open("rb") as f:
        h.update(f.read(HEADER_BYTES))
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
            top = max(top, int(np.frombuffer(block, dtype=TOKEN_DTYPE).max()))
    return h.hexdigest(), (top if top >= 0 else None)


def shard_entry(path: Path, vocab_size: int | None, tokenizer_sha256: str) -> dict:
    """A manifest ``files`` entry for a shard: size, checksum, token count, largest id, and its vocabulary."""
    sha, top = scan_shard(path)
    return {"bytes": path.stat().st_size, "sha256": sha, "tokens": read_header(path)["num_tokens"],
            "max_token_id": top, "vocab_size": vocab_size, "tokenizer_sha256": tokenizer_sha256}


def write_manifest(path: Path, manifest: dict) -> bytes:
    """Write ``manifest`` as indented JSON atomically; return the bytes (their sha256 is the identity)."""
    data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    atomic_write_bytes(path, data)
    return data


def is_pgolf_manifest(manifest: object) -> bool:
    return (isinstance(manifest, dict) and manifest.get("format") in (BUILT_MANIFEST, FETCHED_MANIFEST)
            and isinstance(manifest.get("files"), dict))


@dataclass(frozen=True)
class DatasetIdentity:
    """What a run records about its data (``dataset.json``); ``sha256`` is the identity."""

    sha256: str
    path: str  # the dataset folder
    manifest: str | None  # its pgolf manifest.json, None without one
    rule: str  # how sha256 was computed
    tokenizer_path: str
    tokenizer_sha256: str
    vocab_size: int
    train_shards: int
    val_shards: int
    train_hashed: bool  # every train shard's contents were hashed and compared with the manifest
    ids_checked_as_read: int  # train shards whose token range the stream checks while reading them
    unigram_val_bpb: float | None = None  # the manifest's unigram baseline of the validation split, if any

    def record(self) -> dict:
        return {"dataset_sha256": self.sha256, **{k: v for k, v in asdict(self).items() if k != "sha256"}}

    def log_lines(self) -> list[str]:
        lines = [f"dataset:{self.path} dataset_sha256:{self.sha256} manifest:{int(self.manifest is not None)} "
                 f"train_hashed:{int(self.train_hashed)}"]
        if self.manifest is None:
            lines.append(f"dataset_warning: no pgolf manifest.json in {self.path}; identity = {self.rule}")
        if self.ids_checked_as_read:
            lines.append(f"dataset_note: token ids of {self.ids_checked_as_read} train shard(s) have no recorded "
                         "maximum; they are checked as the stream reads them")
        return lines


def identity_sha256(ds, tokenizer_sha256: str | None = None) -> tuple[str, str]:
    """``(dataset_sha256, rule)`` of ``ds`` (a :class:`~pgolf.core.data.loader.Dataset`), reading its manifest or
    its shard headers and tokenizer, never the shards' contents: what :func:`verify_dataset` records, for callers
    that need the identity before a run (the ablation cache's run key). ``tokenizer_sha256``: already computed."""
    root = Path(ds.root)
    manifest_path = root / MANIFEST_NAME
    if manifest_path.is_file():
        raw = manifest_path.read_bytes()
        if is_pgolf_manifest(json.loads(raw)):
            return hashlib.sha256(raw).hexdigest(), MANIFEST_RULE
    headers = {p: read_header(p) for p in [*ds.train_files, *ds.val_files]}  # a shard in both splits: once
    listing = sorted([_relative(root, p), h["file_bytes"], h["num_tokens"]] for p, h in headers.items())
    tok_sha = tokenizer_sha256 or sha256_file(ds.tokenizer_path)
    blob = json.dumps({"rule": NO_MANIFEST_RULE, "shards": listing, "tokenizer_sha256": tok_sha}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest(), NO_MANIFEST_RULE


def verify_dataset(ds, vocab_size: int) -> DatasetIdentity:
    """Check ``ds`` (a :class:`~pgolf.core.data.loader.Dataset`) against its manifest and ``vocab_size``; see the module doc."""
    root = Path(ds.root)
    manifest_path = root / MANIFEST_NAME
    raw = manifest_path.read_bytes() if manifest_path.is_file() else None
    manifest = json.loads(raw) if raw is not None else None
    if not is_pgolf_manifest(manifest):
        manifest = None
    tok_sha = sha256_file(ds.tokenizer_path)
    shards = [(p, "train") for p in ds.train_files] + [(p, "val") for p in ds.val_files]
    headers = {p: read_header(p) for p, _ in shards}  # ShardError names the file
    if manifest is not None:
        _check_manifest_tokenizer(manifest, manifest_path, root, Path(ds.tokenizer_path), tok_sha, vocab_size)
    train_bytes = sum(headers[p]["file_bytes"] for p in ds.train_files)
    hash_train = train_bytes <= FULL_CHECK_MAX_BYTES
    as_read = 0
    for path, split in shards:
        entry = _manifest_entry(manifest, manifest_path, root, path, headers[path], tok_sha, vocab_size) if manifest else {}
        if split == "val" or hash_train:
            top = _scan_against_manifest(path, entry, manifest_path)
        elif "max_token_id" in entry:
            top = entry["max_token_id"]
        else:
            as_read += 1
            continue
        if isinstance(top, int) and top >= vocab_size:
            raise ShardError(f"{path}: token id {top} is outside the model's vocabulary [0, {vocab_size}); the shard "
                             "belongs to another tokenizer or is corrupt")
    sha, rule = identity_sha256(ds, tok_sha)
    return DatasetIdentity(sha, str(root), str(manifest_path) if manifest is not None else None, rule,
                           str(ds.tokenizer_path), tok_sha, vocab_size, len(ds.train_files), len(ds.val_files),
                           hash_train and manifest is not None, as_read,
                           (manifest or {}).get("unigram_val_bpb"))


def check_same_dataset(checkpoint: Path, saved_sha256: str | None, saved_path: str | None,
                       current: DatasetIdentity) -> str | None:
    """Refuse to resume ``checkpoint`` on other data; return a note to log if it predates identities."""
    if saved_sha256 is None:
        return f"resume_warning: {checkpoint} has no dataset_sha256 (saved by an older pgolf); the data were not compared"
    if saved_sha256 != current.sha256:
        raise DatasetMismatchError(
            f"{checkpoint}: saved while training on dataset {saved_path} with dataset_sha256 {saved_sha256}, but this "
            f"run's dataset {current.path} has dataset_sha256 {current.sha256}; the data changed (rebuilt, "
            "re-fetched or replaced), so resuming would continue on other tokens. Restore that dataset or start a new run")
    return None


def _relative(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _manifest_tokenizer_sha(manifest: dict) -> str | None:
    if isinstance(manifest.get("tokenizer_sha256"), str):
        return manifest["tokenizer_sha256"]
    entry = manifest["files"].get(manifest.get("tokenizer"))  # manifests of BUILD_FORMAT 1 list it among files
    return entry.get("sha256") if isinstance(entry, dict) else None


def _check_manifest_tokenizer(manifest: dict, manifest_path: Path, root: Path, tokenizer: Path, tok_sha: str,
                              vocab_size: int) -> None:
    want = _manifest_tokenizer_sha(manifest)
    if want is not None and want != tok_sha:
        recorded = root / str(manifest.get("tokenizer", "tokenizer.model"))
        raise DatasetMismatchError(
            f"tokenizer {tokenizer} (sha256 {tok_sha}) is not the tokenizer of this dataset: {manifest_path} records "
            f"{recorded} with sha256 {want}. The shards were tokenized with that one; another tokenizer (even of the "
            "same size) maps ids to other pieces and gives a wrong val_bpb")
    if manifest.get("vocab_size") not in (None, vocab_size):
        raise DatasetMismatchError(
            f"{manifest_path}: the dataset's vocab_size is {manifest['vocab_size']}, but model.vocab_size={vocab_size}")


def _scan_against_manifest(path: Path, entry: dict, manifest_path: Path) -> int | None:
    sha, top = scan_shard(path)
    if entry.get("sha256") not in (None, sha):
        raise DatasetMismatchError(
            f"{path}: contents differ from {manifest_path} (sha256 {sha}, recorded {entry['sha256']}): the shard was "
            "corrupted or replaced after the dataset was built; rebuild or fetch it again")
    return top


def _manifest_entry(manifest: dict, manifest_path: Path, root: Path, path: Path, header: dict, tok_sha: str,
                    vocab_size: int) -> dict:
    name = _relative(root, path)
    entry = manifest["files"].get(name)
    if not isinstance(entry, dict):
        raise DatasetMismatchError(
            f"{path}: shard is not listed in {manifest_path}; it was added after the dataset was built (a shard of "
            "another dataset mixed in?). Remove it, narrow data.train_pattern/val_pattern, or rebuild")
    if (entry.get("bytes"), entry.get("tokens")) != (header["file_bytes"], header["num_tokens"]):
        raise DatasetMismatchError(
            f"{path}: {header['file_bytes']} bytes / {header['num_tokens']} tokens, but {manifest_path} records "
            f"{entry.get('bytes')} bytes / {entry.get('tokens')} tokens: replaced after the dataset was built")
    if entry.get("vocab_size") not in (None, vocab_size):
        raise DatasetMismatchError(
            f"{path}: {manifest_path} records this shard with vocab_size {entry['vocab_size']}, but the dataset and "
            f"the model have {vocab_size}: a shard of another vocabulary is mixed in")
    if entry.get("tokenizer_sha256") not in (None, tok_sha):
        raise DatasetMismatchError(
            f"{path}: {manifest_path} records this shard as tokenized by a tokenizer with sha256 "
            f"{entry['tokenizer_sha256']}, not the dataset's tokenizer (sha256 {tok_sha}): a shard of another "
            "tokenizer is mixed in")
    return entry


def write_folder_manifest(dataset_dir: Path, tokenizer: Path, vocab_size: int | None, provenance: dict) -> Path:
    """Write a :data:`FETCHED_MANIFEST` listing every ``fineweb_*.bin`` in ``dataset_dir`` (each shard hashed once).

    For folders filled by download: their shards and tokenizer then get checksums, largest ids and an identity
    like a built dataset's. A ``manifest.json`` of another kind already there is never overwritten.
    """
    path = Path(dataset_dir) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        try:
            old = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if not (isinstance(old, dict) and old.get("format") == FETCHED_MANIFEST):
            raise DatasetMismatchError(f"{path}: exists and was not written by pgolf data fetch; refusing to overwrite it")
    tok_sha = sha256_file(tokenizer)
    files = {p.name: shard_entry(p, vocab_size, tok_sha) for p in sorted(Path(dataset_dir).glob("fineweb_*.bin"))}
    manifest = {"format": FETCHED_MANIFEST, **provenance, "vocab_size": vocab_size,
                "tokenizer": _relative(Path(dataset_dir), Path(tokenizer)), "tokenizer_sha256": tok_sha, "files": files}
    write_manifest(path, manifest)
    return path
