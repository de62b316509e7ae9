"""The trainer end to end on a micro model: golden losses, resume parity, SWA applied, QAT switch,
evaluation modes, run-folder safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from pgolf_testing import raise_at

from pgolf.core import train_loop as train_mod
from pgolf.core.runs import RunExistsError, read_status
from pgolf.core.train import TrainerHooks, train

GOLDEN = Path(__file__).parent / "assets" / "golden_micro.json"


def metric_rows(run: Path, key: str) -> dict[int, float]:
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    out = {}
    for r in rows:
        if key in r:
            out[r["step"]] = r[key]
    return out


def test_golden_losses(micro, tmp_path):
    """Train losses of a fixed micro run. Regenerate on purpose with PGOLF_UPDATE_GOLDEN=1."""
    s = train(micro(), tmp_path / "run", console=False)
    losses = metric_rows(tmp_path / "run", "train_loss")
    got = {"train_loss": [losses[i] for i in sorted(losses)], "val_loss": s["val_loss"], "q_val_loss": s["q_val_loss"]}
    if os.environ.get("PGOLF_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4, abs=1e-4)
    assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-4)
    assert got["q_val_loss"] == pytest.approx(want["q_val_loss"], rel=1e-4)
    assert losses[8] < losses[1]  # it learns


def test_run_folder_contents_and_protection(micro, tmp_path):
    run = tmp_path / "run"
    # large matrices int8 as at baseline size (with the default 65,536 every micro tensor stays fp16: "float")
    cfg = micro(**{"export.keep_float_max_numel": 1000})
    s = train(cfg, run, console=False)
    for f in ("config.json", "environment.json", "train.log", "metrics.jsonl", "summary.json", "status.json",
              "final_model.pt", "final_model.int8.ptz", "export_report.json"):
        assert (run / f).exists(), f
    assert read_status(run)["status"] == "finished"
    env = json.loads((run / "environment.json").read_text())
    assert {"git_sha", "git_dirty", "torch", "python"} <= set(env)
    dataset = json.loads((run / "dataset.json").read_text())
    assert env["dataset_sha256"] == dataset["dataset_sha256"] == s["dataset_sha256"] and len(env["dataset_sha256"]) == 64
    assert (s["init_seed"], s["init_seeding"], s["data_order"], s["data_order_seed"]) == (
        cfg.train.seed, "global", "sequential", 0)
    log = (run / "train.log").read_text()
    assert "step:8/8 val_loss:" in log and "final_int8_zlib_roundtrip_exact val_loss:" in log
    # baseline export settings: the official artifact name and log line names
    assert s["artifact_bytes"] == (run / "final_model.int8.ptz").stat().st_size
    assert (s["artifact_format"], s["artifact_file"]) == ("int8_zlib", "final_model.int8.ptz")
    assert "over_cap" not in log and s["fits_16mb"]
    assert s["total_bytes"] == s["artifact_bytes"] + s["code_bytes"]
    with pytest.raises(RunExistsError, match="already finished"):
        train(cfg, run, console=False)
    assert read_status(run)["status"] == "finished"  # untouched


def test_failed_run_is_marked_failed(micro, tmp_path):
    with pytest.raises(RuntimeError, match="simulated"):
        train(micro(), tmp_path / "run", console=False,
              hooks=TrainerHooks(before_step=raise_at(0, RuntimeError("simulated failure"))))
    st = read_status(tmp_path / "run")
    assert st["status"] == "failed" and "simulated failure" in st["error"]
    assert not (tmp_path / "run" / "summary.json").exists()


def test_resume_reproduces_uninterrupted_losses(micro, tmp_path):
    cfg = micro(**{"train.checkpoint_every": 3})
    train(cfg, tmp_path / "full", console=False)
    full = metric_rows(tmp_path / "full", "train_loss")

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C before the 6th step (the checkpoint is step 3's)
        train(cfg, tmp_path / "cut", console=False, hooks=TrainerHooks(before_step=raise_at(5, KeyboardInterrupt)))
    assert read_status(tmp_path / "cut")["status"] == "interrupted"  # Ctrl-C, resumable
    s = train(cfg, tmp_path / "cut", resume=True, console=False)
    resumed = metric_rows(tmp_path / "cut", "train_loss")
    assert resumed == full  # bit-identical on CPU
    assert s["steps"] == 8 and "resume:step:3" in (tmp_path / "cut" / "train.log").read_text()


def test_swa_average_is_what_gets_exported(micro, tmp_path, monkeypatch):
    cfg = micro(**{"averaging.mode": "swa", "averaging.swa_start_lr_scale": 0.8, "averaging.swa_every": 2})
    snaps = []
    original = train_mod.WeightAverager.update

    def recording(self, model, step, lr_scale):
        took = original(self, model, step, lr_scale)
        if took:
            snaps.append({k: v.detach().clone().float() for k, v in model.state_dict().items()})
        return took
    monkeypatch.setattr(train_mod.WeightAverager, "update", recording)
    s = train(cfg, tmp_path / "run", console=False)
    assert s["averaged_snapshots"] == len(snaps) >= 2
    saved = torch.load(tmp_path / "run" / "final_model.pt", weights_only=True)
    for k in saved:
        avg = sum(sn[k] for sn in snaps) / len(snaps)
        assert torch.allclose(saved[k].float(), avg, atol=1e-6), k
    assert "swa:applied snapshots:" in (tmp_path / "run" / "train.log").read_text()


def test_ema_is_applied(micro, tmp_path):
    s = train(micro(**{"averaging.mode": "ema", "averaging.ema_decay": 0.9}), tmp_path / "run", console=False)
    assert s["averaged_snapshots"] == 8


def test_qat_switch_is_decided_once_even_without_quantized_layers(micro, tmp_path):
    """The micro model's matrices are all below the export's 65,536 threshold: QAT has no layer to fake-quantize,
    and the switch is still decided (and logged) exactly once."""
    s = train(micro(**{"qat.enabled": True, "qat.start_frac": 0.5}), tmp_path / "run", console=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert s["qat_step"] == 4 and log.count("qat:enabled") == 1 and "qat:enabled step:4 layers:0" in log


def test_qat_switches_on_at_its_fraction(micro, tmp_path):
    cfg = micro(**{"qat.enabled": True, "qat.start_frac": 0.5, "export.keep_float_max_numel": 1000,
                   "export.bits_mlp": 6, "export.bits_attn": 6})
    s = train(cfg, tmp_path / "run", console=False)
    assert s["qat_step"] == 4
    assert "qat:enabled step:4" in (tmp_path / "run" / "train.log").read_text()
    # attention and MLP int6, the embedding (bits_other) int8: the name says both
    assert s["artifact_format"] == "mixed-int6-int8_zlib"
    assert s["artifact_file"] == "final_model.mixed-int6-int8.zlib.ptz"
    assert (tmp_path / "run" / s["artifact_file"]).exists()


def test_sliding_and_full_tail_final_evaluation(micro, tmp_path, small_dataset):
    from pgolf.core.data.loader import load_validation_tokens, resolve_dataset
    cfg = micro(**{"eval.stride": 16, "eval.tail": "score", "eval.seq_len": 128})
    s = train(cfg, tmp_path / "run", console=False)
    ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    n_val = load_validation_tokens(ds.val_files, 128, tail="score").numel() - 1
    assert s["val_tokens_scored"] == n_val  # every validation token, exactly once
    assert s["eval_mode"].startswith("windows(seq_len=128,stride=16")


@pytest.mark.slow
def test_compiled_training_with_qat_recompile(micro, tmp_path):
    """The CUDA code path (torch.compile, fullgraph) on CPU: QAT switches on mid-run with a logged
    recompile, and the run finishes through export and a compiled sliding-window evaluation (padded
    batches) that scores the same tokens as eager."""
    cfg = micro(**{"train.compile": "on", "qat.enabled": True, "qat.start_frac": 0.5,
                   "export.keep_float_max_numel": 1000, "train.warmup_steps": 2, "eval.stride": 16})
    s = train(cfg, tmp_path / "run", console=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "compile:1" in log and "qat:enabled step:4 layers:12 recompile:1" in log
    assert "warmup_step:2/2" in log
    eager = train(micro(**{"qat.enabled": True, "qat.start_frac": 0.5, "export.keep_float_max_numel": 1000,
                           "eval.stride": 16}), tmp_path / "eager", console=False)
    assert s["val_loss"] == pytest.approx(eager["val_loss"], abs=2e-3)  # same math, different kernels
    assert s["val_tokens_scored"] == eager["val_tokens_scored"]
    assert s["q_val_bpb"] == pytest.approx(eager["q_val_bpb"], abs=2e-3)


def test_rescore_tail_final_evaluation(micro, tmp_path, small_dataset):
    """eval.window_rule=rescore_tail scores the records' window set on the stream cut to a multiple of L."""
    from pgolf.core.data.loader import load_validation_tokens, resolve_dataset
    from pgolf.core.evaluate import windows
    cfg = micro(**{"eval.stride": 16, "eval.window_rule": "rescore_tail"})
    s = train(cfg, tmp_path / "run", console=False)
    ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    n_cut = load_validation_tokens(ds.val_files, 64, tail="drop").numel() - 1
    assert s["val_tokens_scored"] == sum(e - f for _, e, f in windows(n_cut, 64, 16, window_rule="rescore_tail"))
    assert s["val_tokens_scored"] == n_cut + 3 * 16  # the last 16 targets, again by each of 3 trailing windows
    assert s["eval_mode"] == "windows(seq_len=64,stride=16,tail=drop,rule=rescore_tail)"
