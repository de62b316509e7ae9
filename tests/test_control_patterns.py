"""``model.control_patterns`` is the one list of control tensors: the optimizer (Adam, never Muon), the dtype
layout (fp32) and the export (fp32 passthrough) all read it. ``export.control_exclude`` acts at export only."""

import pytest
import torch
from torch import nn

from pgolf.core import train_loop as train
from pgolf.core.config import DEFAULT_CONTROL_PATTERNS, Config, ConfigError, apply_overrides
from pgolf.core.export import export_artifact, load_artifact, quantize_state_dict
from pgolf.core.model import build_model
from pgolf.core.optim import build_optimizers

GAIN = "blocks.0.route_gain"  # a custom 2-D control tensor, big enough to be int-quantized were it not control
WITH_GAIN = DEFAULT_CONTROL_PATTERNS + ("route_gain",)


def tiny(**over) -> Config:
    base = {"model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 2, "model.num_kv_heads": 1,
            "model.vocab_size": 64, "model.control_patterns": WITH_GAIN}
    return apply_overrides(Config(), {**base, **over})


def with_gain(cfg: Config) -> nn.Module:
    torch.manual_seed(0)
    m = build_model(cfg)
    m.blocks[0].route_gain = nn.Parameter(torch.randn(300, 300))  # 90,000 > export.keep_float_max_numel
    return m


CASES = [  # (config, whether the optimizer and the dtype layout treat route_gain as control)
    (tiny(), True),
    (tiny(**{"export.control_exclude": "route_gain"}), True),  # export-only switch: training unchanged
    (tiny(**{"model.control_patterns": DEFAULT_CONTROL_PATTERNS}), False),
]


@pytest.mark.parametrize("cfg,control", CASES)
def test_optimizer_puts_model_control_tensors_in_adam(cfg, control):
    m = with_gain(cfg)
    gain = dict(m.named_parameters())[GAIN]
    opts, muon = build_optimizers(m, cfg, fused=False)
    in_muon = any(p is gain for g in muon.param_groups for p in g["params"])
    adam_lrs = [g["lr"] for o in opts if o is not muon for g in o.param_groups if any(p is gain for p in g["params"])]
    assert in_muon is not control
    assert adam_lrs == ([cfg.optim.scalar_lr] if control else [])


@pytest.mark.parametrize("cfg,control", CASES)
def test_dtype_layout_keeps_model_control_tensors_fp32(monkeypatch, cfg, control):
    def build_in_place(c: Config) -> nn.Module:
        m = with_gain(c)
        m.to = lambda device: m  # no GPU here: skip the move; the layout that follows it is what is tested
        return m

    monkeypatch.setattr(train, "build_model", build_in_place)
    params = dict(train.prepare_model(cfg, torch.device("cuda")).named_parameters())
    assert params[GAIN].dtype == (torch.float32 if control else torch.bfloat16)
    assert params["blocks.0.resid_mix"].dtype == torch.float32  # a default 2-D control tensor
    assert params["tok_emb.weight"].dtype == torch.bfloat16  # the body is bf16


def test_export_passes_model_control_tensors_through_fp32_and_exclude_acts_there_only():
    for cfg, where in ((tiny(), "passthrough"),
                       (tiny(**{"model.control_patterns": DEFAULT_CONTROL_PATTERNS}), "quantized"),
                       (tiny(**{"export.control_exclude": "route_gain"}), "quantized")):
        sd = {k: v.detach() for k, v in with_gain(cfg).state_dict().items()}
        obj, plan = quantize_state_dict(sd, cfg.export, control=cfg.model.control_patterns)
        row = next(r for r in plan["tensors"] if r["name"] == GAIN)
        assert GAIN in obj[where] and (row["class"], row["action"]) == (
            ("control", "fp32") if where == "passthrough" else ("other", "int"))
        blob, _ = export_artifact(sd, cfg.export, control=cfg.model.control_patterns)
        back = load_artifact(blob)[GAIN]
        assert torch.equal(back, sd[GAIN]) is (where == "passthrough")
    # the exclusion names a pattern, so only that pattern leaves the export's control set
    obj, _ = quantize_state_dict(sd, cfg.export, control=cfg.model.control_patterns)
    assert obj["passthrough"]["blocks.0.resid_mix"].dtype == torch.float32


def test_export_needs_the_control_patterns_explicitly():
    cfg = tiny()
    sd = build_model(cfg).state_dict()
    with pytest.raises(TypeError, match="control"):
        export_artifact(sd, cfg.export)
    with pytest.raises(TypeError, match="control"):
        quantize_state_dict(sd, cfg.export)


def test_config_checks_control_patterns_and_exclude():
    with pytest.raises(ConfigError, match=r"export\.control_exclude.*'smear_x'"):
        apply_overrides(Config(), {"export.control_exclude": "smear,smear_x"})
    with pytest.raises(ConfigError, match=r"export\.control_exclude.*'smear'"):
        tiny(**{"model.control_patterns": "q_gain", "export.control_exclude": "smear"})
    with pytest.raises(ConfigError, match=r"model\.control_patterns: expected non-empty"):
        Config.from_dict({"model": {"control_patterns": ["q_gain", ""]}})
    assert apply_overrides(Config(), {"export.control_exclude": "smear"}).export.control_exclude == ("smear",)
    assert Config().model.control_patterns == DEFAULT_CONTROL_PATTERNS and Config().export.control_exclude == ()


def test_old_export_control_patterns_key_loads_as_the_model_key():
    """A config.json written before the move (export.control_patterns steered training and export alike)
    loads with the same meaning; the old name in an override, or both names at once, is refused."""
    old = Config().to_dict()
    del old["model"]["control_patterns"], old["export"]["control_exclude"]
    old["export"]["control_patterns"] = ["q_gain", "smear"]
    cfg = Config.from_dict(old)
    assert cfg.model.control_patterns == ("q_gain", "smear") and cfg.export.control_exclude == ()
    old["export"]["control_patterns"] = list(DEFAULT_CONTROL_PATTERNS)
    assert Config.from_dict(old) == Config()  # a run folder of the old format still matches its config
    old["model"]["control_patterns"] = ["q_gain"]
    with pytest.raises(ConfigError, match=r"export\.control_patterns.*model\.control_patterns"):
        Config.from_dict(old)
    with pytest.raises(ConfigError, match=r"moved to model\.control_patterns"):
        apply_overrides(Config(), {"export.control_patterns": "q_gain"})
