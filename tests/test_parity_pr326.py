"""Parity of the ``pr326_qat_ntk_cosine_swa`` preset with PR #326's own ``train_gpt.py``.

PR: https://github.com/openai/parameter-golf/pull/326. The script is not part of this repository; get it
from a clone of https://github.com/openai/parameter-golf with::

    git fetch origin pull/326/head
    git show FETCH_HEAD:records/track_non_record_16mb/2026-03-21_QAT_NTK4096_CosineWarmdown_SWA25/train_gpt.py > pr326.py

and run ``PGOLF_PR326_TRAIN_GPT=pr326.py pytest -q tests/test_parity_pr326.py``; without it the tests skip.
The script imports on CPU (its CUDA code is inside ``main()``). Everything runs in fp32 at a small shape.
Inline code of ``main()`` (the LR schedule, SWA) is restated here, marked with the PR's line numbers.
Each deliberate difference of the preset has a test that asserts it exists and is exactly the documented one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pgolf_testing import imported_script, max_abs_diff, reference_script_or_skip
from pgolf_testing import random_state as shared_random_state

PR_PATH = reference_script_or_skip("PGOLF_PR326_TRAIN_GPT", "PR #326")

from pgolf.core import optim as pg_optim  # noqa: E402
from pgolf.core.averaging import WeightAverager  # noqa: E402
from pgolf.core.config import DEFAULT_CONTROL_PATTERNS, Config, apply_overrides  # noqa: E402
from pgolf.core.data import loader as pg_loader  # noqa: E402
from pgolf.core.data.shards import write_shard  # noqa: E402
from pgolf.core.evaluate import ByteLUTs, eval_windows, windows  # noqa: E402
from pgolf.core.model import build_model  # noqa: E402
from pgolf.running.presets import get_preset  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
PRESET = "pr326_qat_ntk_cosine_swa"
RUN_ENV = {"EVAL_SEQ_LEN": "4096", "EVAL_STRIDE": "64"}  # the README's / log's run command (RUN_ID aside)
FULL_PARAMS = 25_517_137  # model_params in the PR's logs
NAME_MAP = {"bigram.embed.weight": "bigram.table.weight"}  # PR name -> pgolf name; all others equal
SMALL = {"model.num_layers": 4, "model.model_dim": 128, "model.num_heads": 4, "model.num_kv_heads": 2,
         "model.bigram_buckets": 2048, "model.bigram_dim": 64, "train.train_seq_len": 128, "eval.seq_len": 256}


# -- helpers ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pr():
    """The PR's module, imported under a private name with exactly the run command's environment."""
    with imported_script(PR_PATH, "_pr326_train_gpt", RUN_ENV) as mod:
        yield mod


def preset(**extra) -> Config:
    return apply_overrides(get_preset(PRESET), extra)


def small(**extra) -> Config:
    return apply_overrides(get_preset(PRESET), {**SMALL, **extra})


def pr_gpt(pr, cfg: Config):
    m = cfg.model
    return pr.GPT(vocab_size=m.vocab_size, num_layers=m.num_layers, model_dim=m.model_dim, num_heads=m.num_heads,
                  num_kv_heads=m.num_kv_heads, mlp_mult=m.mlp_mult, tie_embeddings=m.tie_embeddings,
                  tied_embed_init_std=m.tied_embed_init_std, logit_softcap=m.logit_softcap, rope_base=m.rope_base,
                  qk_gain_init=m.qk_gain_init, train_seq_len=cfg.train.train_seq_len,
                  bigram_vocab_size=m.bigram_buckets, bigram_dim=m.bigram_dim)


def to_pgolf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {NAME_MAP.get(k, k): v for k, v in sd.items()}


def to_pr(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    back = {v: k for k, v in NAME_MAP.items()}
    return {back.get(k, k): v for k, v in sd.items()}


CONTROL = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight", "smear", "bigram.scale")


def random_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Trained-looking weights, with this lineage's extra control tensors (smear gate, bigram scale)."""
    return shared_random_state(model, seed, CONTROL)




def pair(pr, cfg: Config, seed: int = 3):
    """The PR's GPT and pgolf's, holding the same random (trained-looking) weights."""
    o, p = pr_gpt(pr, cfg), build_model(cfg)
    sd = random_state(o, seed)
    o.load_state_dict(sd, strict=True)
    p.load_state_dict(to_pgolf(sd), strict=True)
    return o, p


def tokens(cfg: Config, batch: int, seq: int, seed: int, avoid_bos: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, cfg.model.vocab_size, (batch, seq), generator=g)
    if avoid_bos:  # the BOS difference has its own test
        x[x == cfg.model.bos_id] = 2
    return x


# -- 1. hyperparameters ---------------------------------------------------------------------------

# PR Hyperparameters attribute -> (pgolf key, transform of the PR value)
HP_MAP = {
    "seed": ("train.seed", None), "val_batch_size": ("train.val_batch_size", None),
    "val_loss_every": ("train.val_loss_every", None), "train_log_every": ("train.train_log_every", None),
    "iterations": ("train.iterations", None), "warmdown_iters": ("schedule.warmdown_iters", None),
    "warmup_steps": ("train.warmup_steps", None), "train_batch_tokens": ("train.train_batch_tokens", None),
    "train_seq_len": ("train.train_seq_len", None), "eval_seq_len": ("eval.seq_len", None),
    "eval_stride": ("eval.stride", None), "max_wallclock_seconds": ("train.max_wallclock_seconds", None),
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
    "bigram_vocab_size": ("model.bigram_buckets", None), "bigram_dim": ("model.bigram_dim", None),
    "swa_enabled": ("averaging.mode", lambda v: "swa" if v else "none"),
    "swa_start_frac": ("averaging.swa_start_lr_scale", None), "swa_every": ("averaging.swa_every", None),
    "qat_enabled": ("qat.enabled", None), "prune_frac": ("export.prune_frac", None),
    "eval_batch_seqs": ("eval.batch_seqs", None),
}
# One PR value feeding several pgolf keys: WEIGHT_DECAY is Muon's WD and both AdamW groups' WD (L1010-1026).
HP_MULTI = {"weight_decay": ("optim.muon_weight_decay", "optim.adam_weight_decay")}
HP_NOT_CONFIG = {  # attribute -> why it has no pgolf counterpart
    "data_path": "path", "train_files": "path", "val_files": "path", "tokenizer_path": "path", "run_id": "run name",
    "skip_roundtrip_eval": "pgolf always scores the round-tripped artifact (the PR's default 0 does too)",
}


def _get(cfg: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def test_hyperparameter_table(pr):
    hp = pr.Hyperparameters
    attrs = {k for k in vars(hp) if not k.startswith("_")}
    unmapped = attrs - set(HP_MAP) - set(HP_MULTI) - set(HP_NOT_CONFIG)
    assert not unmapped, f"PR hyperparameters without a mapping: {sorted(unmapped)}"
    cfg = preset()
    rows = []
    for attr, (key, fn) in HP_MAP.items():
        rows.append((attr, key, fn(getattr(hp, attr)) if fn else getattr(hp, attr), _get(cfg, key)))
    for attr, keys in HP_MULTI.items():
        rows += [(attr, key, getattr(hp, attr), _get(cfg, key)) for key in keys]
    bad = [r for r in rows if r[2] != r[3]]
    assert not bad, "\n".join(f"{a} -> {k}: PR {v!r} vs pgolf {w!r}" for a, k, v, w in bad)
    assert (hp.eval_seq_len, hp.eval_stride) == (4096, 64)  # the run command really was applied
    # QAT is on from the first step in the PR (setup_qat before compile, L980)
    assert cfg.qat.start_frac == 0.0


def test_code_constants(pr):
    """Settings that are code, not Hyperparameters, in the PR."""
    cfg = preset()
    m, e = cfg.model, cfg.export
    assert (m.mlp, m.unet_skips, m.init, m.resid_mix_init) == ("relu2", True, "orthogonal", "phase")
    assert (m.smear_gate, m.smear_init, m.smear_placement, m.smear_gated) == ("per_dim", "half", "post_norm",
                                                                                "previous")
    assert (m.bigram_init, m.module_order, m.proj_init_gain) == ("ortho_proj", "records", 0.0)
    assert m.bigram_scale_init == pytest.approx(0.05)  # torch.tensor(0.05) in the PR (L708)
    assert (cfg.schedule.warmdown, cfg.schedule.warmdown_cap_frac) == ("cosine", 0.5)  # L1083
    assert cfg.averaging.swa_min_snapshots == 2  # applied only if swa_count > 1 (L1231)
    assert (e.bits_mlp, e.bits_attn, e.bits_other) == (5, 6, 6)  # clip 15 / 31, bigram int6 (L436)
    assert (e.embed_fp16, e.clip, e.scale_floor, e.keep_float_max_numel) == (True, "amax", False, 8192)
    assert (e.compressor, e.level) == ("lzma", -1)  # 9 | PRESET_EXTREME (L1263)
    assert e.scale_dtype == "fp16"  # quantize_intN_per_row rounds the scale to fp16 first (L407-409)
    assert (e.prune_frac, e.prune_frac_mlp, e.prune_scope, e.prune_min_numel, e.prune_rule) == (
        0.05, -1.0, "matrices", 65536, "quantile")  # L1250-1255
    assert cfg.qat.scope == ("attn", "mlp", "other") and cfg.qat.bits == 0  # export bits: int5 MLP, int6 rest
    assert set(cfg.model.control_patterns) == set(pr.CONTROL_TENSOR_NAME_PATTERNS) and not e.control_exclude
    assert pr.FP16_KEEP_NAME_PATTERNS == ("tok_emb",)
    assert cfg.eval.ntk


# -- 2. structure -----------------------------------------------------------------------------------

def test_state_dict_names_shapes_and_order(pr):
    cfg = small()
    o, p = pr_gpt(pr, cfg), build_model(cfg)
    so, sp = to_pgolf(o.state_dict()), p.state_dict()
    assert set(so) == set(sp), (sorted(set(so) - set(sp)), sorted(set(sp) - set(so)))
    for k in so:
        assert (so[k].shape, so[k].dtype) == (sp[k].shape, sp[k].dtype), k
    # same parameter order (optimizer groups, and the summation order of the global grad-norm clip)
    assert [NAME_MAP.get(n, n) for n, _ in o.named_parameters()] == [n for n, _ in p.named_parameters()]
    p.load_state_dict(to_pgolf(random_state(o, 1)), strict=True)
    o.load_state_dict(to_pr(random_state(p, 2)), strict=True)


def test_full_size_parameter_count(pr):
    cfg = preset()
    n_pr = sum(t.numel() for t in pr_gpt(pr, cfg).parameters())
    n_pg = sum(t.numel() for t in build_model(cfg).parameters())
    assert n_pr == n_pg == FULL_PARAMS


# -- 3. init ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layers", [4, 3])
def test_same_seed_init_bitwise(pr, layers):
    cfg = small(**{"model.num_layers": layers})
    torch.manual_seed(42)
    so = to_pgolf(pr_gpt(pr, cfg).state_dict())
    after_pr = torch.rand(4)
    torch.manual_seed(42)
    sp = build_model(cfg).state_dict()
    after_pg = torch.rand(4)
    for k in so:
        assert torch.equal(so[k], sp[k]), f"init {k}: max abs diff {max_abs_diff(so[k], sp[k])}"
    assert torch.equal(after_pr, after_pg), "the two inits drew a different number of random values"
    # the init is the records' one: zero table, orthogonal bigram projection scaled 1/sqrt(2L), zero projections
    assert not sp["bigram.table.weight"].any() and not sp["blocks.0.attn.proj.weight"].any()
    w = sp["bigram.proj.weight"]
    assert torch.allclose(w.T @ w, torch.eye(w.shape[1]) / (2 * layers), atol=1e-5)


def test_switches_needed_for_same_seed_init(pr):
    """Without module_order=records / bigram_init=ortho_proj the init differs: the switches are what make it match."""
    cfg = small()
    torch.manual_seed(42)
    so = to_pgolf(pr_gpt(pr, cfg).state_dict())
    for override, changed in (({"model.module_order": "official"}, "tok_emb.weight"),
                              ({"model.bigram_init": "normal_table"}, "bigram.table.weight")):
        torch.manual_seed(42)
        sp = build_model(apply_overrides(cfg, override)).state_dict()
        assert not torch.equal(so[changed], sp[changed]), override


# -- 4. loss ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seq", [128, 256])  # the training length, and the eval length (NTK RoPE on)
def test_logits_loss_and_gradients_bitwise(pr, seq):
    cfg = small()
    o, p = pair(pr, cfg)
    x, y = tokens(cfg, 2, seq, 4), tokens(cfg, 2, seq, 5)
    assert torch.equal(o.forward_logits(x), p(x)), "logits differ"
    lo, lp = o(x, y), p(x, y)
    lo.backward()
    lp.backward()
    gp = dict(p.named_parameters())
    d_grad = max(max_abs_diff(t.grad, gp[NAME_MAP.get(n, n)].grad) for n, t in o.named_parameters())
    print(f"\n[seq {seq}] loss PR={lo.item():.9f} pgolf={lp.item():.9f} max|dgrad|={d_grad:.3e}")
    assert lo.item() == lp.item() and d_grad == 0.0


def test_ntk_rope_engages_at_eval_length(pr):
    """At 256 > train 128 both scale the RoPE base by (256/128)^(d/(d-2)); without NTK the logits differ."""
    cfg = small()
    o, p = pair(pr, cfg)
    x = tokens(cfg, 1, 256, 6)
    p_off = build_model(apply_overrides(cfg, {"eval.ntk": False}))
    p_off.load_state_dict(p.state_dict())
    assert torch.equal(o.forward_logits(x), p(x))
    assert not torch.equal(p(x), p_off(x))
    d = cfg.model.model_dim // cfg.model.num_heads
    assert p.blocks[0].attn.rotary.base_for(256) == 10000.0 * 2.0 ** (d / (d - 2))
    assert p.blocks[0].attn.rotary.base_for(128) == 10000.0  # no NTK at the training length (PR #326 applies NTK only past the training length)


def test_expected_difference_bos(pr):
    """pgolf's SmearGate and BigramHash never cross a BOS token (model.bos_id=1); the PR's do.
    Logits before the first BOS are identical; from the BOS on they differ; bos_id=-1 restores the PR."""
    cfg = small()
    o, p = pair(pr, cfg)
    x = tokens(cfg, 1, 128, 7)
    k = 50
    x[0, k] = cfg.model.bos_id
    lo, lp = o.forward_logits(x), p(x)
    assert torch.equal(lo[:, :k], lp[:, :k])
    assert not torch.equal(lo[:, k], lp[:, k])
    p_pr = build_model(apply_overrides(cfg, {"model.bos_id": -1}))
    p_pr.load_state_dict(p.state_dict())
    assert torch.equal(lo, p_pr(x))


# -- 5. schedule --------------------------------------------------------------------------------------

def pr_lr_mul(step: int, elapsed_ms: float, iterations: int, warmdown_iters: int,
              max_wallclock_seconds: float) -> float:
    """``lr_mul`` of the PR's ``main()`` (L1073-1089), restated: it is a closure there."""
    max_wallclock_ms = 1000.0 * max_wallclock_seconds if max_wallclock_seconds > 0 else None
    if warmdown_iters <= 0:
        return 1.0
    if max_wallclock_ms is None:
        warmdown_start = max(iterations - warmdown_iters, 0)
        if warmdown_start <= step < iterations:
            t = (step - warmdown_start) / max(warmdown_iters, 1)
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = min(warmdown_iters * step_ms, max_wallclock_ms * 0.5)
    remaining_ms = max(max_wallclock_ms - elapsed_ms, 0.0)
    if remaining_ms <= warmdown_ms:
        t = 1.0 - remaining_ms / max(warmdown_ms, 1e-9)
        return max(0.5 * (1.0 + math.cos(math.pi * t)), 0.0)
    return 1.0


@pytest.mark.parametrize("wallclock", [600.0, 0.0, 2.5])
@pytest.mark.parametrize("iterations, warmdown", [(20000, 3000), (1000, 3000), (300, 7), (50, 0)])
def test_cosine_schedule_values(wallclock, iterations, warmdown):
    cfg = preset(**{"train.iterations": iterations, "schedule.warmdown_iters": warmdown,
                    "train.max_wallclock_seconds": wallclock})
    steps = sorted({0, 1, 2, 5, 49, 50, 293, 299, 300, 872, 999, 1000, 6606, 16999, 17000, 18500, 19999, 20000})
    for step in steps:
        for elapsed in (0.0, 1.0, 999.9, 2500.0, 5e4, 2.72e5, 3e5, 3.5e5, 5.2e5, 5.99e5, 6e5, 6.5e5):
            want = pr_lr_mul(step, elapsed, iterations, warmdown, wallclock)
            assert pg_optim.lr_multiplier(step, elapsed, cfg) == want, (step, elapsed)


def test_warmdown_cap_matters_on_slow_hardware():
    """The PR's 1xH100 run took 688 ms/step: 3000 steps of warmdown exceed half the 600 s cap."""
    cfg = preset()
    step, elapsed = 500, 500 * 688.0  # 344 s in, 256 s left: inside the capped (300 s) warmdown
    want = pr_lr_mul(step, elapsed, 20000, 3000, 600.0)
    assert pg_optim.lr_multiplier(step, elapsed, cfg) == want
    uncapped = pg_optim.lr_multiplier(step, elapsed, preset(**{"schedule.warmdown_cap_frac": 0.0}))
    assert uncapped != want


# -- 6. SWA -------------------------------------------------------------------------------------------

def pr_swa(states: list[dict[str, torch.Tensor]], scales: list[float], start_frac: float, every: int):
    """The PR's SWA (L1195-1205 collection after ``step += 1``, L1230-1237 application), restated.
    ``states[i]`` / ``scales[i]``: weights after optimizer step i+1 and the LR multiplier that step used."""
    swa_state, swa_count, taken = None, 0, []
    for i, (sd, scale) in enumerate(zip(states, scales)):
        step = i + 1
        if scale < start_frac and step % every == 0:
            if swa_state is None:
                swa_state = {name: t.detach().cpu().clone() for name, t in sd.items()}
                swa_count = 1
            else:
                for name, t in sd.items():
                    swa_state[name] += t.detach().cpu()
                swa_count += 1
            taken.append(step)
    if swa_state is not None and swa_count > 1:
        return {name: (t / swa_count).to(dtype=states[-1][name].dtype) for name, t in swa_state.items()}, taken
    return None, taken


class Weights(torch.nn.Module):
    """A stand-in model for the SWA tests: an embedding, a matrix, a control vector."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.tok_emb = torch.nn.Embedding(64, 16, dtype=dtype)
        self.fc = torch.nn.Linear(16, 32, bias=False)
        self.attn_scale = torch.nn.Parameter(torch.ones(16))


def _swa_run(cfg: Config, model: torch.nn.Module, states, scales):
    avg = WeightAverager(model, cfg.averaging)
    taken = []
    for i, (sd, scale) in enumerate(zip(states, scales)):
        model.load_state_dict(sd)
        if avg.update(model, i + 1, scale):
            taken.append(i + 1)
    return avg.averaged_state(model), taken


def _weight_sequence(model: torch.nn.Module, n: int) -> list[dict[str, torch.Tensor]]:
    return [random_state(model, 100 + i) for i in range(n)]


@pytest.mark.parametrize("iterations, warmdown", [(300, 200), (130, 100)])
def test_swa_snapshots_and_average(iterations, warmdown):
    """Same weight sequence and the preset's cosine schedule (iteration mode): same steps, same average."""
    cfg = small(**{"train.iterations": iterations, "train.max_wallclock_seconds": 0.0,
                   "schedule.warmdown_iters": warmdown})
    model = Weights()
    states = _weight_sequence(model, iterations)
    scales = [pg_optim.lr_multiplier(s, 0.0, cfg) for s in range(iterations)]
    assert scales == [pr_lr_mul(s, 0.0, iterations, warmdown, 0.0) for s in range(iterations)]
    want, taken_pr = pr_swa(states, scales, 0.35, 25)
    got, taken_pg = _swa_run(cfg, model, states, scales)
    assert taken_pr == taken_pg and len(taken_pr) >= 2, taken_pr
    for k in want:
        assert torch.equal(want[k], got[k]), f"{k}: max abs diff {max_abs_diff(want[k], got[k])}"


def test_swa_single_snapshot_is_not_applied():
    """The PR applies SWA only with more than one snapshot (L1231); swa_min_snapshots=2 does the same."""
    cfg = small()
    model = Weights()
    states = _weight_sequence(model, 30)
    scales = [0.1] * 30  # one snapshot, at step 25
    want, taken = pr_swa(states, scales, 0.35, 25)
    got, taken_pg = _swa_run(cfg, model, states, scales)
    assert taken == taken_pg == [25] and want is None and got is None
    got1, _ = _swa_run(small(**{"averaging.swa_min_snapshots": 1}), model, states, scales)
    assert got1 is not None  # pgolf's default would apply it


def test_expected_difference_swa_dtypeulation_dtype():
    """The PR sums snapshots in the parameter dtype (bf16 tok_emb and bigram table on GPU); pgolf sums in
    fp32. Equal for fp32 tensors; for bf16 ones averaging.swa_dtype=param restores the PR bit for bit."""
    cfg = small()
    model = Weights(torch.bfloat16)
    states = _weight_sequence(model, 100)
    scales = [0.1] * 100  # snapshots at 25, 50, 75, 100
    want, _ = pr_swa(states, scales, 0.35, 25)
    got_fp32, _ = _swa_run(cfg, model, states, scales)
    got_param, _ = _swa_run(small(**{"averaging.swa_dtype": "param"}), model, states, scales)
    assert all(torch.equal(want[k], got_param[k]) for k in want)
    diff = max(max_abs_diff(want[k], got_fp32[k]) for k in want)
    print(f"\nSWA of bf16 weights: max |PR (bf16 sum) - pgolf (fp32 sum)| = {diff:.3e}")
    assert 0 < diff < 1e-3


# -- 7. sliding-window selection ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def val_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pr326_val")
    n = 5 * 256 + 77  # not a multiple of the eval length: the PR never scores the last 76 targets
    write_shard(root / "fineweb_val_000000.bin", np.arange(n, dtype=np.uint16))
    return root


def pr_scored_targets(pr, monkeypatch, val: torch.Tensor, seq_len: int, stride: int, world_size: int) -> list[int]:
    """Target positions the PR's ``eval_val_sliding`` scores (its own window code), read off the targets
    it passes to cross_entropy (the stream is arange, so a target id is its position + 1)."""
    seen: list[int] = []
    real = pr.F.cross_entropy

    def spy(logits, targets, **kw):
        seen.extend((targets - 1).tolist())
        return real(logits, targets, **kw)

    monkeypatch.setattr(pr.F, "cross_entropy", spy)
    vocab = val.numel()  # the stream is arange(vocab)
    luts = (torch.ones(vocab, dtype=torch.int16), torch.zeros(vocab, dtype=torch.bool),
            torch.zeros(vocab, dtype=torch.bool))
    logits_fn = lambda x: torch.zeros(*x.shape, vocab)  # noqa: E731
    for rank in range(world_size):
        pr.eval_val_sliding(logits_fn, rank, world_size, CPU, val, *luts, seq_len, stride, eval_batch_seqs=3)
    monkeypatch.undo()
    return seen


def pg_scored_targets(n_targets: int, seq_len: int, stride: int, rule: str) -> list[int]:
    return [t for s, e, f in windows(n_targets, seq_len, stride, "drop", rule) for t in range(f, e)]


@pytest.mark.parametrize("stride, world_size", [(64, 1), (64, 3), (48, 2)])
def test_sliding_window_selection(pr, monkeypatch, val_dir, stride, world_size):
    L = 256
    files = sorted(val_dir.glob("fineweb_val_*.bin"))
    val_pr = pr.load_validation_tokens(str(val_dir / "fineweb_val_*.bin"), L)  # the PR cuts to a multiple of L
    assert torch.equal(val_pr, pg_loader.load_validation_tokens(files, L, tail="drop"))
    seen = pr_scored_targets(pr, monkeypatch, val_pr, L, stride, world_size)
    want = pg_scored_targets(val_pr.numel() - 1, L, stride, "full_windows")
    assert sorted(seen) == sorted(want) and len(set(want)) == len(want)


def test_expected_difference_every_token_scored_once(pr, monkeypatch, val_dir):
    """pgolf scores every validation target exactly once (all tokens, a short last window). The PR cuts the
    stream to a multiple of L and scores full windows only: the difference is exactly the cut-off tail
    (plus, for strides not dividing the stream, the targets after the last full window)."""
    L, S = 256, 48
    files = sorted(val_dir.glob("fineweb_val_*.bin"))
    full = pg_loader.load_validation_tokens(files, L, tail="score")
    n = full.numel() - 1
    pg = pg_scored_targets(n, L, S, "once")
    assert sorted(pg) == list(range(n))
    seen = set(pr_scored_targets(pr, monkeypatch, pr.load_validation_tokens(str(val_dir / "fineweb_val_*.bin"), L),
                                 L, S, 1))
    unscored = sorted(set(range(n)) - seen)
    last_end = max(ws + L for ws in range(0, (n // L) * L - L + 1, S))
    assert unscored == list(range(last_end, n)) and len(unscored) > 76


def test_sliding_eval_values(pr, val_dir):
    """The PR's sliding evaluator and pgolf's full-windows one on the same model: same loss and bpb up to
    summation order (the PR sums each window's fp32 cross-entropy, pgolf per-token losses in fp64)."""
    cfg = small(**{"model.vocab_size": 2048, "model.bigram_buckets": 512})
    o, p = pair(pr, cfg, seed=9)
    o.eval()
    L, S = 256, 64
    g = torch.Generator().manual_seed(10)
    val = torch.randint(0, 2048, (4 * L + 1,), generator=g)
    val[val == cfg.model.bos_id] = 2
    luts = (torch.randint(1, 4, (2048,), generator=g, dtype=torch.int16), torch.rand(2048, generator=g) < 0.3,
            torch.rand(2048, generator=g) < 0.05)
    vl_pr, bpb_pr = pr.eval_val_sliding(o.forward_logits, 0, 1, CPU, val, *luts, L, S, eval_batch_seqs=4)
    r = eval_windows(p, val, ByteLUTs(*luts), L, S, "drop", 4, 0, 1, CPU, False, "full_windows")
    print(f"\nsliding eval PR=({vl_pr:.9f}, {bpb_pr:.9f}) pgolf=({r.val_loss:.9f}, {r.val_bpb:.9f}) "
          f"|dloss|={abs(vl_pr - r.val_loss):.2e}")
    assert r.tokens == L + (4 * L - L) // S * S
    assert abs(vl_pr - r.val_loss) < 1e-6 and abs(bpb_pr - r.val_bpb) < 1e-6


# -- 8. export, pruning, QAT (full size: every matrix is above the PR's 8,192-element threshold) -------

@pytest.fixture(scope="module")
def full_state(pr) -> dict[str, torch.Tensor]:
    """Trained-looking weights at the preset's full size, PR names, plus rows that exercise the scale floor."""
    sd = random_state(pr_gpt(pr, preset()), 21)
    sd["blocks.0.mlp.fc.weight"][0] = 0.0  # all-zero row: scale floor
    sd["blocks.0.attn.c_q.weight"][1] *= 1e-4  # tiny row: scale below fp16's smallest normal
    return sd


def gpu_dtypes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dtypes the weights have on GPU in both scripts: bf16 embedding and bigram table."""
    return {k: v.bfloat16() if k in ("tok_emb.weight", "bigram.embed.weight") else v for k, v in sd.items()}


def pr_quantize(pr, sd: dict[str, torch.Tensor]):
    return pr.mixed_quantize_int6(sd, {"mlp", "attn", "bigram"})  # the PR's call (L1259)


def pr_prune(sd: dict[str, torch.Tensor], frac: float) -> dict[str, torch.Tensor]:
    """The PR's magnitude pruning over ``named_parameters()`` (L1249-1255), restated: it is inline in main()."""
    out = {k: v.clone() for k, v in sd.items()}
    with torch.no_grad():
        for name, param in out.items():
            if param.ndim == 2 and param.numel() > 65536:
                threshold = torch.quantile(param.abs().float().flatten(), frac)
                param.masked_fill_(param.abs() < threshold, 0.0)
    return out


def compare_export(pr, sd: dict[str, torch.Tensor], cfg: Config) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Compare the PR's quantized object with pgolf's; returns the passthrough pairs that differ."""
    from pgolf.core.export import quantize_state_dict
    res, meta = pr_quantize(pr, sd)
    obj, _ = quantize_state_dict(to_pgolf(sd), cfg.export, control=cfg.model.control_patterns)
    assert {NAME_MAP.get(k, k) for k in meta} == set(obj["quantized"]) | set(obj["passthrough"])
    differing = {}
    for name, how in meta.items():
        pg = NAME_MAP.get(name, name)
        if isinstance(how, dict):  # {"type": "int5"} / "int6": codes and fp16 scales
            assert obj["bits"][pg] == int(how["type"][3:]), name
            q, s = obj["quantized"][pg], obj["scales"][pg]
            assert q.dtype == res[name + ".q"].dtype and torch.equal(q, res[name + ".q"]), name
            assert s.dtype == res[name + ".scale"].dtype and torch.equal(s, res[name + ".scale"]), name
        else:  # passthrough (fp16 small), passthrough_ctrl (fp32), passthrough_fp16 (tok_emb)
            a, b = res[name], obj["passthrough"][pg]
            if a.dtype != b.dtype or not torch.equal(a, b):
                differing[pg] = (a, b)
    return differing


@pytest.mark.parametrize("dtypes", ["fp32", "gpu"])
def test_export_quantized_tensors_bitwise(pr, full_state, dtypes):
    """Codes, scales and passthrough tensors equal bit for bit with export.control_fp32=false (the PR's
    order), before and after the PR's pruning; the dequantized weights too."""
    from pgolf.core.export import dequantize_state_dict, prune_state_dict, quantize_state_dict
    sd = gpu_dtypes(full_state) if dtypes == "gpu" else full_state
    cfg = preset(**{"export.control_fp32": False})
    _, meta = pr_quantize(pr, sd)
    kinds = {NAME_MAP.get(k, k): v if isinstance(v, str) else v["type"] for k, v in meta.items()}
    assert kinds["tok_emb.weight"] == "passthrough_fp16" and kinds["bigram.table.weight"] == "int6"
    assert kinds["bigram.proj.weight"] == "int6" and kinds["blocks.9.mlp.proj.weight"] == "int5"
    assert kinds["blocks.0.attn.c_k.weight"] == "int6" and kinds["smear.gate"] == "passthrough"
    assert compare_export(pr, sd, cfg) == {}
    pruned_pr = pr_prune(sd, 0.05)
    assert compare_export(pr, pruned_pr, cfg) == {}
    res, meta = pr_quantize(pr, pruned_pr)
    deq_pr = to_pgolf(pr.dequantize_mixed_int6(res, meta, pruned_pr))
    pruned = prune_state_dict(to_pgolf(sd), cfg.export, control=cfg.model.control_patterns)
    deq_pg = dequantize_state_dict(quantize_state_dict(pruned, cfg.export, control=cfg.model.control_patterns)[0])
    for k in deq_pr:
        assert deq_pr[k].dtype == deq_pg[k].dtype and torch.equal(deq_pr[k], deq_pg[k]), k


def test_expected_difference_control_tensors_fp32(pr, full_state):
    """pgolf stores the control tensors fp32 (export.control_fp32, default true); the PR checks the small-
    tensor rule first and stores them fp16 (a bug of the seed PRs' export). Exactly those tensors differ, by fp16 rounding."""
    differing = compare_export(pr, full_state, preset())
    cfg = preset()
    control = {k for k in to_pgolf(full_state) if any(p in k for p in cfg.model.control_patterns)}
    assert set(differing) == control and len(control) == 4 * 10 + 3  # 4 per block + skip, smear, bigram.scale
    worst = 0.0
    for name, (a, b) in differing.items():
        assert a.dtype == torch.float16 and b.dtype == torch.float32
        assert torch.equal(a, b.half())
        worst = max(worst, max_abs_diff(a, b))
    print(f"\ncontrol tensors: max |fp16 (PR) - fp32 (pgolf)| = {worst:.3e}")


@pytest.mark.parametrize("dtypes", ["fp32", "gpu"])
def test_pruning_masks(pr, full_state, dtypes):
    """Same zeros: every 2-D parameter above 65,536 elements (tok_emb and the bigram table too, not the
    65,536-element bigram projection), |w| < torch.quantile(|w|, 0.05)."""
    from pgolf.core.export import prune_state_dict
    sd = gpu_dtypes(full_state) if dtypes == "gpu" else full_state
    want = to_pgolf(pr_prune(sd, 0.05))
    got = prune_state_dict(to_pgolf(sd), preset().export, control=DEFAULT_CONTROL_PATTERNS)
    pruned = {k for k in want if not torch.equal(want[k], to_pgolf(sd)[k])}
    assert "tok_emb.weight" in pruned and "bigram.table.weight" in pruned and "bigram.proj.weight" not in pruned
    for k in want:
        assert torch.equal(want[k] == 0, got[k] == 0), f"{k}: masks differ"
        assert torch.equal(want[k], got[k]), k


@pytest.mark.slow  # two lzma-9-extreme compressions of 25.5M codes: minutes on a CPU
def test_expected_difference_artifact_container(pr, full_state):
    """The compressed bytes differ: the PR pickles {"w": {name.q, name.scale, ...}, "m": meta} (codes and
    scales interleaved), pgolf its pgolf_mixed_v1 object (all codes, then all scales). Same codes and scales
    (tested above), same lzma preset; pgolf's layout compresses a little better (measured: -2.6%)."""
    import io
    import lzma

    from pgolf.core.export import export_artifact
    sd = gpu_dtypes(full_state)
    res, meta = pr_quantize(pr, pr_prune(sd, 0.05))
    buf = io.BytesIO()
    torch.save({"w": res, "m": meta}, buf)
    pr_bytes = len(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    pg_bytes = len(export_artifact(to_pgolf(sd), preset(**{"export.control_fp32": False}).export,
                                   control=DEFAULT_CONTROL_PATTERNS)[0])
    print(f"\nartifact bytes on the same random weights: PR {pr_bytes:,} pgolf {pg_bytes:,} "
          f"({(pg_bytes - pr_bytes) / pr_bytes:+.3%})")
    assert 0 < (pr_bytes - pg_bytes) / pr_bytes < 0.05


MID = {"model.num_layers": 2, "model.model_dim": 192, "model.num_heads": 4, "model.num_kv_heads": 2,
       "model.bigram_buckets": 1024, "model.bigram_dim": 64, "train.train_seq_len": 128, "eval.seq_len": 256}


def qat_models(pr, cfg: Config):
    """The PR's GPT after setup_qat and pgolf's after the trainer's QAT setup, same weights, train mode."""
    from pgolf.core.qat import set_qat
    from pgolf.core.train import prepare_model
    o, _ = pair(pr, cfg, seed=31)
    o.setup_qat(True)
    p = prepare_model(cfg, CPU)
    p.load_state_dict(to_pgolf(o.state_dict()))
    set_qat(p, True)
    o.train()
    p.train()
    return o, p


def effective_weights(model: torch.nn.Module, cls) -> dict[str, torch.Tensor]:
    """The weight each CastedLinear multiplies by in its forward (x = identity gives w^T)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, cls):
            with torch.no_grad():
                out[name] = m(torch.eye(m.in_features)).T.contiguous()
    return out


def test_qat_scope_and_bits_at_full_size(pr):
    """Which matrices are fake-quantized, at which width: the PR's setup_qat vs pgolf's export plan."""
    from pgolf.core.model.layers import CastedLinear
    from pgolf.core.qat import assign_qat_specs
    cfg = preset()
    o = pr_gpt(pr, cfg)
    o.setup_qat(True)
    p = build_model(cfg)
    assign_qat_specs(p, cfg.export, cfg.qat, control=cfg.model.control_patterns)
    want = {n: {15: 5, 31: 6}[m._qat_clip] for n, m in o.named_modules()
            if isinstance(m, pr.CastedLinear) and m._qat_clip > 0}
    got = {n: m.qat_spec.bits for n, m in p.named_modules() if isinstance(m, CastedLinear) and m.qat_spec}
    assert want == got and got["bigram.proj"] == 6 and len(got) == 6 * 10 + 1


def test_qat_fake_quant_pr_quantizer(pr):
    """qat.clip=amax, qat.scale_floor=none, qat.scale_dtype=fp32 is the PR's quantizer: the forward weights
    agree up to the STE form (the PR's w + (w_q - w).detach() rounds twice: at most 1 ulp)."""
    from pgolf.core.model.layers import CastedLinear
    cfg = apply_overrides(preset(), {**MID, "qat.clip": "amax", "qat.scale_floor": "none", "qat.scale_dtype": "fp32"})
    o, p = qat_models(pr, cfg)
    wo, wp = effective_weights(o, pr.CastedLinear), effective_weights(p, CastedLinear)
    assert set(wo) == set(wp) and "bigram.proj" in wp
    worst, exact = 0.0, 0
    for k in wo:
        d = (wo[k] - wp[k]).abs()
        assert bool((d <= torch.finfo(torch.float32).eps * wp[k].abs()).all()), k
        worst, exact = max(worst, float(d.max())), exact + int((d == 0).all())
        assert not torch.equal(wp[k], p.state_dict()[k + ".weight"]), f"{k}: not fake-quantized"
    print(f"\nQAT forward weights, PR quantizer: max abs diff {worst:.3e} (<= 1 ulp); {exact}/{len(wo)} bitwise")


def test_expected_difference_qat_through_export_quantizer(pr):
    """The preset's QAT (qat.clip/scale_floor/scale_dtype = export) trains on exactly the weights the artifact
    will hold: fp16-rounded scales, as the export. The PR's fake quantizer keeps the scale in fp32, so its
    forward weights differ from its own export by the scale rounding."""
    from pgolf.core.export import dequantize_state_dict, quantize_state_dict
    from pgolf.core.model.layers import CastedLinear
    cfg = apply_overrides(preset(), MID)
    o, p = qat_models(pr, cfg)
    wo, wp = effective_weights(o, pr.CastedLinear), effective_weights(p, CastedLinear)
    deq = dequantize_state_dict(quantize_state_dict(p.state_dict(), cfg.export, control=cfg.model.control_patterns)[0])
    res, meta = pr_quantize(pr, o.state_dict())
    deq_pr = to_pgolf(pr.dequantize_mixed_int6(res, meta, o.state_dict()))
    worst = 0.0
    for k in wp:
        assert torch.equal(wp[k], deq[k + ".weight"]), f"{k}: pgolf QAT is not the export's weight"
        assert torch.equal(deq[k + ".weight"], deq_pr[k + ".weight"])
        worst = max(worst, max_abs_diff(wo[k], deq_pr[k + ".weight"]))
    print(f"\nPR QAT forward vs PR export weights: max abs diff {worst:.3e}")
    assert worst > 0


def test_expected_difference_roundtrip_eval_in_train_mode(pr):
    """The PR's final sliding eval calls base_model.forward_logits without .eval() (L1295), so QAT fake-
    quantizes the dequantized weights once more; pgolf evaluates in eval mode. Re-quantizing a dequantized
    row is exact (its max is qmax * an fp16 scale) except on rows whose scale sat at fp16's smallest normal
    (row max below ~1e-3): only those move."""
    cfg = apply_overrides(preset(), MID)
    o, p = qat_models(pr, cfg)
    with torch.no_grad():
        o.blocks[0].attn.c_q.weight[3] *= 5e-3  # a row at the scale floor, codes up to about +-5
    res, meta = pr_quantize(pr, o.state_dict())
    deq = pr.dequantize_mixed_int6(res, meta, o.state_dict())
    o.load_state_dict(deq)
    p.load_state_dict(to_pgolf(deq))
    p.eval()
    moved = {}
    for name, w in effective_weights(o, pr.CastedLinear).items():  # train mode, as in the PR's main()
        rows = (w != deq[name + ".weight"]).any(dim=1).nonzero().flatten().tolist()
        if rows:
            moved[name] = rows
    assert moved == {"blocks.0.attn.c_q": [3]}
    x = tokens(cfg, 2, 256, 32)
    lo, lp = o.forward_logits(x), p(x)
    o.eval()
    assert torch.equal(o.forward_logits(x), lp)
    print(f"\nroundtrip logits, PR train-mode QAT vs eval mode: max abs diff {max_abs_diff(lo, lp):.3e} "
          f"(only the floored row moved)")


def test_qat_cast_first_bf16(pr):
    """On GPU the PR fake-quantizes ``weight.to(x.dtype)``, i.e. the bf16-rounded weight (L556-562).
    qat.cast_first=true does the same (run here with bf16 activations on CPU); the fp32 default
    quantizes the fp32 master, so the two differ. What remains is the STE form, rounded in bf16 in the PR."""
    from pgolf.core.model.layers import CastedLinear
    pr_q = {"qat.clip": "amax", "qat.scale_floor": "none", "qat.scale_dtype": "fp32"}
    worst, ulp_ok = {}, {}
    for cast_first in (True, False):
        cfg = apply_overrides(preset(), {**MID, **pr_q, "qat.cast_first": cast_first})
        o, p = qat_models(pr, cfg)
        pairs = zip((m for m in o.modules() if isinstance(m, pr.CastedLinear)),
                    (m for m in p.modules() if isinstance(m, CastedLinear)))
        worst[cast_first], ulp_ok[cast_first] = 0.0, True
        for a, b in pairs:
            eye = torch.eye(a.in_features, dtype=torch.bfloat16)
            with torch.no_grad():
                wa, wb = a(eye).T.float(), b(eye).T.float()
            d = (wa - wb).abs()
            worst[cast_first] = max(worst[cast_first], float(d.max()))
            ulp_ok[cast_first] &= bool((d <= 2 ** -8 * wb.abs()).all())
    print(f"\nbf16 QAT forward weights, max abs diff: cast_first {worst[True]:.2e}, fp32 master {worst[False]:.2e}")
    assert ulp_ok[True]  # at most one bf16 ulp (the PR's double rounding)
    assert not ulp_ok[False] and worst[False] > 1e-3  # codes flip where the bf16 rounding crosses a boundary
