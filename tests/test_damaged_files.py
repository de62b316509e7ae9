"""Damaged or hostile files (issue 17): corrupted artifacts never score, broken run records never silently leave a
table, run names stay under runs/, NaN never becomes a score, and each refusal is one line naming the file."""

import io
import json
import random
import shutil
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from pgolf_testing import micro_config, random_state

from pgolf.core.compress import ArtifactError
from pgolf.core.config import Config, ConfigError
from pgolf.core.export import export_artifact, load_artifact, serialize, sha256
from pgolf.core.model import build_model
from pgolf.core.paths import REPO_ROOT
from pgolf.core.records import RunRecordError
from pgolf.core.train import train
from pgolf.running.cli import main

RUNS = REPO_ROOT / "runs"
COMMITTED = RUNS / "micro" / "control-s0-5113400531"
COMPRESSORS = ["zstd", "brotli", "lzma", "zlib"]


def one_line_error(capsys, *argv) -> str:
    """Run the CLI, expect exit 2 and exactly one line on stderr; return it."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(small_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("damaged") / "run"
    # keep_float_max_numel as the committed micro runs: the matrices are quantized (int8 codes + per-row scales)
    summary = train(micro_config(small_dataset, **{"export.keep_float_max_numel": 1024}), run, console=False)
    return run, summary


@pytest.fixture
def run_copy(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    return run


def artifact_of(method: str, small_dataset) -> tuple[bytes, dict]:
    cfg = micro_config(small_dataset, **{"export.compressor": method})
    sd = random_state(build_model(cfg), seed=1)
    return export_artifact(sd, cfg.export, control=cfg.model.control_patterns)


def flip(blob: bytes, pos: int, bit: int) -> bytes:
    b = bytearray(blob)
    b[pos] ^= 1 << bit
    return bytes(b)


# -- 1. corrupted artifacts never score ----------------------------------------------------------

@pytest.mark.parametrize("method", COMPRESSORS)
def test_bit_flipped_artifacts_are_refused(method, small_dataset, tmp_path):
    """40 single-bit flips per compressor: each is refused by the artifact's own check (zstd frame checksum,
    pgolf's CRC-32 envelope around brotli, xz's CRC-64, zlib's Adler-32) with an error naming the file, and
    always by the sha256 that summary.json records. Before: 38/40 zstd and 37/40 brotli flips loaded."""
    pytest.importorskip("brotli") if method == "brotli" else None
    from pgolf.running.scoring import load_weights
    blob, report = artifact_of(method, small_dataset)
    assert report["artifact_sha256"] == sha256(blob)
    reference = load_artifact(blob)
    run = tmp_path / "run"
    run.mkdir()
    art = run / f"final_model.test.{method}.ptz"
    (run / "summary.json").write_text(json.dumps({"artifact_sha256": sha256(blob), "artifact_file": art.name}))
    rng = random.Random(17)
    for _ in range(40):
        pos, bit = rng.randrange(len(blob)), rng.randrange(8)
        bad = flip(blob, pos, bit)
        with pytest.raises(ValueError) as e:  # the format's own check, no summary needed
            state = load_artifact(bad, name=str(art))
            changed = [k for k in reference if not torch.equal(reference[k], state[k])]
            raise AssertionError(f"{method}: flip at byte {pos} bit {bit} loaded silently (changed: {changed[:3]})")
        assert isinstance(e.value, ArtifactError), f"{method} byte {pos} bit {bit}: {e.value}"
        assert str(art) in str(e.value) and "\n" not in str(e.value)
        art.write_bytes(bad)
        with pytest.raises(RunRecordError, match="sha256"):  # and the run record's sha256
            load_weights(art)


def test_self_checking_containers_keep_the_reference_bytes():
    """zlib/xz bytes are the official script's and the records' whatever ``checked``; brotli and zstd are the
    records' unless checked (the export writes them checked)."""
    from pgolf.core.compress import compress, decompress, detect
    raw = bytes(range(256)) * 64
    for method in ("zlib", "lzma"):
        assert compress(raw, method, checked=True) == compress(raw, method)
    zs = compress(raw, "zstd", checked=True)
    assert zs != compress(raw, "zstd") and decompress(zs) == raw and detect(zs) == "zstd"
    pytest.importorskip("brotli")
    br = compress(raw, "brotli", checked=True)
    assert br[:4] == b"PGCK" and br[8:] == compress(raw, "brotli") and decompress(br) == raw
    assert detect(br) == "brotli"


def test_summary_records_the_artifact_sha256_and_eval_refuses_a_mismatch(finished_run, run_copy, capsys):
    run, summary = finished_run
    art = run / summary["artifact_file"]
    assert summary["artifact_sha256"] == sha256(art.read_bytes())
    bad = run_copy / summary["artifact_file"]
    blob = bytearray(bad.read_bytes())
    blob[len(blob) // 2] ^= 0x10
    bad.write_bytes(bytes(blob))
    line = one_line_error(capsys, "eval", run_copy)
    assert str(bad) in line and "sha256" in line


def test_committed_runs_without_a_recorded_sha_still_load():
    """Runs written before artifact_sha256 existed: nothing to compare, the artifact's format checks it."""
    from pgolf.running.scoring import find_weights, load_weights
    assert "artifact_sha256" not in json.loads((COMMITTED / "summary.json").read_text())
    weights, _ = find_weights(COMMITTED, "artifact")
    state = load_weights(weights)
    assert "tok_emb.weight" in state


@pytest.mark.parametrize("method", ["lzma", "zstd", "zlib"])
def test_corrupted_lone_artifact_is_one_line_naming_the_file(method, small_dataset, tmp_path, capsys):
    """Before: lzma/zstd gave a traceback, zlib said "not zlib, zstd, xz or brotli data" without the path."""
    blob, _ = artifact_of(method, small_dataset)
    lone = tmp_path / f"final_model.int8.{method}.ptz"
    lone.write_bytes(blob[: len(blob) // 2] + bytes(8) + blob[len(blob) // 2 + 8:])
    line = one_line_error(capsys, "eval", lone)
    assert str(lone) in line and "damaged" in line


# -- 6. NaN scales and non-finite scores ------------------------------------------------------------

def _official_object(finished_run) -> tuple[dict, str]:
    run, summary = finished_run
    blob = (run / summary["artifact_file"]).read_bytes()
    return torch.load(io.BytesIO(zlib.decompress(blob)), weights_only=True), summary["artifact_file"]


SHAPE = ["export.keep_float_max_numel=1024", "model.num_layers=2", "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2",
         "train.train_seq_len=64", "train.val_batch_size=16384", "train.grad_accum_steps=1"]


def _write_object(obj: dict, path: Path) -> Path:
    path.write_bytes(zlib.compress(serialize(obj), 9))
    return path


def test_nan_scales_are_refused_naming_file_and_tensor(finished_run, tmp_path, capsys, small_dataset):
    """Before: val_bpb:nan, exit 0, and --json printed a bare NaN."""
    obj, name = _official_object(finished_run)
    key = next(iter(obj["scales"]))
    obj["scales"][key] = torch.full_like(obj["scales"][key], float("nan"))
    lone = _write_object(obj, tmp_path / name)
    line = one_line_error(capsys, "eval", lone, *SHAPE, "--dataset", small_dataset, "--json")
    assert str(lone) in line and key in line and "NaN" in line


def test_a_non_finite_score_is_an_error_never_json_nan(finished_run, tmp_path, capsys, small_dataset):
    """Finite but huge weights overflow the forward pass (relu² of 1e30-scale activations is inf, then inf - inf):
    no score, exit 2, nothing on stdout. Before: val_bpb NaN printed as a bare NaN, exit 0."""
    run, _ = finished_run
    sd = torch.load(run / "final_model.pt", weights_only=True)
    w = sd["blocks.0.mlp.fc.weight"]
    sd["blocks.0.mlp.fc.weight"] = (w.float() * 1e30).to(w.dtype)
    lone = tmp_path / "final_model.pt"
    torch.save(sd, lone)
    rc = main(["eval", str(lone), *SHAPE, "--dataset", str(small_dataset), "--json"])
    out, err = capsys.readouterr()
    assert rc == 2 and "NaN" not in out and out.strip() == ""
    assert str(lone) in err and "not finite" in err and len(err.strip().splitlines()) == 1


# -- 8. malformed official-format artifacts, wrong preset ---------------------------------------------

def test_missing_scales_is_one_line(finished_run, tmp_path, capsys):
    obj, name = _official_object(finished_run)
    del obj["scales"]
    lone = _write_object(obj, tmp_path / name)
    line = one_line_error(capsys, "eval", lone)
    assert str(lone) in line and "'scales'" in line


def test_transposed_matrix_is_one_line(finished_run, tmp_path, capsys, small_dataset):
    obj, name = _official_object(finished_run)
    key = next(k for k, q in obj["quantized"].items() if q.ndim == 2 and q.shape[0] != q.shape[1])
    obj["quantized"][key] = obj["quantized"][key].t().contiguous()
    lone = _write_object(obj, tmp_path / name)
    line = one_line_error(capsys, "eval", lone, *SHAPE, "--dataset", small_dataset)
    assert str(lone) in line and key in line


def test_tiny_run_scored_with_the_baseline_preset_is_one_line(finished_run, capsys, small_dataset):
    run, summary = finished_run
    line = one_line_error(capsys, "eval", run, "--preset", "baseline", "--dataset", small_dataset)
    assert summary["artifact_file"] in line and "does not fit the model of preset:baseline" in line


# -- 7. a config.json with a section missing -----------------------------------------------------------

def test_config_with_a_missing_section_is_refused(run_copy, capsys):
    """Before: the section took today's defaults and pgolf eval scored another model (3.7560 vs 3.6311)."""
    cfg_file = run_copy / "config.json"
    d = json.loads(cfg_file.read_text())
    del d["optim"]
    cfg_file.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"config.json: section\(s\) \['optim'\] missing"):
        Config.from_json(cfg_file)
    line = one_line_error(capsys, "eval", run_copy)
    assert str(cfg_file) in line and "'optim'" in line


def test_every_committed_run_config_still_loads():
    files = sorted(RUNS.rglob("config.json"))
    assert len(files) >= 100
    for f in files:
        Config.from_json(f)


# -- 3. run names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs/path", "..", "x" * 300])
def test_run_names_that_leave_runs_are_refused(name, capsys, monkeypatch):
    """Before: ``--name ../../x`` and ``RUN_ID=/abs/path`` wrote outside runs/; 300 characters: a traceback."""
    monkeypatch.delenv("RUN_ID", raising=False)
    line = one_line_error(capsys, "train", "tiny", "--name", name, "--dry-run")
    assert line.startswith("pgolf: error: --name") and "--run-dir" in line
    monkeypatch.setenv("RUN_ID", name)
    line = one_line_error(capsys, "train", "tiny", "--dry-run")
    assert line.startswith("pgolf: error: RUN_ID") and "--run-dir" in line


def test_run_path_keeps_names_under_runs(monkeypatch):
    import argparse

    from pgolf.core.paths import runs_dir
    from pgolf.core.runs import RunNameError
    from pgolf.running.cli import run_path
    ok = run_path(argparse.Namespace(name="good-name_1.2", run_dir=None), "default", environ={})
    assert ok == runs_dir() / "good-name_1.2"
    with pytest.raises(RunNameError):
        run_path(argparse.Namespace(name=None, run_dir=None), "default", environ={"RUN_ID": "/abs/path"})
    assert run_path(argparse.Namespace(name=None, run_dir="/tmp/explicit"), "d", environ={}) == Path("/tmp/explicit")


# -- 2. broken run records ----------------------------------------------------------------------------

DAMAGE = {
    "truncated summary": ("summary.json", lambda t: t[: len(t) // 2]),
    "truncated status": ("status.json", lambda t: t[: len(t) // 2]),
    "q_val_bpb null": ("summary.json", lambda t: json.dumps({**json.loads(t), "q_val_bpb": None})),
    "q_val_bpb missing": ("summary.json", lambda t: json.dumps({k: v for k, v in json.loads(t).items()
                                                                if k != "q_val_bpb"})),
    "q_val_bpb string": ("summary.json", lambda t: json.dumps({**json.loads(t), "q_val_bpb": "2.1"})),
    "status list": ("status.json", lambda t: "[1, 2]"),
}


def damaged_runs_root(tmp_path: Path, case: str) -> Path:
    """A copy of the committed runs (artifacts left out) with one run of notebook 01's selection damaged."""
    root = tmp_path / "runs"
    shutil.copytree(RUNS, root, ignore=shutil.ignore_patterns("*.ptz", "*.pt"))
    sel = json.loads((root / "swiglu_vs_relu2" / "selection.json").read_text())
    victim = root / sel["runs"][3]["run"]
    name, damage = DAMAGE[case]
    (victim / name).write_text(damage((victim / name).read_text()))
    return root, victim / name


@pytest.mark.parametrize("case", list(DAMAGE))
def test_results_refuses_a_broken_run_and_skips_only_when_asked(case, tmp_path, capsys):
    """Before: a Python warning or nothing, exit 0, and 9 seeds instead of 10 in the table."""
    from pgolf.research.results import load_runs
    root, damaged = damaged_runs_root(tmp_path, case)
    with pytest.raises(RunRecordError, match=str(damaged)):
        load_runs(root / damaged.parent.parent.name)
    line = one_line_error(capsys, "results", "--runs-root", root)
    assert str(damaged) in line
    assert main(["results", "--runs-root", str(root), "--skip-broken"]) == 0
    out, err = capsys.readouterr()
    assert str(damaged) in err and "skip" in err and out.startswith("| study")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = load_runs(root / damaged.parent.parent.name, skip_broken=True)
    assert any(str(damaged) in str(w.message) for w in caught)
    assert str(damaged.parent) not in set(rows["path"])


def test_ablate_reuse_refuses_a_broken_run(micro, tmp_path):
    """Before: ablate(mode="reuse") returned one row fewer (19 instead of 20)."""
    from pgolf.research.ablate import ablate
    base = micro(**{"train.iterations": 2})
    kw = dict(seeds=[0, 1], budget_steps=2, runs_root=tmp_path, log=lambda m: None)
    assert len(ablate("r", base, {"a": {}}, mode="train", jobs=1, **kw)) == 2
    summary = next((tmp_path / "r").glob("a-s1-*")) / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "q_val_bpb": None}))
    with pytest.raises(RunRecordError, match=rf"{summary}: damaged run record: q_val_bpb is None"):
        ablate("r", base, {"a": {}}, mode="reuse", **kw)


def test_an_analysis_table_of_the_wrong_shape_is_named(tmp_path):
    from pgolf.research.tables import read_table
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"inputs": {}, "rows": 5}))
    with pytest.raises(ValueError, match=rf"{path}: not an analysis table"):
        read_table(path)
