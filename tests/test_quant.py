"""The quantizer shared by QAT and export: exactness, STE, routing order, sizes, compressors."""

import pytest
import torch

from pgolf.core.compress import compress, decompress, detect
from pgolf.core.config import DEFAULT_CONTROL_PATTERNS, Config, ExportConfig, apply_overrides
from pgolf.core.export import (
    dequantize_state_dict,
    export_artifact,
    load_artifact,
    pack_codes,
    prune_state_dict,
    quantize_state_dict,
    unpack_codes,
)
from pgolf.core.model import build_model
from pgolf.core.qat import assign_qat_specs, set_qat
from pgolf.core.quant import QuantSpec, dequantize_rows, fake_quant, floor_fraction, quantize_rows, row_quantile

SMALL = {"model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
         "model.vocab_size": 1024}


def qat_model(seed: int, bits: int = 4):
    """A small model with large random weights, QAT specs assigned (QAT still off), and a batch."""
    c = apply_overrides(Config(), {**SMALL, "qat.enabled": True, "export.bits_mlp": bits, "export.bits_attn": bits,
                                   "export.keep_float_max_numel": 1000})
    torch.manual_seed(seed)
    m = build_model(c)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    assign_qat_specs(m, c.export, control=c.model.control_patterns)
    return c, m, torch.randint(0, 1024, (2, 16))


@pytest.mark.parametrize("n", [64, 512, 1536, 4096])
def test_row_quantile_equals_torch_quantile(n):
    a = torch.randn(33, n).abs()
    assert torch.equal(row_quantile(a, 0.9999984), torch.quantile(a, 0.9999984, dim=1))


@pytest.mark.parametrize("bits", [8, 6, 5, 4])
def test_codes_in_range_and_fake_quant_equals_export_dequant(bits):
    torch.manual_seed(bits)
    w = torch.randn(48, 96) * 3
    spec = QuantSpec(bits)
    q, s = quantize_rows(w, spec)
    assert q.dtype == torch.int8 and s.dtype == torch.float16
    assert int(q.abs().max()) <= 2 ** (bits - 1) - 1
    assert torch.equal(fake_quant(w, spec), dequantize_rows(q, s))


def test_ste_gradient_is_identity():
    w = torch.randn(16, 32, requires_grad=True)
    g = torch.randn(16, 32)
    (fake_quant(w, QuantSpec(4)) * g).sum().backward()
    assert torch.equal(w.grad, g)


def test_scale_floor_switch_and_fraction():
    w = torch.randn(10, 64) * 0.01  # rows far below 1: the 1/qmax floor bites on all of them
    assert floor_fraction(w, QuantSpec(6)) == 1.0
    q_floor, _ = quantize_rows(w, QuantSpec(6, scale_floor=True))
    q_rel, _ = quantize_rows(w, QuantSpec(6, scale_floor=False))
    assert q_floor.abs().max() <= 1 and q_rel.abs().max() == 31


def test_routing_control_tensors_stay_fp32_whatever_their_size():
    c = apply_overrides(Config(), {**SMALL, "model.smear_gate": "per_dim", "model.bigram_buckets": 64,
                                   "export.bits_mlp": 5, "export.bits_attn": 6, "export.keep_float_max_numel": 100})
    m = build_model(c)
    sd = m.state_dict()
    sd2 = load_artifact(export_artifact(sd, c.export, control=c.model.control_patterns)[0])
    for name in ("blocks.0.attn_scale", "blocks.1.resid_mix", "skip_weights", "blocks.0.attn.q_gain", "smear.gate",
                 "bigram.scale"):
        assert sd2[name].dtype == torch.float32 and torch.equal(sd2[name], sd[name]), name
    obj, _ = quantize_state_dict(sd, c.export, control=c.model.control_patterns)
    assert "blocks.0.resid_mix" in obj["passthrough"] and obj["passthrough"]["blocks.0.resid_mix"].dtype == torch.float32
    assert obj["bits"]["blocks.0.mlp.fc.weight"] == 5 and obj["bits"]["blocks.0.attn.c_q.weight"] == 6


def test_baseline_export_is_official_format_and_round_trips():
    m = build_model(Config())
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    sd = m.state_dict()
    blob, rep = export_artifact(sd, ExportConfig(), control=DEFAULT_CONTROL_PATTERNS)
    assert detect(blob) == "zlib" and rep["format"] == "int8_clean_per_row_v1"
    sd2 = load_artifact(blob)
    assert set(sd2) == set(sd)
    for k, v in sd.items():
        if v.ndim == 2 and v.numel() > 65_536:  # per-row int8, official clip and 1/127 scale floor
            assert torch.equal(sd2[k], dequantize_rows(*quantize_rows(v, QuantSpec(8)))), k
        elif "resid_mix" in k or "scale" in k or "q_gain" in k or "skip" in k:
            assert torch.equal(sd2[k], v), k
        else:
            assert torch.equal(sd2[k], v.half().float()), k
    assert rep["artifact_bytes"] == len(blob)


def test_embed_fp16_and_bitpacking_round_trip():
    c = apply_overrides(Config(), {**SMALL, "export.embed_fp16": True, "export.bits_mlp": 4, "export.bits_attn": 5,
                                   "export.bitpack": True, "export.compressor": "zstd"})
    m = build_model(c)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.5)
    sd = m.state_dict()
    packed = load_artifact(export_artifact(sd, c.export, control=c.model.control_patterns)[0])
    plain = load_artifact(export_artifact(sd, apply_overrides(c, {"export.bitpack": False}).export,
                                          control=c.model.control_patterns)[0])
    assert all(torch.equal(packed[k], plain[k]) for k in sd)
    assert torch.equal(packed["tok_emb.weight"], sd["tok_emb.weight"].half().float())


@pytest.mark.parametrize("bits", [4, 5, 6])
def test_pack_unpack(bits):
    q = torch.randint(-(2 ** (bits - 1) - 1), 2 ** (bits - 1), (7, 13), dtype=torch.int8)
    assert torch.equal(unpack_codes(pack_codes(q, bits), bits, (7, 13)), q)
    assert pack_codes(q, bits).numel() == -(-7 * 13 * bits // 8)


def test_magnitude_pruning_fraction():
    c = apply_overrides(Config(), {**SMALL, "export.prune_frac": 0.05, "export.keep_float_max_numel": 1000})
    m = build_model(c)
    for p in m.parameters():
        torch.nn.init.normal_(p)
    pruned = prune_state_dict(m.state_dict(), c.export, control=c.model.control_patterns)
    w = pruned["tok_emb.weight"]
    assert (w == 0).float().mean().item() == pytest.approx(0.05, abs=0.002)
    assert torch.count_nonzero(pruned["blocks.0.attn_scale"]) == 64  # only quantized matrices are pruned


@pytest.mark.parametrize("method", ["zlib", "zstd", "lzma", "brotli"])
def test_compressors_round_trip(method):
    if method == "brotli":
        pytest.importorskip("brotli")
    raw = bytes(range(256)) * 100
    blob = compress(raw, method)
    assert detect(blob) == method and decompress(blob) == raw and len(blob) < len(raw)


def test_qat_applies_to_exactly_what_export_quantizes():
    c = apply_overrides(Config(), {**SMALL, "qat.enabled": True, "export.bits_mlp": 5, "export.bits_attn": 6,
                                   "export.keep_float_max_numel": 1000})
    m = build_model(c)
    names = set(assign_qat_specs(m, c.export, control=c.model.control_patterns))
    obj, _ = quantize_state_dict(m.state_dict(), c.export, control=c.model.control_patterns)
    linear_quantized = {n for n in obj["quantized"] if n.startswith("blocks.")}
    assert names == linear_quantized
    assert m.blocks[0].mlp.fc.qat_spec.bits == 5 and m.blocks[0].attn.c_q.qat_spec.bits == 6


def test_qat_forward_equals_dequantized_model_and_is_off_in_eval():
    c, m, x = qat_model(0)
    plain = m(x, x).item()
    set_qat(m, True)
    qat = m(x, x).item()
    assert qat != plain
    deq = build_model(c)
    sd = dict(m.state_dict())
    obj, _ = quantize_state_dict(sd, c.export, control=c.model.control_patterns)
    blocks_deq = dequantize_state_dict(obj)
    for k, v in sd.items():  # dequantize only what QAT fakes (block matrices); keep the rest exact
        if k.startswith("blocks.") and k in obj["quantized"]:
            sd[k] = blocks_deq[k]
    deq.load_state_dict(sd)
    assert deq(x, x).item() == pytest.approx(qat, abs=1e-5)
    m.eval()
    assert m(x, x).item() == pytest.approx(plain, abs=1e-6)  # evaluation sees the real weights


def test_qat_switch_takes_effect_under_torch_compile():
    """The records' bug: a flag constant-folded by torch.compile. Here the flip is followed by a reset +
    recompile (as the trainer does) and the compiled output must change."""
    c, m, x = qat_model(0)
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    before = compiled(x, x).item()
    set_qat(m, True)
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    after = compiled(x, x).item()
    assert after != before
    assert after == pytest.approx(m(x, x).item(), abs=1e-5)


def test_qat_flip_without_reset_is_still_seen_by_dynamo_guards():
    """Even without the explicit reset, the instance attribute is guarded (not constant-folded)."""
    c, m, x = qat_model(1)
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="aot_eager")
    before = compiled(x, x).item()
    set_qat(m, True)
    assert compiled(x, x).item() != before


@pytest.mark.parametrize("level", [0, 1, 5, 11])
def test_brotli_blobs_are_never_taken_for_zlib(level):
    """Brotli has no magic bytes; pgolf's blobs (window 2^22) start with low nibble 0xb, never zlib's 8."""
    pytest.importorskip("brotli")
    for i in range(200):
        raw = f"payload {i} ".encode() * (1 + i)
        blob = compress(raw, "brotli", level)
        assert blob[0] & 0x0F == 0xB and detect(blob) == "brotli" and decompress(blob) == raw


def test_unknown_bytes_are_refused_with_a_clear_error():
    pytest.importorskip("brotli")
    with pytest.raises(ValueError, match="not zlib, zstd, xz or brotli"):
        decompress(b"\x00\x01garbage-bytes")


# -- PR #1855's export switches: int7, clip sigma per class, int8 gates --------------------------------------

def test_sdclip_sigmas_per_class_fall_back_to_the_matrix_value():
    from pgolf.core.quant import sdclip_sigmas, spec_for

    cfg = ExportConfig(clip="sdclip", scale_floor=False, sdclip_sigmas_matrix=12.85, sdclip_sigmas_embed=14.0)
    assert [sdclip_sigmas(c, cfg) for c in ("attn", "mlp", "other", "embed")] == [12.85, 12.85, 12.85, 14.0]
    cfg = ExportConfig(clip="sdclip", scale_floor=False, sdclip_sigmas_attn=13.0, sdclip_sigmas_mlp=11.5)
    assert [spec_for(c, cfg).clip_sigmas for c in ("attn", "mlp", "other", "embed")] == [13.0, 11.5, 12.85, 20.0]
    assert spec_for("mlp", ExportConfig(sdclip_sigmas_mlp=11.5)).clip_sigmas == 0.0  # only with clip=sdclip
    with pytest.raises(Exception, match="export.sdclip_sigmas_mlp"):
        ExportConfig(sdclip_sigmas_mlp=-1.0)


def test_clip_embed_sets_the_embeddings_clip_alone():
    """export.clip_embed holds the embedding's clip while export.clip varies the matrices' (rate-distortion)."""
    from pgolf.core.config import ConfigError
    from pgolf.core.quant import spec_for
    held = ExportConfig(clip="sdclip", scale_floor=False, clip_embed="quantile")
    assert (spec_for("embed", held).clip, spec_for("embed", held).clip_sigmas) == ("quantile", 0.0)
    assert (spec_for("mlp", held).clip, spec_for("attn", held).clip_sigmas) == ("sdclip", 12.85)
    same = ExportConfig(clip="sdclip", scale_floor=False)  # the default "same": the embedding follows export.clip
    assert (same.clip_embed, spec_for("embed", same).clip, spec_for("embed", same).clip_sigmas) == \
        ("same", "sdclip", 20.0)
    assert spec_for("embed", ExportConfig(clip_embed="amax")).clip == "amax"
    with pytest.raises(ConfigError, match="export.scale_floor: export.clip_embed=sdclip needs"):
        ExportConfig(clip_embed="sdclip")
    with pytest.raises(ConfigError, match="export.clip_embed"):
        apply_overrides(Config(), {"export.clip_embed": "sd"})


@pytest.mark.parametrize("bitpack", [False, True])
def test_int7_codes_round_trip_through_the_artifact(bitpack):
    from pgolf.core.export import export_artifact, load_artifact

    g = torch.Generator().manual_seed(0)
    sd = {"blocks.0.mlp.fc.weight": torch.randn(300, 256, generator=g) * 2,
          "tok_emb.weight": torch.randn(300, 256, generator=g) * 2}
    cfg = ExportConfig(bits_mlp=7, bits_other=7, bitpack=bitpack)
    q, s = quantize_rows(sd["tok_emb.weight"], QuantSpec(7))
    assert int(q.abs().max()) == 63
    blob, _ = export_artifact(sd, cfg, control=DEFAULT_CONTROL_PATTERNS)
    back = load_artifact(blob)
    for name, t in sd.items():
        q, s = quantize_rows(t, QuantSpec(7))
        assert torch.equal(back[name], dequantize_rows(q, s)), name
        assert int(q.abs().max()) == 63  # the 7-bit range is used, no more


def test_int8_gate_rule_takes_only_gate_matrices_of_the_records_size():
    from pgolf.core.quant import GATE_SPEC, plan_tensor

    control = (*DEFAULT_CONTROL_PATTERNS, "attn_gate_w")
    on, off = ExportConfig(gate_int8=True), ExportConfig()
    gate = torch.randn(8, 12)
    assert plan_tensor("blocks.0.attn.attn_gate_w", gate, on, control=control).spec == GATE_SPEC
    assert plan_tensor("blocks.0.attn.attn_gate_w", gate, on, control=control).cls == "gate"
    assert plan_tensor("blocks.0.attn.attn_gate_w", gate, off, control=control).action == "fp32"  # control
    for t in (torch.randn(96), torch.randn(2, 15), torch.randn(64, 129)):  # 1-D, 30 and 8,256 elements
        assert plan_tensor("blocks.0.attn.attn_gate_w", t, on, control=control).cls != "gate"
    assert plan_tensor("blocks.0.attn.c_q.weight", torch.randn(8, 12), on, control=control).cls == "small"
    q, s = quantize_rows(gate, GATE_SPEC)
    assert torch.equal(s, (gate.abs().amax(1) / 127).half()) and int(q.abs().max()) == 127
