"""Build a challenge-format dataset (tokenizer + shards + manifest) from local text.

Inputs: text files (``.txt``, ``.md`` or anything not ``.jsonl``), ``.jsonl`` files (one JSON object
per line with a ``"text"`` key; each line is one document), or folders (searched recursively for
``*.txt``, ``*.md``, ``*.jsonl`` in sorted path order). ``sources=None`` builds the embedded default
corpus (:mod:`pgolf.data.corpus`).

Text normalization (``normalize``, recorded in the manifest and part of the cache key):

- ``"paragraphs"`` (default): a plain text file is read with universal newlines and cut into
  paragraphs at blank lines; inside a paragraph every line is stripped and the lines are joined with
  one space, runs of spaces and tabs become one space, and leading ``Produced by`` / ``(Additional
  editing`` paragraphs are dropped (:func:`pgolf.data.corpus.paragraphs`); paragraphs are packed into
  ~4 KB documents joined by newlines. ``.jsonl`` texts are kept as they are. The tokenizer is trained
  with the official options, whose ``nmt_nfkc`` rule with extra-whitespace removal then applies NFKC and
  turns every whitespace run (newlines included) into one space, leading and trailing ones removed, when
  a document is encoded.
- ``"none"``: documents keep every character (a text file's bytes decoded as UTF-8, newlines as they
  are, cut after blank lines into ~4 KB documents by :func:`pgolf.data.corpus.split_verbatim`; ``.jsonl``
  texts as they are), and the tokenizer is trained with :data:`VERBATIM_TRAINER_OPTIONS` (no
  normalization, whitespace kept; characters it has no piece for, e.g. newlines, go through byte
  fallback), so decoding a document's tokens gives its text back exactly (a literal U+2581, SentencePiece's
  space mark, comes back as a space).

Sources are read once each: the manifest's SHA-256 of a file and the documents tokenized come from the same
bytes, so a file that changes or vanishes during a build cannot be listed under bytes it no longer has. A
source that looks binary (a NUL byte, or over 1% control bytes: :func:`binary_reason`) is refused naming the
file unless ``allow_binary`` (``--allow-binary``); a ``vocab_size`` below what the train text needs (one piece
per distinct character plus the byte-fallback and special pieces) is refused naming the least that works.

Split rule: a document goes to validation when the first 8 hex digits of the SHA-256 of its UTF-8
text, read as an integer and divided by 2**32, are below ``val_fraction``. The split depends only
on the document itself, so it is stable when documents are added, removed or reordered, and
identical documents always land in the same split.

Train order (``shuffle_seed``, recorded in the manifest as ``train_shuffle_seed`` with
``train_order_rule``, part of the cache key): the train documents are written to the train shards in the
order ``numpy.random.default_rng(shuffle_seed).permutation(n_train)`` of their source order, so a run
reading the stream from the start does not see one book after another (whose boundaries make the same loss
spikes in every run). ``shuffle_seed=None`` keeps the source order. Val documents always keep their source
order, and the tokenizer is always trained on the train documents in source order, so neither changes with
the seed.

Output (the official names, so the official ``train_gpt.py`` reads it too): ``tokenizer.model``
(+ ``.vocab``, trained on train documents only), ``fineweb_val_000000.bin``..., 
``fineweb_train_000000.bin``... (each document is BOS, id 1, then its tokens; no EOS, like the
official export; shards hold ``shard_tokens`` tokens except the last of each split), and
``manifest.json`` (every file's size and SHA-256; per shard also its token count, largest token id,
vocabulary size and tokenizer SHA-256; nothing that differs between identical builds, so its SHA-256
is the dataset's identity, see :mod:`pgolf.core.data.identity`). The build happens in a hidden temp folder next to ``out_dir`` that is renamed
into place when complete; a second call with the same inputs returns at once (cache key = SHA-256
of the source contents and every parameter) once every file listed in the cached manifest matches its
recorded SHA-256; a file that does not (corrupted, replaced, even at the same size) triggers a rebuild.
CaseOps (``caseops=True``, ``--caseops``; the 2026-04-27 record's data, https://github.com/openai/parameter-golf/pull/1855,
its ``prepare_caseops_data.py``): every document (after the split, which reads the original text) is transformed
by :func:`pgolf.data.caseops.encode` before tokenizing; the tokenizer is ``tokenizer_model`` (``--tokenizer``, e.g.
the record's reserved-symbol model, copied in as ``tokenizer.model``) or one trained here on the transformed train
documents with the four operators as ``user_defined_symbols`` (ids 4..7, as in the record's model). Each document is
BOS (id 1) then its tokens, as without CaseOps; next to each val shard ``fineweb_val_bytes_XXXXXX.bin`` (same format,
same count) holds each token's original UTF-8 bytes (BOS 0; :func:`pgolf.data.caseops.encode_with_byte_counts`), and
the manifest records ``caseops`` and ``byte_sidecar``; its byte statistics and unigram bpb use these bytes.
The temp folder (``.<out>.building-<pid>@<host>-<id>``, and
``.<out>.old-...`` for a replaced build on its way out) names its builder, so each build first deletes the
leftovers of builders that died on this host (:func:`remove_stale_build_dirs`); a live builder's folder, or
one from another host, is never touched. Folders of the older unnamed form (``.building-<id>``) are deleted
once they are a day old (no build takes that long).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from pgolf.core import paths
from pgolf.core.data.identity import BUILT_MANIFEST, sha256_file, shard_entry, write_manifest
from pgolf.core.data.shards import read_header, read_shard, write_shard
from pgolf.core.data.tokenizer import (
    BOS_ID,
    DETERMINISM_OPTIONS,
    OFFICIAL_TRAINER_OPTIONS,
    build_byte_luts,
    count_bytes,
    load_tokenizer,
    train_sentencepiece,
)
from pgolf.core.ownership import host_tag, writer_alive
from pgolf.data import caseops as caseops_mod
from pgolf.data import corpus

BUILD_FORMAT = 2  # bump when the build output changes for the same inputs (part of the cache key)
MANIFEST_FORMAT = BUILT_MANIFEST
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SHARD_TOKENS = 1_000_000  # official exports use 100M; small shards exercise multi-shard reading
TEXT_SUFFIXES = (".txt", ".md")
DEFAULT_SHUFFLE_SEED = 0
SPLIT_RULE = "val iff int(sha256(utf8(text)).hexdigest()[:8], 16) / 2**32 < val_fraction"
LEGACY_TEMP_MAX_AGE_S = 24 * 3600  # unnamed temp folders of older builds older than this are stale
_TEMP_DIR_TAIL = r"(?:building|old)-(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9_.-]+)-)?[0-9a-f]{8}"  # legacy: no pid@host
NORMALIZE_MODES = ("paragraphs", "none")
# normalize="none": SentencePiece changes no character. Whitespace-only pieces stay disallowed (the
# default), so every space is its own "▁" piece or leads one, which the byte LUTs count correctly.
VERBATIM_TRAINER_OPTIONS: dict = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False}
DOCUMENT_RULES = {
    "paragraphs": "jsonl: one document per line; text: paragraphs packed to >= "
                  f"{corpus.DOC_TARGET_CHARS} chars (pgolf.data.corpus.pack_paragraphs)",
    "none": "jsonl: one document per line; text: every character kept, cut after blank lines into >= "
            f"{corpus.DOC_TARGET_CHARS} chars (pgolf.data.corpus.split_verbatim)",
}


class BuildError(ValueError):
    """A source or parameter is unusable; the message names the file, line or value."""


# ----------------------------------------------------------------------------- sources


def _source_files(sources: list[Path]) -> list[Path]:
    files: list[Path] = []
    for src in sources:
        src = Path(src).expanduser()
        if src.is_dir():
            found = sorted(
                (p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in (*TEXT_SUFFIXES, ".jsonl")),
                key=lambda p: p.relative_to(src).as_posix(),
            )
            if not found:
                raise BuildError(f"source folder {src} has no *.txt, *.md or *.jsonl files")
            files.extend(found)
        elif src.is_file():
            files.append(src)
        else:
            raise BuildError(f"source {src} does not exist")
    return files


def _check_normalize(normalize: str) -> str:
    if normalize not in NORMALIZE_MODES:
        raise BuildError(f"normalize={normalize!r}: expected one of {', '.join(NORMALIZE_MODES)}")
    return normalize


# Binary-looking sources: a NUL byte, or more than this share of control bytes (C0 controls other than tab,
# newline, vertical tab, form feed and carriage return, and DEL). UTF-8 text of any language has none of
# them; an ASCII-range binary file (an executable's strings, a database page, a packed array) decodes as
# UTF-8 and would otherwise be tokenized without a word.
BINARY_CONTROL_SHARE = 0.01
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F])


def binary_reason(data: bytes) -> str | None:
    """Why ``data`` looks like a binary file rather than text (None: it looks like text)."""
    nul = data.count(0)
    if nul:
        return f"{nul} NUL byte(s)"
    control = len(data) - len(data.translate(None, _CONTROL_BYTES))
    if data and control / len(data) > BINARY_CONTROL_SHARE:
        return f"{control / len(data):.1%} control bytes (more than {BINARY_CONTROL_SHARE:.0%})"
    return None


def read_sources(sources: list[Path] | None, allow_binary: bool = False) -> list[tuple[Path | None, bytes]]:
    """Each input file's bytes, read once: the build hashes exactly these bytes (:func:`source_records`) and
    parses exactly these bytes (:func:`documents_from`), so a file that changes or vanishes while the build
    runs cannot make the manifest list other bytes than those tokenized. ``None``: the embedded corpus.
    A binary-looking file (:func:`binary_reason`) is refused unless ``allow_binary``."""
    if sources is None:
        return [(None, corpus.corpus_path().read_bytes())]
    read = []
    for path in _source_files(sources):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BuildError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        why = None if allow_binary else binary_reason(data)
        if why:
            raise BuildError(f"{path}: looks like a binary file, not text ({why}); "
                             "pass --allow-binary to build from it anyway")
        read.append((path, data))
    return read


def _decode(path: Path, data: bytes, verbatim: bool = False) -> str:
    """UTF-8 text; ``verbatim`` keeps ``\r\n`` and ``\r`` (universal newlines would turn them into ``\n``)."""
    try:
        return data.decode("utf-8") if verbatim else corpus.decode_text(data)
    except UnicodeDecodeError as exc:
        raise BuildError(f"{path}: not UTF-8 text ({exc})") from None


def _jsonl_documents(path: Path, data: bytes) -> list[str]:
    docs = []
    for lineno, line in enumerate(io.StringIO(_decode(path, data)), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BuildError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise BuildError(f"{path}:{lineno}: expected a JSON object with a string \"text\" key")
        if obj["text"]:
            docs.append(obj["text"])
    return docs


def source_records(sources: list[Path] | None, read: list[tuple[Path | None, bytes]] | None = None) -> list[dict]:
    """One provenance record (with sha256) per input file; the cache key is built from these. ``read``: the
    bytes :func:`read_sources` returned (None reads them here)."""
    read = read_sources(sources) if read is None else read
    if sources is None:
        return [corpus.corpus_source(read[0][1])]
    return [{"path": str(path.resolve()), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in read]


def load_documents(sources: list[Path] | None, normalize: str = "paragraphs",
                   read: list[tuple[Path | None, bytes]] | None = None) -> list[str]:
    """The documents of ``sources`` in a fixed order (file order, then order inside each file), parsed from
    ``read`` (the bytes :func:`read_sources` returned; None reads them here)."""
    verbatim = _check_normalize(normalize) == "none"
    read = read_sources(sources) if read is None else read
    if sources is None:
        return corpus.default_corpus_documents(verbatim=verbatim, data=read[0][1])
    docs: list[str] = []
    for path, data in read:
        if path.suffix.lower() == ".jsonl":
            docs.extend(_jsonl_documents(path, data))
        elif verbatim:
            docs.extend(corpus.split_verbatim(_decode(path, data, verbatim=True)))
        else:
            docs.extend(corpus.pack_paragraphs(corpus.paragraphs(_decode(path, data))))
    if not docs:
        raise BuildError(f"no non-empty documents in {', '.join(str(s) for s in sources)}")
    return docs


def train_order(n_train: int, shuffle_seed: int | None) -> list[int]:
    """Indices (into the train documents in source order) in the order they are written (module docstring)."""
    if shuffle_seed is None:
        return list(range(n_train))
    return [int(i) for i in np.random.default_rng(shuffle_seed).permutation(n_train)]


def train_order_rule(shuffle_seed: int | None) -> str:
    if shuffle_seed is None:
        return "source order (file order, then order inside each file)"
    return f"numpy.random.default_rng({shuffle_seed}).permutation(n_train) of the train documents in source order"


def is_val_document(text: str, val_fraction: float) -> bool:
    """The split rule (module docstring)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 2**32 < val_fraction


# ----------------------------------------------------------------------------- build


def default_out_dir(sources: list[Path] | None, vocab_size: int) -> Path:
    if sources is None:
        return paths.default_dataset_dir(vocab_size)
    first = Path(sources[0]).expanduser().resolve()
    return paths.data_root() / "datasets" / f"{first.stem or first.name}_sp{vocab_size}"


def _cache_key(records: list[dict], params: dict) -> str:
    payload = {"build_format": BUILD_FORMAT, "sources": [r["sha256"] for r in records], **params}
    if records and records[0].get("kind") == "embedded":
        payload["cleaning_version"] = records[0]["cleaning_version"]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_manifest(dataset_dir: Path) -> dict | None:
    path = Path(dataset_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _is_cached(out_dir: Path, key: str) -> bool:
    manifest = read_manifest(out_dir)
    if not manifest or manifest.get("format") != MANIFEST_FORMAT or manifest.get("cache_key") != key:
        return False
    files = manifest.get("files", {})
    strays = [p for p in out_dir.glob("*.bin") if p.name not in files]
    if strays:
        print(f"pgolf data build: {strays[0]} is not in the cached {out_dir / 'manifest.json'}; rebuilding", file=sys.stderr)
        return False
    for name, info in files.items():
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != info.get("bytes") or sha256_file(path) != info.get("sha256"):
            print(f"pgolf data build: cached {path} is missing or differs from {out_dir / 'manifest.json'}; rebuilding",
                  file=sys.stderr)
            return False
    return True


SIDECAR_SPLIT = "val_bytes"  # fineweb_val_bytes_XXXXXX.bin, written beside the val shards (same boundaries)


class _ShardWriter:
    """Appends token arrays and writes ``fineweb_{split}_{i:06d}.bin`` every ``shard_tokens`` tokens."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int):
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.buf = np.empty(shard_tokens, dtype=np.uint16)
        self.fill = 0
        self.files: list[Path] = []

    def add(self, tokens: np.ndarray) -> None:
        pos = 0
        while pos < tokens.size:
            take = min(self.shard_tokens - self.fill, tokens.size - pos)
            self.buf[self.fill : self.fill + take] = tokens[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if self.fill:
            path = self.out_dir / f"fineweb_{self.split}_{len(self.files):06d}.bin"
            self.files.append(write_shard(path, self.buf[: self.fill]))
            self.fill = 0


def _encode_batch(sp, texts: list[str], caseops: bool) -> list[tuple[list[int], list[int] | None]]:
    """Each text's token ids, and with ``caseops`` the original bytes per token of its transformed text."""
    if not caseops:
        return [(ids, None) for ids in sp.encode(texts, out_type=int)]
    return [caseops_mod.encode_with_byte_counts(sp, caseops_mod.encode(t)) for t in texts]


def _encode_and_write(sp, docs: list[str], is_val: list[bool], tmp: Path, shard_tokens: int,
                      caseops: bool = False) -> dict:
    from tqdm.auto import tqdm

    writers = {"train": _ShardWriter(tmp, "train", shard_tokens), "val": _ShardWriter(tmp, "val", shard_tokens)}
    sidecar = _ShardWriter(tmp, SIDECAR_SPLIT, shard_tokens) if caseops else None
    stats = {s: {"docs": 0, "tokens": 0, "text_bytes": 0} for s in writers}
    vocab = sp.vocab_size()
    batch = 64
    with tqdm(total=len(docs), unit="doc", desc="encode", disable=None) as bar:
        for start in range(0, len(docs), batch):
            texts = docs[start : start + batch]
            for text, val, (ids, counts) in zip(texts, is_val[start : start + batch], _encode_batch(sp, texts, caseops)):
                toks = np.empty(len(ids) + 1, dtype=np.int64)
                toks[0] = BOS_ID
                toks[1:] = ids
                if toks.size and (toks.min() < 0 or toks.max() >= vocab):
                    raise BuildError(f"tokenizer produced an id outside [0, {vocab}) for document {start}")
                split = "val" if val else "train"
                writers[split].add(toks.astype(np.uint16))
                stats[split]["docs"] += 1
                stats[split]["tokens"] += int(toks.size)
                stats[split]["text_bytes"] += len(text.encode("utf-8"))
                if counts is not None:
                    stats[split]["original_bytes"] = stats[split].get("original_bytes", 0) + sum(counts)
                    if val:
                        sidecar.add(np.asarray([0, *counts], dtype=np.uint16))  # BOS: 0 bytes
            bar.update(len(texts))
    for w in (*writers.values(), *([sidecar] if sidecar else [])):
        w.flush()
    return stats


def unigram_val_bpb(train_files: list[Path], val_files: list[Path], luts, vocab_size: int,
                    val_bytes: int | None = None) -> float:
    """Bits per byte of an add-one-smoothed unigram model fit on train tokens, scored on val targets.

    Targets and byte counts are those of the official eval over the whole val stream: every token
    after the first, credited with :func:`count_bytes` given its predecessor (or ``val_bytes``: the CaseOps
    sidecar's total over those targets).
    """
    table = max(vocab_size, luts[0].size)
    counts = np.zeros(table, dtype=np.int64)
    for f in train_files:
        counts += np.bincount(read_shard(f), minlength=table)[:table]
    log2p = np.log2(counts + 1.0) - np.log2(counts.sum() + table)
    val = np.concatenate([np.asarray(read_shard(f), dtype=np.int64) for f in val_files])
    bits = -float(log2p[val[1:]].sum())
    return bits / (count_bytes(val[1:], val[:-1], luts) if val_bytes is None else val_bytes)


def build_dataset(
    sources: list[Path] | None,
    out_dir: Path | None,
    vocab_size: int = 1024,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    force: bool = False,
    normalize: str = "paragraphs",
    shuffle_seed: int | None = DEFAULT_SHUFFLE_SEED,
    allow_binary: bool = False,
    caseops: bool = False,
    tokenizer_model: Path | None = None,
) -> Path:
    """Build (or return the cached) dataset folder; see the module docstring for every rule. ``allow_binary``
    builds from sources that look binary (:func:`binary_reason`), which are refused otherwise. ``caseops``: the
    CaseOps transform and the val byte sidecar; ``tokenizer_model``: tokenize with this SentencePiece model instead
    of training one (its vocabulary must be ``vocab_size``, its BOS id 1)."""
    if not 0.0 < val_fraction < 1.0:
        raise BuildError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if shard_tokens <= 0:
        raise BuildError(f"shard_tokens must be positive, got {shard_tokens}")
    _check_normalize(normalize)
    if shuffle_seed is not None and (isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, int) or shuffle_seed < 0):
        raise BuildError(f"shuffle_seed must be a non-negative integer or None (source order), got {shuffle_seed!r}")
    if not 0 < vocab_size <= 2**16:
        raise BuildError(f"vocab_size must be in [1, 65536] to fit uint16 shards, got {vocab_size}")
    sources = None if sources is None else [Path(s) for s in sources]
    out_dir = Path(out_dir).expanduser().resolve() if out_dir is not None else default_out_dir(sources, vocab_size)
    for stale in remove_stale_build_dirs(out_dir):
        print(f"pgolf data: removed {stale} (temp folder of a build that died)", file=sys.stderr)
    read = read_sources(sources, allow_binary)  # every source read once: hashed and parsed from these bytes
    records = source_records(sources, read)
    trainer_extra = VERBATIM_TRAINER_OPTIONS if normalize == "none" else {}
    if caseops and tokenizer_model is None:
        trainer_extra = {**trainer_extra, "user_defined_symbols": list(caseops_mod.OPERATORS)}
    params = {"vocab_size": vocab_size, "val_fraction": val_fraction, "shard_tokens": shard_tokens,
              "normalize": normalize, "train_shuffle_seed": shuffle_seed,
              "trainer": {**OFFICIAL_TRAINER_OPTIONS, **DETERMINISM_OPTIONS, **trainer_extra}}
    if tokenizer_model is not None:
        tokenizer_model = Path(tokenizer_model).expanduser()
        if not tokenizer_model.is_file():
            raise BuildError(f"tokenizer {tokenizer_model} does not exist")
        params["trainer"] = {"given_model_sha256": sha256_file(tokenizer_model)}
    if caseops:  # only then: the cache keys of other builds stay what they were
        params["caseops"] = caseops_mod.TRANSFORM
    key = _cache_key(records, params)
    if not force and _is_cached(out_dir, key):
        return out_dir
    existing = read_manifest(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and (existing or {}).get("format") != MANIFEST_FORMAT:
        raise BuildError(f"refusing to replace {out_dir}: it is not empty and has no pgolf manifest.json; choose another output folder")

    docs = load_documents(sources, normalize, read)
    del read

    is_val = [is_val_document(d, val_fraction) for d in docs]
    n_val = sum(is_val)
    if n_val == 0 or n_val == len(docs):
        raise BuildError(
            f"the split rule put {n_val} of {len(docs)} documents into val (val_fraction={val_fraction}); "
            "use more documents or another val_fraction"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / _temp_dir_name(out_dir, "building")
    tmp.mkdir()
    try:
        if tokenizer_model is not None:
            model_path = tmp / "tokenizer.model"
            shutil.copyfile(tokenizer_model, model_path)
        else:
            train_text = (d for d, v in zip(docs, is_val) if not v)
            model_path = _train_tokenizer(map(caseops_mod.encode, train_text) if caseops else train_text,
                                          tmp / "tokenizer", vocab_size, trainer_extra)
        sp = load_tokenizer(model_path)
        if tokenizer_model is not None and sp.bos_id() != BOS_ID:
            raise BuildError(f"tokenizer {tokenizer_model}: BOS id {sp.bos_id()}, expected {BOS_ID} (documents start with it)")
        if caseops:
            missing = [f"U+{ord(c):04X}" for c in caseops_mod.OPERATORS if sp.piece_to_id(c) == sp.unk_id()]
            if missing:
                raise BuildError(f"tokenizer {tokenizer_model or model_path}: no piece for the CaseOps operators "
                                 f"{', '.join(missing)}; use a model that reserves them (user_defined_symbols)")
        if sp.vocab_size() != vocab_size:
            raise BuildError(
                f"the tokenizer {'given' if tokenizer_model else 'trained on these sources'} has {sp.vocab_size()} "
                f"pieces, not vocab_size={vocab_size}; "
                "use more text or a smaller vocab_size"
            )
        # Val documents first in source order (their own shards), then the train documents in the train order.
        train_docs = [d for d, v in zip(docs, is_val) if not v]
        written = [d for d, v in zip(docs, is_val) if v] + [train_docs[i] for i in train_order(len(train_docs), shuffle_seed)]
        split_stats = _encode_and_write(sp, written, sorted(is_val, reverse=True), tmp, shard_tokens, caseops)
        luts = build_byte_luts(sp, vocab_size)
        train_files = sorted(tmp.glob("fineweb_train_*.bin"))
        val_files = sorted(f for f in tmp.glob("fineweb_val_*.bin") if not f.name.startswith("fineweb_val_bytes_"))
        for split, files in (("train", train_files), ("val", val_files)):
            toks = np.concatenate([np.asarray(read_shard(f), dtype=np.int64) for f in files])
            # Bytes as the official eval credits them, over the split as one stream (first token not a target);
            # CaseOps: the original bytes (the stream's first token is a BOS, 0 bytes).
            metric = (split_stats[split].pop("original_bytes") if caseops else count_bytes(toks[1:], toks[:-1], luts))
            split_stats[split].update(files=len(files), metric_bytes=metric, bytes_per_token=metric / max(1, toks.size - 1))
        manifest = {
            "format": MANIFEST_FORMAT,
            "build_format": BUILD_FORMAT,
            "pgolf_version": _pgolf_version(),
            "cache_key": key,
            "sources": records,
            "document_rule": DOCUMENT_RULES[normalize],
            "split_rule": SPLIT_RULE,
            "train_order_rule": train_order_rule(shuffle_seed),
            **params,
            "tokenizer": "tokenizer.model",
            **({"tokenizer_vocab": "tokenizer.vocab"} if (tmp / "tokenizer.vocab").is_file() else {}),
            "bos_id": BOS_ID,
            "append_eos": False,
            "splits": split_stats,
            "bytes_per_token_rule": "metric_bytes / (tokens - 1): bytes the official val_bpb credits per predicted "
            "token, the split read as one stream (BOS tokens included, credited 0 bytes)",
            "unigram_rule": "add-one smoothed unigram over vocab_size ids fit on train tokens; bits over val "
            "targets / val metric bytes",
            "unigram_val_bpb": unigram_val_bpb(train_files, val_files, luts, vocab_size,
                                               split_stats["val"]["metric_bytes"] if caseops else None),
            "tokenizer_sha256": sha256_file(model_path),
            "files": {},
        }
        if caseops:
            manifest["caseops"] = caseops_mod.TRANSFORM
            manifest["byte_sidecar"] = "fineweb_val_bytes_*.bin: per val token, the UTF-8 bytes of the original text"
            if tokenizer_model is not None:
                manifest["tokenizer_source"] = str(tokenizer_model.resolve())
        for f in sorted(tmp.iterdir()):
            if f.name.startswith("fineweb_val_bytes_"):
                manifest["files"][f.name] = {"bytes": f.stat().st_size, "sha256": sha256_file(f),
                                             "entries": read_header(f)["num_tokens"]}
            elif f.suffix == ".bin":
                manifest["files"][f.name] = shard_entry(f, vocab_size, manifest["tokenizer_sha256"])
            else:
                manifest["files"][f.name] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
        write_manifest(tmp / "manifest.json", manifest)
        _swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def _train_tokenizer(texts, prefix: Path, vocab_size: int, trainer_extra: dict) -> Path:
    """:func:`train_sentencepiece`, its trainer's failures as one line naming the value and what is needed."""
    try:
        return train_sentencepiece(texts, prefix, vocab_size, **trainer_extra)
    except RuntimeError as exc:
        m = _TOO_SMALL.search(str(exc))
        if m:
            raise BuildError(
                f"vocab_size={vocab_size} is too small for these sources: the tokenizer needs at least {m[2]} pieces "
                f"(one per distinct character of the train text plus the byte-fallback and special pieces); "
                f"use --vocab-size {m[2]} or more") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"SentencePiece could not train a vocab_size={vocab_size} tokenizer on these sources: "
                         f"{first}") from None


def _temp_dir_name(out_dir: Path, kind: str) -> str:
    return f".{out_dir.name}.{kind}-{os.getpid()}@{host_tag()}-{uuid.uuid4().hex[:8]}"


def remove_stale_build_dirs(out_dir: Path) -> list[Path]:
    """Delete temp folders next to ``out_dir`` left by builds that died; returns them (see the module doc)."""
    removed: list[Path] = []
    if not out_dir.parent.is_dir():
        return removed
    pattern = re.compile(re.escape(f".{out_dir.name}.") + _TEMP_DIR_TAIL)
    for p in sorted(out_dir.parent.iterdir()):
        m = pattern.fullmatch(p.name)
        if m is None:
            continue
        if m["pid"] is not None:
            stale = writer_alive(int(m["pid"]), m["host"]) is False
        else:
            stale = time.time() - p.stat().st_mtime > LEGACY_TEMP_MAX_AGE_S
        if stale and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished build to ``out_dir``; an old build is moved aside first, then deleted."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / _temp_dir_name(out_dir, "old")
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _pgolf_version() -> str:
    import pgolf

    return getattr(pgolf, "__version__", "unknown")


def _main() -> int:  # python -m pgolf.data.build [SOURCES...]: a convenience for timing builds
    out = build_dataset([Path(a) for a in sys.argv[1:]] or None, None)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
