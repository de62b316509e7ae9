"""The ablation cache without the code in the key: run keys from the non-default config and the dataset
identity, and the behaviour fingerprint that decides whether a cached run still stands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pgolf.core.config import Config
from pgolf.core.data.identity import verify_dataset
from pgolf.core.data.loader import resolve_dataset
from pgolf.research import behaviour
from pgolf.research.ablate import StaleRunError, ablate, plan, stale_reason
from pgolf.research.runkey import config_delta, dataset_sha256, key_of, run_key

QUIET = {"log": lambda m: None}


def test_key_ignores_default_valued_entries_and_the_data_location(micro, small_dataset, tmp_path):
    cfg = micro()
    # a core that adds a field, default off: Config() and every config then hold it with its default value
    newer_default, newer_cfg = Config().to_dict(), cfg.to_dict()
    newer_default["model"]["new_switch"] = newer_cfg["model"]["new_switch"] = False
    assert config_delta(newer_cfg, newer_default) == config_delta(cfg)  # the same key as before the field
    newer_cfg["model"]["new_switch"] = True  # an arm that turns it on gets its own key
    assert config_delta(newer_cfg, newer_default) == {**config_delta(cfg), "model.new_switch": True}
    assert "model.num_layers" in config_delta(cfg) and "model.mlp" not in config_delta(cfg)
    sha = dataset_sha256(cfg)
    assert run_key(cfg) == key_of(config_delta(cfg), sha)
    assert "data.path" not in config_delta(cfg)
    copy = tmp_path / "elsewhere"
    shutil.copytree(small_dataset, copy)
    assert run_key(cfg.replace({"data.path": str(copy)})) == run_key(cfg)  # same data in another place
    assert run_key(cfg.replace({"model.mlp": "swiglu"})) != run_key(cfg)
    assert run_key(cfg.replace({"train.seed": 2})) != run_key(cfg)


def test_key_follows_the_dataset_identity(micro, small_dataset, tmp_path):
    cfg = micro()
    copy = tmp_path / "ds"
    shutil.copytree(small_dataset, copy)
    moved = cfg.replace({"data.path": str(copy)})
    assert run_key(moved) == run_key(cfg)
    manifest = copy / "manifest.json"
    m = json.loads(manifest.read_text())
    m["note"] = "rebuilt"
    manifest.write_text(json.dumps(m))
    assert run_key(moved) != run_key(cfg)
    manifest.unlink()  # no manifest: the listing rule, as the run computes it
    assert run_key(moved) != run_key(cfg) and run_key(moved, dataset="x") == key_of(config_delta(moved), "x")
    recorded = verify_dataset(resolve_dataset(moved.data, moved.model.vocab_size), moved.model.vocab_size)
    assert recorded.manifest is None and dataset_sha256(moved) == recorded.sha256


def test_dataset_sha256_is_what_the_run_records(micro, tmp_path):
    df = ablate("d", micro(), {"a": {}}, seeds=[0], budget_steps=1, runs_root=tmp_path, **QUIET)
    summary = json.loads((Path(df["path"].iloc[0]) / "summary.json").read_text())
    assert summary["dataset_sha256"] == dataset_sha256(micro())


def test_fingerprint_is_deterministic_and_restores_the_caller_state(micro):
    import torch
    cfg = micro()
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    a = behaviour._compute(behaviour.fingerprint_config(cfg))
    b = behaviour._compute(behaviour.fingerprint_config(cfg))
    assert torch.equal(torch.rand(3), want)  # the global RNG continues as if nothing ran
    assert a == b and a["version"] == behaviour.VERSION and len(a["losses"]) == behaviour.STEPS
    assert behaviour.compare(a, b) is None
    assert behaviour.fingerprint(cfg.replace({"train.seed": 7})) == behaviour.fingerprint(cfg)  # one per arm


@pytest.mark.parametrize("other", [{"model.mlp": "swiglu"}, {"qat.enabled": True}])
def test_fingerprint_sees_a_change_of_behaviour(micro, other):
    # micro's matrices are under export.keep_float_max_numel; below it they are quantized, so QAT acts
    cfg = micro(**{"export.keep_float_max_numel": 1024})
    a, b = behaviour.fingerprint(cfg), behaviour.fingerprint(cfg.replace(other))
    diff = behaviour.compare(a, b)
    assert diff is not None and f"rtol {behaviour.RTOL:g}" in diff


@pytest.mark.parametrize("other", [{"eval.stride": 16}, {"eval.tail": "score"}])
def test_fingerprint_sees_a_change_of_evaluation(micro, other):
    a, b = behaviour.fingerprint(micro()), behaviour.fingerprint(micro(**other))
    assert a["losses"] == b["losses"] and a["eval_official"] == b["eval_official"]  # training untouched
    assert behaviour.compare(a, b).startswith("eval_final")


def test_compare_names_the_first_difference():
    fp = {"version": 1, "losses": [7.0, 6.9], "loss": 6.8, "q_loss": 6.81, "update_probe": 0.5,
          "eval_official": [6.8, 3.1], "eval_final": [6.8, 3.1]}
    assert behaviour.compare(dict(fp, losses=[7.0, 6.9 * (1 + behaviour.RTOL / 3)]), fp) is None  # within rtol
    assert behaviour.compare(dict(fp, losses=[7.0, 6.9 * (1 + 3 * behaviour.RTOL)]), fp) is not None
    assert behaviour.compare(dict(fp, losses=[7.0, 6.91]), fp).startswith("losses[1] 6.91, now 6.9")
    assert "version" in behaviour.compare(dict(fp, version=0), fp)
    assert behaviour.compare(dict(fp, losses=[7.0]), fp).startswith("losses [7.0], now")
    assert "not a fingerprint" in behaviour.compare([], fp)


def _tamper(run):
    path = run / "behaviour.json"
    fp = json.loads(path.read_text())
    fp["losses"][2] += 0.01
    path.write_text(json.dumps(fp))
    return fp["losses"][2]


def test_reuse_refuses_a_run_the_code_no_longer_reproduces(micro, tmp_path):
    base, arms = micro(), {"a": {}}
    df = ablate("s", base, arms, seeds=[0], budget_steps=2, runs_root=tmp_path, **QUIET)
    (run,) = [p for p in (tmp_path / "s").iterdir() if p.is_dir()]
    stored = json.loads((run / "behaviour.json").read_text())
    assert behaviour.compare(stored, behaviour.fingerprint(plan("s", base, arms, [0], 2, runs_root=tmp_path)[0].cfg)) is None
    again = ablate("s", base, arms, seeds=[0], budget_steps=2, runs_root=tmp_path, mode="reuse", **QUIET)
    assert list(again["path"]) == list(df["path"])
    bad = _tamper(run)
    with pytest.raises(StaleRunError, match=rf"{run}: cached run of arm 'a' seed 0 is stale: .*losses\[2\] {bad}"):
        ablate("s", base, arms, seeds=[0], budget_steps=2, runs_root=tmp_path, mode="reuse", **QUIET)
    (run / "behaviour.json").unlink()
    with pytest.raises(StaleRunError, match=r"no behaviour.json \(trained before behaviour fingerprints"):
        ablate("s", base, arms, seeds=[0], budget_steps=2, runs_root=tmp_path, mode="reuse", **QUIET)


def test_train_mode_retrains_a_stale_run(micro, tmp_path):
    base, arms = micro(), {"a": {}}
    ablate("t", base, arms, seeds=[0], budget_steps=2, runs_root=tmp_path, **QUIET)
    (run,) = [p for p in (tmp_path / "t").iterdir() if p.is_dir()]
    _tamper(run)
    (planned,) = plan("t", base, arms, [0], 2, runs_root=tmp_path)
    assert planned.path == run and "losses[2]" in stale_reason(planned)
    logs = []
    ablate("t", base, arms, seeds=[0], budget_steps=2, runs_root=tmp_path, log=logs.append)
    assert any("stale, training it again" in m and "losses[2]" in m for m in logs)
    assert any("0 cached, 1 to train" in m for m in logs)
    assert len(list((tmp_path / "t").glob(f"{run.name}.replaced-*"))) == 1  # the stale run moved aside
    assert stale_reason(planned) is None  # the new run's behaviour.json matches
