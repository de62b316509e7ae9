"""Dataset identity and the checks before training: wrong data is an error naming the file, never a silent run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pgolf_testing import micro_config, raise_at

from pgolf.core.data import identity as identity_mod
from pgolf.core.data.identity import NO_MANIFEST_RULE, DatasetMismatchError, verify_dataset
from pgolf.core.data.loader import TokenStream, resolve_dataset
from pgolf.core.data.shards import HEADER_BYTES, ShardError, read_shard, write_shard
from pgolf.core.data.tokenizer import train_sentencepiece
from pgolf.core.runs import read_status
from pgolf.core.train import TrainerHooks, train
from pgolf.data.build import build_dataset
from pgolf.data.corpus import default_corpus_documents

VOCAB = 1024


def _data_cfg(path, tokenizer_path=""):
    return SimpleNamespace(path=str(path), train_pattern="fineweb_train_*.bin", val_pattern="fineweb_val_*.bin",
                           tokenizer_path=str(tokenizer_path))


def _verify(path, tokenizer_path=""):
    return verify_dataset(resolve_dataset(_data_cfg(path, tokenizer_path), VOCAB), VOCAB)


@pytest.fixture
def ds(small_dataset, tmp_path) -> Path:
    """A private copy of the session's built dataset, free to damage."""
    return Path(shutil.copytree(small_dataset, tmp_path / "ds"))


@pytest.fixture
def bare(small_dataset, tmp_path) -> Path:
    """The same shards and tokenizer without a manifest (like shards copied by hand)."""
    out = tmp_path / "bare"
    out.mkdir()
    for f in small_dataset.iterdir():
        if f.name != "manifest.json":
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory) -> Path:
    """A 1024-piece tokenizer trained on other documents: same size, other ids."""
    out = tmp_path_factory.mktemp("other_tok") / "tokenizer"
    return train_sentencepiece(default_corpus_documents()[200:300], out, VOCAB)


def test_identity_is_the_manifest_sha_and_the_clean_dataset_passes(ds):
    ident = _verify(ds)
    assert ident.sha256 == hashlib.sha256((ds / "manifest.json").read_bytes()).hexdigest()
    assert ident.manifest == str(ds / "manifest.json") and ident.train_hashed and ident.ids_checked_as_read == 0
    manifest = json.loads((ds / "manifest.json").read_text())
    tok_sha = hashlib.sha256((ds / "tokenizer.model").read_bytes()).hexdigest()
    assert manifest["tokenizer_sha256"] == tok_sha == ident.tokenizer_sha256
    for f in sorted(ds.glob("fineweb_*.bin")):
        entry = manifest["files"][f.name]
        assert entry["max_token_id"] == int(np.asarray(read_shard(f)).max()) < VOCAB
        assert entry["vocab_size"] == VOCAB and entry["tokenizer_sha256"] == tok_sha


def test_shard_of_another_vocabulary_mixed_in_names_the_shard(ds):
    stray = write_shard(ds / "fineweb_train_000009.bin", np.arange(2000, dtype=np.uint16))
    with pytest.raises(DatasetMismatchError, match="not listed in") as err:
        _verify(ds)
    assert str(stray) in str(err.value)
    stray.unlink()

    # A manifest that records its shards' vocabularies (e.g. merged from two builds) says which one is foreign.
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["files"]["fineweb_train_000001.bin"]["vocab_size"] = 4096
    (ds / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetMismatchError, match="vocab_size 4096") as err:
        _verify(ds)
    assert str(ds / "fineweb_train_000001.bin") in str(err.value)


def test_replaced_or_corrupted_shard_of_the_same_size_names_the_shard(ds):
    shard = ds / "fineweb_train_000001.bin"
    raw = bytearray(shard.read_bytes())
    raw[HEADER_BYTES : HEADER_BYTES + 2] = np.uint16(5).tobytes()  # one in-range token changed, size unchanged
    shard.write_bytes(bytes(raw))
    with pytest.raises(DatasetMismatchError, match="contents differ") as err:
        _verify(ds)
    assert str(shard) in str(err.value)


def test_swapped_tokenizer_of_the_same_size_names_both_files(ds, other_tokenizer):
    with pytest.raises(DatasetMismatchError) as err:
        _verify(ds, tokenizer_path=other_tokenizer)
    msg = str(err.value)
    assert str(other_tokenizer) in msg and str(ds / "tokenizer.model") in msg and "manifest.json" in msg
    shutil.copy(other_tokenizer, ds / "tokenizer.model")  # swapped in place: same error
    with pytest.raises(DatasetMismatchError, match="is not the tokenizer of this dataset"):
        _verify(ds)


def test_folder_without_manifest_gets_the_documented_identity(bare, other_tokenizer):
    ident = _verify(bare)
    listing = sorted([f.name, f.stat().st_size, (f.stat().st_size - HEADER_BYTES) // 2]
                     for f in bare.glob("fineweb_*.bin"))
    tok_sha = hashlib.sha256((bare / "tokenizer.model").read_bytes()).hexdigest()
    blob = json.dumps({"rule": NO_MANIFEST_RULE, "shards": listing, "tokenizer_sha256": tok_sha}, sort_keys=True)
    assert ident.sha256 == hashlib.sha256(blob.encode()).hexdigest() and ident.manifest is None
    assert any("no pgolf manifest.json" in line for line in ident.log_lines())
    assert _verify(bare, tokenizer_path=other_tokenizer).sha256 != ident.sha256  # the tokenizer is part of it


def _poison(path: Path, at: int, token_id: int) -> None:
    tokens = np.array(read_shard(path))
    tokens[at] = token_id
    write_shard(path, tokens)


def test_out_of_range_token_id_is_an_error_naming_the_file(bare, tmp_path):
    shard = bare / "fineweb_train_000000.bin"
    _poison(shard, 5000, 1500)
    with pytest.raises(ShardError, match="token id 1500") as err:
        _verify(bare)  # small folder: read in full before training
    assert str(shard) in str(err.value)
    with pytest.raises(ShardError) as err:
        train(micro_config(bare), tmp_path / "run", console=False)  # not an IndexError in the embedding
    assert str(shard) in str(err.value)
    assert read_status(tmp_path / "run")["status"] == "failed"


def test_unscanned_shards_are_checked_as_the_stream_reads_them(bare, tmp_path, monkeypatch):
    shard = bare / "fineweb_train_000000.bin"
    _poison(shard, 5000, 1500)
    monkeypatch.setattr(identity_mod, "FULL_CHECK_MAX_BYTES", 0)  # as for a FineWeb-sized train set
    ident = _verify(bare)
    assert not ident.train_hashed and ident.ids_checked_as_read == len(list(bare.glob("fineweb_train_*.bin")))
    stream = TokenStream([shard], vocab_size=VOCAB)
    stream.take(5000)  # the tokens before the bad one are fine
    with pytest.raises(ShardError, match=r"token id 1500 at token 5000 .*\[0, 1024\)") as err:
        stream.take(10)
    assert str(shard) in str(err.value)
    with pytest.raises(ShardError) as err:
        train(micro_config(bare), tmp_path / "run", console=False)
    assert str(shard) in str(err.value)


def test_identity_is_recorded_in_run_folder_summary_and_checkpoint(small_dataset, tmp_path):
    s = train(micro_config(small_dataset, **{"train.checkpoint_every": 4}), tmp_path / "run", console=False)
    want = hashlib.sha256((small_dataset / "manifest.json").read_bytes()).hexdigest()
    recorded = json.loads((tmp_path / "run" / "dataset.json").read_text())
    assert recorded["dataset_sha256"] == want and recorded["path"] == str(small_dataset.resolve())
    assert recorded["manifest"] == str(small_dataset.resolve() / "manifest.json") and recorded["train_hashed"]
    assert s["dataset_sha256"] == want == json.loads((tmp_path / "run" / "summary.json").read_text())["dataset_sha256"]
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ck["dataset_sha256"] == want and type(ck["dataset_sha256"]) is str and type(ck["dataset_path"]) is str
    assert f"dataset_sha256:{want}" in (tmp_path / "run" / "train.log").read_text()


def test_resume_after_the_dataset_was_rebuilt_is_refused(ds, small_dataset, tmp_path):
    cfg = micro_config(ds, **{"train.checkpoint_every": 3})
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C before the 5th step; the checkpoint is step 3's
        train(cfg, tmp_path / "run", console=False, hooks=TrainerHooks(before_step=raise_at(4, KeyboardInterrupt)))
    old = hashlib.sha256((ds / "manifest.json").read_bytes()).hexdigest()

    # Rebuilt in place with another shard size: same folder, same config, other token stream.
    build_dataset([small_dataset.parent / "corpus.jsonl"], ds, vocab_size=VOCAB, shard_tokens=50_000)
    new = hashlib.sha256((ds / "manifest.json").read_bytes()).hexdigest()
    assert new != old
    with pytest.raises(DatasetMismatchError) as err:
        train(cfg, tmp_path / "run", resume=True, console=False)
    msg = str(err.value)
    assert str(tmp_path / "run" / "checkpoint.pt") in msg and old in msg and new in msg
    assert read_status(tmp_path / "run")["status"] == "failed"
