import pytest

from pgolf.research.ablate import ablate, default_mode, plan, run_key


def test_ablation_runs_caches_and_reruns(micro, tmp_path):
    base = micro(**{"train.iterations": 3})
    arms = {"relu2": {}, "swiglu": {"model.mlp": "swiglu"}}
    logs = []
    df = ablate("t", base, arms, seeds=[0, 1], budget_steps=3, runs_root=tmp_path, jobs=2, log=logs.append)
    assert len(df) == 4 and sorted(df["arm"]) == ["relu2", "relu2", "swiglu", "swiglu"]
    assert set(df["seed"]) == {0, 1} and (df["steps"] == 3).all()
    assert {"val_bpb", "q_val_bpb", "artifact_bytes", "path"} <= set(df.columns)
    assert "4 to train" in logs[0]
    logs.clear()
    df2 = ablate("t", base, arms, seeds=[0, 1], budget_steps=3, runs_root=tmp_path, jobs=2, log=logs.append)
    assert "4 cached, 0 to train" in logs[0]
    assert list(df2["q_val_bpb"]) == list(df["q_val_bpb"])
    logs.clear()
    ablate("t", base, {"relu2": {}}, seeds=[0], budget_steps=3, runs_root=tmp_path, rerun=True, log=logs.append)
    assert "0 cached, 1 to train" in logs[0]
    assert len(list((tmp_path / "t").glob("relu2-s0-*.replaced-*"))) == 1  # the old run is kept aside


def test_run_key_depends_on_config_not_labels(micro, tmp_path):
    a = plan("x", micro(), {"a": {}, "b": {"model.mlp": "swiglu"}}, seeds=[0, 1], budget_steps=2, runs_root=tmp_path)
    keys = {r.path.name.rsplit("-", 1)[1] for r in a}
    assert len(keys) == 4
    assert run_key(a[0].cfg) == run_key(a[0].cfg.replace({}))


def test_reuse_only_mode_never_trains(micro, tmp_path, monkeypatch):
    base = micro(**{"train.iterations": 2})
    monkeypatch.delenv("PGOLF_ABLATE_MODE", raising=False)
    with pytest.raises(RuntimeError, match="no finished run for arm 'a' seed 0"):
        ablate("r", base, {"a": {}}, seeds=[0], budget_steps=2, runs_root=tmp_path, log=lambda m: None, mode="reuse")
    ablate("r", base, {"a": {}}, seeds=[0], budget_steps=2, runs_root=tmp_path, log=lambda m: None)
    # a folder renamed (e.g. by an older key rule): found through its recorded config and dataset
    (run,) = list((tmp_path / "r").glob("a-s0-*"))
    run.rename(run.with_name("a-s0-oldcodekey"))
    monkeypatch.setenv("PGOLF_ABLATE_MODE", "reuse")  # the notebooks' switch: mode=None reads it
    df = ablate("r", base, {"a": {}}, seeds=[0], budget_steps=2, runs_root=tmp_path, log=lambda m: None)
    assert len(df) == 1 and df["path"].iloc[0].endswith("a-s0-oldcodekey")
    assert list(df["stale_code"]) == [False]  # kept for older notebooks; a stale run is never returned


def test_mode_is_an_argument_and_the_environment_only_its_default(monkeypatch):
    monkeypatch.delenv("PGOLF_ABLATE_MODE", raising=False)
    assert default_mode() == "train"
    monkeypatch.setenv("PGOLF_ABLATE_MODE", "reuse")
    assert default_mode() == "reuse"
    monkeypatch.setenv("PGOLF_ABLATE_MODE", "reus")
    with pytest.raises(ValueError, match=r"PGOLF_ABLATE_MODE='reus': expected one of train, reuse"):
        default_mode()
    with pytest.raises(ValueError, match=r"ablate\(mode='fast'\)"):
        ablate("x", "tiny", {"a": {}}, seeds=[0], mode="fast")


def test_a_cpu_run_starts_with_malloc_settings_that_keep_freed_buffers(micro, tmp_path, monkeypatch):
    from pgolf.core.runtime import CPU_MALLOC_ENV, training_process_env
    from pgolf.research.ablate import PlannedRun, command
    for k in CPU_MALLOC_ENV:
        monkeypatch.delenv(k, raising=False)
    cfg = micro()
    _, env = command(PlannedRun("control", 0, cfg, tmp_path / "control-s0-k"), "a", 1, write=False)
    assert {k: env[k] for k in CPU_MALLOC_ENV} == {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}
    assert training_process_env(cfg.replace({"train.device": "cuda"})) == {}
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")  # the user's own setting wins
    _, env = command(PlannedRun("control", 0, cfg, tmp_path / "control-s0-k"), "a", 1, write=False)
    assert env["MALLOC_MMAP_MAX_"] == "65536" and env["MALLOC_TRIM_THRESHOLD_"] == str(4 << 30)
