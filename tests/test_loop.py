"""Depth recurrence (model.loop_layers / loop_count / loop_start_frac) and the PR #1394 preset at CPU size:
the loop switch is decided once, logged, followed by a compiled model, checkpointed and restored; the
preset's techniques train end to end in-process (GPTQ export included)."""

from __future__ import annotations

import json

import pytest
import torch
from pgolf_testing import raise_at

from pgolf.core.config import Config, ConfigError
from pgolf.core.loop import LoopController, prime_looped
from pgolf.core.model import build_model
from pgolf.core.train import TrainerHooks, train
from pgolf.running.presets import get_preset

LOOPED = {"model.vocab_size": 64, "model.num_layers": 4, "model.model_dim": 32, "model.num_heads": 2,
          "model.num_kv_heads": 1, "model.loop_layers": "1,2", "model.loop_count": 1, "model.skip_gates": True}


def test_config_checks_the_loop_and_rope_switches():
    for bad, key in (({"model.loop_layers": "1,3", "model.loop_count": 1}, "model.loop_layers"),
                     ({"model.loop_layers": "2,9", "model.loop_count": 1}, "model.loop_layers"),
                     ({"model.loop_layers": "1,2"}, "model.loop_count"),
                     ({"model.rope_dims": 7}, "model.rope_dims"),
                     ({"model.rope_dims": 128}, "model.rope_dims"),
                     ({"model.xsa_last_n": 10}, "model.xsa_last_n"),
                     ({"model.loop_start_frac": 1.0}, "model.loop_start_frac")):
        with pytest.raises(ConfigError, match=key):
            Config().replace(bad)


def test_defaults_build_no_new_parameters():
    names = [n for n, _ in build_model(Config()).named_parameters()]
    assert not any("skip_gates" in n for n in names)
    assert build_model(Config()).encoder_indices == [0, 1, 2, 3]


def test_controller_switches_once_logs_and_restores():
    model = build_model(Config().replace(LOOPED))
    logs, rows = [], []
    ctl = LoopController(model, model.cfg, distributed=False, device=torch.device("cpu"), log=logs.append,
                         metric=lambda **r: rows.append(r))
    assert not ctl.maybe_switch(0, 0.2) and not model.looping_active
    assert ctl.maybe_switch(3, 0.5) and model.looping_active and ctl.loop_step == 3
    assert not ctl.maybe_switch(4, 0.9)  # decided once
    assert logs == ["layer_loop:enabled step:3 frac:0.500 encoder:[0, 1, 2] decoder:[1, 2, 3]"]
    assert rows == [{"event": "loop_enabled", "step": 3, "progress": 0.5}]
    other = build_model(Config().replace(LOOPED))
    ctl2 = LoopController(other, other.cfg, distributed=False, device=torch.device("cpu"), log=logs.append,
                          metric=lambda **r: None)
    ctl2.load_state_dict(ctl.state_dict())
    assert other.looping_active and ctl2.loop_step == 3


def test_priming_runs_the_looped_graph_and_switches_back():
    model = build_model(Config().replace(LOOPED))
    seen = []
    prime_looped(model, model.cfg, lambda: seen.append(model.looping_active), log=lambda s: None)
    assert seen == [True] and not model.looping_active


def test_compiled_model_follows_the_flag():
    torch.manual_seed(0)
    model = build_model(Config().replace(LOOPED))
    with torch.no_grad():
        for p in model.parameters():  # non-zero output projections, so the block order matters
            p.add_(0.05 * torch.randn_like(p))
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=False)
    x = torch.randint(0, 64, (1, 16))
    with torch.no_grad():
        off = compiled(x)
        model.looping_active = True
        on = compiled(x)
        assert torch.equal(on, model(x)) and not torch.allclose(on, off)


def preset_micro(dataset, **kw) -> Config:
    """The PR #1394 preset's techniques at CPU size (GPTQ export, EMA, MuonEq-R, loop from half way)."""
    return get_preset("pr1394_sp8192_gptq_sdclip_loop45x2").replace({
        "data.path": str(dataset), "model.vocab_size": 1024, "model.num_layers": 4, "model.model_dim": 64,
        "model.num_heads": 4, "model.num_kv_heads": 2, "model.rope_dims": 8, "model.xsa_last_n": 4,
        "model.loop_layers": "1,2", "train.train_seq_len": 64, "train.train_batch_tokens": 1024,
        "train.grad_accum_steps": 1, "train.iterations": 8, "train.max_wallclock_seconds": 0.0,
        "train.warmup_steps": 2, "train.val_loss_every": 0, "train.val_batch_size": 16384,
        "train.train_log_every": 1, "eval.seq_len": 0, "eval.stride": 0, "eval.max_tokens": 4096,
        "export.gptq_calibration_batches": 2, "optim.muon_momentum_warmup_steps": 4, **kw})


def test_preset_at_cpu_size_trains_end_to_end_with_the_loop_switch(small_dataset, tmp_path):
    s = train(preset_micro(small_dataset), tmp_path / "run", console=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert s["status"] == "finished" and s["steps"] == 8 and s["loop_step"] == 4
    assert "loop_warmup:enabled encoder:[0, 1, 2, 1] decoder:[2, 1, 2, 3]" in log
    assert log.count("loop_warmup_step:") == 2 and log.count("layer_loop:enabled step:4 frac:0.500") == 1
    assert s["q_val_bpb"] > 0 and s["artifact_bytes"] > 0
    events = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in events if r.get("event") == "loop_enabled"] == [4]


def test_loop_state_is_checkpointed_and_resumed(small_dataset, tmp_path):
    cfg = preset_micro(small_dataset, **{"train.checkpoint_every": 5, "train.warmup_steps": 0,
                                         "export.quantizer": "rtn", "export.clip": "quantile"})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", console=False, hooks=TrainerHooks(before_step=raise_at(6, KeyboardInterrupt)))
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert ck["loop_active"] is True and ck["loop_step"] == 4
    s = train(cfg, tmp_path / "cut", resume=True, console=False)
    log = (tmp_path / "cut" / "train.log").read_text()
    assert s["steps"] == 8 and s["loop_step"] == 4 and log.count("layer_loop:enabled") == 1


def test_preset_has_the_records_parameter_count():
    """The record's logs print model_params:35943512 (5 seeds)."""
    from pgolf.running.presets import param_count
    assert param_count(get_preset("pr1394_sp8192_gptq_sdclip_loop45x2")) == 35_943_512
    assert param_count(get_preset("pr1394_sp8192_gptq_sdclip_loop45x2_as_pr")) == 35_943_512


def test_the_records_environment_names_map_to_the_switches():
    from pgolf.core.config import from_env
    cfg = from_env(Config(), {"XSA_LAST_N": "3", "ROPE_DIMS": "16", "LN_SCALE": "1", "SKIP_GATES_ENABLED": "1",
                              "MUON_ROW_NORMALIZE": "1", "EMBED_WD": "0.085", "MUON_WD": "0.085", "ADAM_WD": "0.02"})
    m, o = cfg.model, cfg.optim
    assert (m.xsa_last_n, m.rope_dims, m.ln_scale_by_depth, m.skip_gates) == (3, 16, True, True)
    assert (o.muon_row_normalize, o.embed_weight_decay, o.muon_weight_decay, o.adam_weight_decay) == (
        True, 0.085, 0.085, 0.02)
    with pytest.raises(ConfigError, match="ROPE_DIMS"):
        from_env(Config(), {"ROPE_DIMS": "7"})
