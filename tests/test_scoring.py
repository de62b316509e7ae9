"""``pgolf eval``: scoring a run folder, an artifact or a state dict agrees with the run's own numbers."""

import json
import shutil

import pytest
from pgolf_testing import micro_config

from pgolf.core.train import train
from pgolf.running.cli import main


@pytest.fixture(scope="module")
def finished_run(small_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("score") / "run"
    summary = train(micro_config(small_dataset), run, console=False)
    return run, summary


def _eval(capsys, *argv):
    assert main(["eval", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_run_folder_artifact_matches_summary(finished_run, capsys):
    run, summary = finished_run
    out = _eval(capsys, run)
    assert out["eval_mode"] == "official"
    assert out["val_bpb"] == pytest.approx(summary["q_val_bpb"], abs=1e-6)
    assert out["tokens_scored"] == summary["val_tokens_scored"]
    assert out["artifact_bytes"] == summary["artifact_bytes"]  # the scored artifact's size, not the text's
    assert out["val_bytes"] > out["tokens_scored"]  # validation text bytes (the val_bpb denominator)
    raw = _eval(capsys, run, "--weights", "raw")
    assert raw["val_bpb"] == pytest.approx(summary["val_bpb"], abs=1e-6)
    assert raw["artifact_bytes"] is None and raw["val_bytes"] == out["val_bytes"]


def test_text_labels_say_what_they_count(finished_run, capsys):
    run, summary = finished_run
    assert main(["eval", str(run)]) == 0
    fields = dict(f.split(":", 1) for f in capsys.readouterr().out.strip().splitlines()[-1].split())
    assert "bytes" not in fields  # a bare `bytes:` read as the artifact size; it was the validation text
    assert int(fields["artifact_bytes"]) == summary["artifact_bytes"]
    assert int(fields["val_bytes"]) > int(fields["tokens"])


def test_artifact_file_without_config_and_eval_overrides(finished_run, capsys, tmp_path, small_dataset):
    run, summary = finished_run
    art = next(run.glob("final_model.*.ptz"))
    lone = tmp_path / art.name
    shutil.copy(art, lone)
    shape = ["model.num_layers=2", "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2",
             "train.train_seq_len=64", "train.val_batch_size=16384", "train.grad_accum_steps=1"]
    out = _eval(capsys, lone, *shape, "--dataset", small_dataset)
    assert out["val_bpb"] == pytest.approx(summary["q_val_bpb"], abs=1e-6)
    slid = _eval(capsys, run, "--stride", 16, "--tail", "score")
    assert slid["eval_mode"] == "windows(seq_len=64,stride=16,tail=score)"
    assert slid["tokens_scored"] > summary["val_tokens_scored"]  # the tail is scored too


def test_bad_paths_are_named(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "x.pt").write_bytes(b"not a pickle")
    assert main(["eval", str(tmp_path / "x.pt")]) == 2
    assert "x.pt: not a state dict" in capsys.readouterr().err


def test_overrides_after_options_are_kept(finished_run, capsys):
    run, summary = finished_run
    out = _eval(capsys, run, "--stride", 16, "eval.tail=score")
    assert out["eval_mode"] == "windows(seq_len=64,stride=16,tail=score)"
    with pytest.raises(SystemExit):  # a stray word that is not an override is an argparse error
        main(["eval", str(run), "--json", "nonsense"])


def test_summary_records_the_corpus_unigram_baseline(finished_run):
    """Figures read the quickstart's unigram line from the run, never from the dataset."""
    _, summary = finished_run
    assert 1.0 < summary["unigram_val_bpb"] < 20.0
