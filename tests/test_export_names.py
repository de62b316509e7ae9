"""Artifact names come from what the export report says was stored, not from the config's bit settings."""

from __future__ import annotations

import pytest
import torch

from pgolf.core.config import DEFAULT_CONTROL_PATTERNS, ExportConfig
from pgolf.core.export import artifact_contents, artifact_filename, artifact_format, export_artifact


def report(compressor="zlib", **storage):
    return {"compressor": compressor, "classes": {cls: {"storage": kinds} for cls, kinds in storage.items()}}


@pytest.mark.parametrize("rep, contents, fmt, filename", [
    # baseline: the official file name and the official log tag (final_int8_zlib_roundtrip)
    (report(embed=["8"], attn=["8"], mlp=["8"], control=["fp32"], small=["fp16"]),
     "int8", "int8_zlib", "final_model.int8.ptz"),
    (report("zstd", embed=["8"], attn=["8"], mlp=["8"]), "int8", "int8_zstd", "final_model.int8.zstd.ptz"),
    (report("zstd", embed=["fp16"], attn=["6"], mlp=["6"], control=["fp32"]),
     "int6+fp16emb", "int6+fp16emb_zstd", "final_model.int6+fp16emb.zstd.ptz"),
    (report("zstd", embed=["fp16"], attn=["6"], mlp=["4"], other=["6"], small=["fp16"]),
     "mixed-int4-int6+fp16emb", "mixed-int4-int6+fp16emb_zstd", "final_model.mixed-int4-int6+fp16emb.zstd.ptz"),
    (report("lzma", embed=["8"], attn=["6"], mlp=["5"]), "mixed-int5-int6-int8", "mixed-int5-int6-int8_lzma",
     "final_model.mixed-int5-int6-int8.lzma.ptz"),
    (report(embed=["fp16"], attn=["8"]), "int8+fp16emb", "int8+fp16emb_zlib", "final_model.int8+fp16emb.zlib.ptz"),
    (report(small=["fp16"], control=["fp32"], nonfloat=["raw"]), "float", "float_zlib", "final_model.float.zlib.ptz"),
])
def test_names_from_the_report(rep, contents, fmt, filename):
    assert (artifact_contents(rep), artifact_format(rep), artifact_filename(rep)) == (contents, fmt, filename)


def test_names_of_a_real_export_follow_what_was_stored():
    """Configured bits that no tensor uses do not appear (the old name said mixed_zstd here)."""
    torch.manual_seed(0)
    sd = {"tok_emb.weight": torch.randn(512, 256), "blocks.0.attn.c_q.weight": torch.randn(256, 256),
          "blocks.0.mlp.fc.weight": torch.randn(512, 256), "blocks.0.attn_scale": torch.ones(256)}
    cfg = ExportConfig(bits_attn=6, bits_mlp=6, bits_other=5, embed_fp16=True, compressor="zstd",
                       keep_float_max_numel=1000)
    _, rep = export_artifact(sd, cfg, control=DEFAULT_CONTROL_PATTERNS)
    assert artifact_filename(rep) == "final_model.int6+fp16emb.zstd.ptz"
    _, rep = export_artifact(sd, ExportConfig(keep_float_max_numel=1000), control=DEFAULT_CONTROL_PATTERNS)
    assert (artifact_filename(rep), artifact_format(rep)) == ("final_model.int8.ptz", "int8_zlib")
