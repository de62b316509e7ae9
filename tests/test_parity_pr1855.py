"""Parity with the 2026-04-27 record, PR #1855 (https://github.com/openai/parameter-golf/tree/main/records/
track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611): its ``train_gpt.py`` imported
from ``PGOLF_PR1855_TRAIN_GPT`` (the module skips without it), with flash-attention 3 and Triton stubbed and
``torch.compile`` the identity while it imports (:func:`pgolf_testing.record_pr1855_stubs`): the functions
compared here are eager PyTorch.

Covered: the environment names pgolf maps, the LR schedule with MIN_LR, Polar Express Newton-Schulz."""

from __future__ import annotations

import ast
import math
import re
import textwrap
import types
from pathlib import Path

import pytest
import torch

from pgolf_testing import imported_script, record_pr1855_stubs, reference_script_or_skip

PR_PATH = reference_script_or_skip("PGOLF_PR1855_TRAIN_GPT", "PR #1855")

from pgolf.core.config import Config, apply_overrides, from_env  # noqa: E402
from pgolf.core.config_env import ENV_KEYS, ENV_LOOP, ENV_SPECIAL  # noqa: E402

CONFIG_ONLY = {"TOKENIZER_PATH", "DATA_PATH"}  # paths: the record derives them from DATA_DIR / CASEOPS_ENABLED


@pytest.fixture(scope="module")
def rec():
    with record_pr1855_stubs(), imported_script(PR_PATH, "_pr1855_train_gpt") as mod:
        yield mod


def _field(cfg: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def test_every_mapped_name_the_record_reads_takes_the_records_value(rec):
    """Each name pgolf maps one-to-one that the record reads, set to the record's default: pgolf's field gets that
    value (pgolf's own defaults differ for most of them, e.g. GPTQ_RESERVE_SECONDS 12 vs 4, COMPRESSOR)."""
    read = set(re.findall(r"""os\.environ\.get\(\s*["']([A-Z0-9_]+)["']""", Path(PR_PATH).read_text()))
    h = rec.Hyperparameters()
    names = sorted(n for n in read & set(ENV_KEYS) if n not in CONFIG_ONLY)
    env = {n: str(getattr(h, n.lower())) for n in names}
    patterns = (*Config().model.control_patterns, *PARALLEL_PATTERNS)  # the record's lanes are on by default
    cfg = from_env(apply_overrides(Config(), {"model.vocab_size": 8192, "model.control_patterns": patterns}), env)
    for n in names:
        want = getattr(h, n.lower())
        assert _field(cfg, ENV_KEYS[n]) == (pytest.approx(want) if isinstance(want, float) else want), n
    assert {"GPTQ_RESERVE_SECONDS", "GPTQ_CALIBRATION_BATCHES", "MATRIX_CLIP_SIGMAS", "EMBED_CLIP_SIGMAS",
            "COMPRESSOR", "VAL_BATCH_TOKENS", "MIN_LR", "MLP_CLIP_SIGMAS", "ATTN_CLIP_SIGMAS", "GATE_WINDOW",
            "PARALLEL_START_LAYER", "LQER_RANK"} <= set(names)
    loop = from_env(Config(), {n: str(getattr(h, n.lower())) for n in ENV_LOOP} | {"NUM_LAYERS": str(h.num_layers)})
    assert (loop.model.loop_layers, loop.model.loop_count) == (tuple(range(h.loop_start, h.loop_end + 1)),
                                                               h.num_loops)
    bits = from_env(Config(), {"MATRIX_BITS": str(h.matrix_bits), "EMBED_BITS": str(h.embed_bits)}).export
    assert (bits.bits_attn, bits.bits_mlp, bits.bits_other) == (h.matrix_bits, h.matrix_bits, h.embed_bits)
    assert {"MATRIX_BITS", "EMBED_BITS"} <= set(ENV_SPECIAL)


# -- Polar Express Newton-Schulz --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 128), (128, 64), (96, 96)])
@pytest.mark.parametrize("steps", [3, 5, 7])
def test_polar_express_orthogonalization_equals_the_records(rec, shape, steps):
    """optim.muon_ns_coeffs=polar_express: pgolf's Newton-Schulz in bf16 gives the record's output bit for bit,
    for wide, tall and square matrices, fewer steps than coefficients and more (the record runs all 5 then)."""
    from pgolf.core.optim import POLAR_EXPRESS_COEFFS, zeropower_via_newtonschulz5

    assert POLAR_EXPRESS_COEFFS == rec._PE_COEFFS
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(steps))
    theirs = rec.zeropower_via_newtonschulz5(g, steps=steps)
    ours = zeropower_via_newtonschulz5(g, steps=steps, dtype=torch.bfloat16, coeffs="polar_express")
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert torch.equal(ours, theirs)
    official = zeropower_via_newtonschulz5(g, steps=steps, dtype=torch.bfloat16)
    assert not torch.equal(official, theirs)


# -- MIN_LR: the LR schedule --------------------------------------------------------------------------------

def _records_schedule(h, max_wallclock_ms):
    """The record's ``training_frac`` and ``lr_mul`` (closures inside its ``train_model``), compiled from its own
    source with ``h`` and the reserve-shortened ``max_wallclock_ms`` they close over."""
    tree = ast.parse(Path(PR_PATH).read_text())
    train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_model")
    defs = [n for n in train.body if isinstance(n, ast.FunctionDef) and n.name in ("training_frac", "lr_mul")]
    assert len(defs) == 2
    ns = {"h": h, "max_wallclock_ms": max_wallclock_ms}
    exec(compile(ast.Module(body=defs, type_ignores=[]), PR_PATH, "exec"), ns)  # noqa: S102
    return lambda step, elapsed_ms: ns["lr_mul"](ns["training_frac"](step, elapsed_ms))


@pytest.mark.parametrize("cap_s", [600.0, 0.0])
@pytest.mark.parametrize("min_lr", [0.0, 0.1])
def test_min_lr_schedule_equals_the_records(cap_s, min_lr):
    """schedule.min_lr_frac (MIN_LR) with schedule.warmdown_frac (WARMDOWN_FRAC) and the GPTQ reserve is the
    record's rule: 1 before the warmdown, then max((1 - frac) / warmdown_frac, MIN_LR), frac measured against the
    cap less GPTQ_RESERVE_SECONDS (or iterations without a cap)."""
    from pgolf.core.optim import lr_multiplier

    env = {"WARMDOWN_FRAC": "0.85", "MIN_LR": str(min_lr), "GPTQ_RESERVE_SECONDS": "0.5",
           "MAX_WALLCLOCK_SECONDS": str(cap_s), "ITERATIONS": "5000"}
    with record_pr1855_stubs(), imported_script(PR_PATH, "_pr1855_schedule", env) as mod:
        h = mod.Hyperparameters()
    theirs = _records_schedule(h, 1e3 * (cap_s - h.gptq_reserve_seconds) if cap_s > 0 else None)
    cfg = from_env(apply_overrides(Config(), {"export.quantizer": "gptq"}), env)
    assert (cfg.schedule.min_lr_frac, cfg.schedule.warmdown_frac) == (min_lr, 0.85)
    points = [(s, 1e3 * cap_s * s / 5000) for s in range(0, 5200, 37)]
    diffs = [abs(lr_multiplier(s, ms, cfg) - theirs(s, ms)) for s, ms in points]
    assert max(diffs) < 1e-12
    assert min(lr_multiplier(s, ms, cfg) for s, ms in points) == pytest.approx(min_lr, abs=1e-12)


# -- export: int7, clip sigma per class, int8 gates -----------------------------------------------------------

def _records_h(**kw):
    base = dict(embed_clip_sigmas=14.0, mlp_clip_sigmas=11.5, attn_clip_sigmas=13.0, matrix_clip_sigmas=12.85,
                embed_bits=7, matrix_bits=6, gated_attn_quant_gate=True, lqer_enabled=False)
    return types.SimpleNamespace(**{**base, **kw})


def _state_and_hessians(seed: int = 0):
    """A record-shaped state dict (names as the record's GPT has them) with trained-looking weights, a few
    rows below fp16's normal scale floor, the sparse gates, small control tensors, and GPTQ Hessians."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"tok_emb.weight": (272, 256), "blocks.0.attn.c_q.weight": (264, 256),
              "blocks.0.mlp.fc.weight": (264, 256),  # just over the record's 65,536-element threshold
              "blocks.0.attn.attn_gate_w": (8, 12), "blocks.1.attn.attn_gate_w": (4, 12),
              "blocks.0.attn_scale": (256,), "skip_weights": (2, 256)}
    sd = {n: torch.randn(*s, generator=g) * 0.02 for n, s in shapes.items()}
    sd["blocks.0.mlp.fc.weight"][5] *= 1e-3  # scale ~7e-7 / 31: an fp16 subnormal
    hs = {}
    for n, t in sd.items():
        if t.ndim == 2 and t.numel() > 65536:
            cols = t.shape[1]
            x = torch.randn(2 * cols, cols, generator=g)
            hs[n] = x.T @ x / 2
    return sd, hs


def _pgolf_export(**over):
    from pgolf.core.config import Config, apply_overrides

    return apply_overrides(Config(), {
        "export.quantizer": "gptq", "export.clip": "sdclip", "export.scale_floor": False,
        "export.scale_subnormal": True, "export.scale_dtype": "fp16", "export.bits_attn": 6, "export.bits_mlp": 6,
        "export.bits_other": 7, "export.sdclip_sigmas_matrix": 12.85, "export.sdclip_sigmas_embed": 14.0,
        "export.sdclip_sigmas_attn": 13.0, "export.sdclip_sigmas_mlp": 11.5, "export.gate_int8": True,
        "export.control_fp32": False, **over})


def test_int7_per_class_sigmas_and_int8_gates_equal_the_records(rec, capsys):
    """int7 embedding, int6 matrices with MLP / attention / embedding clip sigmas, and the int8 gate rows:
    pgolf's quantize_state_dict gives the record's gptq_mixed_quantize codes and scales for every tensor, and
    its fp16 passthrough for the rest."""
    from pgolf.core.export import quantize_state_dict

    sd, hs = _state_and_hessians()
    theirs, meta = rec.gptq_mixed_quantize({k: v.clone() for k, v in sd.items()}, hs, _records_h())
    cfg = _pgolf_export()
    obj, report = quantize_state_dict(sd, cfg.export, control=cfg.model.control_patterns, hessians=hs)
    for name in sd:
        if meta[name] == "gate_int8_row":
            assert torch.equal(obj["quantized"][name], theirs[name + ".gq"]), name
            assert torch.equal(obj["scales"][name], theirs[name + ".gs"]), name
        elif meta[name].startswith("gptq"):
            assert meta[name] == f"gptq (int{7 if 'tok_emb' in name else 6})"
            assert obj["bits"][name] == (7 if "tok_emb" in name else 6)
            assert torch.equal(obj["quantized"][name], theirs[name + ".q"]), name
            assert torch.equal(obj["scales"][name], theirs[name + ".scale"]), name
        else:
            assert torch.equal(obj["passthrough"][name], theirs[name]), name
    assert sorted(n for n, m in meta.items() if m == "gate_int8_row") == [
        "blocks.0.attn.attn_gate_w", "blocks.1.attn.attn_gate_w"]
    # the per-class sigmas matter: one matrix sigma for all gives other MLP scales
    one = _pgolf_export(**{"export.sdclip_sigmas_attn": 0.0, "export.sdclip_sigmas_mlp": 0.0})
    obj1, _ = quantize_state_dict(sd, one.export, control=one.model.control_patterns, hessians=hs)
    assert not torch.equal(obj1["scales"]["blocks.0.mlp.fc.weight"], theirs["blocks.0.mlp.fc.weight.scale"])
    # the gates without export.gate_int8: the ordinary small-tensor rule (fp16 here)
    off = _pgolf_export(**{"export.gate_int8": False})
    obj0, _ = quantize_state_dict(sd, off.export, control=off.model.control_patterns, hessians=hs)
    assert "blocks.0.attn.attn_gate_w" in obj0["passthrough"]


# -- attention: q/k RMSNorm, the sparse output gate ------------------------------------------------------------

def _flash_sdpa(q, k, v, causal=True):
    """flash_attn_func's layout (B, T, H, hd) through SDPA (GQA: head h reads kv head h // (H / KV))."""
    import torch.nn.functional as F

    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                                       enable_gqa=q.size(2) != k.size(2))
    return y.transpose(1, 2)


@pytest.mark.parametrize("gate,rope_dims,xsa", [(False, 0, False), (True, 0, False), (True, 8, True)])
def test_attention_and_sparse_gate_equal_the_records(rec, monkeypatch, gate, rope_dims, xsa):
    """The record's CausalSelfAttention (banked weights passed in; flash-attention replaced by SDPA in its layout)
    and pgolf's with the same weights: q/k RMSNorm, partial RoPE, q gain, XSA and the sparse head-output gate
    sigmoid(scale * W x[:12]) give the same output (float32, CPU)."""
    from pgolf.core.model.layers import CausalSelfAttention

    monkeypatch.setattr(rec, "flash_attn_3_func", _flash_sdpa)
    dim, H, KV, T = 64, 4, 2, 24
    torch.manual_seed(0)
    theirs = rec.CausalSelfAttention(dim, H, KV, 10000.0, 5.0, 32, yarn=False, gate_window=12,
                                     sparse_attn_gate=gate, sparse_attn_gate_scale=0.5)
    if rope_dims:
        theirs.rope_dims = rope_dims
        theirs.rotary = rec.Rotary(dim // H, base=10000.0, train_seq_len=32, rope_dims=rope_dims, yarn=False)
    theirs.use_xsa = xsa
    ours = CausalSelfAttention(dim, H, KV, 10000.0, 5.0, 32, ntk=False, rope_dims=rope_dims, xsa=xsa,
                               gate_window=12 if gate else 0, gate_scale=0.5)
    w = {n: torch.randn(*s) / 8 for n, s in (("q", (dim, dim)), ("k", (dim // 2, dim)), ("v", (dim // 2, dim)),
                                             ("o", (dim, dim)))}
    with torch.no_grad():
        ours.c_q.weight.copy_(w["q"]), ours.c_k.weight.copy_(w["k"]), ours.c_v.weight.copy_(w["v"])
        ours.proj.weight.copy_(w["o"])
        ours.q_gain.copy_(torch.linspace(3, 6, H)), theirs.q_gain.copy_(torch.linspace(3, 6, H))
        if gate:
            assert torch.equal(ours.attn_gate_w, torch.zeros(H, 12))
            assert torch.equal(theirs.attn_gate_w, ours.attn_gate_w)
            gw = torch.randn(H, 12)
            ours.attn_gate_w.copy_(gw), theirs.attn_gate_w.copy_(gw)
    x = torch.randn(2, T, dim)
    want = theirs(x, w["q"], w["k"], w["v"], w["o"])
    got = ours(x)
    assert (got - want).abs().max() < 1e-6
    if gate:  # the gate is live: the same attention without it differs
        plain = CausalSelfAttention(dim, H, KV, 10000.0, 5.0, 32, ntk=False, rope_dims=rope_dims, xsa=xsa)
        plain.load_state_dict({k: v for k, v in ours.state_dict().items() if k != "attn_gate_w"})
        assert (plain(x) - want).abs().max() > 1e-3


# -- the input-dependent SmearGate (BOS-masked) -------------------------------------------------------------

def test_input_smear_gate_equals_the_records(rec):
    """x_t + lam * sigmoid(W x_t[:12]) * x_{t-1}, nothing across a BOS token: the record's GPT run with its
    blocks skipped (embedding -> smear -> RMSNorm -> final norm) against pgolf's InputSmearGate."""
    import torch.nn.functional as F

    from pgolf.core.model.embed import InputSmearGate

    env = {"VOCAB_SIZE": "64", "NUM_LAYERS": "2", "MODEL_DIM": "32", "NUM_HEADS": "4", "NUM_KV_HEADS": "2",
           "SMEAR_GATE_ENABLED": "1", "GATE_WINDOW": "12", "FUSED_CE_ENABLED": "0", "XSA_LAST_N": "0",
           "NUM_LOOPS": "0", "PARALLEL_START_LAYER": "0", "ROPE_DIMS": "0"}
    with record_pr1855_stubs(), imported_script(PR_PATH, "_pr1855_smear", env) as mod:
        mod.BOS_ID = 1
        torch.manual_seed(0)
        model = mod.GPT(mod.Hyperparameters())
        model.num_encoder_layers = model.num_decoder_layers = 0  # only the embedding side runs
        ours = InputSmearGate(12, bos_id=1)
        assert torch.equal(model.smear_gate.weight, ours.weight) and torch.equal(model.smear_lambda, ours.lam)
        with torch.no_grad():
            gw, lam = torch.randn(1, 12), torch.tensor([0.7])
            model.smear_gate.weight.copy_(gw), model.smear_lambda.copy_(lam)
            ours.weight.copy_(gw), ours.lam.copy_(lam)
        ids = torch.randint(2, 64, (3, 20), generator=torch.Generator().manual_seed(1))
        ids[0, 7] = ids[1, 0] = ids[2, 19] = 1  # BOS mid-row, at the start, at the end
        with torch.no_grad():
            want = model._forward_hidden(ids)
            got = F.rms_norm(F.rms_norm(ours(model.tok_emb(ids), ids), (32,)), (32,))
    assert torch.equal(got, want)
    with torch.no_grad():  # the BOS position takes nothing from its predecessor, its neighbour does
        e = model.tok_emb(ids)
        smeared = ours(e, ids)
    assert torch.equal(smeared[0, 7], e[0, 7]) and not torch.equal(smeared[0, 8], e[0, 8])


# -- the whole model: loop, parallel decoder, gates, smear -------------------------------------------------

MODEL_ENV = {"VOCAB_SIZE": "64", "NUM_LAYERS": "6", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2",
             "TRAIN_SEQ_LEN": "32", "ROPE_DIMS": "8", "XSA_LAST_N": "3", "LOOP_START": "2", "LOOP_END": "3",
             "NUM_LOOPS": "2", "PARALLEL_START_LAYER": "4", "SPARSE_ATTN_GATE_ENABLED": "1",
             "SPARSE_ATTN_GATE_SCALE": "0.5", "SMEAR_GATE_ENABLED": "1", "GATE_WINDOW": "12",
             "FUSED_CE_ENABLED": "0"}
PARALLEL_PATTERNS = ("attn_gate_w", "parallel_resid_lambdas", "parallel_post_lambdas")


def _pgolf_model_cfg():
    from pgolf.running.presets import get_preset

    base = get_preset("pr1394_sp8192_gptq_sdclip_loop45x2")
    return from_env(base.replace({"model.control_patterns": (*base.model.control_patterns, *PARALLEL_PATTERNS)}),
                    {k: v for k, v in MODEL_ENV.items() if k != "FUSED_CE_ENABLED"} | {"QK_GAIN_INIT": "5.0"})


def _banks_to_pgolf(theirs) -> dict:
    """The record's banked weights (qo_bank = [Q_0..Q_{L-1}, O_0..], kv_bank = [K.., V..], mlp up/down banks) as
    pgolf's per-block matrices; every other tensor has the same name and shape."""
    n = theirs.num_layers
    sd = {k: v for k, v in theirs.state_dict().items() if not k.endswith("_bank")}
    for i in range(n):
        sd[f"blocks.{i}.attn.c_q.weight"] = theirs.qo_bank[i]
        sd[f"blocks.{i}.attn.proj.weight"] = theirs.qo_bank[n + i]
        sd[f"blocks.{i}.attn.c_k.weight"] = theirs.kv_bank[i]
        sd[f"blocks.{i}.attn.c_v.weight"] = theirs.kv_bank[n + i]
        sd[f"blocks.{i}.mlp.fc.weight"] = theirs.mlp_up_bank[i]
        sd[f"blocks.{i}.mlp.proj.weight"] = theirs.mlp_down_bank[i]
    sd["smear.weight"], sd["smear.lam"] = sd.pop("smear_gate.weight"), sd.pop("smear_lambda")
    return {k: v.detach().clone() for k, v in sd.items()}


@pytest.mark.parametrize("looping", [False, True])
def test_logits_with_loop_parallel_decoder_and_gates_equal_the_records(looping):
    """The record's GPT (eager MLP, flash-attention replaced by SDPA) with its loop, the two-lane decoder from
    layer 4, the sparse gate and the smear gate, every parameter perturbed away from its init, against pgolf's
    model with the mapped weights: the same logits (float32, CPU)."""
    from pgolf.core.model import build_model

    with record_pr1855_stubs(), imported_script(PR_PATH, "_pr1855_model", MODEL_ENV) as mod:
        mod.flash_attn_3_func = _flash_sdpa
        mod.BOS_ID = 1
        torch.manual_seed(0)
        theirs = mod.GPT(mod.Hyperparameters()).eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in theirs.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        theirs.looping_active = looping
        ours = build_model(_pgolf_model_cfg()).eval()
        ours.load_state_dict(_banks_to_pgolf(theirs), strict=True)
        ours.looping_active = looping
        assert (ours.encoder_indices, ours.decoder_indices) == (theirs.encoder_indices, theirs.decoder_indices)
        ids = torch.randint(2, 64, (2, 32), generator=g)
        ids[0, 10] = 1
        with torch.no_grad():
            want = theirs.forward_logits(ids)
            got = ours(ids)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-4
    with torch.no_grad():  # the lanes matter: pgolf's model without them gives other logits
        ours.cfg.parallel_start_layer = 0
        assert (ours(ids) - want).abs().max() > 1e-3


# -- LQER -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("asym", [True, False])
def test_lqer_factors_and_dequantized_weights_equal_the_records(rec, asym):
    """export.lqer_rank=4, lqer_top_k=2 (asym group 64, or symmetric int4 factors): the same two tensors chosen
    by error norm, the record's factor codes and scales, and dequantized weights equal to its dequantize_mixed."""
    from pgolf.core.export import dequantize_state_dict, quantize_state_dict

    sd, hs = _state_and_hessians(seed=3)
    h = _records_h(lqer_enabled=True, lqer_rank=4, lqer_top_k=2, lqer_factor_bits=4, lqer_asym_enabled=asym,
                   lqer_asym_group=64)
    theirs, meta = rec.gptq_mixed_quantize({k: v.clone() for k, v in sd.items()}, hs, h)
    cfg = _pgolf_export(**{"export.lqer_rank": 4, "export.lqer_top_k": 2, "export.lqer_factor_bits": 4,
                           "export.lqer_asym_group": 64 if asym else 0})
    obj, report = quantize_state_dict(sd, cfg.export, control=cfg.model.control_patterns, hessians=hs)
    chosen = sorted(n for n, m in meta.items() if "lqer" in m)
    assert len(chosen) == 2 and sorted(obj["lqer"]) == chosen
    suffix = "_a" if asym else ""
    for name in chosen:
        e = obj["lqer"][name]
        assert e["scheme"] == ("asym" if asym else "sym")
        for ours_key, their_key in (("A", "lqA"), ("sA", "lqAs"), ("B", "lqB"), ("sB", "lqBs")):
            assert torch.equal(e[ours_key], theirs[f"{name}.{their_key}{suffix}"]), (name, ours_key)
    want = rec.dequantize_mixed(theirs, meta, sd)
    got = dequantize_state_dict(obj)
    for name in sd:
        assert torch.equal(got[name], want[name]), name
    plain, _ = quantize_state_dict(sd, _pgolf_export().export, control=cfg.model.control_patterns, hessians=hs)
    back = dequantize_state_dict(plain)
    for name in chosen:  # the correction lowers the error of the tensors it was made for
        assert (got[name] - sd[name]).norm() < (back[name] - sd[name]).norm()


def test_the_records_architecture_has_its_parameter_count():
    """The record's model (its run command's switches on pgolf's PR #1394 preset: QK gain 5, loop 3..5 x2, lanes
    from layer 8, the sparse gate and the smear gate) has the 35,945,671 parameters its logs print
    (``model_params:35945671``, train_seed42.log)."""
    from pgolf.core.model import build_model
    from pgolf.running.presets import get_preset

    base = get_preset("pr1394_sp8192_gptq_sdclip_loop45x2")
    cfg = from_env(base.replace({"model.control_patterns": (*base.model.control_patterns, *PARALLEL_PATTERNS),
                                 "model.init": "default"}),  # the count only: skip the orthogonal init
                   {"QK_GAIN_INIT": "5.0", "LOOP_START": "3", "LOOP_END": "5", "NUM_LOOPS": "2",
                    "PARALLEL_START_LAYER": "8", "SPARSE_ATTN_GATE_ENABLED": "1", "SMEAR_GATE_ENABLED": "1",
                    "GATE_WINDOW": "12"})
    assert sum(p.numel() for p in build_model(cfg).parameters()) == 35_945_671
