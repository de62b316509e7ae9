"""``pgolf submit``: the generated single-file script trains exactly as pgolf does, without pgolf.

The generated script runs in a fresh interpreter (``python -I``, a minimal environment) behind an import
blocker, so any ``import pgolf`` in it fails: it must stand alone. Against pgolf's own run of the same
configuration it gives the same train loss at every step, the same artifact bytes and the same score.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgolf.core.accounting import code_bytes
from pgolf.core.train import train
from pgolf.running.presets import get_preset
from pgolf.submit import bundle, cache
from pgolf.submit.pack import pack, unpack
from pgolf.submit.record import SubmitError, read_runs, write_record

BLOCKER = '''
import runpy, sys
class _NoPgolf:
    def find_spec(self, name, path=None, target=None):
        if name == "pgolf" or name.startswith("pgolf."):
            raise ImportError("pgolf is not importable here: " + name)
sys.meta_path.insert(0, _NoPgolf())
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
'''

FAMILIES = ("baseline", "swiglu_qat", "pr128_int6_mlp3x_qat_sliding", "pr194_11l_int6_qat_perdim_smear_swa",
            "pr314_11l_int4mlp_bigram_swa", "pr326_qat_ntk_cosine_swa", "pr1394_sp8192_gptq_sdclip_loop45x2",
            "pr1855_sp8192_lqer_sparsegate_bossmear_9hp", "pr1868_smeargate_bosfix_3seed")


def tiny_family(name: str, dataset: Path, **extra):
    """``name``'s code paths at CPU size (the recipe of tests/test_presets_smoke.py, on the small dataset)."""
    real = get_preset(name)
    return real.replace({
        "data.path": str(dataset), "model.vocab_size": 1024, "model.num_layers": real.model.num_layers,
        "train.iterations": 4, "train.max_wallclock_seconds": 0, "train.warmup_steps": 0,
        "train.val_loss_every": 0, "train.train_seq_len": 64, "train.train_batch_tokens": 512,
        "train.grad_accum_steps": 1, "train.val_batch_size": 4096, "train.train_log_every": 1,
        "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
        "eval.max_tokens": 2048, "eval.seq_len": 128 if real.eval.seq_len else 0,
        "eval.stride": 32 if real.eval.stride else 0, "eval.batch_seqs": 8,
        "qat.start_frac": 0.0, "averaging.swa_start_lr_scale": 1.1, "averaging.swa_every": 1,
        "export.gptq_calibration_batches": 2, "export.gptq_reserve_seconds": 0.0,
        # the small dataset has no CaseOps byte sidecar: its bytes come from the tokenizer (tests/test_data_caseops.py
        # covers the sidecar); the TTT evaluation runs on its documents at a tiny size
        "data.caseops": False, "eval.ttt_batch_size": 4, "eval.ttt_lora_rank": 4, "eval.ttt_prefix_docs": 4,
        "eval.ttt_global_chunk_tokens": 256, "eval.ttt_global_batch_seqs": 2, "eval.ttt_eval_seq_len": 128,
        **extra,
    })


# the settings that pick CPU kernels: the script must run on the same ones as this process to give equal floats
NUMERICS_ENV = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                if k in os.environ}


def run_script(script: Path, cwd: Path, dataset: Path, run_id: str, nproc: int = 0, **env) -> Path:
    """Run ``script`` in ``cwd`` (made if missing) where pgolf cannot be imported; returns ``cwd``, where it wrote
    its log ``logs/<run_id>.txt`` and its artifact, as the official script does."""
    cwd.mkdir(parents=True, exist_ok=True)
    blocker = cwd / "no_pgolf.py"
    blocker.write_text(BLOCKER)
    base = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "1", "RUN_ID": run_id,
            "DATA_PATH": str(dataset), "TOKENIZER_PATH": str(dataset / "tokenizer.model"), **NUMERICS_ENV, **env}
    launcher = ([sys.executable, "-I", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
                if nproc else [sys.executable, "-I"])
    proc = subprocess.run([*launcher, str(blocker), str(script)], cwd=cwd, env=base, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return cwd


def train_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if "train_loss" in r]


def one(pattern: str, text: str) -> re.Match:
    found = list(re.finditer(pattern, text, re.M))
    assert len(found) == 1, (pattern, len(found))
    return found[0]


def script_results(cwd: Path) -> dict:
    """What a script run left in ``cwd``, read as the official script's outputs are: its one log
    ``logs/<RUN_ID>.txt`` (the ``key:value`` lines) and its one artifact."""
    (log_path,), (artifact,) = list((cwd / "logs").glob("*.txt")), list(cwd.glob("*.ptz"))
    log = log_path.read_text()
    rows = [json.loads(line) for line in log_path.with_name(log_path.stem + ".metrics.jsonl").read_text().splitlines()]
    exact = one(r"^final_(\S+)_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)$", log)
    return {"train_loss": re.findall(r"^step:\d+/\d+ train_loss:(\S+) ", log, re.M), "log": log,
            "train_loss_exact": [r["train_loss"] for r in rows if "train_loss" in r],
            "prequant_val_bpb": one(r"^final_prequant val_loss:\S+ val_bpb:(\S+) ", log)[1],
            "q_val_bpb": float(exact[3]), "artifact_file": artifact.name, "artifact": artifact.read_bytes(),
            "code_bytes": int(one(r"^Code size: (\d+) bytes", log)[1]),
            "world_size": int(one(r"^world_size:(\d+) ", log)[1])}


def assert_same_run(pgolf_run: Path, script_cwd: Path) -> dict:
    """pgolf's run folder and the script's outputs agree: the train loss of every step (exactly, from the
    script's metrics file; and as the log prints it), the artifact's name and bytes, the score of the
    round-tripped artifact to 1e-6 (its exact line)."""
    a, b = json.loads((pgolf_run / "summary.json").read_text()), script_results(script_cwd)
    assert train_losses(pgolf_run) == b["train_loss_exact"] and len(b["train_loss_exact"]) == a["steps"]
    assert [f"{x:.4f}" for x in train_losses(pgolf_run)] == b["train_loss"]
    assert a["artifact_file"] == b["artifact_file"]
    assert (pgolf_run / a["artifact_file"]).read_bytes() == b["artifact"]
    assert abs(a["q_val_bpb"] - b["q_val_bpb"]) < 1e-6 and f"{a['val_bpb']:.4f}" == b["prequant_val_bpb"]
    return {"steps": a["steps"], "train_loss": train_losses(pgolf_run), "q_val_bpb": (a["q_val_bpb"], b["q_val_bpb"]),
            "artifact_bytes": a["artifact_bytes"]}


def test_blocker_blocks_pgolf(tmp_path, small_dataset):
    probe = tmp_path / "probe.py"
    probe.write_text("import pgolf\n")
    with pytest.raises(AssertionError, match="pgolf is not importable here"):
        run_script(probe, tmp_path, small_dataset, "probe")


def test_packed_script_trains_like_pgolf_without_pgolf(micro, tmp_path, small_dataset):
    """The default suite's equivalence case: the packed train_gpt.py of a micro baseline."""
    cfg = micro(**{"train.iterations": 4})
    train(cfg, tmp_path / "pgolf", console=False)
    packed = cache.packed_for(cfg)
    script = tmp_path / "train_gpt.py"
    script.write_text(packed.text)
    assert packed.bytes == code_bytes(cfg) == script.stat().st_size
    assert len(packed.text.splitlines()) == 2 and "exec(" in packed.text.splitlines()[1]
    assert unpack(packed.text) == cache.minified_template(cfg).replace(bundle.PLACEHOLDER, cache.minified_literal(cfg))
    run = run_script(script, tmp_path / "packed", small_dataset, "packed")
    assert_same_run(tmp_path / "pgolf", run)
    assert script_results(run)["code_bytes"] == packed.bytes  # the script counts itself, packed
    artifact = json.loads((tmp_path / "pgolf" / "summary.json").read_text())["artifact_file"]
    assert sorted(p.name for p in run.iterdir()) == sorted([artifact, "logs", "no_pgolf.py"])
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["packed.metrics.jsonl", "packed.txt"]  # no run folder


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_human_script_trains_like_pgolf(name, tmp_path, small_dataset):
    cfg = tiny_family(name, small_dataset)
    train(cfg, tmp_path / "pgolf", console=False)
    script = tmp_path / "train_gpt_human.py"
    script.write_text(bundle.human_source(cfg))
    out = assert_same_run(tmp_path / "pgolf", run_script(script, tmp_path / "human", small_dataset, "human"))
    print(name, out)


@pytest.mark.slow
def test_packed_and_human_scripts_agree(tmp_path, small_dataset):
    cfg = tiny_family("pr326_qat_ntk_cosine_swa", small_dataset)
    (tmp_path / "train_gpt_human.py").write_text(bundle.human_source(cfg))
    (tmp_path / "train_gpt.py").write_text(cache.packed_for(cfg).text)
    human = script_results(run_script(tmp_path / "train_gpt_human.py", tmp_path / "human", small_dataset, "human"))
    packed = script_results(run_script(tmp_path / "train_gpt.py", tmp_path / "packed", small_dataset, "packed"))
    for key in ("train_loss", "prequant_val_bpb", "q_val_bpb", "artifact_file", "artifact"):
        assert human[key] == packed[key], key


@pytest.mark.slow
def test_script_under_torchrun_two_gloo_ranks(tmp_path, small_dataset):
    from test_distributed import run_two_ranks
    cfg = tiny_family("pr194_11l_int6_qat_perdim_smear_swa", small_dataset, **{"train.grad_accum_steps": 0})
    run_two_ranks(cfg, tmp_path / "pgolf")
    (tmp_path / "train_gpt.py").write_text(cache.packed_for(cfg).text)
    run = run_script(tmp_path / "train_gpt.py", tmp_path / "ddp", small_dataset, "ddp", nproc=2)
    assert script_results(run)["world_size"] == 2
    print(assert_same_run(tmp_path / "pgolf", run))


IMPORT_GENERATED = '''
import importlib.util, sys
spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
mod = sys.modules["generated"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
g = vars(mod)
'''
MODEL_PROBE = '''
import importlib.util, json, sys, torch
for i, path in enumerate(sys.argv[1:]):
    spec = importlib.util.spec_from_file_location(f"generated{i}", path)
    mod = sys.modules[f"generated{i}"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with torch.device("meta"):
        m = mod.build_model(mod.script_config({}))
    print(json.dumps({k: list(v.shape) for k, v in m.state_dict().items()}))
'''


def test_script_builds_pgolfs_model_at_full_size(tmp_path):
    """Every family at the preset's real size (on the meta device): the generated script's model has the same
    state-dict names and shapes (hence parameter count) as pgolf's. One interpreter loads the seven scripts."""
    from pgolf.core.model import build_model
    scripts = []
    for name in FAMILIES:
        scripts.append(tmp_path / f"{name}.py")
        scripts[-1].write_text(bundle.human_source(get_preset(name)))
    (tmp_path / "probe.py").write_text(BLOCKER)
    (tmp_path / "model_probe.py").write_text(MODEL_PROBE)
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / "probe.py"), str(tmp_path / "model_probe.py"),
                           *map(str, scripts)], cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", **NUMERICS_ENV},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert len(got) == len(FAMILIES)
    for name, shapes in zip(FAMILIES, got):
        with torch.device("meta"):
            model = build_model(get_preset(name))
        assert shapes == {k: list(v.shape) for k, v in model.state_dict().items()}, name


def test_generated_source_has_only_weights_only_loads_and_no_pgolf():
    src = bundle.human_source(get_preset("pr1394_sp8192_gptq_sdclip_loop45x2"))
    tree = ast.parse(src)
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) in ("torch.load", "pickle.load",
                                                                                             "pickle.loads")]
    assert loads and all(ast.unparse(n.func) == "torch.load" for n in loads)
    for n in loads:
        kw = {k.arg: k.value for k in n.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m.split(".")[0] == "pgolf" for m in imported)
    assert '"""' not in src  # docstrings stripped


CORRUPT_PROBE = IMPORT_GENERATED + '''
import io, os, zlib, torch
marker = sys.argv[2]
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + marker,))
buf = io.BytesIO(); torch.save({"evil": Evil()}, buf)
for label, blob in (("pickle", zlib.compress(buf.getvalue())), ("truncated", open(sys.argv[3], "rb").read()[:-40]),
                    ("garbage", b"\\x00" * 64)):
    try:
        g["load_artifact"](blob, name=label)
    except Exception as e:
        print(label, type(e).__name__, str(e)[:120])
    else:
        print(label, "LOADED")
'''


def test_script_refuses_code_in_artifacts_and_corrupt_ones(micro, tmp_path):
    cfg = micro()
    script = tmp_path / "train_gpt_human.py"
    script.write_text(bundle.human_source(cfg))
    from pgolf.core.export import export_artifact
    from pgolf.core.model import build_model
    blob, _ = export_artifact(build_model(cfg).state_dict(), cfg.export, control=cfg.model.control_patterns)
    (tmp_path / "good.ptz").write_bytes(blob)
    probe = tmp_path / "probe.py"
    probe.write_text(BLOCKER)
    (tmp_path / "corrupt.py").write_text(CORRUPT_PROBE)
    marker = tmp_path / "marker"
    proc = subprocess.run([sys.executable, "-I", str(probe), str(tmp_path / "corrupt.py"), str(script), str(marker),
                           str(tmp_path / "good.ptz")], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert lines["pickle"].startswith("UnsafeFileError") and not marker.exists()
    assert not lines["truncated"].startswith("LOADED") and not lines["garbage"].startswith("LOADED")


def _defined_and_read(src: str) -> set[str]:
    """Every name the source defines or reads (classes, functions, variables), not words in its strings."""
    tree = ast.parse(src)
    return ({n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)})


@pytest.fixture(scope="module")
def baseline_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("folded") / "train_gpt_human.py"
    path.write_text(bundle.human_source(get_preset("baseline")))
    return path


def load_script(path: Path):
    """The generated script as a module of this process (it imports nothing of pgolf)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"generated_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_folded_script_holds_only_its_code_paths(baseline_script):
    """The baseline's script has no code of other presets' switches; PR #1394's has GPTQ and its recurrence
    but no SmearGate, BigramHash or SwiGLU."""
    other = {"SmearGate", "BigramHash", "SwiGLUMLP", "LeakyReLU2MLP", "gptq_quantize", "collect_hessians",
             "RecordShuffledLoader", "PermutedBlockLoader", "byte_shuffle", "_cosine"}
    names = _defined_and_read(baseline_script.read_text())
    assert not other & names
    assert {"GPT", "ReLU2MLP", "quantize_rows", "TrainLoop", "check_folded"} <= names
    pr1394 = _defined_and_read(bundle.human_source(get_preset("pr1394_sp8192_gptq_sdclip_loop45x2")))
    assert {"gptq_quantize", "collect_hessians", "RecordShuffledLoader", "byte_shuffle", "ReLU2MLP"} <= pr1394
    assert not {"SmearGate", "BigramHash", "SwiGLUMLP", "PermutedBlockLoader"} & pr1394
    # the unfolded bundle (every preset's code paths) still holds them: the folding removed them
    assert other <= _defined_and_read(bundle.human_source(get_preset("baseline"), folded=False))


def test_folded_switch_from_the_environment_is_refused_in_one_line(baseline_script, tmp_path):
    mod = load_script(baseline_script)
    assert mod.FOLDED["model.mlp"] == "relu2" and mod.FOLDED_ON_OFF["model.bigram_buckets"] is False
    with pytest.raises(mod.ConfigError, match=r"^USE_SWIGLU='1' sets model.mlp='swiglu', but this script was "
                                              r"generated with model.mlp='relu2'; regenerate it with pgolf submit$"):
        mod.script_config({"USE_SWIGLU": "1"})
    with pytest.raises(mod.ConfigError, match=r"^BIGRAM_BUCKETS='4096' sets model.bigram_buckets=4096 \(on\), but "
                                              r"this script was generated with model.bigram_buckets=0 \(off\)"):
        mod.script_config({"BIGRAM_BUCKETS": "4096"})
    with pytest.raises(mod.ConfigError, match="QAT_FRACTION='0.3' sets qat.enabled=True"):
        mod.script_config({"QAT_FRACTION": "0.3"})
    mod.script_config({"USE_SWIGLU": "0", "QAT": "0", "SWA_ENABLED": "0"})  # the folded values themselves pass
    # the script itself: one line on stderr, exit status 2, before anything runs
    proc = subprocess.run([sys.executable, "-I", str(baseline_script)], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "SMEAR_GATE": "1"}, timeout=300)
    assert proc.returncode == 2 and not proc.stdout and not (tmp_path / "logs").exists()
    assert proc.stderr.strip().splitlines() == [
        "error: SMEAR_GATE='1' sets model.smear_gate='per_dim', but this script was generated with "
        "model.smear_gate='off'; regenerate it with pgolf submit"]


def test_hyperparameters_from_the_environment_still_override(baseline_script):
    mod = load_script(baseline_script)
    cfg = mod.script_config({"NUM_LAYERS": "3", "MATRIX_LR": "0.01", "SEED": "7", "EVAL_STRIDE": "0"})
    assert (cfg.model.num_layers, cfg.optim.matrix_lr, cfg.train.seed) == (3, 0.01, 7)
    assert mod.script_config({}).model.num_layers == 9


def test_script_configuration_is_the_submitted_one(baseline_script, tmp_path):
    """The script's ``DEFAULTS`` holds only the values that differ from ``Config()``; with its dataclasses'
    defaults they give back the whole configuration (official data layout), for the baseline and PR #1394."""
    cfg = get_preset("pr1394_sp8192_gptq_sdclip_loop45x2")
    (tmp_path / "pr1394.py").write_text(bundle.human_source(cfg))
    for script, preset in ((baseline_script, get_preset("baseline")), (tmp_path / "pr1394.py", cfg)):
        mod = load_script(script)
        assert mod.script_config({}).to_dict() == bundle.script_defaults(preset)
        assert mod.DEFAULTS == bundle.script_overrides(preset)
    assert bundle.script_overrides(get_preset("baseline")) == {"data": {
        "path": "./data/datasets/fineweb10B_sp1024", "tokenizer_path": "./data/tokenizers/fineweb_1024_bpe.model"}}


def test_pack_round_trip_and_smaller_method():
    src = "def f(x):\n    '''doc'''\n    return x + 1\n\nprint(f(41))\n" * 50
    p = pack(src)
    assert unpack(p.text) == p.minified and "doc" not in p.minified
    out = subprocess.run([sys.executable, "-I", "-c", p.text], capture_output=True, text=True)
    assert out.stdout.split() == ["42"] * 50


def test_bundle_drops_unused_modules_and_names():
    src = bundle.human_source(get_preset("baseline"))
    tree = ast.parse(src)
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert {"TrainLoop", "GPT", "export_artifact", "main", "from_env"} <= defined
    # what only pgolf uses (building datasets and tokenizers, its output folders, the raw code count) is dropped
    assert not {"train_sentencepiece", "write_shard", "write_manifest", "runs_dir", "raw_code_bytes"} & defined
    assert "def resolve_config" not in src and "def size_estimate" not in src  # CLI and sizing were never read
    assert "import zstandard" not in src.split("\ndef ")[0]  # imported lazily, by zstd configurations only


RUN_FOLDER_NAMES = {  # pgolf's run folders (pgolf.core.train, runs, ownership, records, stopping): not the script's
    "FolderLock", "lock_holder", "pid_alive", "RunWriter", "claim_run_dir", "prepare_run_dir", "atomic_write_json",
    "git_info", "environment", "hardware", "cpu_model", "gpu_driver", "StopSignals", "StopRequested", "checkpoint",
    "_restore", "finish_from_raw", "_read_training_end", "_save_raw", "read_status_record", "RunRecordError",
    "mark_ended", "agreed_stops", "process_identity", "CHECKPOINT", "TRAINING_END", "STATUS_FILE"}
RUN_FOLDER_MODULES = {"fcntl", "socket", "subprocess", "signal", "platform", "threading"}


@pytest.mark.parametrize("name", ["baseline", "pr1394_sp8192_gptq_sdclip_loop45x2"])
def test_generated_script_has_no_run_folder_machinery(name):
    """The script runs the training loop alone: no class, function, method or constant of pgolf's run folders
    (lock, status, records, checkpoints, SIGTERM, raw weights) and none of the modules they import."""
    tree = ast.parse(bundle.human_source(get_preset(name)))
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not defined & RUN_FOLDER_NAMES, sorted(defined & RUN_FOLDER_NAMES)
    assert not imported & RUN_FOLDER_MODULES, sorted(imported & RUN_FOLDER_MODULES)
    assert {"TrainLoop", "ScriptSink", "export_artifact", "load_artifact"} <= defined


def test_record_folder_from_runs(micro, tmp_path):
    runs = []
    for seed in (1, 2):
        train(micro(**{"train.seed": seed, "train.iterations": 2}), tmp_path / f"s{seed}", console=False)
        runs.append(tmp_path / f"s{seed}")
    cfg, seed_runs = read_runs(runs)
    sub = write_record(tmp_path / "rec", cfg, seed_runs, name="micro test")
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert files == ["README.md", "submission.json", "train_gpt.py", "train_gpt_human.py", "train_seed1.log",
                     "train_seed2.log"]
    on_disk = json.loads((tmp_path / "rec" / "submission.json").read_text())
    assert on_disk == json.loads(json.dumps(sub))
    assert sub["seeds"] == [1, 2] and set(sub["seed_results"]) == {"1", "2"}
    assert sub["bytes_code"] == (tmp_path / "rec" / "train_gpt.py").stat().st_size
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    assert sub["val_bpb"] == pytest.approx(sum(s["q_val_bpb"] for s in summaries) / 2)
    assert sub["bytes_total"] == max(s["artifact_bytes"] for s in summaries) + sub["bytes_code"]
    assert "SEED=2" in (tmp_path / "rec" / "README.md").read_text()
    with pytest.raises(SubmitError, match="already exists"):
        write_record(tmp_path / "rec", cfg, seed_runs)
    train(micro(**{"train.iterations": 3}), tmp_path / "other", console=False)
    with pytest.raises(SubmitError, match=r"differs .* in \['train.iterations'\]"):
        read_runs([runs[0], tmp_path / "other"])


def test_cli_submit_code_alone_and_one_line_errors(tmp_path, capsys):
    from pgolf.running.cli import main
    assert main(["submit", "tiny", "train.seed=7", "--out", str(tmp_path / "code")]) == 0
    sub = json.loads((tmp_path / "code" / "submission.json").read_text())
    assert "val_bpb" not in sub and sub["bytes_code"] == (tmp_path / "code" / "train_gpt.py").stat().st_size
    assert "'seed': 7" in (tmp_path / "code" / "train_gpt_human.py").read_text()
    capsys.readouterr()
    assert main(["submit", "nosuchpreset", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().startswith("pgolf: error: 'nosuchpreset': neither a run folder nor a preset")
    assert main(["submit", "tiny", "--out", str(tmp_path / "code")]) == 2
    assert "already exists" in capsys.readouterr().err and not (tmp_path / "x").exists()
