"""SD-clip against the quantile clip at matched bytes (pgolf.research.rate_distortion, notebook 06): the curve
interpolation, the bound on where SD-clip can clip, the matrix-only bytes and the fixed embedding."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from pgolf_testing import random_state

from pgolf.core.compress import compress
from pgolf.core.config import Config
from pgolf.core.export import export_artifact, load_artifact, quantize_state_dict, serialize
from pgolf.core.model import build_model
from pgolf.core.quant import QuantSpec, quantize_rows, row_clip, tensor_class
from pgolf.research import rate_distortion as rd
from pgolf.research.compression import MATRIX_CLASSES, export_with_matrix_bytes

# ---- the quantile curve at a byte count --------------------------------------------------------------------

BITS, BYTES, BPB = [4, 5, 6], [1000.0, 2000.0, 4000.0], [3.0, 2.0, 1.5]


def test_curve_at_is_linear_in_log_bytes_between_adjacent_bit_widths():
    at = math.sqrt(1000 * 2000)  # halfway between int4 and int5 in log bytes
    assert rd.curve_at(BITS, BYTES, BPB, at) == (pytest.approx(2.5), "inside")
    at = 2000 * 2 ** 0.25  # a quarter of the way from int5 to int6
    assert rd.curve_at(BITS, BYTES, BPB, at) == (pytest.approx(2.0 - 0.25 * 0.5), "inside")
    # not linear in bytes: the byte-linear value would be 2.0 - 0.5 * (at - 2000) / 2000
    assert rd.curve_at(BITS, BYTES, BPB, at)[0] != pytest.approx(2.0 - 0.5 * (at - 2000) / 2000)
    # the points may come in any order; the ends belong to the curve
    assert rd.curve_at(BITS[::-1], BYTES[::-1], BPB[::-1], at) == (pytest.approx(1.875), "inside")
    assert rd.curve_at(BITS, BYTES, BPB, 1000.0) == (3.0, "inside")
    assert rd.curve_at(BITS, BYTES, BPB, 4000.0) == (1.5, "inside")


def test_curve_at_never_extrapolates():
    for at, where in ((999.0, "below"), (4001.0, "above")):
        value, position = rd.curve_at(BITS, BYTES, BPB, at)
        assert math.isnan(value) and position == where


def test_curve_at_refuses_a_curve_whose_bytes_do_not_grow_with_its_bits():
    with pytest.raises(ValueError, match="do not grow with its bits"):
        rd.curve_at(BITS, [1000.0, 3000.0, 2000.0], BPB, 1500.0)
    with pytest.raises(ValueError, match="at least 2 distinct bit widths"):
        rd.curve_at([4, 4], [1000.0, 2000.0], [3.0, 2.0], 1500.0)


# ---- where SD-clip can clip ----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [64, 128])
def test_no_entry_is_further_from_its_row_mean_than_the_bound(n):
    """(n - 1) / sqrt(n) unbiased standard deviations (sqrt(n - 1) population ones), reached by one spike."""
    bound = rd.max_row_deviation(n)
    spike = torch.zeros(1, n, dtype=torch.float64)
    spike[0, 0] = 1.0
    dev = (spike - spike.mean()).abs().max() / spike.std()
    assert float(dev) == pytest.approx(bound, rel=1e-12)
    assert float((spike - spike.mean()).abs().max() / spike.std(correction=0)) == pytest.approx(math.sqrt(n - 1))
    g = torch.Generator().manual_seed(n)
    rows = torch.cat([torch.randn(2000, n, generator=g, dtype=torch.float64),
                      torch.randn(2000, n, generator=g, dtype=torch.float64) ** 5,  # heavy tails
                      torch.rand(2000, n, generator=g, dtype=torch.float64) ** 20])
    dev = ((rows - rows.mean(dim=1, keepdim=True)).abs().amax(dim=1) / rows.std(dim=1))
    assert float(dev.max()) <= bound * (1 + 1e-12)


def test_the_records_k_never_clips_a_centred_row_of_micro_width():
    assert rd.max_row_deviation(64) == pytest.approx(7.875)
    assert rd.max_row_deviation(128) == pytest.approx(11.2253, abs=1e-4) and rd.max_row_deviation(128) < 12.85
    for n in (64, 128):
        spike = torch.zeros(1, n, dtype=torch.float64)
        spike[0, 0] = 1.0
        spike = spike - spike.mean()  # the worst row: all its spread in one entry, mean zero
        for k, clips in ((12.85, False), (rd.max_row_deviation(n) * 0.99, True)):
            spec = QuantSpec(6, clip="sdclip", scale_floor=False, clip_sigmas=k)
            assert (float(spike.abs().max()) > float(row_clip(spike, spec)[0])) is clips, (n, k)
            q, _ = quantize_rows(spike, spec)
            # clipped, the spike takes the top code; unclipped, k wider than the bound leaves the top codes unused
            top = spec.qmax if clips else round(spec.qmax * rd.max_row_deviation(n) / k)
            assert int(q.abs().max()) == top < spec.qmax + clips, (n, k)
    with pytest.raises(ValueError, match="at least 2 entries"):
        rd.max_row_deviation(1)


# ---- settings, the fixed embedding and the matrices' bytes ---------------------------------------------------

def test_settings_grid_and_refusals():
    grid = rd.settings(quantizers=["rtn"], quantile_bits=[6, 4, 5], sdclip_bits=[4, 6], sigmas=[3, 12.85])
    assert [s.label for s in grid] == ["rtn quantile int4", "rtn quantile int5", "rtn quantile int6",
                                       "rtn sdclip int4 k=3", "rtn sdclip int4 k=12.85", "rtn sdclip int6 k=3",
                                       "rtn sdclip int6 k=12.85"]
    for kw, msg in (({"quantizers": ["awq"]}, "quantizers"), ({"quantile_bits": [4]}, "at least 2"),
                    ({"sdclip_bits": [3]}, "bits"), ({"sigmas": [0]}, "sigmas")):
        args = {"quantizers": ["rtn"], "quantile_bits": [4, 5], "sdclip_bits": [4], "sigmas": [3]} | kw
        with pytest.raises(ValueError, match=msg):
            rd.settings(**args)


@pytest.fixture(scope="module")
def micro_state():
    cfg = Config().replace({"model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 2,
                            "model.num_kv_heads": 1, "model.vocab_size": 1024, "export.keep_float_max_numel": 1024})
    return cfg, random_state(build_model(cfg), 0)


def test_the_embedding_is_the_same_in_every_setting_and_the_matrices_are_not(micro_state):
    cfg, state = micro_state
    hessians = {n: torch.eye(t.shape[1]) for n, t in state.items() if t.ndim == 2 and t.numel() > 1024}
    assert "tok_emb.weight" in hessians  # a Hessian for the embedding is offered, and not used
    grid = rd.settings(quantizers=["rtn", "gptq"], quantile_bits=[4, 8], sdclip_bits=[4], sigmas=[2.5, 12.85])
    out = {s.label: load_artifact(rd.export_setting(state, cfg, s, hessians)[0]) for s in grid}
    first = out[grid[0].label]
    for label, sd in out.items():
        assert torch.equal(sd["tok_emb.weight"], first["tok_emb.weight"]), label
    mlp = [n for n in state if tensor_class(n) == "mlp" and state[n].ndim == 2][0]
    assert len({tuple(sd[mlp].flatten().tolist()) for sd in out.values()}) == len(grid)
    # export.clip=sdclip alone would have SD-clipped the embedding too (k = 20)
    alone = load_artifact(export_artifact(state, cfg.replace({"export.clip": "sdclip", "export.scale_floor": False})
                                          .export, control=cfg.model.control_patterns)[0])
    assert not torch.equal(alone["tok_emb.weight"], first["tok_emb.weight"])


def test_matrix_bytes_are_the_attention_and_mlp_tensors_compressed_alone(micro_state):
    cfg, state = micro_state
    for over in ({}, {"export.bits_attn": 6, "export.bits_mlp": 5, "export.compressor": "lzma"}):
        ecfg = cfg.replace(over).export
        blob, matrix_bytes = export_with_matrix_bytes(state, ecfg, control=cfg.model.control_patterns)
        obj, _ = quantize_state_dict(state, ecfg, control=cfg.model.control_patterns)
        names = {n for n in state if tensor_class(n) in MATRIX_CLASSES and state[n].ndim == 2}  # not q_gain
        alone = {k: {n: v for n, v in section.items() if n in names} if isinstance(section, dict) else section
                 for k, section in obj.items()}
        assert set(alone["quantized"]) == names and len(names) == 12
        assert matrix_bytes == len(compress(serialize(alone), ecfg.compressor, ecfg.level, checked=True))
        assert matrix_bytes < len(blob)
    # the embedding's clip moves the artifact's bytes, not the matrices'; the matrices' bits move both
    base = {"export.scale_floor": False, "export.clip_embed": "quantile"}
    sizes = {}
    for name, over in (("base", {}), ("embed", {"export.clip_embed": "sdclip"}), ("bits", {"export.bits_mlp": 5})):
        blob, matrix_bytes = export_with_matrix_bytes(state, cfg.replace(base | over).export,
                                                      control=cfg.model.control_patterns)
        sizes[name] = (len(blob), matrix_bytes)
    assert sizes["embed"][1] == sizes["base"][1] and sizes["embed"][0] != sizes["base"][0]
    assert sizes["bits"][1] < sizes["base"][1] and sizes["bits"][0] < sizes["base"][0]


# ---- matched bytes -----------------------------------------------------------------------------------------

def _table(seeds=(0, 1, 2)):
    """Quantile curves at 4/5/6 bits per seed and SD-clip points: int6 k=3 inside (0.1 bpb under the curve, plus
    seed noise), int6 k=8 below the range in seed 0 only, int4 k=3 below it in every seed."""
    rows = []
    for seed in seeds:
        e = 0.01 * seed
        for b, nbytes, bpb in zip(BITS, BYTES, BPB):
            rows.append({"quantizer": "rtn", "clip": "quantile", "bits": b, "sigmas": 0.0, "seed": seed,
                         "artifact_bytes": nbytes, "q_val_bpb": bpb + e})
        rows.append({"quantizer": "rtn", "clip": "sdclip", "bits": 6, "sigmas": 3.0, "seed": seed,
                     "artifact_bytes": 2000.0, "q_val_bpb": 2.0 + e - 0.1 - 0.001 * seed})
        rows.append({"quantizer": "rtn", "clip": "sdclip", "bits": 6, "sigmas": 8.0, "seed": seed,
                     "artifact_bytes": 900.0 if seed == 0 else 1000.0 * math.sqrt(2),
                     "q_val_bpb": 2.4 + e + 0.002 * seed})
        rows.append({"quantizer": "rtn", "clip": "sdclip", "bits": 4, "sigmas": 3.0, "seed": seed,
                     "artifact_bytes": 500.0, "q_val_bpb": 4.0})
    return pd.DataFrame(rows)


def test_matched_tests_pair_the_seeds_inside_and_report_the_ones_outside():
    points = rd.matched_points(_table())
    assert len(points) == 9 and set(points["position"]) == {"inside", "below"}
    tests = rd.matched_tests(points).set_index(["bits", "sigmas"])
    inside = tests.loc[(6, 3.0)]
    assert (inside["n_pairs"], inside["n_inside"], inside["n_below"]) == (3, 3, 0)
    assert inside["diff"] == pytest.approx(-0.101) and inside["p"] < 0.01 and inside["ci_high"] < 0
    partly = tests.loc[(6, 8.0)]
    assert (partly["n_pairs"], partly["n_inside"], partly["n_below"]) == (2, 2, 1)
    assert partly["diff"] == pytest.approx(-0.097) and "1 of 3 seeds outside" in partly["note"]
    outside = tests.loc[(4, 3.0)]
    assert outside["n_below"] == 3 and math.isnan(outside["p"]) and "in 3 of 3 seeds: no test" in outside["note"]


def test_best_k_and_frontiers():
    table = _table()
    best = rd.best_sigmas(table, rd.matched_tests(rd.matched_points(table))).set_index("bits")
    assert best.loc[6, "k_lowest_bpb"] == 3.0 and best.loc[6, "k_best_matched"] == 3.0
    assert math.isnan(best.loc[4, "k_best_matched"])  # below the curve's range in every seed
    front = rd.frontiers(table)
    sd = front[front["clip"] == "sdclip"].set_index(["bits", "sigmas"])
    assert sd.loc[(6, 3.0), "position"] == "inside" and sd.loc[(6, 3.0), "below_curve"] is True
    assert sd.loc[(4, 3.0), "position"] == "below" and sd.loc[(4, 3.0), "below_curve"] is None
    assert list(sd.index) == [(4, 3.0), (6, 8.0), (6, 3.0)]  # by bytes; each beats the next on bytes, not bpb
    assert sd.loc[(6, 8.0), "position"] == "inside" and sd.loc[(6, 8.0), "below_curve"] is True
    quantile = front[front["clip"] == "quantile"]
    assert quantile["position"].eq("curve").all() and quantile["bits"].tolist() == [4, 5, 6]


def test_conclusion_counts_what_was_tested_and_what_lay_outside():
    from pgolf.research.stats import with_holm
    table = _table()
    tests = with_holm(rd.matched_tests(rd.matched_points(table)))
    clipped = pd.Series({3.0: 0.01, 8.0: 0.0})
    lines = rd.conclusion(tests, rd.best_sigmas(table, tests), rd.frontiers(table), {64: 7.875}, clipped)
    text = "\n".join(lines)
    assert "its own Holm family of 2 tests" in text and "(7.875 in 64-wide rows)" in text
    assert "so k = 8 can clip a row only through its mean" in text
    assert "clipped no entry of these matrices in any seed: 8;" in text
    assert "2 of 3 SD-clip settings have at least 2 seeds inside" in text
    assert "lower in 2 (int6 k=3 (-0.1010), int6 k=8 (-0.0970)), higher in 0 and not significantly different in 0" \
        in text
    assert "1 setting lies outside the range in most seeds (1 with fewer bytes" in text
    assert "int4: lowest bpb at k = 3, no k inside the curve's range in every seed" in text


def test_committed_table_shows_the_records_k_never_clipping_at_micro():
    """The committed table (runs/frontier/analysis/rate_distortion.json): k = 12.85 clipped no entry of any micro
    control model's matrices (their rows are 64 and 128 wide: bounds 7.9 and 11.2), and every seed's quantile
    curve grows in bytes with its bits (the matched-bytes reading needs it)."""
    from pathlib import Path
    stored = rd.TABLE.read(Path(__file__).resolve().parents[1] / "runs")
    if stored is None:
        pytest.skip("no committed rate_distortion table in this checkout")
    t = stored[1]
    assert t["seed"].nunique() == 10
    assert (t[(t["clip"] == "sdclip") & (t["sigmas"] == 12.85)]["clipped_frac"] == 0).all()
    assert (t[(t["clip"] == "sdclip") & (t["sigmas"] == 2.5)]["clipped_frac"] > 0).all()  # a k that binds does clip
    for _, g in t[t["clip"] == "quantile"].groupby(["quantizer", "seed"]):
        assert g.sort_values("bits")["artifact_bytes"].is_monotonic_increasing
