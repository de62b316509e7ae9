"""Parity of the preset ``pr314_11l_int4mlp_bigram_swa`` with PR #314's own ``train_gpt.py``.

PR: https://github.com/openai/parameter-golf/pull/314 (seed 002, "11L int4-MLP QAT BigramHash SWA").
The script is not part of this repository. Get it from a clone of https://github.com/openai/parameter-golf:

    git fetch origin pull/314/head
    git show FETCH_HEAD:records/track_10min_16mb/<the PR's folder>/train_gpt.py > pr314_train_gpt.py

and run ``PGOLF_PR314_TRAIN_GPT=pr314_train_gpt.py python -m pytest -q tests/test_parity_pr314.py``.
Without the variable the module is skipped. The script imports on CPU (its CUDA-only code is inside
``main()``); code that lives inline in ``main()`` (optimizer setup, SWA, pruning, QAT assignment) is restated
here with its line numbers, as tests/test_official_parity.py does for the official ``lr_mul``.

Every pgolf fix the preset keeps on purpose shows up as a named ``test_expected_difference_*`` that asserts
the difference exists and is exactly the documented one, and that the restoring switch removes it.
"""

from __future__ import annotations

import io
import math
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zstandard
from pgolf_testing import imported_script, max_abs_diff, reference_script_or_skip
from torch import nn

PR_PATH = reference_script_or_skip("PGOLF_PR314_TRAIN_GPT", "PR #314")

from pgolf.core import optim as pg_optim  # noqa: E402
from pgolf.core.averaging import WeightAverager  # noqa: E402
from pgolf.core.config import Config, apply_overrides  # noqa: E402
from pgolf.core.data.loader import load_validation_tokens  # noqa: E402
from pgolf.core.data.shards import write_shard  # noqa: E402
from pgolf.core.evaluate import ByteLUTs, eval_windows, windows  # noqa: E402
from pgolf.core.export import (  # noqa: E402
    dequantize_state_dict,
    export_artifact,
    load_artifact,
    prune_state_dict,
    quantize_state_dict,
)
from pgolf.core.model import build_model  # noqa: E402
from pgolf.core.model.layers import CastedLinear  # noqa: E402
from pgolf.core.qat import assign_qat_specs, set_qat  # noqa: E402
from pgolf.core.quant import fake_quant, plan_tensor  # noqa: E402
from pgolf.running.presets import AS_PR, get_preset  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
PRESET = "pr314_11l_int4mlp_bigram_swa"
FULL_PARAMS = 27_878_489  # both models at the PR's full size
FULL_ENTRIES = 116
# pgolf name -> the PR's name (the only renamed parameter)
TO_PR = {"bigram.table.weight": "bigram.embed.weight"}
TO_PG = {v: k for k, v in TO_PR.items()}
# The preset's deliberate differences, each with the override that restores the PR's behaviour. The
# bitwise tests run with all four; each test_expected_difference_* shows one of them on its own.
PR_BEHAVIOUR = AS_PR[PRESET]  # pgolf's deliberate fixes switched back (the preset's docstring lists them)


# -- helpers ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pr():
    """The PR's module, imported under a private name with none of its environment knobs set."""
    with imported_script(PR_PATH, "_pr314_train_gpt") as mod:
        yield mod


def preset(**overrides) -> Config:
    return apply_overrides(get_preset(PRESET), overrides)


def mid_cfg(**overrides) -> Config:
    """All 11 layers (so blocks.9.attn.c_k exists) at width 384, 6 heads / 3 KV heads: every attention and
    MLP matrix and tok_emb is above the 65,536-element pruning threshold, c_k included; the bigram
    projection (384 x 128) is below it but above the 8,192-element passthrough threshold."""
    return preset(**{"model.model_dim": 384, "model.num_heads": 6, "model.num_kv_heads": 3,
                     "model.bigram_buckets": 2048, "train.train_seq_len": 128, **overrides})


def mini_cfg(**overrides) -> Config:
    """2 layers, width 128, seq 64, stride 16: for tests that run many forward passes."""
    return preset(**{"model.num_layers": 2, "model.model_dim": 128, "model.num_heads": 4, "model.num_kv_heads": 2,
                     "model.bigram_buckets": 512, "model.bigram_dim": 64, "train.train_seq_len": 64, "eval.stride": 16,
                     **overrides})


def pr_gpt(pr, cfg: Config) -> nn.Module:
    m = cfg.model
    return pr.GPT(vocab_size=m.vocab_size, num_layers=m.num_layers, model_dim=m.model_dim, num_heads=m.num_heads,
                  num_kv_heads=m.num_kv_heads, mlp_mult=m.mlp_mult, tie_embeddings=m.tie_embeddings,
                  tied_embed_init_std=m.tied_embed_init_std, logit_softcap=m.logit_softcap, rope_base=m.rope_base,
                  qk_gain_init=m.qk_gain_init, bigram_vocab_size=m.bigram_buckets, bigram_dim=m.bigram_dim)


def to_pr(sd: dict) -> dict:
    return {TO_PR.get(k, k): v for k, v in sd.items()}


def to_pg(sd: dict) -> dict:
    return {TO_PG.get(k, k): v for k, v in sd.items()}




def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert list(a) == list(b), f"{what}: different keys/order"
    for k in a:
        assert (a[k].dtype, a[k].shape) == (b[k].dtype, b[k].shape), f"{what}[{k}]"
        assert torch.equal(a[k], b[k]), f"{what}[{k}]: max abs diff {max_abs_diff(a[k], b[k])}"


def trained_like_state(pr_model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights in the PR's names: matrices N(0, 0.03) with a few heavy-tailed entries, control
    tensors N(1, 0.25), gate / bigram scale N(0, 1). Row 0 of every MLP fc is zero and row 1 is tiny, to
    reach the scale floors; every row of blocks.0.mlp.proj is tiny."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in pr_model.state_dict().items():
        if t.ndim == 2 and not any(p in name for p in ("resid_mix", "skip_weights")):
            w = torch.randn(t.shape, generator=g) * 0.03
            w += (torch.rand(t.shape, generator=g) < 1e-3) * torch.randn(t.shape, generator=g) * 0.3
            if name.endswith("mlp.fc.weight"):
                w[0] = 0.0
                w[1] *= 1e-5
            if name == "blocks.0.mlp.proj.weight":
                w *= 1e-4
        elif name in ("smear.gate", "bigram.scale"):
            w = torch.randn(t.shape, generator=g)
        else:
            w = 1.0 + 0.25 * torch.randn(t.shape, generator=g)
        out[name] = w.to(t.dtype)
    return out


def tokens(shape: tuple[int, int], seed: int, bos_at: tuple[tuple[int, int], ...] = ()) -> torch.Tensor:
    """Random ids in [2, 1024) (no BOS) with BOS tokens (id 1) at ``bos_at``, as in a packed stream."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, 1024, shape, generator=g)
    for b, t in bos_at:
        x[b, t] = 1
    return x


BOS_AT = ((0, 20), (1, 5), (1, 40))


# -- 1. hyperparameters ---------------------------------------------------------------------------

# PR Hyperparameters attribute -> (pgolf key, transform of the PR value into pgolf's)
HP_MAP = {
    "seed": ("train.seed", None), "val_batch_size": ("train.val_batch_size", None),
    "val_loss_every": ("train.val_loss_every", None), "train_log_every": ("train.train_log_every", None),
    "iterations": ("train.iterations", None), "warmdown_iters": ("schedule.warmdown_iters", None),
    "warmup_steps": ("train.warmup_steps", None), "train_batch_tokens": ("train.train_batch_tokens", None),
    "train_seq_len": ("train.train_seq_len", None), "max_wallclock_seconds": ("train.max_wallclock_seconds", None),
    "qk_gain_init": ("model.qk_gain_init", None), "vocab_size": ("model.vocab_size", None),
    "num_layers": ("model.num_layers", None), "num_kv_heads": ("model.num_kv_heads", None),
    "model_dim": ("model.model_dim", None), "num_heads": ("model.num_heads", None),
    "mlp_mult": ("model.mlp_mult", None), "tie_embeddings": ("model.tie_embeddings", None),
    "rope_base": ("model.rope_base", None), "logit_softcap": ("model.logit_softcap", None),
    "embed_lr": ("optim.embed_lr", None), "head_lr": ("optim.head_lr", None),
    "tied_embed_lr": ("optim.tied_embed_lr", None), "tied_embed_init_std": ("model.tied_embed_init_std", None),
    "matrix_lr": ("optim.matrix_lr", None), "scalar_lr": ("optim.scalar_lr", None),
    "muon_momentum": ("optim.muon_momentum", None), "muon_backend_steps": ("optim.muon_backend_steps", None),
    "muon_momentum_warmup_start": ("optim.muon_momentum_warmup_start", None),
    "muon_momentum_warmup_steps": ("optim.muon_momentum_warmup_steps", None),
    "beta1": ("optim.beta1", None), "beta2": ("optim.beta2", None), "adam_eps": ("optim.adam_eps", None),
    "grad_clip_norm": ("optim.grad_clip_norm", None),
    "weight_decay": ("optim.adam_weight_decay", None),  # AdamW on the token and scalar groups (lines 968-989)
    "eval_stride": ("eval.stride", None), "eval_batch_seqs": ("eval.batch_seqs", None),
    "bigram_vocab_size": ("model.bigram_buckets", None), "bigram_dim": ("model.bigram_dim", None),
    "swa_enabled": ("averaging.mode", lambda v: "swa" if v else "none"),
    "swa_start_frac": ("averaging.swa_start_lr_scale", None), "swa_every": ("averaging.swa_every", None),
}
HP_NOT_CONFIG = {"data_path", "train_files", "val_files", "tokenizer_path", "run_id"}  # paths and run names

# Constants written inline in the PR script (line numbers), each -> (pgolf key, value)
INLINE = {
    "Muon weight_decay=0.04 (980)": ("optim.muon_weight_decay", 0.04),
    "QAT clip 7 on mlp.fc/mlp.proj only (939-942)": ("qat.scope", ("mlp",)),
    "QAT always on, priming steps included (939-942)": ("qat.start_frac", 0.0),
    "QAT amax / clamp_min(1e-12) / fp32 scale (334-343)": ("qat.clip", "amax"),
    "  ... no scale floor": ("qat.scale_floor", "none"),
    "  ... fp32 scale": ("qat.scale_dtype", "fp32"),
    "export int4 MLP (clip 7, 377)": ("export.bits_mlp", 4),
    "export int6 attention (clip 31, 377)": ("export.bits_attn", 6),
    "export int6 bigram (int6_cats, 1194)": ("export.bits_other", 6),
    "passthrough numel <= 8192 (364)": ("export.keep_float_max_numel", 8192),
    "row amax, no clipping (348)": ("export.clip", "amax"),
    "scale clamp_min(1e-12) -> fp16 -> fp16 tiny (349-350)": ("export.scale_floor", False),
    "codes from the fp16 scale (351)": ("export.scale_dtype", "fp16"),
    "zstd level 22 (1199)": ("export.compressor", "zstd"),
    "pruning 3% (1187)": ("export.prune_frac", 0.03),
    "pruning 5% for .mlp. (1187)": ("export.prune_frac_mlp", 0.05),
    "pruning every 2-D param (1185)": ("export.prune_scope", "matrices"),
    "  ... with numel > 65536 (1185)": ("export.prune_min_numel", 65_536),
    "  ... |w| < torch.quantile (1188-1189)": ("export.prune_rule", "quantile"),
    "SWA applied only if swa_count > 1 (1164)": ("averaging.swa_min_snapshots", 2),
    "sliding eval at train_seq_len (764)": ("eval.seq_len", 0),
}


def test_hyperparameter_table(pr):
    cfg = get_preset(PRESET + "_as_pr").to_dict()
    hp = {k: v for k, v in vars(pr.Hyperparameters).items() if not k.startswith("_")}
    assert set(hp) == set(HP_MAP) | HP_NOT_CONFIG, "a PR hyperparameter is neither mapped nor listed as non-config"
    rows = []
    for name, (key, fn) in HP_MAP.items():
        section, field = key.split(".")
        want = fn(hp[name]) if fn else hp[name]
        got = cfg[section][field]
        rows.append(f"{name:>28} = {hp[name]!r:<12} {key:<34} {got!r}")
        assert got == want, f"{name}: PR {want!r} vs {key} {got!r}"
    for what, (key, want) in INLINE.items():
        section, field = key.split(".")
        assert cfg[section][field] == want, f"{what}: {key} is {cfg[section][field]!r}, expected {want!r}"
    assert tuple(pr.FP16_KEEP_NAME_PATTERNS) == cfg["export"]["fp16_patterns"] == ("tok_emb", "blocks.9.attn.c_k")
    assert tuple(pr.CONTROL_TENSOR_NAME_PATTERNS) == cfg["model"]["control_patterns"]
    assert cfg["export"]["control_exclude"] == ()  # the PR exports with its control list
    assert pr._COMPRESSOR == "zstd"
    print("\n" + "\n".join(rows))


# -- 2. state-dict names and shapes --------------------------------------------------------------

@pytest.mark.parametrize("shape", ["full", "mid"])
def test_state_dict_names_shapes_and_order(pr, shape):
    cfg = get_preset(PRESET) if shape == "full" else mid_cfg()
    o, p = pr_gpt(pr, cfg), build_model(cfg)
    so, sp = o.state_dict(), to_pr(p.state_dict())
    assert list(so) == list(sp), "same names in the same order (through the bigram.table -> bigram.embed map)"
    for k in so:
        assert (so[k].shape, so[k].dtype) == (sp[k].shape, sp[k].dtype), k
    n_o, n_p = (sum(t.numel() for t in m.parameters()) for m in (o, p))
    assert n_o == n_p
    if shape == "full":
        assert (n_p, len(sp)) == (FULL_PARAMS, FULL_ENTRIES)
    assert [TO_PR.get(n, n) for n, _ in p.named_parameters()] == [n for n, _ in o.named_parameters()]
    p.load_state_dict(to_pg(trained_like_state(o, 1)), strict=True)
    o.load_state_dict(to_pr(p.state_dict()), strict=True)


# -- 3. init ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["full", "mid"])
def test_same_seed_same_init(pr, shape):
    cfg = get_preset(PRESET) if shape == "full" else mid_cfg()
    torch.manual_seed(42)
    so = pr_gpt(pr, cfg).state_dict()
    after_o = torch.rand(4)
    torch.manual_seed(42)
    sp = to_pr(build_model(cfg).state_dict())
    after_p = torch.rand(4)
    assert_same_tensors(so, sp, f"init[{shape}]")
    assert torch.equal(after_o, after_p), "the RNG is left in the same state"
    # what the PR's init does, spelled out: zero block projections, a zero bigram
    # table and an orthogonal bigram projection scaled by 1/sqrt(2L)
    L = cfg.model.num_layers
    assert not so["bigram.embed.weight"].any() and not so["blocks.0.attn.proj.weight"].any()
    w = so["bigram.proj.weight"] * math.sqrt(2 * L)
    assert torch.allclose(w.T @ w, torch.eye(w.shape[1]), atol=1e-5)


# -- 4. loss and gradients -------------------------------------------------------------------------

def test_loss_and_gradients_equal(pr):
    cfg = mid_cfg(**PR_BEHAVIOUR)
    o, p = pr_gpt(pr, cfg), build_model(cfg)
    sd = trained_like_state(o, 3)
    o.load_state_dict(sd)
    p.load_state_dict(to_pg(sd))
    x, y = tokens((2, 64), 4, BOS_AT), tokens((2, 64), 5)
    lo, lp = o(x, y), p(x, y)
    lo.backward()
    lp.backward()
    gp = {TO_PR.get(n, n): t.grad for n, t in p.named_parameters()}
    d_grad = max(max_abs_diff(t.grad, gp[n]) for n, t in o.named_parameters())
    print(f"\nloss PR={lo.item():.9f} pgolf={lp.item():.9f} max|dgrad|={d_grad:.3e}")
    assert lo.item() == lp.item(), "expected bitwise-equal losses"
    assert d_grad == 0.0, "expected bitwise-equal gradients"
    # and the logits path used by the sliding evaluator
    assert torch.equal(o.forward_logits(x), p(x))


def test_expected_difference_bos_safe_smear_and_bigram(pr):
    """pgolf's preset never mixes across a BOS token (a bug of the seed PRs' SmearGate); model.bos_id=-1 is the PR."""
    cfg = mid_cfg()
    assert cfg.model.bos_id == 1
    o, p = pr_gpt(pr, cfg), build_model(cfg)
    sd = trained_like_state(o, 6)
    o.load_state_dict(sd)
    p.load_state_dict(to_pg(sd))
    no_bos = tokens((2, 64), 7)
    x = tokens((2, 64), 7, BOS_AT)
    assert torch.equal(o.forward_logits(no_bos), p(no_bos)), "without BOS tokens the models agree"
    lo, lp = o.forward_logits(x), p(x)
    differ = (lo - lp).abs().amax(dim=-1) > 0
    # the difference starts exactly at each sequence's first BOS (causal: later positions may differ too)
    for b, t0 in ((0, 20), (1, 5)):
        assert not differ[b, :t0].any() and differ[b, t0]
    p_safe = build_model(mid_cfg(**PR_BEHAVIOUR))
    p_safe.load_state_dict(to_pg(sd))
    assert torch.equal(o.forward_logits(x), p_safe(x)), "model.bos_id=-1 restores the PR"
    print(f"\nBOS-safe vs PR logits: max abs diff {max_abs_diff(lo, lp):.3e} ({len(BOS_AT)} BOS tokens)")


# -- 5. export -------------------------------------------------------------------------------------

def pr_export(pr, sd: dict) -> tuple[dict, dict]:
    return pr.mixed_quantize_int6({k: v.detach().cpu() for k, v in sd.items()}, {"mlp", "attn", "bigram"})


def compare_export(result: dict, meta: dict, obj: dict) -> dict[str, str]:
    """Per tensor: 'equal' or a reason; codes, scales and passthrough tensors compared bitwise."""
    bits = obj.get("bits", {})
    out = {}
    for name, m in meta.items():
        pg = TO_PG.get(name, name)
        if isinstance(m, dict):
            want_bits = int(m["type"].removeprefix("int"))
            ok = (pg in obj["quantized"] and bits.get(pg) == want_bits
                  and torch.equal(result[name + ".q"], obj["quantized"][pg])
                  and result[name + ".scale"].dtype == obj["scales"][pg].dtype == torch.float16
                  and torch.equal(result[name + ".scale"], obj["scales"][pg]))
            out[name] = "equal" if ok else f"int{want_bits} codes/scales differ"
        else:
            t = obj["passthrough"].get(pg)
            ok = t is not None and t.dtype == result[name].dtype and torch.equal(t, result[name])
            out[name] = "equal" if ok else (f"{m}: PR {result[name].dtype} vs pgolf "
                                            f"{None if t is None else t.dtype}")
    return out


def test_export_bitwise_equal(pr):
    """Codes, scales and passthrough tensors (dtype and value) are bitwise equal, with the PR's control
    tensor order; the dequantized state dicts too."""
    cfg = mid_cfg(**PR_BEHAVIOUR)
    o = pr_gpt(pr, cfg)
    sd = trained_like_state(o, 8)
    result, meta = pr_export(pr, sd)
    obj, _ = quantize_state_dict(to_pg(sd), cfg.export, control=cfg.model.control_patterns)
    cmp = compare_export(result, meta, obj)
    bad = {k: v for k, v in cmp.items() if v != "equal"}
    assert not bad, bad
    kinds = Counter(m["type"] if isinstance(m, dict) else m for m in meta.values())
    # int4: fc + proj x 11; int6: 4 attention matrices x 11 but blocks.9's c_k, + bigram table + projection;
    # fp16: tok_emb, blocks.9.attn.c_k; small (fp16): 4 control tensors x 11 + skip_weights, smear, bigram.scale
    assert kinds == {"int4": 22, "int6": 4 * 11 - 1 + 2, "passthrough_fp16": 2, "passthrough": 4 * 11 + 3}, kinds
    assert meta["blocks.9.attn.c_k.weight"] == "passthrough_fp16" and meta["tok_emb.weight"] == "passthrough_fp16"
    assert meta["bigram.proj.weight"] == {"type": "int6"} and meta["bigram.embed.weight"] == {"type": "int6"}
    # the floors were reached: an all-zero row and tiny rows
    assert float(obj["scales"]["blocks.0.mlp.fc.weight"][0]) == torch.finfo(torch.float16).tiny
    deq_o = pr.dequantize_mixed_int6(result, meta, sd)
    deq_p = to_pr(dequantize_state_dict(obj))
    assert_same_tensors(deq_o, {k: deq_p[k] for k in deq_o}, "dequantized")


def test_export_codes_never_reach_minus_qmax_minus_one(pr):
    """The PR clamps codes to [-(qmax+1), qmax], pgolf to [-qmax, qmax]: with a row-max clip the extra code
    is unreachable, even with the fp16-rounded scale (|w| / scale <= qmax * (1 + 2^-11) < qmax + 0.5)."""
    g = torch.Generator().manual_seed(9)
    w = torch.randn(512, 256, generator=g) * torch.logspace(-9, 1, 512)[:, None]
    for clip in (7, 31):
        q, _ = pr.quantize_intN_per_row(w, clip_range=clip)
        assert int(q.min()) >= -clip and int(q.max()) <= clip


def test_expected_difference_control_tensors_fp32(pr):
    """pgolf's preset stores control tensors fp32; the PR's small-tensor rule runs first and stores them
    fp16 (a bug of the seed PRs' export). Exactly the control tensors differ, by their fp16 rounding."""
    cfg = mid_cfg()
    assert cfg.export.control_fp32
    o = pr_gpt(pr, cfg)
    sd = trained_like_state(o, 10)
    result, meta = pr_export(pr, sd)
    obj, _ = quantize_state_dict(to_pg(sd), cfg.export, control=cfg.model.control_patterns)
    cmp = compare_export(result, meta, obj)
    differ = {k for k, v in cmp.items() if v != "equal"}
    control = {k for k in sd if any(p in k for p in cfg.model.control_patterns)}
    assert differ == control and len(control) == 4 * 11 + 3
    for k in control:
        assert obj["passthrough"][k].dtype == torch.float32 and torch.equal(obj["passthrough"][k], sd[k])
        assert result[k].dtype == torch.float16 and torch.equal(result[k], sd[k].half())
    worst = max(max_abs_diff(result[k].float(), sd[k]) for k in control)
    print(f"\ncontrol tensors: {len(control)} stored fp32 by pgolf, fp16 by the PR (max rounding {worst:.3e})")


def pr_prune(pr, cfg: Config, sd: dict) -> dict:
    """The PR's magnitude pruning, inline in main() at lines 1184-1190, on a PR model holding ``sd``."""
    model = pr_gpt(pr, cfg)
    model.load_state_dict(sd)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and param.numel() > 65536:
                pct = 0.05 if ".mlp." in name else 0.03
                threshold = torch.quantile(param.abs().float().flatten(), pct)
                mask = param.abs() < threshold
                param.masked_fill_(mask, 0.0)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_pruning_masks_equal(pr):
    cfg = mid_cfg()
    sd = trained_like_state(pr_gpt(pr, cfg), 11)
    po = pr_prune(pr, cfg, sd)
    pp = to_pr(prune_state_dict(to_pg(sd), cfg.export, control=cfg.model.control_patterns))
    assert_same_tensors(po, pp, "pruned")
    pruned = {k for k in sd if not torch.equal(sd[k], po[k])}
    want = ({"tok_emb.weight", "bigram.embed.weight"}
            | {f"blocks.{i}.{m}.weight" for i in range(11) for m in
               ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")})
    assert pruned == want, "every 2-D parameter above 65,536 entries, fp16-kept ones included; bigram.proj not"
    for k in sorted(want)[:3] + ["blocks.3.mlp.fc.weight"]:
        frac = float((po[k] == 0).float().mean())
        assert abs(frac - (0.05 if ".mlp." in k else 0.03)) < 2e-3, (k, frac)
    # bf16 tensors (tok_emb and the bigram table on CUDA): the PR compares |w| with the threshold in bf16
    bf = {k: (v.bfloat16() if k in ("tok_emb.weight", "bigram.embed.weight") else v) for k, v in sd.items()}
    model = pr_gpt(pr, cfg)
    model.tok_emb.bfloat16()
    model.bigram.embed.bfloat16()
    model.load_state_dict(bf)
    with torch.no_grad():
        for name in ("tok_emb.weight", "bigram.embed.weight"):
            param = model.get_parameter(name)
            threshold = torch.quantile(param.abs().float().flatten(), 0.03)
            param.masked_fill_(param.abs() < threshold, 0.0)
    pp_bf = to_pr(prune_state_dict(to_pg(bf), cfg.export, control=cfg.model.control_patterns))
    for name in ("tok_emb.weight", "bigram.embed.weight"):
        assert pp_bf[name].dtype == torch.bfloat16 and torch.equal(model.get_parameter(name), pp_bf[name]), name


def pr_container(obj: dict, sd: dict, cfg: Config) -> dict:
    """pgolf's quantized tensors written in the PR's container ({"w": ..., "m": ...}, lines 1193-1195)."""
    w, m = {}, {}
    kind = {"small": "passthrough", "control": "passthrough_ctrl"}
    for name in sd:  # the PR's state-dict order
        pg = TO_PG.get(name, name)
        if pg in obj["quantized"]:
            w[name + ".q"], w[name + ".scale"] = obj["quantized"][pg], obj["scales"][pg]
            m[name] = {"type": f"int{obj['bits'][pg]}"}
        else:
            w[name] = obj["passthrough"][pg]
            m[name] = kind.get(plan_tensor(pg, sd[name], cfg.export, control=cfg.model.control_patterns).cls,
                               "passthrough_fp16")
    return {"w": w, "m": m}


def zstd22(obj: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return zstandard.ZstdCompressor(level=22).compress(buf.getvalue())


def test_artifact_roundtrip_and_bytes(pr):
    """The whole export (prune -> quantize -> serialize -> zstd-22). The round-tripped weights are bitwise
    equal, and pgolf's tensors written in the PR's container give the PR's compressed bytes exactly. pgolf's
    own container (``pgolf_mixed_v1``: codes, scales and passthrough tensors grouped, not interleaved per
    tensor) compresses to a slightly different size: the named expected difference."""
    cfg = mid_cfg(**PR_BEHAVIOUR, **{"model.num_layers": 2})  # 2 layers: zstd-22 is slow
    sd = trained_like_state(pr_gpt(pr, cfg), 12)
    pruned = pr_prune(pr, cfg, sd)
    result, meta = pr_export(pr, pruned)
    pr_blob = zstd22({"w": result, "m": meta})
    deq_o = pr.dequantize_mixed_int6(result, meta, pruned)
    blob, report = export_artifact(to_pg(sd), cfg.export, control=cfg.model.control_patterns)
    deq_p = to_pr(load_artifact(blob))
    assert_same_tensors(deq_o, {k: deq_p[k] for k in deq_o}, "round trip")
    control = cfg.model.control_patterns
    obj, _ = quantize_state_dict(prune_state_dict(to_pg(sd), cfg.export, control=control), cfg.export, control=control)
    assert zstd22(pr_container(obj, sd, cfg)) == pr_blob, "same tensors in the PR's container: same bytes"
    rel = len(blob) / len(pr_blob) - 1
    print(f"\nartifact bytes PR={len(pr_blob)} pgolf={len(blob)} ({rel:+.3%}, container layout only)")
    assert report["format"] == "pgolf_mixed_v1" and abs(rel) < 0.05


# -- 6. QAT ----------------------------------------------------------------------------------------

def test_qat_scope_and_fake_quant(pr):
    """QAT on exactly the MLP matrices (the PR sets ``_qat_clip = 7`` on mlp.fc / mlp.proj, lines 939-942)
    with the PR's fp32 quantizer. The forward values are bitwise equal although the STE is written
    differently (pgolf ``fq + (w - w.detach())``, the PR ``w + (fq - w).detach()``): for fp32 weights
    fq - w is exact (fq = 0, or w within a factor 2 of fq: Sterbenz), so w + (fq - w) is fq exactly."""
    cfg = mid_cfg(**PR_BEHAVIOUR)
    p = build_model(cfg)
    names = assign_qat_specs(p, cfg.export, cfg.qat, control=cfg.model.control_patterns)
    assert names == [f"blocks.{i}.mlp.{m}.weight" for i in range(11) for m in ("fc", "proj")]
    sd = to_pg(trained_like_state(pr_gpt(pr, cfg), 13))
    for name in names:
        w = sd[name]
        m = p.get_submodule(name.removesuffix(".weight"))
        assert m.qat_spec.bits == 4 and m.qat_spec.qmax == 7
        fq_pr, fq_pg = pr.fake_quantize_per_row(w, 7), fake_quant(w, m.qat_spec)
        assert torch.equal(fq_pr, fq_pg), f"{name}: max abs diff {max_abs_diff(fq_pr, fq_pg)}"
        # the PR's extra code -(qmax + 1) = -8 is unreachable with a row-max clip
        codes = torch.round(fq_pg / (w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 7))
        assert int(codes.min()) >= -7 and int(codes.max()) <= 7


def test_qat_layer_forward(pr):
    cfg = mini_cfg(**PR_BEHAVIOUR)
    o, p = pr_gpt(pr, cfg), build_model(cfg)
    sd = trained_like_state(o, 14)
    o.load_state_dict(sd)
    p.load_state_dict(to_pg(sd))
    for block in o.blocks:  # main(), lines 940-942
        block.mlp.fc._qat_clip = 7
        block.mlp.proj._qat_clip = 7
    assign_qat_specs(p, cfg.export, cfg.qat, control=cfg.model.control_patterns)
    set_qat(p, True)
    x, y = tokens((2, 64), 15), tokens((2, 64), 16)
    lo, lp = o(x, y), p(x, y)
    o.eval()
    p.eval()
    assert torch.equal(o(x, y), p(x, y)), "evaluation never fake-quantizes"
    print(f"\nQAT training loss PR={lo.item():.9f} pgolf={lp.item():.9f}")
    assert lo.item() == lp.item()


# -- 7. optimizer steps ----------------------------------------------------------------------------

def pr_optimizers(pr, model, cfg: Config):
    """The optimizer setup of the PR's main() (lines 944-999), fused=False on CPU."""
    o = cfg.optim
    block_named_params = list(model.blocks.named_parameters())
    pats = pr.CONTROL_TENSOR_NAME_PATTERNS
    matrix = [p for n, p in block_named_params if p.ndim == 2 and not any(s in n for s in pats)]
    scalar = [p for n, p in block_named_params if p.ndim < 2 or any(s in n for s in pats)]
    scalar.append(model.skip_weights)
    scalar.append(model.smear.gate)
    scalar.append(model.bigram.scale)
    lr = o.tied_embed_lr
    tok = [{"params": [model.tok_emb.weight], "lr": lr, "base_lr": lr},
           {"params": [model.bigram.embed.weight], "lr": lr, "base_lr": lr}]
    matrix.append(model.bigram.proj.weight)
    kw = dict(betas=(o.beta1, o.beta2), eps=o.adam_eps, weight_decay=0.04, fused=False)
    opt_tok = torch.optim.AdamW(tok, **kw)
    muon = pr.Muon(matrix, lr=o.matrix_lr, momentum=o.muon_momentum, backend_steps=o.muon_backend_steps,
                   weight_decay=0.04)
    for g in muon.param_groups:
        g["base_lr"] = o.matrix_lr
    opt_scalar = torch.optim.AdamW([{"params": scalar, "lr": o.scalar_lr, "base_lr": o.scalar_lr}], **kw)
    return [opt_tok, muon, opt_scalar], muon


def pr_momentum(step: int, cfg: Config) -> float:
    """main(), lines 1111-1112."""
    o = cfg.optim
    frac = min(step / o.muon_momentum_warmup_steps, 1.0) if o.muon_momentum_warmup_steps > 0 else 1.0
    return (1 - frac) * o.muon_momentum_warmup_start + frac * o.muon_momentum


@pytest.mark.parametrize("qat", [False, True])
def test_training_steps(pr, qat):
    """Same init, optimizers (AdamW WD 0.04, Muon WD 0.04, momentum warmup), grad clip 0.3, with and
    without the MLP QAT: bitwise equal parameters after each step."""
    cfg = mini_cfg(**PR_BEHAVIOUR, **{"optim.muon_ns_dtype": "bfloat16"})
    torch.manual_seed(42)
    o = pr_gpt(pr, cfg)
    torch.manual_seed(42)
    p = build_model(cfg)
    if qat:
        for block in o.blocks:
            block.mlp.fc._qat_clip = 7
            block.mlp.proj._qat_clip = 7
        assign_qat_specs(p, cfg.export, cfg.qat, control=cfg.model.control_patterns)
        set_qat(p, True)
    opts_o, muon_o = pr_optimizers(pr, o, cfg)
    opts_p, muon_p = pg_optim.build_optimizers(p, cfg, fused=False)
    assert [type(x).__name__ for x in opts_p] == ["AdamW", "Muon", "AdamW"]
    assert {id(t) for t in opts_o[0].param_groups[1]["params"]} == {id(o.bigram.embed.weight)}
    worst = []
    for step, scale in enumerate((1.0, 0.7, 0.3)):
        x, y = tokens((2, 64), 100 + step, BOS_AT), tokens((2, 64), 200 + step)
        for model, opts, muon, mom in ((o, opts_o, muon_o, pr_momentum(step, cfg)),
                                       (p, opts_p, muon_p, pg_optim.muon_momentum(step, cfg))):
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            model(x, y).backward()
            for g in muon.param_groups:
                g["momentum"] = mom
            for opt in opts:
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * scale
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
            for opt in opts:
                opt.step()
        so, sp = o.state_dict(), to_pr(p.state_dict())
        worst.append(max(max_abs_diff(so[k], sp[k]) for k in so))
    print(f"\nqat={qat}: max abs param diff after steps 1-3: {worst}")
    assert worst == [0.0, 0.0, 0.0]


# -- 8. SWA ----------------------------------------------------------------------------------------

def bf16_layout(model: nn.Module, pr) -> None:
    """The CUDA dtype layout both scripts use (PR lines 934-938, pgolf prepare_model): bf16 body, fp32
    CastedLinear weights and fp32 small/control tensors, so tok_emb and the bigram table are bf16."""
    model.bfloat16()
    for m in model.modules():
        if isinstance(m, (CastedLinear, pr.CastedLinear)):
            m.float()
    pr.restore_low_dim_params_to_fp32(model)


def swa_run(pr, cfg: Config, steps: int, scales: list[float], seed: int):
    """Drive the PR's SWA (main(), lines 1127-1138 and 1163-1170) and pgolf's WeightAverager with the same
    weight sequence and LR scales. Returns (PR steps, PR final state, pgolf steps, pgolf averager, model)."""
    model = pr_gpt(pr, cfg)
    bf16_layout(model, pr)
    g = torch.Generator().manual_seed(seed)
    averager = WeightAverager(model, cfg.averaging)
    swa_state, swa_count, pr_steps, pg_steps = None, 0, [], []
    a = cfg.averaging
    for step in range(steps):
        scale = scales[step]
        with torch.no_grad():  # "training": new weights
            for t in model.parameters():
                t.copy_(torch.randn(t.shape, generator=g).to(t.dtype))
        step += 1
        if scale < a.swa_start_lr_scale and step % a.swa_every == 0:
            if swa_state is None:
                swa_state = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
                swa_count = 1
            else:
                for name, t in model.state_dict().items():
                    swa_state[name] += t.detach().cpu()
                swa_count += 1
            pr_steps.append(step)
        if averager.update(model, step, scale):
            pg_steps.append(step)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    if swa_state is not None and swa_count > 1:
        current = model.state_dict()
        final = {name: (t / swa_count).to(dtype=current[name].dtype) for name, t in swa_state.items()}
    return pr_steps, final, pg_steps, averager, model


def linear_scales(steps: int, warmdown: int) -> list[float]:
    return [min(1.0, (steps - s) / warmdown) for s in range(steps)]


def test_swa_steps_and_average_equal_with_param_dtype(pr):
    cfg = mini_cfg(**PR_BEHAVIOUR, **{"averaging.swa_every": 5})
    pr_steps, final, pg_steps, averager, model = swa_run(pr, cfg, 60, linear_scales(60, 25), 17)
    # scale of the step just taken < 0.4 (steps 52..60 here) and the finished-step count % 5 == 0
    assert pr_steps == pg_steps == [55, 60]
    avg = to_pr(averager.averaged_state(model))
    assert model.tok_emb.weight.dtype == torch.bfloat16
    assert_same_tensors(final, avg, "SWA(param dtype)")


def test_expected_difference_swa_sums_in_fp32(pr):
    """The preset sums SWA snapshots in fp32; the PR sums in the state-dict dtype, i.e. bf16 for tok_emb
    and the bigram table on CUDA. Only those two tensors differ."""
    cfg = mini_cfg(**{"averaging.swa_every": 1, "averaging.swa_start_lr_scale": 1.1})
    assert cfg.averaging.swa_dtype == "fp32"
    _, final, _, averager, model = swa_run(pr, cfg, 20, [1.0] * 20, 18)
    avg = to_pr(averager.averaged_state(model))
    differ = {k for k in final if not torch.equal(final[k], avg[k])}
    assert differ == {"tok_emb.weight", "bigram.embed.weight"}
    d = {k: max_abs_diff(final[k], avg[k]) for k in differ}
    print(f"\nSWA of 20 snapshots, bf16 sum (PR) vs fp32 sum (pgolf): max abs diff {d}")


def test_swa_needs_two_snapshots(pr):
    cfg = mini_cfg(**{"averaging.swa_every": 10})
    pr_steps, final, pg_steps, averager, model = swa_run(pr, cfg, 20, [1.0] * 19 + [0.1], 19)
    assert pr_steps == pg_steps == [20] and averager.count == 1
    assert averager.averaged_state(model) is None  # the PR keeps the final weights (swa_count > 1 rule)
    assert_same_tensors(final, {k: v for k, v in model.state_dict().items()}, "final weights")


# -- 9. sliding-window selection ------------------------------------------------------------------

class _CountingLUT:
    """A base-bytes table that records which target ids the PR's evaluator scores."""

    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def __getitem__(self, idx):
        self.seen.append(idx.detach().clone().reshape(-1))
        return torch.ones(idx.shape, dtype=torch.int16)


class _ZeroLogits(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward_logits(self, x):
        return torch.zeros(*x.shape, self.vocab)


@pytest.fixture(scope="module")
def position_shard(tmp_path_factory):
    """A validation shard whose token i has id i, so a target id is its position + 1."""
    root = tmp_path_factory.mktemp("pr314_val")
    n = 5 * 128 + 50 + 1
    write_shard(root / "fineweb_val_000000.bin", np.arange(n, dtype=np.uint16))
    return root, n


def pr_scored_positions(pr, root: Path, seq_len: int, stride: int) -> tuple[Counter, int]:
    val = pr.load_validation_tokens(str(root / "fineweb_val_*.bin"), seq_len)
    vocab = int(val.to(torch.int64).max()) + 1
    lut = _CountingLUT()
    args = SimpleNamespace(train_seq_len=seq_len)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast(cuda) without CUDA
        pr.eval_val_sliding(args, _ZeroLogits(vocab), 0, 1, CPU, val, lut, torch.zeros(vocab, dtype=torch.bool),
                            torch.zeros(vocab, dtype=torch.bool), stride=stride, batch_seqs=4)
    return Counter((torch.cat(lut.seen) - 1).tolist()), val.numel() - 1


def pg_scored_positions(n_targets: int, seq_len: int, stride: int, rule: str) -> Counter:
    c: Counter = Counter()
    for _, end, score_from in windows(n_targets, seq_len, stride, "drop", rule):
        c.update(range(score_from, end))
    return c


@pytest.mark.parametrize("stride", [32, 64, 50])
def test_sliding_window_selection_rescore_tail_equals_pr(pr, position_shard, stride):
    root, _ = position_shard
    pr_pos, n_targets = pr_scored_positions(pr, root, 128, stride)
    pg_tokens = load_validation_tokens(sorted(root.glob("fineweb_val_*.bin")), 128, tail="drop")
    assert pg_tokens.numel() - 1 == n_targets == 5 * 128
    assert pg_scored_positions(n_targets, 128, stride, "rescore_tail") == pr_pos


def test_expected_difference_every_token_scored_once(pr, position_shard):
    """pgolf's preset scores every validation target exactly once over the whole stream; the PR cuts
    the stream to a multiple of seq_len and re-scores the last stride targets once per trailing window.
    The difference is exactly those two things."""
    root, n = position_shard
    L, S = 128, 64
    pr_pos, n_pr = pr_scored_positions(pr, root, L, S)
    once = pg_scored_positions(n - 1, L, S, "once")
    assert once == Counter(range(n - 1))
    rescored = {pos: c for pos, c in pr_pos.items() if c > 1}
    assert rescored == {pos: L // S for pos in range(n_pr - S, n_pr)}
    assert set(range(n_pr)) == set(pr_pos) and set(once) - set(pr_pos) == set(range(n_pr, n - 1))
    print(f"\nPR: {sum(pr_pos.values())} scored targets over {n_pr} positions ({len(rescored)} scored {L // S}x); "
          f"pgolf: {n - 1} positions once")


def test_sliding_eval_values_equal(pr, position_shard):
    """The PR's eval_val_sliding vs pgolf's eval_windows(rule=rescore_tail) on the same weights and stream."""
    cfg = mini_cfg(**PR_BEHAVIOUR)
    o, p = pr_gpt(pr, cfg), build_model(cfg)
    sd = trained_like_state(o, 20)
    o.load_state_dict(sd)
    p.load_state_dict(to_pg(sd))
    g = torch.Generator().manual_seed(21)
    val = torch.randint(0, 1024, (4 * 64 + 1,), generator=g).to(torch.uint16)
    base = torch.randint(1, 5, (1024,), generator=g).to(torch.int16)
    space = torch.rand(1024, generator=g) < 0.3
    boundary = torch.zeros(1024, dtype=torch.bool)
    boundary[:3] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vl_o, vb_o = pr.eval_val_sliding(SimpleNamespace(train_seq_len=64), o, 0, 1, CPU, val, base, space, boundary,
                                         stride=16, batch_seqs=32)
    r = eval_windows(p, val, ByteLUTs(base, space, boundary), 64, 16, "drop", 32, 0, 1, CPU, False, "rescore_tail")
    print(f"\nsliding eval PR=({vl_o:.12f}, {vb_o:.12f}) pgolf=({r.val_loss:.12f}, {r.val_bpb:.12f})")
    assert r.tokens == 256 + 3 * 16  # three trailing windows re-score the last 16 targets
    assert (r.val_loss, r.val_bpb) == (vl_o, vb_o)
