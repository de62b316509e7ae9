"""Export parity with PR #1394 (https://github.com/openai/parameter-golf/pull/1394, record 2026-04-05):
its full-Hessian GPTQ, its standard-deviation clip and its byte-shuffle + brotli compressor, against the
record's own functions imported from ``PGOLF_PR1394_TRAIN_GPT`` (the module skips without it).

The script imports flash-attention 3 at import time; a stub module stands in for it while these tests run
(none of the functions compared here calls it)."""

from __future__ import annotations

import types

import pytest
import torch
from pgolf_testing import (
    gaussian_model_and_hessians,
    imported_script,
    reference_script_or_skip,
    stubbed_modules,
)

PR_PATH = reference_script_or_skip("PGOLF_PR1394_TRAIN_GPT", "PR #1394")
brotli = pytest.importorskip("brotli")

from pgolf.core.compress import (  # noqa: E402
    byte_shuffle,
    byte_unshuffle,
    compress,
    decompress,
    detect,
)


@pytest.fixture(scope="module")
def rec():
    with stubbed_modules("flash_attn_interface"), imported_script(PR_PATH, "_pr1394_train_gpt") as mod:
        yield mod


def payload(n: int = 50_001) -> bytes:
    """fp16-like bytes (odd length on purpose: the planes differ in length)."""
    g = torch.Generator().manual_seed(0)
    b = (torch.randn(n // 2 + 1, generator=g) * 0.02).to(torch.float16).view(torch.uint8).numpy().tobytes()
    return b[:n]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 50_000, 50_001])
def test_byte_shuffle_equals_the_records(rec, n):
    raw = payload(n) if n else b""
    assert byte_shuffle(raw) == rec._byte_shuffle(raw)
    assert byte_unshuffle(byte_shuffle(raw)) == raw == rec._byte_unshuffle(byte_shuffle(raw))


def test_brotli_bytes_equal_the_records(rec):
    """Same payload -> the same compressed bytes (same shuffle, quality 11, brotli's default window), and
    each side reads the other's blob."""
    raw = payload()
    ours = compress(raw, "brotli")
    assert ours == rec._compress(raw, "brotli")
    assert detect(ours) == "brotli" and decompress(ours) == raw == rec._decompress(ours, "brotli")


# -- GPTQ and the standard-deviation clip -----------------------------------------------------

def hessian_problem(rows, cols, seed, dead=()):
    """Trained-looking weights and a calibration Hessian (correlated inputs, a few never active)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.02
    w[3] *= 4.0  # a row with a wider spread
    mix = torch.eye(cols) + 0.3 * torch.randn(cols, cols, generator=g) / cols ** 0.5
    x = torch.randn(4 * cols, cols, generator=g) @ mix
    x[:, list(dead)] = 0
    return w, x.T @ x / 3


CASES = {  # (rows, cols, bits, sigmas, block_size): the record's matrix and embedding settings
    "matrix_int6": (256, 512, 6, 12.85, 128),
    "embed_int8": (512, 256, 8, 20.0, 128),
    "ragged_blocks": (96, 200, 6, 12.85, 64),  # last block shorter
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gptq_codes_and_scales_equal_the_records(rec, case):
    """Same weight, same Hessian -> bit-identical int codes and fp16 scales (dead inputs included)."""
    from pgolf.core.gptq import gptq_quantize
    from pgolf.core.quant import QuantSpec

    rows, cols, bits, sigmas, block = CASES[case]
    w, H = hessian_problem(rows, cols, seed=len(case), dead=(7, cols - 1))
    spec = QuantSpec(bits, clip="sdclip", clip_sigmas=sigmas, scale_floor=False, scale_dtype="fp16")
    q, s = gptq_quantize(w, H, spec, damp=0.01, block_size=block)
    q_rec, s_rec = rec.gptq_quantize_weight(w, H.clone(), clip_sigmas=sigmas, clip_range=2 ** (bits - 1) - 1,
                                           block_size=block)
    assert s.dtype == s_rec.dtype == torch.float16 and torch.equal(s, s_rec)
    assert q.dtype == q_rec.dtype == torch.int8 and torch.equal(q, q_rec)


def test_sdclip_round_to_nearest_uses_the_records_scale(rec):
    """export.clip=sdclip with the rtn quantizer: the record's scale (it has no rtn path; its GPTQ's scale)."""
    from pgolf.core.quant import QuantSpec, quantize_rows

    w, H = hessian_problem(128, 256, seed=3)
    _, s_rec = rec.gptq_quantize_weight(w, H, clip_sigmas=12.85, clip_range=31)
    _, s = quantize_rows(w, QuantSpec(6, clip="sdclip", clip_sigmas=12.85, scale_floor=False, scale_dtype="fp16"))
    assert torch.equal(s, s_rec)


def test_export_config_reproduces_the_records_per_tensor_quantization(rec):
    """The pgolf export settings that stand for the record's (int6 matrices at 12.85 sigma, int8 embedding at
    20 sigma, GPTQ on both) give its codes and scales for every int tensor of a pgolf model."""
    from pgolf.core.config import Config, apply_overrides
    from pgolf.core.export import quantize_state_dict

    cfg = apply_overrides(Config(), {
        "model.num_layers": 2, "model.model_dim": 256, "model.num_heads": 4, "model.num_kv_heads": 2,
        "model.vocab_size": 512, "export.quantizer": "gptq", "export.clip": "sdclip", "export.scale_floor": False,
        "export.scale_dtype": "fp16", "export.bits_attn": 6, "export.bits_mlp": 6, "export.bits_other": 8})
    m, hs = gaussian_model_and_hessians(cfg, 0.02, (2, 64))
    sd = m.state_dict()
    obj, _ = quantize_state_dict(sd, cfg.export, control=cfg.model.control_patterns, hessians=hs)
    big = [n for n, t in sd.items() if t.is_floating_point() and t.numel() > 65536]  # the record's GPTQ set
    assert big and set(big) <= set(obj["quantized"]) and "tok_emb.weight" in big
    for name in big:
        embed = "tok_emb" in name
        q_rec, s_rec = rec.gptq_quantize_weight(sd[name], hs[name], clip_sigmas=20.0 if embed else 12.85,
                                               clip_range=127 if embed else 31)
        assert torch.equal(obj["quantized"][name], q_rec) and torch.equal(obj["scales"][name], s_rec), name


def test_hessians_equal_the_records_collect_hessians(rec):
    """The record's hook rule (inputs of its big attention / MLP CastedLinears, the final norm's output for
    the tied embedding, summed over tokens, divided by the batch count) on a stand-in model built from its
    own CastedLinear and RMSNorm: pgolf's collect_hessians gives the same matrices."""
    from pgolf.core.gptq import collect_hessians

    class Stub(torch.nn.Module):
        def __init__(self, **kw):
            super().__init__()
            for k, v in kw.items():
                setattr(self, k, v)

    class Tiny(torch.nn.Module):
        tie_embeddings, head_proj = True, None

        def __init__(self):
            super().__init__()
            self.tok_emb = torch.nn.Embedding(300, 320)
            self.blocks = torch.nn.ModuleList([Stub(attn=Stub(c_q=rec.CastedLinear(320, 320, bias=False)),
                                                    mlp=Stub(fc=rec.CastedLinear(320, 512, bias=False)))])
            self.final_norm = rec.RMSNorm()

        def forward_logits(self, ids):
            x = self.tok_emb(ids)
            for b in self.blocks:
                x = x + b.attn.c_q(x)
                x = x + b.mlp.fc(x)[..., :320]
                x = x + b.attn.c_q(x)  # a module called twice (depth recurrence) adds twice
            return torch.nn.functional.linear(self.final_norm(x), self.tok_emb.weight)

        forward = forward_logits

    class Loader:
        def __init__(self, batches):
            self.batches = iter(batches)

        def next_batch(self, *args):
            return next(self.batches), None

    torch.manual_seed(0)
    model = Tiny()
    batches = [torch.randint(0, 300, (2, 32)) for _ in range(3)]
    h = types.SimpleNamespace(train_batch_tokens=64, grad_accum_steps=1)
    want = rec.collect_hessians(model, Loader(batches), h, torch.device("cpu"), n_calibration_batches=3)
    got = collect_hessians(model, batches)
    assert set(want) == {"blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight", "tok_emb.weight"}
    for name, H in want.items():
        assert torch.equal(got[name], H), name
    # pgolf also collects the small linears' Hessians (the record's rule skips <= 65536 weights): unused
    # unless the export int-quantizes them


@pytest.mark.parametrize("cls,bits,sigmas", [("mlp", 6, 12.85), ("embed", 8, 20.0)])
def test_as_pr_keeps_the_records_subnormal_scales(rec, cls, bits, sigmas):
    """Rows whose scale k * std / qmax falls below fp16's smallest normal (6.1e-5): the ``_as_pr`` preset
    (``export.scale_subnormal=true``) stores the record's fp16 subnormal scale and its codes; the preset floors
    those rows' scale at 6.1e-5 (other codes, other scales) and agrees with the record on every other row."""
    from pgolf.core.gptq import gptq_quantize
    from pgolf.core.quant import spec_for
    from pgolf.running.presets import get_preset

    w, H = hessian_problem(64, 256, seed=5)
    tiny = torch.tensor([2, 9, 40])
    w[tiny] *= torch.tensor([1e-2, 1e-3, 3e-5])[:, None]  # std 2e-4 .. 6e-7: scales from normal to deep subnormal
    q_rec, s_rec = rec.gptq_quantize_weight(w, H.clone(), clip_sigmas=sigmas, clip_range=2 ** (bits - 1) - 1)
    subnormal = (s_rec.float() < torch.finfo(torch.float16).tiny)
    assert subnormal.sum() >= 2 and subnormal[tiny].sum() == subnormal.sum()
    spec = {p: spec_for(cls, get_preset(p).export) for p in ("pr1394_sp8192_gptq_sdclip_loop45x2",
                                                             "pr1394_sp8192_gptq_sdclip_loop45x2_as_pr")}
    q, s = gptq_quantize(w, H, spec["pr1394_sp8192_gptq_sdclip_loop45x2_as_pr"])
    assert torch.equal(s, s_rec) and torch.equal(q, q_rec)
    q, s = gptq_quantize(w, H, spec["pr1394_sp8192_gptq_sdclip_loop45x2"])
    differs = (s != s_rec)
    assert torch.equal(differs, subnormal)
    assert torch.all(s[subnormal].float() == torch.finfo(torch.float16).tiny)
    assert torch.equal(q[~subnormal], q_rec[~subnormal]) and not torch.equal(q[subnormal], q_rec[subnormal])


def test_scale_subnormal_is_off_by_default_and_needs_no_qmax_floor():
    from pgolf.core.config import Config, ConfigError, apply_overrides
    from pgolf.core.quant import QuantSpec, row_scale

    assert Config().export.scale_subnormal is False
    with pytest.raises(ConfigError, match="export.scale_subnormal"):
        apply_overrides(Config(), {"export.scale_subnormal": True})
    clip = torch.tensor([1.0, 1e-4, 1e-6])
    normal = row_scale(clip, QuantSpec(6, scale_floor=False, scale_dtype="fp16"))
    sub = row_scale(clip, QuantSpec(6, scale_floor=False, scale_dtype="fp16", subnormal=True))
    assert normal[0] == sub[0] and normal[2] == torch.finfo(torch.float16).tiny
    assert 0 < sub[2] < torch.finfo(torch.float16).tiny and sub[2] == torch.tensor(1e-6 / 31).half().float()
