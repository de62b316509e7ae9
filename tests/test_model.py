
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
