"""model.init_seeding="per_name": every random parameter from its own (seed, name) generator, same distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pgolf.core.config import Config, ConfigError, apply_overrides
from pgolf.core.model import build_model
from pgolf.core.model.init import random_parameters, reseed_per_name

SMALL = {"model.num_layers": 4, "model.model_dim": 128, "model.num_heads": 4, "model.num_kv_heads": 2,
         "model.vocab_size": 512, "train.train_seq_len": 64, "train.seed": 7}
COMBOS = {
    "default": {},
    "swiglu": {"model.mlp": "swiglu"},
    "smear": {"model.smear_gate": "per_dim"},
    "bigram_records_order": {"model.bigram_buckets": 256, "model.module_order": "records", "model.smear_gate": "scalar"},
    "orthogonal": {"model.init": "orthogonal", "model.proj_init_gain": 1.0, "model.bigram_buckets": 256,
                   "model.bigram_init": "ortho_proj", "model.tie_embeddings": False},
    "untied": {"model.tie_embeddings": False},
    "overtone": {"model.embed_init": "overtone"},
}


def _build(seeding="per_name", torch_seed=0, **over):
    cfg = apply_overrides(Config(), {**SMALL, "model.init_seeding": seeding, **over})
    torch.manual_seed(torch_seed)
    return {k: v.detach().clone() for k, v in build_model(cfg).named_parameters()}, cfg


def _attention_and_embedding(params):
    names = [n for n in params if ".attn.c_" in n or n == "tok_emb.weight"]
    assert len(names) == 1 + 3 * SMALL["model.num_layers"]
    return names


@pytest.mark.parametrize("arm", [{"model.mlp": "swiglu"},
                                 {"model.smear_gate": "per_dim", "model.bigram_buckets": 256,
                                  "model.module_order": "records"}], ids=["swiglu", "smear_bigram"])
def test_an_added_module_leaves_the_other_tensors_alone_only_with_per_name(arm):
    for seeding, same in (("per_name", True), ("global", False)):
        control, _ = _build(seeding)
        treated, _ = _build(seeding, **arm)
        names = _attention_and_embedding(control)
        equal = [torch.equal(control[n], treated[n]) for n in names]
        assert all(equal) if same else not all(equal), (seeding, equal)


def test_skip_gates_take_no_draw_under_per_name():
    """The U-Net skip gates are constant (zero logits): per_name builds them and shares every other tensor."""
    control, _ = _build()
    treated, _ = _build(**{"model.skip_gates": True})
    assert torch.equal(treated["skip_gates"], torch.zeros_like(treated["skip_gates"]))
    assert all(torch.equal(control[n], treated[n]) for n in control)


def test_smear_gate_alone_shifts_nothing_either_way():
    """SmearGate's gate is a constant: it takes no random draw, so both seedings share every tensor."""
    for seeding in ("per_name", "global"):
        control, _ = _build(seeding)
        treated, _ = _build(seeding, **{"model.smear_gate": "per_dim", "model.module_order": "records"})
        assert all(torch.equal(control[n], treated[n]) for n in control)


@pytest.mark.parametrize("combo", list(COMBOS))
def test_per_name_takes_nothing_from_the_global_rng(combo):
    a, _ = _build("per_name", 0, **COMBOS[combo])
    b, _ = _build("per_name", 1, **COMBOS[combo])
    assert a.keys() == b.keys()
    assert [n for n in a if not torch.equal(a[n], b[n])] == []
    g0, _ = _build("global", 0, **COMBOS[combo])
    g1, _ = _build("global", 1, **COMBOS[combo])
    redrawn = [n for n in g0 if not torch.equal(g0[n], g1[n])]  # what the global RNG decides
    assert redrawn and all(not torch.equal(a[n], g0[n]) for n in redrawn)
    assert all(torch.equal(a[n], g0[n]) for n in g0 if n not in redrawn)  # constants as built
    other_seed, _ = _build("per_name", 0, **{**COMBOS[combo], "train.seed": 8})
    assert all(not torch.equal(a[n], other_seed[n]) for n in redrawn)


def test_distributions_match_the_normal_init():
    p, cfg = _build("per_name")
    fan_in = p["blocks.0.attn.c_q.weight"].shape[1]
    for n in ("blocks.0.attn.c_q.weight", "blocks.1.mlp.fc.weight", "blocks.3.attn.c_v.weight"):
        bound = 1 / math.sqrt(p[n].shape[1])
        assert p[n].abs().max() <= bound and p[n].std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert fan_in == 128
    assert p["tok_emb.weight"].std().item() == pytest.approx(cfg.model.tied_embed_init_std, rel=0.05)
    assert p["blocks.0.attn.proj.weight"].abs().max() == 0 and p["blocks.0.mlp.proj.weight"].abs().max() == 0
    untied, _ = _build("per_name", **COMBOS["untied"])
    assert untied["tok_emb.weight"].std().item() == pytest.approx(1.0, rel=0.05)
    assert untied["lm_head.weight"].abs().max() == 0
    big, _ = _build("per_name", **COMBOS["bigram_records_order"])
    assert big["bigram.table.weight"].std().item() == pytest.approx(0.01, rel=0.05)
    assert big["bigram.proj.weight"].abs().max() == 0
    ortho, ocfg = _build("per_name", **COMBOS["orthogonal"])
    depth = 1 / math.sqrt(2 * ocfg.model.num_layers)
    for n, gain in (("blocks.0.attn.c_q.weight", 1.0), ("blocks.2.mlp.fc.weight", 1.0),
                    ("blocks.0.attn.proj.weight", depth), ("lm_head.weight", depth), ("bigram.proj.weight", depth)):
        w = ortho[n]
        small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(small, gain**2 * torch.eye(small.shape[0]), atol=1e-5), n
    assert ortho["bigram.table.weight"].abs().max() == 0
    over, ocfg = _build("per_name", **COMBOS["overtone"])
    s = torch.linalg.svdvals(over["tok_emb.weight"])
    k = torch.arange(1, s.numel() + 1, dtype=s.dtype)
    assert torch.allclose(s, s[0] * k.pow(-0.5), rtol=1e-4)
    assert s[0].item() == pytest.approx(ocfg.model.tied_embed_init_std * (math.sqrt(512) + math.sqrt(128)), rel=0.1)


def test_global_is_the_default_and_unchanged():
    cfg = apply_overrides(Config(), SMALL)
    assert cfg.model.init_seeding == "global"
    torch.manual_seed(3)
    default = build_model(cfg).state_dict()
    torch.manual_seed(3)
    explicit = build_model(apply_overrides(cfg, {"model.init_seeding": "global"})).state_dict()
    assert all(torch.equal(default[k], explicit[k]) for k in default)


def test_what_per_name_cannot_reproduce_is_an_error():
    _, cfg = _build()
    model = build_model(cfg)
    model.extra = nn.Module()
    model.extra.w = nn.Parameter(torch.randn(3))
    with pytest.raises(ConfigError, match="no per_name rule for Module 'extra'"):
        reseed_per_name(model, cfg.model, 0)
    with pytest.raises(ConfigError, match="model.init_seeding"):
        apply_overrides(Config(), {"model.init_seeding": "per_layer"})
    assert "blocks.0.attn.q_gain" not in random_parameters(build_model(cfg), cfg.model)
