"""Fetch from a local stand-in for the Hugging Face Hub serving a miniature export in the official layout."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from pgolf.core.data.shards import HEADER_BYTES, write_shard
from pgolf.core.data.tokenizer import train_sentencepiece
from pgolf.data.corpus import default_corpus_documents
from pgolf.data.fetch import FetchError, fetch

REPO = "willdepueoai/parameter-golf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SHARD_SIZE = 3000
DS = "datasets/datasets/fineweb10B_sp1024"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """Repo path -> bytes for a miniature export: 3 train shards, 1 val shard, tokenizer, manifest."""
    tmp = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    sizes = {"fineweb_val_000000.bin": 1234, "fineweb_train_000000.bin": SHARD_SIZE,
             "fineweb_train_000001.bin": SHARD_SIZE, "fineweb_train_000002.bin": 777}
    for name, n in sizes.items():
        files[f"{DS}/{name}"] = write_shard(tmp / name, rng.integers(0, 1024, n)).read_bytes()
    model = train_sentencepiece(default_corpus_documents()[:20], tmp / "fineweb_1024_bpe", 400)
    files["datasets/tokenizers/fineweb_1024_bpe.model"] = model.read_bytes()
    files["datasets/tokenizers/fineweb_1024_bpe.vocab"] = model.with_suffix(".vocab").read_bytes()
    manifest = {
        "version": "10B",
        "shard_size": SHARD_SIZE,
        "tokenizers": [{"name": "sp_bpe_1024", "kind": "sentencepiece_bpe", "vocab_size": 1024,
                        "model_path": "tokenizers/fineweb_1024_bpe.model", "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}],
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
                      "stats": {"files_train": 3, "files_val": 1, "tokens_train": 2 * SHARD_SIZE + 777, "tokens_val": 1234}}],
    }
    files["datasets/manifest.json"] = json.dumps(manifest).encode()
    return files


class Hub:
    """Serves ``/datasets/{repo}/resolve/{revision}/{path}`` with the headers hf_hub_download relies on."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.log, self.cut_once = files, [], set()
        self.faults: dict[str, str] = {}  # repo path -> "wrong" | "short" | "drop" | "stall" | "500", every request
        self.stall_s = 2.0
        self.other_repos: dict[str, dict[str, bytes]] = {}  # repo id -> its files, served beside REPO's
        self.repos_asked: list[str] = []  # the repo of each request, in the order of ``log``
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _resolve(self):
                path = unquote(self.path.split("?")[0])
                for repo, served in ((REPO, hub.files), *hub.other_repos.items()):
                    prefix = f"/datasets/{repo}/resolve/"
                    if path.startswith(prefix):
                        hub.repos_asked.append(repo)
                        revision, _, rel = path[len(prefix):].partition("/")
                        return served.get(rel) if revision in ("main", COMMIT) else None, rel
                hub.repos_asked.append(None)
                return None

            def _headers(self, status, body, rel, start=0):
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                if rel.endswith((".bin", ".model")):  # as the hub serves LFS files: sha256 and size of the bytes
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(body).hexdigest()}"')
                    self.send_header("X-Linked-Size", str(len(body)))
                    self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                else:  # files kept in git: the git blob sha1
                    self.send_header("ETag", f'"{hashlib.sha1(b"blob %d" % len(body) + bytes(1) + body).hexdigest()}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()

            def _handle(self, send_body):
                found = self._resolve()
                rng = self.headers.get("Range")
                hub.log.append((self.command, found[1] if found else self.path, rng))
                if not found or found[0] is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, rel = found
                fault = hub.faults.get(rel)
                if fault == "500":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self._headers(206 if start else 200, body, rel, start)
                if not send_body:
                    return
                if fault == "wrong":  # the announced size, other bytes
                    self.wfile.write(body[start:-1] + bytes([body[-1] ^ 0xFF]))
                    return
                if fault == "short":  # Content-Length larger than what is sent, then a clean close
                    self.wfile.write(body[start:-100])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if fault == "drop":  # connection reset half-way through the body
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if fault == "stall":  # headers, then nothing for longer than the client waits
                    time.sleep(hub.stall_s)
                    self.close_connection = True
                    return
                if rel in hub.cut_once:  # drop the connection half-way through the body, once
                    hub.cut_once.discard(rel)
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def do_HEAD(self):
                self._handle(send_body=False)

            def do_GET(self):
                self._handle(send_body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def gets(self):
        return [entry for entry in self.log if entry[0] == "GET"]


@pytest.fixture()
def hub(export, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    h = Hub(export)
    h.thread.start()
    yield h
    h.server.shutdown()
    h.server.server_close()
    h.thread.join(timeout=5)


def _local(root: Path, remote: str) -> Path:
    return root / remote.removeprefix("datasets/")


def test_fetch_lands_files_in_official_layout_then_skips(hub, export, tmp_path):
    out = tmp_path / "data"
    kwargs = dict(variant="sp1024", train_shards=2, out_root=out, endpoint=hub.url, cache_dir=tmp_path / "cache")
    result = fetch(**kwargs)
    assert result.dataset_dir == out / "datasets" / "fineweb10B_sp1024"
    expected = [r for r in export if not r.endswith("fineweb_train_000002.bin")]
    for remote in expected:
        assert _local(out, remote).read_bytes() == export[remote], remote
    assert not (result.dataset_dir / "fineweb_train_000002.bin").exists()
    assert sorted(p.name for p in result.tokenizer_files) == ["fineweb_1024_bpe.model", "fineweb_1024_bpe.vocab"]
    assert len(result.downloaded) == len(expected) and len(hub.gets()) == len(expected)

    hub.log.clear()
    again = fetch(**kwargs)
    assert again.downloaded == [] and len(again.skipped) == len(expected)
    assert hub.log == []  # everything verified locally: not even a HEAD request

    with pytest.raises(FetchError, match="has 3 training shards"):
        fetch(**{**kwargs, "train_shards": 4})


def test_interrupted_transfer_resumes_with_range_request(hub, export, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    # huggingface_hub only counts bytes it has handed out in DOWNLOAD_CHUNK_SIZE (10 MB) pieces; shrink
    # them so that a cut in a 7 KB test shard leaves bytes to resume from.
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 512)
    target = f"{DS}/fineweb_train_000001.bin"
    hub.cut_once.add(target)
    out = tmp_path / "data"
    fetch(train_shards=2, out_root=out, endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert _local(out, target).read_bytes() == export[target]
    ranges = [rng for method, rel, rng in hub.gets() if rel == target]
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(export[target]) // 2


def test_truncated_local_file_is_fetched_again(hub, export, tmp_path):
    out = tmp_path / "data"
    fetch(train_shards=1, out_root=out, endpoint=hub.url, cache_dir=tmp_path / "cache")
    shard = _local(out, f"{DS}/fineweb_train_000000.bin")
    shard.write_bytes(shard.read_bytes()[: HEADER_BYTES + 100])  # as if a copy was cut short
    wrong = _local(out, f"{DS}/fineweb_val_000000.bin")
    wrong.write_bytes(export[f"{DS}/fineweb_train_000000.bin"])  # valid shard, but not the manifest's count
    # Same cache: the placed files are hard links of its blobs, so the truncation hit the cache too and
    # fetch has to force a fresh download after the cached copy fails the check.
    result = fetch(train_shards=1, out_root=out, endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert shard.read_bytes() == export[f"{DS}/fineweb_train_000000.bin"]
    assert wrong.read_bytes() == export[f"{DS}/fineweb_val_000000.bin"]
    assert sorted(p.name for p in result.downloaded) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]


def test_endpoint_and_cache_from_environment(hub, export, tmp_path):
    """HF_ENDPOINT and HF_HOME are read when huggingface_hub is imported, so check them in a fresh process."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    code = f"from pgolf.data.fetch import fetch; fetch(train_shards=0, out_root={str(tmp_path / 'data')!r})"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, cwd=tmp_path)
    val = f"{DS}/fineweb_val_000000.bin"
    assert _local(tmp_path / "data", val).read_bytes() == export[val]
    assert any((tmp_path / "hf_home" / "hub").rglob("*fineweb_val_000000.bin"))


def test_fetch_writes_a_manifest_with_checksums_and_a_stable_identity(hub, export, tmp_path):
    from types import SimpleNamespace

    from pgolf.core.data.identity import FETCHED_MANIFEST, verify_dataset
    from pgolf.core.data.loader import resolve_dataset

    out = tmp_path / "data"
    kwargs = dict(train_shards=1, out_root=out, endpoint=hub.url, cache_dir=tmp_path / "cache")
    result = fetch(**kwargs)
    manifest_bytes = result.manifest.read_bytes()
    manifest = json.loads(manifest_bytes)
    assert result.manifest == result.dataset_dir / "manifest.json" and manifest["format"] == FETCHED_MANIFEST
    tok = out / "tokenizers" / "fineweb_1024_bpe.model"
    assert manifest["tokenizer"] == "../../tokenizers/fineweb_1024_bpe.model"
    assert manifest["tokenizer_sha256"] == hashlib.sha256(tok.read_bytes()).hexdigest() and manifest["vocab_size"] == 400
    assert sorted(manifest["files"]) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]
    for name, info in manifest["files"].items():
        data = export[f"{DS}/{name}"]
        tokens = np.frombuffer(data[HEADER_BYTES:], dtype="<u2")
        assert (info["sha256"], info["bytes"], info["tokens"]) == (hashlib.sha256(data).hexdigest(), len(data), tokens.size)
        assert info["max_token_id"] == int(tokens.max())
    assert fetch(**kwargs).manifest.read_bytes() == manifest_bytes  # nothing changed: same identity

    fetch(**{**kwargs, "train_shards": 2})  # more shards: listed, and the identity changes
    assert "fineweb_train_000001.bin" in json.loads(result.manifest.read_text())["files"]
    assert result.manifest.read_bytes() != manifest_bytes
    # The export's random ids go up to 1023 but its test tokenizer has 400 pieces: training refuses the shards.
    cfg = SimpleNamespace(path=str(result.dataset_dir), train_pattern="fineweb_train_*.bin",
                          val_pattern="fineweb_val_*.bin", tokenizer_path="")
    ds = resolve_dataset(cfg, 400)
    assert ds.tokenizer_path == tok.resolve()
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        verify_dataset(ds, 400)


@pytest.mark.parametrize("bad", ["../evil.model", "tokenizers/../../evil.model", "<absolute>", "/etc/evil.model",
                                 "tokenizers\\..\\..\\evil.model", "C:/evil.model", "", "tokenizers//evil.model"])
def test_manifest_paths_that_leave_the_destination_are_refused(hub, export, tmp_path, bad):
    """The manifest is remote input: a tokenizer path that could land outside ``out_root`` is refused by name,
    before any download (huggingface_hub's own checks are not relied on: it joins an absolute path under the
    destination and rejects '..' only when it gets there, with an error that names no manifest entry)."""
    if bad == "<absolute>":
        bad = str(tmp_path / "outside" / "evil.model")
    manifest = json.loads(export["datasets/manifest.json"])
    manifest["tokenizers"][0]["model_path"] = bad
    payload = export["datasets/tokenizers/fineweb_1024_bpe.model"]
    # served wherever a client that followed the path might ask for it
    hub.files = {**export, "datasets/manifest.json": json.dumps(manifest).encode(), "evil.model": payload,
                 "../evil.model": payload, "datasets/" + bad.lstrip("/"): payload}
    out = tmp_path / "data"
    entry = f"datasets/manifest.json: tokenizers[name='sp_bpe_1024'].model_path = {bad!r}"
    with pytest.raises(FetchError, match=re.escape(entry)):
        fetch(train_shards=1, out_root=out, endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert [rel for _, rel, _ in hub.gets()] == ["datasets/manifest.json"]  # checked before any other download
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.relative_to(tmp_path).parts[0] not in
               ("data", "cache", "hf_home")]
    assert written == [] and [p.name for p in out.rglob("*") if p.is_file()] == ["manifest.json"]


RECORD_REPO = "kevclark/parameter-golf"  # PR #1394's (sp8192) and PR #1218's (sp4096) export
RECORD_SHARD = 2500


@pytest.fixture(scope="module")
def record_export(tmp_path_factory):
    """A miniature of the records' export, in the layout their READMEs document (fetched by the official script
    with MATCHED_FINEWEB_REPO_ID=kevclark/parameter-golf): datasets/manifest.json, datasets/datasets/
    fineweb10B_sp{4096,8192}/fineweb_{val,train}_NNNNNN.bin, datasets/tokenizers/fineweb_{N}_bpe.{model,vocab}."""
    tmp = tmp_path_factory.mktemp("record_export")
    rng = np.random.default_rng(1)
    files: dict[str, bytes] = {}
    manifest = {"version": "10B", "shard_size": RECORD_SHARD, "tokenizers": [], "datasets": []}
    docs = default_corpus_documents()[:60]
    for vocab in (4096, 8192):
        ds = f"datasets/datasets/fineweb10B_sp{vocab}"
        for name, n in {"fineweb_val_000000.bin": 999, "fineweb_train_000000.bin": RECORD_SHARD,
                        "fineweb_train_000001.bin": RECORD_SHARD, "fineweb_train_000002.bin": 321}.items():
            files[f"{ds}/{name}"] = write_shard(tmp / f"{vocab}_{name}", rng.integers(0, vocab, n)).read_bytes()
        model = train_sentencepiece(docs, tmp / f"fineweb_{vocab}_bpe", vocab)
        files[f"datasets/tokenizers/fineweb_{vocab}_bpe.model"] = model.read_bytes()
        files[f"datasets/tokenizers/fineweb_{vocab}_bpe.vocab"] = model.with_suffix(".vocab").read_bytes()
        manifest["tokenizers"].append({"name": f"sp_bpe_{vocab}", "kind": "sentencepiece_bpe", "vocab_size": vocab,
                                       "model_path": f"tokenizers/fineweb_{vocab}_bpe.model",
                                       "vocab_path": f"tokenizers/fineweb_{vocab}_bpe.vocab"})
        manifest["datasets"].append({"name": f"fineweb10B_sp{vocab}", "tokenizer_name": f"sp_bpe_{vocab}",
                                     "stats": {"files_train": 3, "files_val": 1, "tokens_train": 2 * RECORD_SHARD + 321,
                                               "tokens_val": 999}})
    files["datasets/manifest.json"] = json.dumps(manifest).encode()
    return files


@pytest.mark.parametrize("vocab", [4096, 8192])
def test_record_variants_come_from_the_records_export(hub, record_export, tmp_path, vocab):
    """`fetch(variant="sp8192")` (no repo given) asks kevclark/parameter-golf for the documented files and lands
    them in the official layout; a config with model.vocab_size=N and data.path=<that folder> then reads them."""
    from types import SimpleNamespace

    from pgolf.core.data.identity import verify_dataset
    from pgolf.core.data.loader import resolve_dataset

    hub.other_repos[RECORD_REPO] = record_export
    out = tmp_path / "data"
    result = fetch(variant=f"sp{vocab}", train_shards=2, out_root=out, endpoint=hub.url, cache_dir=tmp_path / "cache")
    ds = f"datasets/datasets/fineweb10B_sp{vocab}"
    wanted = ["datasets/manifest.json", f"{ds}/fineweb_val_000000.bin", f"{ds}/fineweb_train_000000.bin",
              f"{ds}/fineweb_train_000001.bin", f"datasets/tokenizers/fineweb_{vocab}_bpe.model",
              f"datasets/tokenizers/fineweb_{vocab}_bpe.vocab"]
    assert [rel for _, rel, _ in hub.gets()] == wanted and set(hub.repos_asked) == {RECORD_REPO}
    for remote in wanted:
        assert _local(out, remote).read_bytes() == record_export[remote], remote
    assert result.dataset_dir == out / "datasets" / f"fineweb10B_sp{vocab}"
    assert sorted(p.name for p in result.dataset_dir.glob("*.bin")) == [
        "fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    manifest = json.loads(result.manifest.read_text())
    assert manifest["vocab_size"] == vocab and manifest["source"]["repo_id"] == RECORD_REPO
    cfg = SimpleNamespace(path=str(result.dataset_dir), train_pattern="fineweb_train_*.bin",
                          val_pattern="fineweb_val_*.bin", tokenizer_path="")
    dataset = resolve_dataset(cfg, vocab)
    assert dataset.tokenizer_path == (out / "tokenizers" / f"fineweb_{vocab}_bpe.model").resolve()
    verify_dataset(dataset, vocab)  # ids inside the vocabulary, tokenizer of the right size


def test_another_exports_manifest_is_replaced_not_trusted(hub, export, record_export, tmp_path):
    """sp1024 from the official repo, then sp8192 from the records' repo into the same data root: the official
    manifest already in place does not list sp8192 and is not the records' repo's, so it is fetched again (the
    record's README deletes it by hand); back to sp1024, the official one returns and the shards are kept."""
    hub.other_repos[RECORD_REPO] = record_export
    out, cache = tmp_path / "data", tmp_path / "cache"
    fetch(variant="sp1024", train_shards=1, out_root=out, endpoint=hub.url, cache_dir=cache)
    assert (out / "manifest.json").read_bytes() == export["datasets/manifest.json"]
    hub.log.clear()
    hub.repos_asked.clear()
    fetch(variant="sp8192", train_shards=1, out_root=out, endpoint=hub.url, cache_dir=cache)
    assert (out / "manifest.json").read_bytes() == record_export["datasets/manifest.json"]
    assert set(hub.repos_asked) == {RECORD_REPO}
    hub.log.clear()
    again = fetch(variant="sp1024", train_shards=1, out_root=out, endpoint=hub.url, cache_dir=cache)
    assert (out / "manifest.json").read_bytes() == export["datasets/manifest.json"]
    assert [p.name for p in again.downloaded] == ["manifest.json"]  # from the cache; every shard checked out
    with pytest.raises(FetchError, match=r"fineweb10B_sp8192 not in datasets/manifest.json of willdepueoai/parameter-golf"
                                         r".*sp8192 is published in kevclark/parameter-golf"):
        fetch(variant="sp8192", repo_id=REPO, train_shards=1, out_root=out, endpoint=hub.url, cache_dir=cache)


def test_cli_fetch_sp8192_defaults_to_the_records_repo(hub, record_export, tmp_path):
    """`pgolf data fetch --variant sp8192` in a fresh process, HF_ENDPOINT pointing at the local hub."""
    hub.other_repos[RECORD_REPO] = record_export
    import pgolf

    here = str(Path(pgolf.__file__).resolve().parents[1])  # this checkout's pgolf, not an installed one
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pgolf.running.cli", "data", "fetch", "--variant", "sp8192", "--train-shards", "1",
           "--out", str(tmp_path / "data")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"dataset: {tmp_path / 'data' / 'datasets' / 'fineweb10B_sp8192'}" in proc.stdout
    assert {repo for repo in hub.repos_asked if repo} == {RECORD_REPO}  # (huggingface_hub may also ask /api/...)
    tok = "datasets/tokenizers/fineweb_8192_bpe.model"
    assert _local(tmp_path / "data", tok).read_bytes() == record_export[tok]


@pytest.fixture()
def fast_retries(monkeypatch):
    """huggingface_hub retries a broken body 5 times, sleeping 1 s each, and waits 10 s for an answer: shrink
    both so that the failure cases below take a second, not a minute."""
    import types

    import huggingface_hub.constants as hf_constants
    import huggingface_hub.file_download as hf_download

    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 512)
    monkeypatch.setattr(hf_constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.3)
    monkeypatch.setattr(hf_constants, "HF_HUB_ETAG_TIMEOUT", 0.3)
    monkeypatch.setattr(hf_download, "time", types.SimpleNamespace(sleep=lambda s: None, time=time.time))


@pytest.mark.parametrize("fault, needle", [
    ("wrong", r"the download from {url} is not the hub's file \(expected sha256 {sha}, got [0-9a-f]{{64}}\)"),
    ("short", r"(the download from {url} was cut short|connection to {url} broke)"),
    ("drop", r"connection to {url} broke \(\w+"),
    ("stall", r"no answer from {url} in time"),
    ("500", r"HTTP 500 from {url}"),
])
def test_a_bad_download_is_refused_in_one_line_and_a_rerun_recovers(hub, export, tmp_path, fast_retries, fault,
                                                                     needle):
    """Wrong bytes under the hub's sha256, a body shorter than its Content-Length, a reset connection, a server
    that stops answering, an HTTP 500: each is one line naming the file and the URL (and what was expected and
    got, or the status), nothing lands at the destination, and the same command afterwards fetches the file.
    Before: wrong bytes were accepted (and hashed into the dataset's identity); a 500 said "check your
    connection" with no status or URL; drops and timeouts were tracebacks."""
    target = f"{DS}/fineweb_train_000000.bin"
    hub.faults[target] = fault
    out = tmp_path / "data"
    kwargs = dict(train_shards=1, out_root=out, endpoint=hub.url, cache_dir=tmp_path / "cache")
    url = f"{hub.url}/datasets/{REPO}/resolve/main/{target}"
    with pytest.raises(FetchError) as err:
        fetch(**kwargs)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{target}: ")
    assert re.search(needle.format(url=re.escape(url), sha=hashlib.sha256(export[target]).hexdigest()), message), message
    assert not _local(out, target).exists()
    assert not [p for p in _local(out, target).parent.glob("*.tmp")]
    del hub.faults[target]
    fetch(**kwargs)
    assert _local(out, target).read_bytes() == export[target]


def test_wrong_bytes_of_a_git_file_are_refused_by_its_blob_sha1(hub, export, tmp_path, fast_retries):
    """A file kept in git (the export's manifest.json) is checked against its ETag, the git blob SHA-1."""
    hub.faults["datasets/manifest.json"] = "wrong"
    with pytest.raises(FetchError, match=r"datasets/manifest.json: .* \(expected git-sha1 [0-9a-f]{40}, got"):
        fetch(train_shards=0, out_root=tmp_path / "data", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "data" / "manifest.json").exists()


@pytest.mark.slow  # a fresh process (~8 s); the message itself is checked in-process above
def test_cli_fetch_http_error_is_one_line_with_status_and_url(hub, export, tmp_path):
    import pgolf

    hub.faults["datasets/manifest.json"] = "500"
    here = str(Path(pgolf.__file__).resolve().parents[1])
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pgolf.running.cli", "data", "fetch", "--out", str(tmp_path / "data")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"pgolf data fetch: error: datasets/manifest.json: HTTP 500 from "
        f"{hub.url}/datasets/{REPO}/resolve/main/datasets/manifest.json"]
