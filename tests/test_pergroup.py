"""export.compressor=pergroup (pgolf.core.pergroup, PR #1855's per-group lrzip compressor): the round trip is
exact, the grouping is the record's, damage is refused by name, and a missing lrzip binary is one line saying
how to install it, at export and at load. Tests that run lrzip skip without it."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
import torch

from pgolf.core import pergroup
from pgolf.core.compress import ArtifactError, compress, decompress, detect
from pgolf.core.config import ExportConfig
from pgolf.core.export import export_artifact, load_artifact, quantize_state_dict, serialize

needs_lrzip = pytest.mark.skipif(shutil.which("lrzip") is None, reason="needs the lrzip binary (apt-get install lrzip)")
CONTROL = ("attn_scale",)


def _state(layers: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {"tok_emb.weight": torch.randn(96, 32, generator=g)}
    for i in range(layers):
        sd[f"blocks.{i}.attn.c_q.weight"] = torch.randn(32, 32, generator=g)
        sd[f"blocks.{i}.attn.c_k.weight"] = torch.randn(16, 32, generator=g)
        sd[f"blocks.{i}.mlp.fc.weight"] = torch.randn(64, 32, generator=g)
        sd[f"blocks.{i}.mlp.proj.weight"] = torch.randn(32, 64, generator=g)
        sd[f"blocks.{i}.attn_scale"] = torch.ones(32)
    sd["lm_head.weight"] = torch.randn(40, 32, generator=g)  # int codes in no group: the brotli rest
    return sd


def _cfg(**kw) -> ExportConfig:
    return ExportConfig(**{"compressor": "pergroup", "bits_attn": 6, "bits_mlp": 6, "keep_float_max_numel": 256,
                           **kw})


def test_grouping_is_the_records():
    """blocks.N.<matrix> joins its group by layer; the embedding is a group; other names are in none."""
    assert pergroup.group_of("blocks.10.mlp.fc.weight") == ("mlp.fc.weight", 10)
    assert pergroup.group_of("tok_emb.weight") == ("tok_emb.weight", 0)
    assert pergroup.group_of("blocks.0.attn.attn_gate_w") is None
    assert pergroup.group_of("lm_head.weight") is None
    obj, _ = quantize_state_dict(_state(layers=12), _cfg(), control=CONTROL)
    groups = pergroup._groups(obj)
    assert list(groups) == ["tok_emb.weight", "attn.c_k.weight", "attn.c_q.weight", "mlp.fc.weight",
                            "mlp.proj.weight"]
    assert groups["mlp.fc.weight"] == [f"blocks.{i}.mlp.fc.weight" for i in range(12)]  # 10 after 9, not 1


def test_similarity_order_is_greedy_l1_with_ties_to_the_lowest_row():
    m = np.array([[0, 0], [5, 5], [1, 0], [0, 1], [4, 5]], dtype=np.int8)
    # from row 0: rows 2 and 3 are both at distance 1 -> 2; from 2: 3 (2) before 4 (8); then 4, then 1
    assert pergroup.similarity_order(m).tolist() == [0, 2, 3, 4, 1]
    r = np.random.default_rng(1).integers(-2, 3, size=(200, 8)).astype(np.int8)
    order = pergroup.similarity_order(r)
    assert sorted(order.tolist()) == list(range(200))
    for i in range(1, 200):  # each step takes the nearest unused row (lowest index on ties)
        rest = order[i:]
        d = np.abs(r[rest].astype(int) - r[order[i - 1]]).sum(1)
        assert order[i] == rest[d == d.min()].min()


@needs_lrzip
@pytest.mark.parametrize("bitpack", [False, True])
def test_round_trip_is_exact(bitpack):
    """compress -> decompress gives the serialized object back byte for byte; load_artifact gives the same state
    dict as the brotli artifact of the same export (bit-packed codes stay in the rest)."""
    sd = _state()
    obj, _ = quantize_state_dict(sd, _cfg(bitpack=bitpack, lqer_rank=2, lqer_top_k=2), control=CONTROL)
    raw = serialize(obj)
    blob = compress(raw, "pergroup", checked=True)
    assert detect(blob) == "pergroup" and decompress(blob) == raw
    ours, _ = export_artifact(sd, _cfg(bitpack=bitpack), control=CONTROL)
    ref, _ = export_artifact(sd, _cfg(bitpack=bitpack, compressor="brotli"), control=CONTROL)
    a, b = load_artifact(ours), load_artifact(ref)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@needs_lrzip
def test_streams_hold_the_groups_and_the_row_orders():
    blob = pergroup.compress(serialize(quantize_state_dict(_state(), _cfg(), control=CONTROL)[0]))
    sizes = pergroup.group_sizes(blob)
    assert list(sizes) == ["rest", "perms", "tok_emb.weight", "attn.c_k.weight", "attn.c_q.weight",
                           "mlp.fc.weight", "mlp.proj.weight"]
    assert 8 + 4 * 7 + sum(sizes.values()) == len(blob)


@needs_lrzip
@pytest.mark.parametrize("damage, needle", [
    (lambda b: b[:-5], "stream lengths add up"),
    (lambda b: b[:8] + b"\xff" * 8 + b[16:], "stream lengths add up"),
    (lambda b: b[:4] + struct.pack("<I", 1) + b[8:], "1 streams"),
])
def test_damaged_blob_is_refused_by_name(damage, needle):
    blob = pergroup.compress(serialize(quantize_state_dict(_state(), _cfg(), control=CONTROL)[0]))
    with pytest.raises(ArtifactError, match=f"run/x.ptz: damaged per-group artifact: .*{needle}"):
        decompress(damage(blob), "run/x.ptz")


def test_malformed_manifest_is_refused_by_name(monkeypatch):
    """A manifest entry that is not [name, rows, cols] is refused before any lrzip runs (none is needed here)."""
    import io

    import brotli

    obj, _ = quantize_state_dict(_state(), _cfg(), control=CONTROL)
    monkeypatch.setattr(pergroup, "_lrzip", lambda args, data, what: data)
    monkeypatch.setattr(pergroup, "lrzip_path", lambda what: "lrzip")
    blob = pergroup.pack(obj)
    n = int.from_bytes(blob[4:8], "little")
    lengths = [int.from_bytes(blob[8 + 4 * i:12 + 4 * i], "little") for i in range(n)]
    rest = torch.load(io.BytesIO(brotli.decompress(blob[8 + 4 * n:8 + 4 * n + lengths[0]])))
    rest["pergroup"]["groups"]["attn.c_q.weight"][0][1] = "32"
    new_rest = brotli.compress(pergroup._save(rest))
    body = blob[8 + 4 * n + lengths[0]:]
    bad = blob[:4] + struct.pack(f"<{n + 1}I", n, len(new_rest), *lengths[1:]) + new_rest + body
    with pytest.raises(ArtifactError, match=r"x.ptz: damaged per-group artifact: group 'attn.c_q.weight': the man"):
        pergroup.unpack(bad, "x.ptz")


def test_missing_lrzip_is_one_line_at_export_and_at_load(monkeypatch):
    """With PATH emptied: export names lrzip and how to install it; so does loading a per-group artifact (built
    here with lrzip replaced by the identity, so the test needs no binary)."""
    sd = _state()
    monkeypatch.setattr(pergroup, "_lrzip", lambda args, data, what: data)
    monkeypatch.setattr(pergroup, "lrzip_path", lambda what: "lrzip")
    blob, _ = export_artifact(sd, _cfg(), control=CONTROL)
    monkeypatch.undo()
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pergroup.PergroupError) as e:
        export_artifact(sd, _cfg(), control=CONTROL)
    assert str(e.value) == ("export.compressor=pergroup needs the lrzip binary, which is not on PATH; install it "
                            "(apt-get install lrzip)")
    with pytest.raises(ArtifactError) as e:
        load_artifact(blob, "runs/r/final_model.int6.pergroup.ptz")
    assert str(e.value) == ("runs/r/final_model.int6.pergroup.ptz: a per-group artifact needs the lrzip binary, "
                            "which is not on PATH; install it (apt-get install lrzip)")


@needs_lrzip
def test_detail_report_compresses_each_class_by_group():
    """pgolf size's per-class estimate works with the per-group compressor (a class without grouped matrices is
    all rest)."""
    _, report = export_artifact(_state(), _cfg(), control=CONTROL, detail=True)
    assert report["compressor"] == "pergroup"
    assert all(c["compressed_bytes"] > 0 for c in report["classes"].values())


PR1855_MODEL_BYTES = 15_869_920  # the record's mean artifact less its 31,999 code bytes (submission.json)


@pytest.mark.slow
@needs_lrzip
def test_size_of_the_pr1855_preset_is_within_one_percent_of_the_records():
    """pgolf size's Gaussian stand-in for trained weights, exported as the preset says (int6/int7 SD clip, LQER,
    int8 gates, per-group lrzip), within 1% of the record's model bytes (15,964,727 here: +0.6%). Minutes of CPU
    (the embedding's row order and ZPAQ on 36 MB of codes; 973 s of wall time on a loaded 2-vCPU machine)."""
    from pgolf.running.presets import get_preset
    from pgolf.running.sizing import size_estimate

    r = size_estimate(get_preset("pr1855_sp8192_lqer_sparsegate_bossmear_9hp"), detail=False)
    assert abs(r["artifact_bytes"] - PR1855_MODEL_BYTES) < 0.01 * PR1855_MODEL_BYTES, r["artifact_bytes"]
