
import pytest
import torch

from pgolf.core.config import Config, apply_overrides
from pgolf.core.model import build_model, mlp_hidden, ntk_base
from pgolf.running.presets import get_preset


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_baseline_matches_official_parameter_count_and_names():
    m = build_model(Config())
    sd = m.state_dict()
    assert n_params(m) == 17_059_912
    assert len(sd) == 92
    assert sd["blocks.0.attn.c_k.weight"].shape == (256, 512)
    assert sd["blocks.8.resid_mix"].shape == (2, 512)
    assert sd["skip_weights"].shape == (4, 512)
    assert "lm_head.weight" not in sd  # tied


def test_swiglu_hidden_rule_and_parameter_count():
    c = apply_overrides(Config(), {"model.mlp": "swiglu"})
    assert mlp_hidden(c.model) == 704
    mlp = build_model(c).blocks[0].mlp
    assert sum(p.numel() for p in mlp.parameters()) == 1_081_344
    relu = build_model(Config()).blocks[0].mlp
    assert sum(p.numel() for p in relu.parameters()) == 1_048_576


@pytest.mark.parametrize("over, hidden", [({"model.mlp_mult": 3.0}, 1536), ({"model.mlp_mult": 2.625}, 1344),
                                          ({"model.mlp_hidden": 992}, 992)])
def test_fractional_and_explicit_mlp_width(over, hidden):
    c = apply_overrides(Config(), over)
    assert build_model(c).blocks[0].mlp.fc.weight.shape == (hidden, 512)


def test_seed_preset_parameter_counts():
    # counts stated by the seeds and records: PR #128 (9L MLP3x) 21,778,504; PR #194 (11L MLP3x) ~26.5M
    assert n_params(build_model(get_preset("pr128_int6_mlp3x_qat_sliding"))) == 21_778_504
    assert round(n_params(build_model(get_preset("pr194_11l_int6_qat_perdim_smear_swa"))) / 1e6, 1) == 26.5


def test_leaky_relu2_variant():
    c = apply_overrides(Config(), {"model.mlp": "leaky_relu2", "model.num_layers": 1, "model.model_dim": 64,
                                   "model.num_heads": 4, "model.num_kv_heads": 2})
    mlp = build_model(c).blocks[0].mlp
    torch.nn.init.eye_(mlp.proj.weight[:, :64])
    x = torch.randn(1, 3, 64)
    h = mlp.fc(x)
    assert torch.allclose(mlp(x), mlp.proj(torch.nn.functional.leaky_relu(h, 0.5) ** 2))


def test_untied_head_and_no_unet():
    c = apply_overrides(Config(), {"model.tie_embeddings": False, "model.unet_skips": False, "model.num_layers": 2})
    m = build_model(c)
    sd = m.state_dict()
    assert "lm_head.weight" in sd and "skip_weights" not in sd
    x = torch.randint(0, 1024, (1, 8))
    assert torch.isfinite(m(x, x))


def test_model_is_causal_with_every_option_on():
    c = apply_overrides(Config(), {
        "model.num_layers": 3, "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
        "model.smear_gate": "per_dim", "model.bigram_buckets": 97, "model.bigram_dim": 16, "model.init": "orthogonal",
        "model.resid_mix_init": "phase", "model.embed_init": "overtone", "model.proj_init_gain": 1.0,
        "model.mlp": "swiglu"})
    torch.manual_seed(0)
    m = build_model(c).eval()
    x = torch.randint(4, 1024, (2, 32))
    y = x.clone()
    y[:, 20:] = torch.randint(4, 1024, (2, 12))  # change only the future
    a, b = m(x), m(y)
    assert torch.equal(a[:, :20], b[:, :20])
    assert not torch.equal(a[:, 20:], b[:, 20:])


def test_ntk_base_formula_and_training_length_is_untouched():
    assert ntk_base(10000.0, 64, 1024, 1024) == 10000.0
    assert ntk_base(10000.0, 64, 4096, 2048) == pytest.approx(10000.0 * 2 ** (64 / 62))
    c = apply_overrides(Config(), {"train.train_seq_len": 2048, "eval.ntk": True})
    rot = build_model(c).blocks[0].attn.rotary
    assert rot.base_for(2048) == 10000.0  # the records' bug: NTK active at the training length
    assert rot.base_for(4096) == pytest.approx(10000.0 * 2 ** (64 / 62))
    cos_train, _ = rot(2048, torch.device("cpu"), torch.float32)
    inv = 1.0 / (10000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    assert torch.allclose(cos_train[0, 0], torch.outer(torch.arange(2048.0), inv).cos())
    cos_long, _ = rot(4096, torch.device("cpu"), torch.float32)
    inv2 = 1.0 / ((10000.0 * 2 ** (64 / 62)) ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    assert torch.allclose(cos_long[0, 0], torch.outer(torch.arange(4096.0), inv2).cos(), atol=1e-5)


# -- PR #1855's gates: sparse attention output gate, input-dependent SmearGate ---------------------------------

def _tiny(**over):
    return apply_overrides(Config(), {"model.num_layers": 2, "model.model_dim": 32, "model.num_heads": 4,
                                      "model.num_kv_heads": 2, "model.vocab_size": 64, **over})


GATED = {"model.sparse_attn_gate": True,
         "model.control_patterns": (*Config().model.control_patterns, "attn_gate_w")}


def test_gates_are_off_by_default_and_draw_nothing_from_the_rng():
    """Off: no new parameter. On: zero-init parameters only, every other tensor of a same-seed init unchanged."""
    torch.manual_seed(0)
    base = build_model(_tiny()).state_dict()
    assert not any("attn_gate_w" in k or k.startswith("smear.") for k in base)
    torch.manual_seed(0)
    gated = build_model(_tiny(**GATED, **{"model.smear_gate": "input"})).state_dict()
    new = sorted(set(gated) - set(base))
    assert new == ["blocks.0.attn.attn_gate_w", "blocks.1.attn.attn_gate_w", "smear.lam", "smear.weight"]
    assert all(not gated[k].any() for k in new) and gated["blocks.0.attn.attn_gate_w"].shape == (4, 12)
    assert all(torch.equal(base[k], gated[k]) for k in base)


def test_sparse_gate_at_init_halves_the_attention_output():
    """sigmoid(0) = 0.5 on every head: the gate is live from step 0 (the record's zero init)."""
    torch.manual_seed(0)
    plain = build_model(_tiny())
    gated = build_model(_tiny(**GATED))
    gated.load_state_dict(plain.state_dict(), strict=False)
    for b in (plain.blocks[0], gated.blocks[0]):
        torch.nn.init.normal_(b.attn.proj.weight, std=0.1)  # zero-init projection would hide the gate
    gated.blocks[0].attn.proj.weight.data.copy_(plain.blocks[0].attn.proj.weight)
    x = torch.randn(2, 10, 32)
    assert torch.allclose(gated.blocks[0].attn(x), 0.5 * plain.blocks[0].attn(x), atol=1e-6)


def test_sparse_gate_needs_a_control_pattern_and_trains_with_adam():
    from pgolf.core.config import ConfigError
    from pgolf.core.optim import split_params

    with pytest.raises(ConfigError, match="model.sparse_attn_gate: needs a model.control_patterns entry"):
        _tiny(**{"model.sparse_attn_gate": True})
    cfg = _tiny(**GATED, **{"model.smear_gate": "input"})
    model = build_model(cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = split_params(model, cfg.model.control_patterns)
    assert not any("attn_gate_w" in names[id(p)] or "smear" in names[id(p)] for p in groups["matrix"])


def test_input_smear_gate_is_identity_at_init_causal_and_stops_at_bos():
    from pgolf.core.model.embed import InputSmearGate

    gate = InputSmearGate(12, bos_id=1)
    x, ids = torch.randn(2, 9, 32), torch.randint(2, 64, (2, 9))
    assert torch.equal(gate(x, ids), x)  # lam = 0
    with torch.no_grad():
        gate.lam.fill_(0.8), gate.weight.normal_()
    ids[0, 4] = 1
    y = gate(x, ids)
    assert torch.equal(y[0, 4], x[0, 4]) and torch.equal(y[:, 0], x[:, 0])  # BOS and position 0 take nothing
    x2 = x.clone()
    x2[:, 6:] += 1.0
    assert torch.equal(gate(x2, ids)[:, :6], y[:, :6])  # causal
    want = x[1, 3] + 0.8 * torch.sigmoid(gate.weight[0] @ x[1, 3, :12]) * x[1, 2]
    assert torch.allclose(y[1, 3], want, atol=1e-6)


def test_record_gate_environment_names():
    from pgolf.core.config import from_env

    c = from_env(_tiny(**{"model.control_patterns": GATED["model.control_patterns"]}),
                 {"SPARSE_ATTN_GATE_ENABLED": "1", "SPARSE_ATTN_GATE_SCALE": "0.5", "GATE_WINDOW": "8",
                  "SMEAR_GATE_ENABLED": "1"})
    assert (c.model.sparse_attn_gate, c.model.sparse_attn_gate_scale, c.model.gate_window, c.model.smear_gate) == (
        True, 0.5, 8, "input")


def test_parallel_decoder_is_off_by_default_and_needs_control_patterns():
    from pgolf.core.config import ConfigError

    assert Config().model.parallel_start_layer == 0
    with pytest.raises(ConfigError, match="model.parallel_start_layer: needs model.control_patterns entries"):
        _tiny(**{"model.parallel_start_layer": 1})
    with pytest.raises(ConfigError, match="model.parallel_start_layer: expected 0"):
        _tiny(**{"model.parallel_start_layer": 2})


def test_parallel_lanes_at_init_and_final_lane_choice():
    """From the start layer on, two lanes: with lambdas post = 1, resid = 1.1 both lanes get attn + mlp; the
    final lane rule picks lane 0, lane 1 or their mean; the lambdas train with Adam, not Muon."""
    from pgolf.core.optim import split_params

    patterns = (*Config().model.control_patterns, "parallel_resid_lambdas", "parallel_post_lambdas")
    cfg = _tiny(**{"model.num_layers": 4, "model.parallel_start_layer": 3, "model.control_patterns": patterns})
    torch.manual_seed(0)
    model = build_model(cfg)
    for b in model.blocks:
        torch.nn.init.normal_(b.attn.proj.weight, std=0.1), torch.nn.init.normal_(b.mlp.proj.weight, std=0.1)
    assert model.parallel_post_lambdas.shape == (4, 2, 2) and torch.all(model.parallel_resid_lambdas == 1.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert not any("parallel" in names[id(p)] for p in split_params(model, patterns)["matrix"])
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        model.parallel_post_lambdas[3, 0].copy_(torch.tensor([1.0, 0.0]))  # attn only into lane 0
        model.parallel_post_lambdas[3, 1].copy_(torch.tensor([0.0, 1.0]))  # mlp only into lane 1
        out = {}
        for final in ("attn", "mlp", "mean"):
            model.cfg.parallel_final_lane = final
            out[final] = model.hidden(ids)
    assert not torch.equal(out["attn"], out["mlp"])
    plain = build_model(_tiny(**{"model.num_layers": 4}))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "parallel" not in k})
    with torch.no_grad():
        assert not torch.allclose(plain.hidden(ids), out["mean"], atol=1e-4)
