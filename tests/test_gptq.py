"""GPTQ, the standard-deviation clip and their place in the export: better than rounding where the Hessian
says so, equal to it where the Hessian is diagonal, damping and dead inputs, clear errors, Hessian collection,
the artifact round trip and a trainer run with ``export.quantizer=gptq``."""

from __future__ import annotations

import json

import pytest
import torch
from pgolf_testing import gaussian_model_and_hessians
from torch import nn

from pgolf.core.config import Config, ConfigError, ExportConfig, apply_overrides
from pgolf.core.export import export_artifact, load_artifact, quantize_state_dict
from pgolf.core.gptq import GPTQError, collect_hessians, gptq_codes, gptq_quantize
from pgolf.core.model import build_model
from pgolf.core.quant import (
    QuantSpec,
    dequantize_rows,
    quantize_rows,
    row_clip,
    row_scale,
)

SD6 = QuantSpec(6, clip="sdclip", clip_sigmas=12.85, scale_floor=False, scale_dtype="fp16")
SMALL = {"model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
         "model.vocab_size": 128}
GPTQ = {"export.quantizer": "gptq", "export.clip": "sdclip", "export.scale_floor": False,
        "export.scale_dtype": "fp16", "export.bits_attn": 6, "export.bits_mlp": 6, "export.keep_float_max_numel": 1000}


def problem(rows=48, cols=96, tokens=512, seed=0):
    """A weight and the Hessian of correlated inputs (where GPTQ has something to gain over rounding)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.02
    x = torch.randn(tokens, cols, generator=g) @ (torch.eye(cols) + 0.5 * torch.randn(cols, cols, generator=g))
    return w, x.T @ x / tokens


def weighted_error(w, w_hat, H):
    d = (w - w_hat).double()
    return float(torch.einsum("ri,ij,rj->", d, H.double(), d))


@pytest.mark.parametrize("act_order", [True, False])
def test_gptq_beats_round_to_nearest_on_the_hessian_weighted_error(act_order):
    w, H = problem()
    q_rtn, s = quantize_rows(w, SD6)
    q, s_gptq = gptq_quantize(w, H, SD6, act_order=act_order)
    assert torch.equal(s, s_gptq)  # same grid: only the rounding decisions differ
    rtn, gptq = weighted_error(w, dequantize_rows(q_rtn, s), H), weighted_error(w, dequantize_rows(q, s), H)
    assert gptq < 0.8 * rtn
    assert q.dtype == torch.int8 and q.shape == w.shape and int(q.abs().max()) <= SD6.qmax


def test_diagonal_hessian_gives_round_to_nearest():
    """No off-diagonal terms: nothing to propagate, so GPTQ's codes are rounding's."""
    w, _ = problem()
    H = torch.diag(torch.rand(w.shape[1], generator=torch.Generator().manual_seed(1)) + 0.5)
    assert torch.equal(gptq_quantize(w, H, SD6)[0], quantize_rows(w, SD6)[0])


def test_block_size_changes_only_the_float_rounding():
    w, H = problem(cols=100)
    s = row_scale(row_clip(w, SD6), SD6)
    ref = gptq_codes(w, H, s, SD6.qmax, block_size=100)
    for bs in (1, 7, 32):
        assert (gptq_codes(w, H, s, SD6.qmax, block_size=bs) == ref).float().mean() > 0.99


def test_dead_inputs_get_code_zero_and_damping_makes_a_singular_hessian_usable():
    w, H = problem()
    H[:, 5] = 0
    H[5, :] = 0  # input 5 never active
    q = gptq_codes(w, H, torch.full((w.shape[0],), 1e-3), 31)
    assert (q[:, 5] == 0).all()
    x = torch.randn(10, w.shape[1], generator=torch.Generator().manual_seed(2))
    singular = x.T @ x  # rank 10 < 96, no zero diagonal
    with pytest.raises(GPTQError, match="not positive definite.*export.gptq_damp=0"):
        gptq_codes(w, singular, torch.full((w.shape[0],), 1e-3), 31, damp=0.0)
    assert gptq_codes(w, singular, torch.full((w.shape[0],), 1e-3), 31, damp=0.01).shape == w.shape


def test_shape_errors_name_the_tensor():
    w, H = problem()
    with pytest.raises(GPTQError, match=r"Hessian of blocks.0.mlp.fc.weight has shape \(95, 95\), expected \(96, 96\)"):
        gptq_codes(w, H[:95, :95], torch.ones(48), 31, name="blocks.0.mlp.fc.weight")
    with pytest.raises(GPTQError, match=r"scale of w has shape \(47,\)"):
        gptq_codes(w, H, torch.ones(47), 31, name="w")


def test_sdclip_scale_is_sigmas_times_row_std_over_qmax():
    w, _ = problem()
    q, s = quantize_rows(w, SD6)
    want = (12.85 * w.std(dim=1) / 31).to(torch.float16)
    assert torch.equal(s, want)
    assert int(q.abs().max()) <= 31
    # the per-class sigmas reach the specs
    from pgolf.core.quant import spec_for
    cfg = ExportConfig(clip="sdclip", scale_floor=False, sdclip_sigmas_matrix=3.0, sdclip_sigmas_embed=7.0)
    assert (spec_for("mlp", cfg).clip_sigmas, spec_for("embed", cfg).clip_sigmas) == (3.0, 7.0)


def test_config_checks():
    assert ExportConfig().quantizer == "rtn" and ExportConfig().clip == "quantile"
    with pytest.raises(ConfigError, match="export.scale_floor: export.clip=sdclip needs export.scale_floor=false"):
        ExportConfig(clip="sdclip")
    for key, bad in (("gptq_damp", -0.1), ("gptq_block_size", 0), ("gptq_calibration_batches", 0),
                     ("sdclip_sigmas_matrix", 0.0), ("sdclip_sigmas_embed", -1.0)):
        with pytest.raises(ConfigError, match=f"export.{key}: expected"):
            ExportConfig(**{key: bad})
    with pytest.raises(ConfigError, match="export.quantizer"):
        apply_overrides(Config(), {"export.quantizer": "awq"})


# -- Hessians ---------------------------------------------------------------------------------

def test_collect_hessians_sums_input_outer_products_per_batch():
    lin = nn.Linear(6, 3)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(3, 2))
    model.train()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 5, 6, generator=g) for _ in range(3)]
    hs = collect_hessians(model, batches)
    x = torch.cat([b.reshape(-1, 6) for b in batches])
    assert set(hs) == {"0.weight", "2.weight"}
    torch.testing.assert_close(hs["0.weight"], x.T @ x / 3)
    h2 = torch.relu(x @ lin.weight.detach().T + lin.bias.detach())
    torch.testing.assert_close(hs["2.weight"], h2.T @ h2 / 3)
    assert model.training and not lin._forward_hooks  # mode restored, hooks removed
    assert set(collect_hessians(model, batches, names={"2.weight"})) == {"2.weight"}
    with pytest.raises(GPTQError, match="no calibration batches"):
        collect_hessians(model, [])


def test_tied_embedding_hessian_is_the_final_norms_output():
    cfg = apply_overrides(Config(), SMALL)
    m = build_model(cfg)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    hs = collect_hessians(m, [ids])
    with torch.no_grad():
        h = m.hidden(ids).reshape(-1, 64).float()
    torch.testing.assert_close(hs["tok_emb.weight"], h.T @ h)
    assert "blocks.0.attn.c_q.weight" in hs and "blocks.1.mlp.proj.weight" in hs


# -- export -----------------------------------------------------------------------------------

def small_model_and_hessians(**over):
    cfg = apply_overrides(Config(), {**SMALL, **GPTQ, **over})
    m, hs = gaussian_model_and_hessians(cfg, 0.05, (4, 32))
    return cfg, m, hs


def test_export_with_gptq_round_trips_and_needs_its_hessians():
    pytest.importorskip("brotli")
    cfg, m, hs = small_model_and_hessians(**{"export.compressor": "brotli"})
    sd = {k: v.clone() for k, v in m.state_dict().items()}  # the round trip below overwrites the parameters
    blob, rep = export_artifact(sd, cfg.export, control=cfg.model.control_patterns, hessians=hs)
    restored = load_artifact(blob)
    m.load_state_dict(restored, strict=True)
    obj, _ = quantize_state_dict(sd, cfg.export, control=cfg.model.control_patterns, hessians=hs)
    int_names = set(obj["quantized"])
    assert set(rep["gptq_tensors"]) == {n for n in int_names if n in hs} and "tok_emb.weight" in rep["gptq_tensors"]
    for name in rep["gptq_tensors"]:
        assert torch.equal(restored[name], dequantize_rows(obj["quantized"][name], obj["scales"][name]))
        rtn = dequantize_rows(*quantize_rows(sd[name], obj_spec(cfg, name)))
        assert weighted_error(sd[name], restored[name], hs[name]) < weighted_error(sd[name], rtn, hs[name])
    assert rep["compressor"] == "brotli" and rep["artifact_bytes"] == len(blob)
    with pytest.raises(ValueError, match="export.quantizer=gptq needs calibration Hessians"):
        export_artifact(sd, cfg.export, control=cfg.model.control_patterns)
    with pytest.raises(ValueError, match=r"hessians: names not in the state dict: \['nope.weight'\]"):
        export_artifact(sd, cfg.export, control=cfg.model.control_patterns, hessians={**hs, "nope.weight": hs["tok_emb.weight"]})


def obj_spec(cfg, name):
    from pgolf.core.quant import spec_for, tensor_class
    return spec_for(tensor_class(name), cfg.export)


def test_rtn_export_ignores_hessians_and_default_is_unchanged():
    cfg, m, hs = small_model_and_hessians(**{"export.quantizer": "rtn"})
    sd = m.state_dict()
    a, _ = export_artifact(sd, cfg.export, control=cfg.model.control_patterns)
    b, _ = export_artifact(sd, cfg.export, control=cfg.model.control_patterns, hessians=hs)
    assert a == b


def test_trainer_exports_with_gptq(micro, tmp_path):
    from pgolf.core.train import train
    pytest.importorskip("brotli")
    cfg = micro(**{**GPTQ, "export.gptq_calibration_batches": 2, "export.compressor": "brotli",
                   "train.iterations": 2})
    summary = train(cfg, tmp_path / "run", console=False)
    rep = json.loads((tmp_path / "run" / "export_report.json").read_text())
    assert summary["status"] == "finished" and summary["artifact_file"].endswith(".brotli.ptz")
    assert "blocks.0.mlp.fc.weight" in rep["gptq_tensors"] and "tok_emb.weight" in rep["gptq_tensors"]
    assert abs(summary["quant_gap_bpb"]) < 0.05
    log = (tmp_path / "run" / "train.log").read_text()
    assert "gptq:calibrated" in log and summary["export_ms"] > 0  # the calibration's time is reported


def test_trainer_stops_early_by_the_gptq_reserve(micro, tmp_path):
    """A 1 s cap with 0.9 s reserved: training stops at the shortened cap and says so."""
    from pgolf.core.train import train
    cfg = micro(**{**GPTQ, "export.gptq_calibration_batches": 1, "train.iterations": 10_000,
                   "train.max_wallclock_seconds": 1.0, "export.gptq_reserve_seconds": 0.9})
    summary = train(cfg, tmp_path / "run", console=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "gptq:reserving 1s, effective=100ms" in log and summary["training_cap_seconds"] == pytest.approx(0.1)
    assert summary["train_time_ms"] < 1000 and summary["steps"] < 10_000


def test_size_estimate_of_a_gptq_config_uses_rtn_and_says_so():
    from pgolf.running.presets import get_preset
    from pgolf.running.sizing import GPTQ_NOTE, size_estimate
    cfg = apply_overrides(get_preset("tiny"), GPTQ)
    est = size_estimate(cfg, detail=False)
    rtn = size_estimate(apply_overrides(cfg, {"export.quantizer": "rtn"}), detail=False)
    assert est["quantizer_note"] == GPTQ_NOTE and est["artifact_bytes"] == rtn["artifact_bytes"]


def test_gptq_reserve_shortens_the_training_cap_only_with_gptq():
    from pgolf.core.config import Config, ConfigError
    cfg = Config().replace({"train.max_wallclock_seconds": 600})
    assert cfg.training_cap_seconds == 600  # round to nearest: nothing reserved
    gptq_cfg = cfg.replace({"export.quantizer": "gptq"})
    assert gptq_cfg.training_cap_seconds == 600 - 12.0  # PR #1394's GPTQ_RESERVE_SECONDS default
    assert gptq_cfg.replace({"train.max_wallclock_seconds": 0}).training_cap_seconds == 0  # no cap, no reserve
    with pytest.raises(ConfigError, match="export.gptq_reserve_seconds"):
        cfg.replace({"export.quantizer": "gptq", "export.gptq_reserve_seconds": 600})
    with pytest.raises(ConfigError, match="export.gptq_reserve_seconds"):
        cfg.replace({"export.gptq_reserve_seconds": -1})
