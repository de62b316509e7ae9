"""Parity of export.compressor=pergroup with the 2026-04-27 record's per-group compressor (PR #1855,
https://github.com/openai/parameter-golf/tree/main/records/track_10min_16mb/
2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611): its ``_similarity_sort_l1``,
``_serialize_pergroup`` and ``_deserialize_pergroup``, imported from ``PGOLF_PR1855_TRAIN_GPT`` (the module
skips without it; the lrzip tests skip without the lrzip binary)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pgolf_testing import imported_script, record_pr1855_stubs, reference_script_or_skip

PR_PATH = reference_script_or_skip("PGOLF_PR1855_TRAIN_GPT", "PR #1855")

from pgolf.core import pergroup  # noqa: E402
from pgolf.core.config import ExportConfig  # noqa: E402
from pgolf.core.export import quantize_state_dict, serialize  # noqa: E402

needs_lrzip = pytest.mark.skipif(shutil.which("lrzip") is None, reason="needs the lrzip binary (apt-get install lrzip)")
LAYERS = 3


@pytest.fixture(scope="module")
def rec():
    with record_pr1855_stubs(), imported_script(PR_PATH, "_pr1855_train_gpt_pergroup") as mod:
        yield mod


@pytest.mark.parametrize("shape, values", [((300, 24), 2), ((64, 64), 31), ((129, 7), 1)])
def test_similarity_order_equals_the_records(rec, shape, values):
    """Codes in [-values, values]: with few values many rows tie, so the tie rule is exercised too."""
    m = np.random.default_rng(shape[0]).integers(-values, values + 1, size=shape).astype(np.int8)
    assert pergroup.similarity_order(m).tolist() == rec._similarity_sort_l1(m).tolist()


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {"tok_emb.weight": torch.randn(256, 64, generator=g)}
    for i in range(LAYERS):
        for name, shape in (("attn.c_q", (64, 64)), ("attn.c_k", (32, 64)), ("attn.c_v", (32, 64)),
                            ("attn.proj", (64, 64)), ("mlp.fc", (128, 64)), ("mlp.proj", (64, 128))):
            sd[f"blocks.{i}.{name}.weight"] = torch.randn(*shape, generator=g)
        sd[f"blocks.{i}.attn_scale"] = torch.ones(64)
    return sd


@needs_lrzip
def test_group_streams_equal_the_records_and_decompress_to_the_same_codes(rec, tmp_path):
    """The same int6/int7 codes through the record's _serialize_pergroup and pgolf's pack: every lrzip group
    stream and the row-order stream are byte-identical (so the group bytes are equal); only the brotli rest
    differs (pgolf's artifact object vs the record's result/meta dicts). Both decompress to the same codes."""
    cfg = ExportConfig(compressor="pergroup", bits_attn=6, bits_mlp=6, bits_other=7, keep_float_max_numel=1024,
                       clip="sdclip", scale_floor=False)
    obj, _ = quantize_state_dict(_state(), cfg, control=("attn_scale",))
    theirs = {}
    for name, q in obj["quantized"].items():
        theirs[name + ".q"], theirs[name + ".scale"] = q, obj["scales"][name]
    theirs.update({k: v for k, v in obj["passthrough"].items()})
    meta = {n: "gptq (int6)" for n in obj["quantized"]}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rblob = rec._serialize_pergroup(theirs, meta, LAYERS, str(tmp_path / "a"))
    rstreams = rec._unpack_streams(rblob)
    ours = pergroup.pack(obj)
    n = int.from_bytes(ours[4:8], "little")
    lengths = [int.from_bytes(ours[8 + 4 * i:12 + 4 * i], "little") for i in range(n)]
    offs = np.cumsum([8 + 4 * n, *lengths]).tolist()
    ostreams = [ours[offs[i]:offs[i + 1]] for i in range(n)]
    k = len(rec._GROUP_ORDER)
    assert ostreams[2:] == rstreams[:k]  # the 7 lrzip groups, in the record's order
    assert ostreams[1] == rstreams[k + 1]  # the row orders
    sizes = {"record": len(rblob), "pgolf": len(ours), "rest": (len(rstreams[k]), len(ostreams[0]))}
    print(sizes)
    back, _ = rec._deserialize_pergroup(rblob, LAYERS, str(tmp_path / "b"))
    mine = pergroup.unpack(ours)["quantized"]
    for name, q in obj["quantized"].items():
        assert torch.equal(back[name + ".q"], q) and torch.equal(mine[name], q), name
    assert pergroup.decompress(ours) == serialize(obj)
