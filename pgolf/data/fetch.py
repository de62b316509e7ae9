"""Download the official cached FineWeb export from the Hugging Face dataset ``willdepueoai/parameter-golf``.

``sp4096`` and ``sp8192`` come from ``kevclark/parameter-golf`` (:data:`VARIANT_REPO_IDS`), the export that the
2026-04-05 record (https://github.com/openai/parameter-golf/pull/1394, sp8192) and its parent
(https://github.com/openai/parameter-golf/pull/1218, sp4096) document: the same layout and file names
(``fineweb10B_sp8192/``, ``tokenizers/fineweb_8192_bpe.model``), read by the official script with
``MATCHED_FINEWEB_REPO_ID=kevclark/parameter-golf``.

Mirrors ``data/cached_challenge_fineweb.py`` of openai/parameter-golf: the export's
``manifest.json`` (``<remote_root>/manifest.json``) names each dataset's shard counts and its
tokenizer files; shards live at ``<remote_root>/datasets/<dataset>/fineweb_{val,train}_NNNNNN.bin``
and tokenizers at ``<remote_root>/tokenizers/``. Locally (``out_root``, default ``pgolf.core.paths.data_root()``)
they land in the official layout: ``manifest.json``, ``datasets/fineweb10B_sp1024/``, ``tokenizers/``.
All validation shards and the first ``train_shards`` training shards are fetched.

Files go through ``hf_hub_download`` (its cache, then hard-linked or copied to a temp file beside the
destination, checked, and renamed into place). The check is against the hub's own word on the file, asked by a
HEAD request: its size and its hash (``X-Linked-Etag``, the SHA-256 of an LFS file, or the ``ETag`` of a file kept
in git, its git blob SHA-1). A download that differs is removed from the cache and fetched once more; if it differs
again the fetch stops with one line naming the file, the URL, what was expected and what came, and nothing is
written at the destination. A failed request (an HTTP error status, a timeout, a dropped connection) is one line
naming the file, the URL and the status or what broke. A file already in place is skipped if it checks out: shards must have a
valid header, a size matching it, and the token count the manifest implies (``shard_size`` for
every shard but the last of a split; val shards summing to ``tokens_val``); a tokenizer ``.model``
must load. A file that fails is fetched again. Within one call huggingface_hub resumes a broken
transfer with an HTTP Range request; a partial download left by a killed process is discarded by
huggingface_hub (>= 1.x) and that one file starts over. The endpoint follows ``HF_ENDPOINT`` or
the ``endpoint`` argument, and the cache ``HF_HOME``/``HF_HUB_CACHE`` or ``cache_dir``.

Last, the dataset folder gets a pgolf ``manifest.json`` (format ``pgolf-fetch``) listing every
``fineweb_*.bin`` there with its SHA-256, token count and largest id, plus the tokenizer's SHA-256 and
vocabulary size, so a fetched dataset has checksums and an identity like a built one
(:mod:`pgolf.core.data.identity`). Every shard is hashed on each fetch (~1 s per 100M-token shard).

Both exports put their ``manifest.json`` at the same local path, so a manifest already there counts only if it is
byte for byte this repo's cached copy; otherwise (another repo's, as after fetching sp1024 and then sp8192, or the
cache was cleared) it is downloaded again. (The record's README deletes ``data/manifest.json`` by hand for this.)

The manifest is remote input: every path it names is checked here (:func:`check_remote_path`) before
the first download, rather than trusting huggingface_hub to refuse paths that leave ``out_root``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Callable

from pgolf.core import paths
from pgolf.core.data.identity import sha256_file, write_folder_manifest
from pgolf.core.data.shards import ShardError, read_header

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
RECORD_REPO_ID = "kevclark/parameter-golf"  # PR #1218 (sp4096) and PR #1394 (sp8192) data
VARIANT_REPO_IDS = {"sp4096": RECORD_REPO_ID, "sp8192": RECORD_REPO_ID}  # every other variant: DEFAULT_REPO_ID
DEFAULT_REMOTE_ROOT = "datasets"


class FetchError(RuntimeError):
    """The export's manifest or a downloaded file is not what was expected."""


@dataclass
class FetchResult:
    dataset_dir: Path
    tokenizer_files: list[Path]
    downloaded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    manifest: Path | None = None  # the pgolf manifest.json written into dataset_dir


def dataset_dir_for_variant(variant: str) -> str:
    """``sp1024`` -> ``fineweb10B_sp1024``; also ``byte260`` (the official naming)."""
    if variant == "byte260" or (variant.startswith("sp") and variant[2:].isdigit()):
        return f"fineweb10B_{variant}"
    raise FetchError(f"unsupported variant {variant!r}; expected sp<VOCAB_SIZE> (e.g. sp1024) or byte260")


def repo_for_variant(variant: str) -> str:
    """The Hugging Face dataset repo that publishes ``variant`` (:data:`VARIANT_REPO_IDS`, else the official one)."""
    return VARIANT_REPO_IDS.get(variant, DEFAULT_REPO_ID)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def check_remote_path(path: object, entry: str) -> str:
    """``path`` if it is a plain relative POSIX path, else a :class:`FetchError` naming the manifest ``entry``.

    Both exports put their ``manifest.json`` at the same local path, so a manifest already there counts only if it is
byte for byte this repo's cached copy; otherwise (another repo's, as after fetching sp1024 and then sp8192, or the
cache was cleared) it is downloaded again. (The record's README deletes ``data/manifest.json`` by hand for this.)

The manifest is remote input: a path that is absolute, climbs with ``..``, uses backslashes or a
    drive letter, or has empty components could place a file outside the destination folder, so it is
    refused here, before anything is downloaded or written."""
    def bad(why: str) -> FetchError:
        return FetchError(f"{entry} = {path!r}: {why}; expected a relative path like 'tokenizers/x.model' "
                          f"inside the export")

    if not isinstance(path, str) or not path.strip():
        raise bad("empty or not a string")
    if "\\" in path or "\0" in path:
        raise bad("contains a backslash or NUL")
    if path.startswith("/") or PureWindowsPath(path).drive:
        raise bad("absolute path or drive letter")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise bad("empty, '.' or '..' path component")
    return path


def local_path_for_remote(remote_path: str, remote_root: str, out_root: Path) -> Path:
    """Where a repo file lands: the remote root prefix is dropped, the rest of the path kept."""
    parts = Path(remote_path).parts
    root_parts = Path(remote_root).parts if remote_root.strip("/") else ()
    if root_parts and parts[: len(root_parts)] == root_parts:
        parts = parts[len(root_parts) :]
    return out_root.joinpath(*parts)


@dataclass(frozen=True)
class HubFile:
    """What the hub says a file is: its URL, size and the hash in its ``X-Linked-Etag`` (LFS files: the
    SHA-256 of the bytes) or ``ETag`` (files kept in git: the git blob SHA-1)."""

    url: str
    size: int | None
    etag: str | None

    def digest_kind(self) -> str | None:
        if self.etag and re.fullmatch(r"[0-9a-f]{64}", self.etag):
            return "sha256"
        if self.etag and re.fullmatch(r"[0-9a-f]{40}", self.etag):
            return "git-sha1"
        return None  # another ETag form: only the size can be checked

    def mismatch(self, path: Path) -> str | None:
        """Why ``path``'s bytes are not this file (None: size and hash match)."""
        size = path.stat().st_size
        if self.size is not None and size != self.size:
            return f"expected {self.size} bytes, got {size}"
        kind = self.digest_kind()
        if kind is None:
            return None
        h = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % size)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return None if h.hexdigest() == self.etag else f"expected {kind} {self.etag}, got {h.hexdigest()}"


def _place(src: Path, dest: Path, hub_file: HubFile, remote_path: str) -> None:
    """Hard-link (or copy) ``src`` to a temp name beside ``dest``, check it against the hub, then rename into
    place: a file that is not the hub's (wrong or missing bytes) never reaches ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        why = hub_file.mismatch(tmp)
        if why:
            raise DownloadMismatch(f"{remote_path}: the download from {hub_file.url} is not the hub's file ({why}); "
                                   f"nothing written to {dest}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class DownloadMismatch(FetchError):
    """The downloaded bytes differ from the size or hash the hub announced."""


def _transport_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(timeout errors, other connection errors) of the HTTP client huggingface_hub uses."""
    timeouts: list[type] = []
    transport: list[type] = []
    for name in ("httpx2", "httpx"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        timeouts.append(mod.TimeoutException)
        transport.append(mod.TransportError)
    return tuple(timeouts), tuple(transport)


def hub_error(exc: BaseException, remote_path: str, url: str) -> FetchError | None:
    """One line for a failed request to the hub, naming the file, the URL and the HTTP status or what broke
    (None: not a network error). huggingface_hub hides a failed HEAD behind "check your connection" (the
    original is its ``__cause__``)."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    timeouts, transport = _transport_errors()
    seen = exc
    while isinstance(seen, (LocalEntryNotFoundError, ValueError)) and seen.__cause__ is not None:
        seen = seen.__cause__
    if isinstance(seen, HfHubHTTPError) and seen.response is not None:
        try:
            where = str(seen.response.request.url)
        except RuntimeError:  # a response built without its request
            where = url
        return FetchError(f"{remote_path}: HTTP {seen.response.status_code} from {where}")
    if isinstance(seen, timeouts):
        return FetchError(f"{remote_path}: no answer from {url} in time ({type(seen).__name__}: {seen}); "
                          "run the same command again to resume")
    if isinstance(seen, transport):
        return FetchError(f"{remote_path}: connection to {url} broke ({type(seen).__name__}: {seen}); "
                          "run the same command again to resume")
    if isinstance(seen, OSError) and "Consistency check failed" in str(seen):
        return FetchError(f"{remote_path}: the download from {url} was cut short ({str(seen).splitlines()[0]}); "
                          "run the same command again to resume")
    if isinstance(seen, LocalEntryNotFoundError):
        return FetchError(f"{remote_path}: cannot reach {url} ({str(seen).splitlines()[0]})")
    return None


class _Downloader:
    def __init__(self, repo_id: str, remote_root: str, out_root: Path, revision, endpoint, cache_dir, result: FetchResult):
        self.repo_id, self.remote_root, self.out_root = repo_id, remote_root, out_root
        self.revision, self.endpoint, self.cache_dir, self.result = revision, endpoint, cache_dir, result

    def get(self, remote_path: str, check: Callable[[Path], None] | None = None) -> Path:
        """Ensure ``remote_path`` is in place and passes ``check`` (which raises on a bad file)."""
        from huggingface_hub import hf_hub_download

        dest = local_path_for_remote(check_remote_path(remote_path, "remote path"), self.remote_root, self.out_root)
        # Lexically inside out_root (symlinks the user placed under it, e.g. to a bigger disk, are followed).
        if not Path(os.path.normpath(dest)).is_relative_to(self.out_root):
            raise FetchError(f"remote path {remote_path!r} would be written to {dest}, outside {self.out_root}")
        if dest.is_file():
            try:
                if check:
                    check(dest)
                self.result.skipped.append(dest)
                return dest
            except (ShardError, FetchError) as exc:
                print(f"pgolf data fetch: {exc}; downloading it again", file=sys.stderr)
        parent, name = Path(remote_path).parent.as_posix(), Path(remote_path).name
        hub_file = self.hub_file(remote_path)
        for attempt in range(2):  # a second, forced download if the cached copy fails a check
            try:
                cached = hf_hub_download(
                    repo_id=self.repo_id,
                    filename=name,
                    subfolder=None if parent in ("", ".") else parent,
                    repo_type="dataset",
                    revision=self.revision,
                    endpoint=self.endpoint,
                    cache_dir=self.cache_dir,
                    force_download=attempt > 0,
                )
            except Exception as exc:
                if (err := hub_error(exc, remote_path, hub_file.url)) is None:
                    raise
                raise err from None
            blob = Path(cached).resolve(strict=True)
            try:
                _place(blob, dest, hub_file, remote_path)
                if check:
                    check(dest)
                break
            except (ShardError, FetchError) as exc:
                if isinstance(exc, DownloadMismatch):
                    blob.unlink(missing_ok=True)  # never served from the cache again
                if attempt:
                    raise
        self.result.downloaded.append(dest)
        return dest

    def hub_file(self, remote_path: str) -> HubFile:
        """The hub's URL, size and hash of ``remote_path`` (a HEAD request)."""
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(self.repo_id, remote_path, repo_type="dataset", revision=self.revision, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT, endpoint=self.endpoint)
        except Exception as exc:
            if (err := hub_error(exc, remote_path, url)) is None:
                raise
            raise err from None
        return HubFile(url=url, size=meta.size, etag=meta.etag)


    def same_as_cached(self, remote_path: str) -> Callable[[Path], None]:
        """A check that a local copy of ``remote_path`` is this repo's cached one (not another export's)."""
        def check(path: Path) -> None:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.repo_id, remote_path, cache_dir=self.cache_dir,
                                            revision=self.revision, repo_type="dataset")
            if not isinstance(cached, str) or Path(cached).read_bytes() != path.read_bytes():
                raise FetchError(f"{path} is not the cached {remote_path} of {self.repo_id} (another export's, or the "
                                 "cache was cleared)")

        return check


def _shard_check(expected_tokens: int | None) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        n = read_header(path)["num_tokens"]
        if expected_tokens is not None and n != expected_tokens:
            raise FetchError(f"{path}: {n} tokens, but the export manifest implies {expected_tokens}")

    return check


def _tokenizer_check(path: Path) -> None:
    if path.stat().st_size == 0:
        raise FetchError(f"{path}: empty file")
    if path.suffix == ".model":
        from pgolf.core.data.tokenizer import TokenizerError, load_tokenizer

        try:
            load_tokenizer(path)
        except TokenizerError as exc:
            raise FetchError(str(exc)) from exc


def _manifest_check(path: Path) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FetchError(f"{path}: not valid JSON ({exc})") from exc


def _expected_counts(files: int, total: int | None, shard_size: int | None) -> list[int | None]:
    """Tokens per shard implied by the manifest: full shards, then the remainder in the last."""
    if not shard_size:
        return [None] * files
    counts: list[int | None] = [shard_size] * files
    if files:
        counts[-1] = total - shard_size * (files - 1) if total is not None else None
    return counts


def fetch(
    variant: str = "sp1024",
    train_shards: int = 1,
    out_root: Path | None = None,
    repo_id: str | None = None,
    remote_root: str = DEFAULT_REMOTE_ROOT,
    revision: str | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    with_docs: bool = False,
) -> FetchResult:
    """Fetch all val shards, the first ``train_shards`` train shards and the tokenizer of ``variant``
    (from ``repo_id``; None: :func:`repo_for_variant`)."""
    if train_shards < 0:
        raise FetchError(f"train_shards must be >= 0, got {train_shards}")
    repo_id = repo_id or repo_for_variant(variant)
    out_root = Path(out_root).expanduser().resolve() if out_root is not None else paths.data_root()
    remote_root = remote_root.strip().strip("/")
    dataset_name = dataset_dir_for_variant(variant)
    result = FetchResult(dataset_dir=out_root / "datasets" / dataset_name, tokenizer_files=[])
    dl = _Downloader(repo_id, remote_root, out_root, revision, endpoint, cache_dir, result)

    manifest_remote = _join(remote_root, "manifest.json")
    same_as_cached = dl.same_as_cached(manifest_remote)

    def manifest_check(path: Path) -> None:
        _manifest_check(path)
        same_as_cached(path)

    manifest_file = dl.get(manifest_remote, manifest_check)
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    entry = next((d for d in manifest.get("datasets", []) if d.get("name") == dataset_name), None)
    if entry is None:
        names = [d.get("name") for d in manifest.get("datasets", [])]
        hint = f"; {variant} is published in {VARIANT_REPO_IDS[variant]}" if variant in VARIANT_REPO_IDS else ""
        raise FetchError(f"dataset {dataset_name} not in {manifest_remote} of {repo_id}; it lists {names}{hint}")
    stats = entry.get("stats") or {}
    try:
        files_train, files_val = int(stats["files_train"]), int(stats["files_val"])
    except (KeyError, TypeError, ValueError):
        raise FetchError(f"{manifest_remote}: dataset {dataset_name} lacks stats.files_train/files_val") from None
    if train_shards > files_train:
        raise FetchError(f"{variant} has {files_train} training shards on {repo_id}, requested {train_shards}")
    tok_name = entry.get("tokenizer_name")
    tok_entry = next((t for t in manifest.get("tokenizers", []) if t.get("name") == tok_name), None)
    if tok_entry is None:
        raise FetchError(f"tokenizer {tok_name!r} of {dataset_name} not in {manifest_remote}")
    shard_size = manifest.get("shard_size")
    val_counts = _expected_counts(files_val, stats.get("tokens_val"), shard_size)
    train_counts = _expected_counts(files_train, stats.get("tokens_train"), shard_size)

    # Every path the manifest supplies is checked before the first download.
    artifacts = [check_remote_path(tok_entry[k], f"{manifest_remote}: tokenizers[name={tok_name!r}].{k}")
                 for k in ("model_path", "vocab_path", "path") if tok_entry.get(k) is not None]
    if not artifacts:
        raise FetchError(f"tokenizer {tok_name!r} in {manifest_remote} names no files")
    if with_docs:
        for name in ("docs_selected.jsonl", "docs_selected.source_manifest.json"):
            dl.get(_join(remote_root, name))
    prefix = _join(remote_root, "datasets", dataset_name)
    for i in range(files_val):
        dl.get(f"{prefix}/fineweb_val_{i:06d}.bin", _shard_check(val_counts[i]))
    for i in range(train_shards):
        dl.get(f"{prefix}/fineweb_train_{i:06d}.bin", _shard_check(train_counts[i]))
    for artifact in artifacts:
        result.tokenizer_files.append(dl.get(_join(remote_root, artifact), _tokenizer_check))
    result.manifest = _write_manifest(result, tok_entry, {"repo_id": repo_id, "revision": revision, "variant": variant,
                                                          "export_manifest_sha256": sha256_file(manifest_file)})
    return result


def _write_manifest(result: FetchResult, tok_entry: dict, source: dict) -> Path:
    tokenizer = next((p for p in result.tokenizer_files if p.suffix == ".model"), result.tokenizer_files[0])
    if tokenizer.suffix == ".model":
        from pgolf.core.data.tokenizer import load_tokenizer

        vocab_size = int(load_tokenizer(tokenizer).vocab_size())
    else:
        vocab_size = tok_entry.get("vocab_size")
    return write_folder_manifest(result.dataset_dir, tokenizer, vocab_size, {"source": source})
