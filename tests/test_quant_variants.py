"""The seed PRs' quantizer, export-routing, pruning and QAT variants, each a switch that is off by default.

Each test checks the switch against the rule written out by hand (the PRs' formulas), and that the
default stays the official behaviour.
"""

import pytest
import torch

from pgolf.core.config import DEFAULT_CONTROL_PATTERNS, Config, ConfigError, apply_overrides
from pgolf.core.export import prune_state_dict, quantize_state_dict
from pgolf.core.model import build_model
from pgolf.core.qat import assign_qat_specs
from pgolf.core.quant import QuantSpec, fake_quant, plan_tensor, quantize_rows

SMALL = {"model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
         "model.vocab_size": 1024, "export.keep_float_max_numel": 1000}


def randn(*shape, seed=0, std=0.05):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * std


def test_fp16_scale_codes_use_the_stored_scale():
    w = randn(256, 512, std=0.04)
    q16, s16 = quantize_rows(w, QuantSpec(6, clip="amax", scale_dtype="fp16"))
    by_hand = (w.abs().amax(dim=1) / 31).clamp_min(1 / 31).to(torch.float16)
    assert torch.equal(s16, by_hand)
    assert torch.equal(q16, torch.clamp(torch.round(w / by_hand.float()[:, None]), -31, 31).to(torch.int8))
    q32, s32 = quantize_rows(w, QuantSpec(6, clip="amax"))
    assert torch.equal(s32, s16)  # same stored scales ...
    assert not torch.equal(q32, q16)  # ... but fp32-scale codes differ near rounding boundaries


def test_no_floor_stored_scale_is_fp16_tiny_clamped():
    w = randn(8, 64, std=1e-6)
    w[0] = 0
    _, s = quantize_rows(w, QuantSpec(4, clip="amax", scale_floor=False, scale_dtype="fp16"))
    tiny = torch.finfo(torch.float16).tiny
    by_hand = (w.abs().amax(dim=1) / 7).clamp_min(1e-12).to(torch.float16).clamp_min(tiny)
    assert torch.equal(s, by_hand)


def test_unstored_qat_quantizer_matches_the_prs_fp32_formula():
    w = randn(64, 128, std=0.3)
    spec = QuantSpec(4, clip="amax", scale_floor=False, stored=False)
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 7
    by_hand = torch.clamp(torch.round(w / scale), -8, 7) * scale
    assert torch.allclose(fake_quant(w, spec), by_hand, rtol=0, atol=1e-7)
    assert torch.equal(fake_quant(w, spec), torch.clamp(torch.round(w / scale), -7, 7) * scale)


def test_control_order_switch_restores_the_records_fp16_control_tensors():
    t = torch.ones(64)
    on = Config().export
    off = apply_overrides(Config(), {"export.control_fp32": False}).export
    assert plan_tensor("blocks.0.attn_scale", t, on, control=DEFAULT_CONTROL_PATTERNS).action == "fp32"
    # the seed PRs' small-tensor-first export bug, on purpose
    assert plan_tensor("blocks.0.attn_scale", t, off, control=DEFAULT_CONTROL_PATTERNS).action == "fp16"
    big = torch.ones(70_000)
    # large control tensors stay fp32
    assert plan_tensor("blocks.0.big_attn_scale", big, off, control=DEFAULT_CONTROL_PATTERNS).action == "fp32"


def test_fp16_patterns_keep_named_matrices():
    c = apply_overrides(Config(), {**SMALL, "export.fp16_patterns": "blocks.1.attn.c_k,tok_emb"})
    m = build_model(c)
    obj, report = quantize_state_dict(m.state_dict(), c.export, control=c.model.control_patterns)
    assert obj["passthrough"]["blocks.1.attn.c_k.weight"].dtype == torch.float16
    assert obj["passthrough"]["tok_emb.weight"].dtype == torch.float16
    assert "blocks.0.attn.c_k.weight" in obj["quantized"]
    row = next(r for r in report["tensors"] if r["name"] == "blocks.1.attn.c_k.weight")
    assert (row["class"], row["action"]) == ("attn", "fp16")
    with pytest.raises(ConfigError, match="export.fp16_patterns"):
        apply_overrides(Config(), {"export.fp16_patterns": ["tok_emb", ""]})


def test_quantile_pruning_strict_below_interpolated_threshold_and_matrix_scope():
    c = apply_overrides(Config(), {**SMALL, "export.prune_frac": 0.03, "export.prune_frac_mlp": 0.05,
                                   "export.prune_rule": "quantile", "export.prune_scope": "matrices",
                                   "export.prune_min_numel": 2048, "export.embed_fp16": True})
    sd = {"tok_emb.weight": randn(1024, 64, seed=1), "blocks.0.mlp.fc.weight": randn(128, 64, seed=2),
          "blocks.0.attn.c_q.weight": randn(64, 64, seed=3), "blocks.0.attn.c_k.weight": randn(32, 64, seed=4),
          "blocks.0.attn_scale": randn(64, seed=5)}
    out = prune_state_dict(sd, c.export, control=c.model.control_patterns)
    for name, frac in (("tok_emb.weight", 0.03), ("blocks.0.mlp.fc.weight", 0.05), ("blocks.0.attn.c_q.weight", 0.03)):
        t = sd[name]
        thresh = torch.quantile(t.abs().flatten(), frac)
        assert torch.equal(out[name], t.masked_fill(t.abs() < thresh, 0.0)), name
    assert torch.equal(out["blocks.0.attn.c_k.weight"], sd["blocks.0.attn.c_k.weight"])  # 2048 elements: not above prune_min_numel
    assert torch.equal(out["blocks.0.attn_scale"], sd["blocks.0.attn_scale"])
    # default scope: only int-exported matrices (the fp16 embedding is left alone)
    d = apply_overrides(c, {"export.prune_scope": "quantized"}).export
    kept = prune_state_dict(sd, d, control=DEFAULT_CONTROL_PATTERNS)["tok_emb.weight"]
    assert torch.equal(kept, sd["tok_emb.weight"])


def test_kthvalue_pruning_zeroes_exactly_k():
    c = apply_overrides(Config(), {**SMALL, "export.prune_frac": 0.1})
    t = randn(128, 64, seed=7)
    out = prune_state_dict({"blocks.0.mlp.fc.weight": t}, c.export,
                           control=c.model.control_patterns)["blocks.0.mlp.fc.weight"]
    assert int((out == 0).sum()) == int(0.1 * t.numel())


def test_qat_scope_bits_and_own_quantizer():
    c = apply_overrides(Config(), {**SMALL, "qat.enabled": True, "qat.scope": "mlp", "export.bits_mlp": 4,
                                   "export.bits_attn": 6})
    m = build_model(c)
    names = assign_qat_specs(m, c.export, c.qat, control=c.model.control_patterns)
    assert names and all(".mlp." in n for n in names)
    assert m.blocks[0].attn.c_q.qat_spec is None
    spec = m.blocks[0].mlp.fc.qat_spec
    assert spec == QuantSpec(4, "quantile", 0.9999984, True, "fp32", stored=True)  # the export's own
    c2 = apply_overrides(c, {"qat.scope": "attn,mlp", "qat.bits": 6, "qat.clip": "amax", "qat.scale_floor": "none",
                             "qat.scale_dtype": "fp32"})
    assign_qat_specs(m, c2.export, c2.qat, control=c2.model.control_patterns)
    assert m.blocks[0].mlp.fc.qat_spec == QuantSpec(6, "amax", 0.9999984, False, "fp32", stored=False)
    assert m.blocks[0].attn.c_q.qat_spec.bits == 6
    with pytest.raises(ConfigError, match="qat.scope"):
        apply_overrides(Config(), {"qat.scope": "mlp,embed"})
    with pytest.raises(ConfigError, match="qat.bits"):
        apply_overrides(Config(), {"qat.bits": 3})


def test_defaults_unchanged():
    e, q = Config().export, Config().qat
    assert (e.scale_dtype, e.control_fp32, e.fp16_patterns, e.prune_scope, e.prune_rule, e.prune_frac_mlp) == \
        ("fp32", True, (), "quantized", "kthvalue", -1.0)
    assert (q.scope, q.bits, q.own_quantizer) == (("attn", "mlp", "other"), 0, False)


def test_qat_cast_first_quantizes_the_activation_dtype_weight():
    """qat.cast_first: the fake quantizer reads weight.to(x.dtype) (PR #128's CastedLinear under bf16
    autocast); off (default) it reads the fp32 weight the export quantizes."""
    c = apply_overrides(Config(), {**SMALL, "qat.enabled": True, "export.bits_mlp": 6, "export.clip": "amax"})
    m = build_model(c).train()
    fc = m.blocks[0].mlp.fc
    with torch.no_grad():
        fc.weight.copy_(randn(*fc.weight.shape, seed=11, std=2.0))  # rows above the floor: fine grid
    x = torch.eye(fc.in_features, dtype=torch.bfloat16)  # F.linear(I, w) = w.T, exactly
    w_eff = {}
    for cast_first in (False, True):
        assign_qat_specs(m, c.export, apply_overrides(c, {"qat.cast_first": cast_first}).qat,
                         control=c.model.control_patterns)
        fc.qat_enabled = True
        w_eff[cast_first] = fc(x).T
        assert fc.qat_cast_first is cast_first
    spec = fc.qat_spec
    assert torch.equal(w_eff[False], fake_quant(fc.weight, spec).bfloat16())
    assert torch.equal(w_eff[True], fake_quant(fc.weight.bfloat16(), spec))
    assert not torch.equal(w_eff[False], w_eff[True])  # codes near rounding boundaries move
    fc(x).float().sum().backward()  # straight-through to the fp32 weight either way
    assert fc.weight.grad is not None and fc.weight.grad.dtype == torch.float32
    assert Config().qat.cast_first is False
