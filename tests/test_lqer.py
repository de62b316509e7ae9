"""LQER (export.lqer_rank): low-rank correction of the quantization error, packed as PR #1855 packs it; the
record parity is in tests/test_parity_pr1855.py. Here: off by default, the factor packing, the artifact round
trip (bit-packed codes too) and malformed entries refused by name."""

import pytest
import torch

from pgolf.core import lqer
from pgolf.core.compress import ArtifactError, compress, decompress
from pgolf.core.config import DEFAULT_CONTROL_PATTERNS, ConfigError, ExportConfig
from pgolf.core.export import dequantize_state_dict, export_artifact, load_artifact, quantize_state_dict, serialize


def _sd():
    g = torch.Generator().manual_seed(0)
    return {"blocks.0.mlp.fc.weight": torch.randn(300, 256, generator=g) * 0.02,
            "blocks.0.attn.c_q.weight": torch.randn(260, 256, generator=g) * 0.05,
            "tok_emb.weight": torch.randn(280, 256, generator=g) * 0.02, "blocks.0.attn_scale": torch.ones(256)}


def test_off_by_default_and_config_checks():
    assert ExportConfig().lqer_rank == 0
    obj, _ = quantize_state_dict(_sd(), ExportConfig(), control=DEFAULT_CONTROL_PATTERNS)
    assert "lqer" not in obj
    for bad in ({"lqer_rank": -1}, {"lqer_factor_bits": 1}, {"lqer_asym_group": -2}):
        with pytest.raises(ConfigError, match="export.lqer_"):
            ExportConfig(**bad)


def test_factors_reconstruct_a_low_rank_error():
    g = torch.Generator().manual_seed(1)
    E = torch.randn(64, 3, generator=g) @ torch.randn(3, 128, generator=g)
    A, B = lqer.error_factors(E, 4)
    assert A.shape == (64, 4) and B.shape == (4, 128)
    assert lqer.error_factors(E[:2], 4)[0].shape == (2, 2)  # the rank is capped by the matrix's smaller side
    assert torch.allclose(A @ B, E, atol=1e-4)
    sym = lqer.pack(A, B, group=0, bits=8)
    asym = lqer.pack(A, B, group=64, bits=8)
    assert (sym["scheme"], asym["scheme"]) == ("sym", "asym")
    assert int(asym["A"].min()) >= -2 and int(asym["A"].max()) <= 1 and int(asym["B"].abs().max()) <= 8
    assert (lqer.correction(sym) - E).norm() < 0.05 * E.norm()
    assert lqer.pack(A, B[:, :100], group=64, bits=4)["scheme"] == "sym"  # 300 values: not a multiple of 64
    assert lqer.top_by_error({"a": 1.0, "b": 3.0, "c": 2.0, "d": 3.0}, 3) == ["b", "d", "c"]


@pytest.mark.parametrize("bitpack", [False, True])
def test_artifact_round_trip_with_lqer_lowers_the_error(bitpack):
    sd = _sd()
    cfg = ExportConfig(bits_attn=6, bits_mlp=6, lqer_rank=4, lqer_top_k=2, bitpack=bitpack)
    blob, _ = export_artifact(sd, cfg, control=DEFAULT_CONTROL_PATTERNS)
    _, report = quantize_state_dict(sd, cfg, control=DEFAULT_CONTROL_PATTERNS)
    back = load_artifact(blob)
    plain = load_artifact(export_artifact(sd, ExportConfig(bits_attn=6, bits_mlp=6, bitpack=bitpack),
                                          control=DEFAULT_CONTROL_PATTERNS)[0])
    rows = {r["name"]: r for r in report["tensors"]}
    chosen = [n for n, r in rows.items() if r.get("lqer_bytes")]
    assert len(chosen) == 2
    for n in chosen:
        assert (back[n] - sd[n]).norm() < (plain[n] - sd[n]).norm()
    for n in set(sd) - set(chosen):
        assert torch.equal(back[n], plain[n])


def test_malformed_lqer_entry_is_refused_by_name():
    sd = _sd()
    obj, _ = quantize_state_dict(sd, ExportConfig(lqer_rank=2, lqer_top_k=1), control=DEFAULT_CONTROL_PATTERNS)
    name = next(iter(obj["lqer"]))
    obj["lqer"][name]["B"] = obj["lqer"][name]["B"][:, :10]
    with pytest.raises(ArtifactError, match=rf"lqer\['{name}'\]: factor shapes"):
        dequantize_state_dict(obj)
    blob = compress(serialize({**obj, "lqer": {name: "nope"}}), "zlib")
    with pytest.raises(ArtifactError, match="expected a dict with scheme"):
        load_artifact(blob)
    assert decompress(blob)


def test_the_records_lqer_environment_names():
    from pgolf.core.config import Config, from_env

    env = {"LQER_ENABLED": "1", "LQER_ASYM_ENABLED": "1", "LQER_RANK": "4", "LQER_FACTOR_BITS": "4",
           "LQER_ASYM_GROUP": "64", "LQER_TOP_K": "3"}  # the record's run command
    e = from_env(Config(), env).export
    assert (e.lqer_rank, e.lqer_top_k, e.lqer_factor_bits, e.lqer_asym_group) == (4, 3, 4, 64)
    assert from_env(Config(), {"LQER_ENABLED": "0"}).export.lqer_rank == 0
    assert from_env(Config(), {"LQER_ASYM_ENABLED": "0", "LQER_RANK": "2"}).export.lqer_asym_group == 0
    with pytest.raises(ConfigError, match="LQER_ENABLED='0' and LQER_RANK='4' disagree"):
        from_env(Config(), {"LQER_ENABLED": "0", "LQER_RANK": "4"})
