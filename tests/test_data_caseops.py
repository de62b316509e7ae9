"""``pgolf data build --caseops``: transformed documents, a tokenizer reserving the operators, the val byte sidecar,
and val_bpb from it; parity with the record's ``prepare_caseops_data.py`` (``PGOLF_PR1855_PREPARE_CASEOPS``, with
``PGOLF_PR1855_LOSSLESS_CAPS`` and ``PGOLF_PR1855_CASEOPS_MODEL``; skipped without them)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.core.data.shards import ShardError, read_shard, write_shard
from pgolf.core.data.sidecar import SidecarBytes, load_sidecar, sidecar_path
from pgolf.core.data.tokenizer import load_tokenizer
from pgolf.data import caseops
from pgolf.data.build import build_dataset, is_val_document
from pgolf.data.corpus import default_corpus_documents

VOCAB = 400


def _docs(n: int = 60) -> list[str]:
    docs = default_corpus_documents(verbatim=True)[:n]
    return docs + ["The NASA Launch of iPhone; McDonald's in PARIS.", f"literal operators {caseops.TITLE}{caseops.ESC}!"]


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "ds"
    return build_dataset([jsonl], out, vocab_size=VOCAB, shard_tokens=5_000, normalize="none", caseops=True,
                         val_fraction=0.3)


def _val(out: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    files = sorted(p for p in out.glob("fineweb_val_*.bin") if "_bytes_" not in p.name)
    toks = np.concatenate([np.asarray(read_shard(f)) for f in files])
    return files, toks, load_sidecar(files).numpy()


def test_caseops_build_writes_a_sidecar_per_val_shard_and_decodes_back(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["caseops"] == caseops.TRANSFORM and "byte_sidecar" in manifest
    files, toks, side = _val(built)
    assert len(files) > 1 and all(sidecar_path(f).name in manifest["files"] for f in files)
    assert toks.size == side.size and (side[toks == 1] == 0).all()
    sp = load_tokenizer(built / "tokenizer.model")
    assert [sp.piece_to_id(c) for c in caseops.OPERATORS] == [4, 5, 6, 7]  # reserved right after the specials
    val_docs = [d for d in _docs() if is_val_document(d, 0.3)]
    starts = list(np.flatnonzero(toks == 1)) + [toks.size]
    assert len(starts) - 1 == len(val_docs)
    for doc, a, b in zip(val_docs, starts[:-1], starts[1:]):
        assert caseops.decode(sp.decode(toks[a + 1 : b].tolist())) == doc
        assert int(side[a:b].sum()) == len(doc.encode("utf-8"))  # normalize="none": every byte credited once
    assert manifest["splits"]["val"]["metric_bytes"] == int(side[1:].sum())


def test_the_run_scores_val_bpb_with_the_sidecar(built):
    """load_data picks the sidecar for a CaseOps dataset; the evaluators then count sidecar bytes (not the
    SentencePiece tables, which would count the operators' 3 bytes each)."""
    from pgolf.core.config import Config, apply_overrides
    from pgolf.core.evaluate import ByteLUTs, eval_official
    from pgolf.core.run_data import load_data
    from pgolf.core.runtime import Dist

    from pgolf.core.config import ConfigError

    cfg = apply_overrides(Config(), {"data.path": str(built), "model.vocab_size": VOCAB, "train.train_seq_len": 64,
                                     "train.val_batch_size": 64 * 8})
    cpu = Dist(0, 1, 0, torch.device("cpu"), False)
    with pytest.raises(ConfigError, match="has a byte sidecar; .* set data.caseops=true"):
        load_data(cfg, cpu)
    _, _, acc, val, _, _ = load_data(apply_overrides(cfg, {"data.caseops": True}), cpu)
    assert isinstance(acc, SidecarBytes)

    class Uniform(torch.nn.Module):
        def forward(self, x, y, reduction="mean", **kw):
            return torch.full((), float(np.log(VOCAB)))

    res = eval_official(Uniform(), val, acc, 64, 64 * 8, 0, 1, 1, torch.device("cpu"), False)
    n = val.numel() - 1
    assert res.bytes == int(acc.per_token[1 : n + 1].sum())
    assert res.val_bpb == pytest.approx(np.log2(VOCAB) * n / res.bytes, rel=1e-6)  # float32 log
    sp = load_tokenizer(built / "tokenizer.model")
    from pgolf.core.data.tokenizer import build_byte_luts
    luts = ByteLUTs.from_numpy(build_byte_luts(sp, VOCAB), torch.device("cpu"))
    assert eval_official(Uniform(), val, luts, 64, 64 * 8, 0, 1, 1, torch.device("cpu"), False).bytes != res.bytes


def test_a_bad_or_missing_sidecar_is_one_line_naming_the_file(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.array([1, 5, 6], dtype=np.uint16))
    with pytest.raises(ShardError, match="fineweb_val_bytes_000000.bin: byte sidecar missing"):
        load_sidecar([tmp_path / "fineweb_val_000000.bin"])
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.array([0, 1], dtype=np.uint16))
    with pytest.raises(ShardError, match=r"fineweb_val_bytes_000000.bin: 2 byte entries, .* has 3 tokens"):
        load_sidecar([tmp_path / "fineweb_val_000000.bin"])


def test_sliding_windows_count_sidecar_bytes_by_position():
    from pgolf.core.evaluate import eval_windows

    tokens = torch.randint(0, 10, (101,))
    side = torch.randint(0, 4, (101,), dtype=torch.int32)

    class Zero(torch.nn.Module):
        def forward(self, x, y, reduction="mean", **kw):
            return torch.zeros(y.numel())

    res = eval_windows(Zero(), tokens, SidecarBytes(side, "t"), 32, 8, "score", 4, 0, 1, torch.device("cpu"), False)
    assert res.tokens == 100 and res.bytes == int(side[1:].sum())


# ------------------------------------------------------------------------------------------ parity with the record

def _env_file(name: str) -> str:
    path = os.environ.get(name)
    if not path or not os.path.isfile(path):
        pytest.skip(f"{name} not set")
    return path


def test_build_with_the_records_model_equals_prepare_caseops_data(tmp_path, monkeypatch):
    """The val stream and its sidecar of a pgolf build (the record's tokenizer, BOS per document) equal what the
    record's prepare_caseops_data.py writes for the same documents."""
    prep, caps, model = (_env_file(n) for n in ("PGOLF_PR1855_PREPARE_CASEOPS", "PGOLF_PR1855_LOSSLESS_CAPS",
                                                "PGOLF_PR1855_CASEOPS_MODEL"))
    pytest.importorskip("google.protobuf")
    import sentencepiece as spm

    from pgolf_testing import imported_script

    docs = [d[:3000] for d in _docs(40)]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    out = build_dataset([src], tmp_path / "ds", vocab_size=8192, caseops=True, tokenizer_model=Path(model),
                        val_fraction=0.3, shard_tokens=10_000_000)
    _, toks, side = _val(out)
    val_docs = [d for d in docs if is_val_document(d, 0.3)]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in val_docs), encoding="utf-8")
    # the record's script: its lossless_caps module, and the proto API of older sentencepiece releases
    monkeypatch.setattr(spm.SentencePieceProcessor, "encode_as_immutable_proto",
                        lambda self, text: self.encode_as_proto(text), raising=False)
    with imported_script(caps, "lossless_caps") as caps_mod:
        monkeypatch.setitem(sys.modules, "lossless_caps", caps_mod)
        with imported_script(prep, "_pr1855_prepare_caseops") as rec:
            monkeypatch.setattr(sys, "argv", ["prep", "--docs", str(tmp_path / "val.jsonl"), "--out",
                                              str(tmp_path / "rec"), "--sp", model, "--val-docs", str(len(val_docs))])
            rec.main()
    rec_dir = tmp_path / "rec" / "datasets" / "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
    want_toks = np.asarray(read_shard(rec_dir / "fineweb_val_000000.bin"))
    want_side = np.asarray(read_shard(rec_dir / "fineweb_val_bytes_000000.bin"))
    assert toks.size > 2000
    assert np.array_equal(toks, want_toks) and np.array_equal(side, want_side)


def test_training_with_packed_documents_and_the_document_mask(built, tmp_path):
    """A micro run on the CaseOps dataset with data.order=doc_packing and model.doc_mask: it trains, its periodic
    and final evaluations are document-masked and counted in sidecar bytes, and a resume continues the stream."""
    from pgolf_testing import micro_config, raise_at

    from pgolf.core.config import ConfigError
    from pgolf.core.train import TrainerHooks, train

    over = {"model.vocab_size": VOCAB, "data.order": "doc_packing", "model.doc_mask": True, "train.iterations": 4,
            "train.val_batch_size": 64 * 8, "train.checkpoint_every": 2, "eval.max_tokens": 2048, "data.caseops": True}
    s = train(micro_config(built, **over), tmp_path / "run", console=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert s["data_order"] == "doc_packing" and "step:4/4 val_loss:" in log
    assert 0 < s["val_bpb"] < 20
    with pytest.raises(ConfigError, match="model.doc_mask"):
        micro_config(built, **{**over, "data.order": "sequential"})

    def losses(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["train_loss"] for r in rows if "train_loss" in r}

    with pytest.raises(KeyboardInterrupt):
        train(micro_config(built, **over), tmp_path / "cut", console=False,
              hooks=TrainerHooks(before_step=raise_at(3, KeyboardInterrupt)))
    train(micro_config(built, **over), tmp_path / "cut", resume=True, console=False)
    assert losses(tmp_path / "cut") == losses(tmp_path / "run")  # the loader's position came back with the checkpoint


def test_gptq_calibrates_a_packed_row_in_windows_of_the_training_length(built):
    from pgolf.core.data.packing import DocumentPackingLoader
    from pgolf.core.gptq import calibration_batches

    files = sorted(built.glob("fineweb_train_*.bin"))
    row = DocumentPackingLoader(files, 0, 1).next_batch(1024, 64, 1)[0]
    (x,) = list(calibration_batches(DocumentPackingLoader(files, 0, 1), 1, 1024, 64, 1))
    assert row.shape == (1, 1024) and x.shape == (16, 64) and torch.equal(x.reshape(1, -1), row)


def test_cli_builds_with_caseops_and_refuses_a_missing_tokenizer_in_one_line(jsonl, tmp_path, capsys):
    from pgolf.running.cli import main

    assert main(["data", "build", str(jsonl), "--out", str(tmp_path / "ds"), "--vocab-size", str(VOCAB),
                 "--normalize", "none", "--caseops", "--tokenizer", str(tmp_path / "none.model")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "none.model does not exist" in err
    assert main(["data", "build", str(jsonl), "--out", str(tmp_path / "ds"), "--vocab-size", str(VOCAB),
                 "--normalize", "none", "--caseops", "--val-fraction", "0.3"]) == 0
    assert main(["data", "inspect", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "caseops:lossless_caps_caseops_v1" in out and "fineweb_val_bytes_000000.bin:" in out
