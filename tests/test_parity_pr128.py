"""Parity of the preset ``pr128_int6_mlp3x_qat_sliding`` with PR #128's own ``train_gpt.py``.

PR: https://github.com/openai/parameter-golf/pull/128 (seed 003, "Int6 MLP3x + STE QAT + sliding window",
claimed val_bpb 1.1594). The script is not part of this repository. Get it from a clone of
https://github.com/openai/parameter-golf with

    git fetch origin pull/128/head && git show FETCH_HEAD:<path of the PR's records/.../train_gpt.py> > pr128.py

and point ``PGOLF_PR128_TRAIN_GPT`` at it; without it these tests are skipped:

    PGOLF_PR128_TRAIN_GPT=pr128.py python -m pytest -q tests/test_parity_pr128.py

The PR's module imports on CPU (its CUDA-only code lives in ``main()``). Everything runs in fp32 on CPU
at a small shape. Each deliberate difference of the preset is a named test asserting the difference is
exactly the documented one; the switch that restores the PR's behaviour is tested to remove it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch

PR_PATH = os.environ.get("PGOLF_PR128_TRAIN_GPT", "")
if not PR_PATH or not Path(PR_PATH).is_file():
    pytest.skip(
        "PR #128 parity tests need PGOLF_PR128_TRAIN_GPT=<path to the PR's train_gpt.py>"
        + (f" (no file at {PR_PATH!r})" if PR_PATH else " (not set)"),
        allow_module_level=True,
    )

from pgolf.config import Config, apply_overrides  # noqa: E402
from pgolf.evaluate import ByteLUTs, eval_windows, windows  # noqa: E402
from pgolf.model import build_model  # noqa: E402
from pgolf.presets import get_preset  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
PRESET = "pr128_int6_mlp3x_qat_sliding"
FULL_PARAMS = 21_778_504  # 9L d512 MLP 3x tied (README: "~21.8M")

# The README's run command (`torchrun --standalone --nproc_per_node=8 train_gpt.py`) sets no environment
# variable: its "Configuration" block repeats the script's defaults. So the PR's values are its defaults.
README_ENV: dict[str, str] = {}


# -- helpers ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pr():
    """The PR's module, imported under a private name with the environment it reads cleared to the
    README's (so a stray SEED=... in the test environment cannot change its Hyperparameters)."""
    names = set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', Path(PR_PATH).read_text()))
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k in names}
    os.environ.update(README_ENV)
    spec = importlib.util.spec_from_file_location("_pr128_train_gpt", PR_PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        for k in README_ENV:
            os.environ.pop(k, None)
        os.environ.update(saved)
    yield mod
    sys.modules.pop(spec.name, None)


def small_cfg(**overrides) -> Config:
    """The preset at a CPU shape: 3 layers (odd: an unpaired decoder block), width 128, 4 heads / 2 KV."""
    return apply_overrides(get_preset(PRESET), {
        "model.num_layers": 3, "model.model_dim": 128, "model.num_heads": 4, "model.num_kv_heads": 2,
        "train.train_seq_len": 64, **overrides})


def pr_gpt(pr, cfg: Config):
    m = cfg.model
    return pr.GPT(vocab_size=m.vocab_size, num_layers=m.num_layers, model_dim=m.model_dim, num_heads=m.num_heads,
                  num_kv_heads=m.num_kv_heads, mlp_mult=m.mlp_mult, tie_embeddings=m.tie_embeddings,
                  tied_embed_init_std=m.tied_embed_init_std, logit_softcap=m.logit_softcap, rope_base=m.rope_base,
                  qk_gain_init=m.qk_gain_init, mlp_hidden=m.mlp_hidden)


CONTROL = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")


def random_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Trained-looking weights: matrices N(0, 0.02), control/vector tensors N(1, 0.25)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in model.state_dict().items():
        if t.ndim == 2 and not any(p in name for p in CONTROL):
            out[name] = torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.02
        else:
            out[name] = 1.0 + 0.25 * torch.randn(t.shape, generator=g, dtype=t.dtype)
    return out


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert list(a) == list(b), f"{what}: different keys/order"
    for k in a:
        assert a[k].dtype == b[k].dtype, f"{what}[{k}]: dtype {a[k].dtype} vs {b[k].dtype}"
        assert a[k].shape == b[k].shape, f"{what}[{k}]: shape {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
        assert torch.equal(a[k], b[k]), f"{what}[{k}]: max abs diff {max_abs_diff(a[k], b[k])}"


def get(cfg: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


# -- 1. hyperparameters ---------------------------------------------------------------------------

def _same(v):
    return v


# PR Hyperparameters attribute -> (pgolf key, transform of the PR value into pgolf's units).
HPARAMS: dict[str, tuple[str, Callable]] = {
    "seed": ("train.seed", _same),
    "val_batch_size": ("train.val_batch_size", _same),
    "val_loss_every": ("train.val_loss_every", _same),
    "train_log_every": ("train.train_log_every", _same),
    "iterations": ("train.iterations", _same),
    "warmdown_iters": ("schedule.warmdown_iters", _same),
    "warmup_steps": ("train.warmup_steps", _same),
    "train_batch_tokens": ("train.train_batch_tokens", _same),
    "train_seq_len": ("train.train_seq_len", _same),
    "max_wallclock_seconds": ("train.max_wallclock_seconds", _same),
    "qk_gain_init": ("model.qk_gain_init", _same),
    "vocab_size": ("model.vocab_size", _same),
    "num_layers": ("model.num_layers", _same),
    "num_kv_heads": ("model.num_kv_heads", _same),
    "model_dim": ("model.model_dim", _same),
    "num_heads": ("model.num_heads", _same),
    "mlp_mult": ("model.mlp_mult", _same),
    "mlp_hidden": ("model.mlp_hidden", _same),
    "tie_embeddings": ("model.tie_embeddings", _same),
    "rope_base": ("model.rope_base", _same),
    "logit_softcap": ("model.logit_softcap", _same),
    "eval_stride": ("eval.stride", _same),
    "eval_batch_seqs": ("eval.batch_seqs", _same),
    "embed_lr": ("optim.embed_lr", _same),
    "head_lr": ("optim.head_lr", _same),
    "tied_embed_lr": ("optim.tied_embed_lr", _same),
    "tied_embed_init_std": ("model.tied_embed_init_std", _same),
    "matrix_lr": ("optim.matrix_lr", _same),
    "scalar_lr": ("optim.scalar_lr", _same),
    "muon_momentum": ("optim.muon_momentum", _same),
    "muon_backend_steps": ("optim.muon_backend_steps", _same),
    "muon_momentum_warmup_start": ("optim.muon_momentum_warmup_start", _same),
    "muon_momentum_warmup_steps": ("optim.muon_momentum_warmup_steps", _same),
    "beta1": ("optim.beta1", _same),
    "beta2": ("optim.beta2", _same),
    "adam_eps": ("optim.adam_eps", _same),
    "grad_clip_norm": ("optim.grad_clip_norm", _same),
}
# Not run settings: where the data lives and the log-file name (pgolf: data.path and the run folder).
NOT_COMPARED = {"data_path", "train_files", "val_files", "tokenizer_path", "run_id"}

# Settings that are code in the PR, not Hyperparameters (PR line numbers in the comments).
IMPLIED = {
    "eval.seq_len": 0,  # sliding windows of train_seq_len (eval_val_sliding: seq_len = args.train_seq_len)
    "eval.ntk": True,  # irrelevant at eval length == train length (ntk_base returns the base)
    "train.grad_accum_steps": 0,  # 8 // world_size
    "qat.enabled": True, "qat.start_frac": 0.0,  # CastedLinear fake-quantizes in every training forward
    "export.bits_attn": 6, "export.bits_mlp": 6,  # mixed_quantize_int6(sd, {"mlp", "attn"})
    "export.bits_other": 8,  # other large float tensors: quantize_float_tensor (int8); none exist here
    "export.embed_fp16": True,  # "embed" class 2-D tensors pass through as fp16
    "export.keep_float_max_numel": 65_536,  # t.numel() <= 65536 -> passthrough
    "export.compressor": "zstd", "export.level": -1,  # ZstdCompressor(level=22); -1 = zstd's 22
    "export.prune_frac": 0.0,  # no pruning
    "export.bitpack": False,
    "averaging.mode": "none",  # no SWA / EMA
    "optim.muon_weight_decay": 0.0, "optim.adam_weight_decay": 0.0,  # plain Adam, no Muon WD
    "optim.muon_ns_dtype": "auto",  # bf16 Newton-Schulz on CUDA (X = G.bfloat16())
    "schedule.warmdown": "linear", "schedule.warmdown_frac": 0.0, "schedule.min_lr_frac": 0.0,
    "model.mlp": "relu2", "model.unet_skips": True, "model.smear_gate": "off", "model.bigram_buckets": 0,
    "model.init": "default", "model.proj_init_gain": 0.0, "model.resid_mix_init": "default",
    "model.embed_init": "normal",
}


def test_hyperparameter_table(pr):
    cfg = get_preset(PRESET)
    hp = pr.Hyperparameters
    attrs = {k for k in vars(hp) if not k.startswith("_")}
    assert attrs == set(HPARAMS) | NOT_COMPARED, f"unmapped PR hyperparameters: {sorted(attrs - set(HPARAMS) - NOT_COMPARED)}"
    rows, bad = [], []
    for name, (key, fn) in HPARAMS.items():
        want, got = fn(getattr(hp, name)), get(cfg, key)
        rows.append(f"{name:28s} {want!s:>12} {key:36s} {got!s:>12}")
        if not (want == got and type(want) is type(got)):
            bad.append(f"{name}={want!r} vs {key}={got!r}")
    for key, want in IMPLIED.items():
        got = get(cfg, key)
        rows.append(f"{'(code)':28s} {want!s:>12} {key:36s} {got!s:>12}")
        if got != want:
            bad.append(f"{key}: expected {want!r}, got {got!r}")
    print("\n" + "\n".join(rows))
    assert not bad, bad
    assert set(pr.CONTROL_TENSOR_NAME_PATTERNS) <= set(cfg.export.control_patterns)
    assert cfg.export.clip_quantile == pr.INT6_CLIP_Q
    # 99.99984 / 100 is 0.9999984000000001 in float64; torch.quantile sees both as the same float32
    assert torch.tensor(pr.INT8_CLIP_Q).item() == torch.tensor(cfg.export.clip_quantile).item()


# -- 2. state dict -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["small", "full"])
def test_state_dict_names_shapes_and_strict_loading(pr, shape):
    cfg = get_preset(PRESET) if shape == "full" else small_cfg()
    o, p = pr_gpt(pr, cfg), build_model(cfg)
    so, sp = o.state_dict(), p.state_dict()
    assert list(so) == list(sp)
    for k in so:
        assert (so[k].shape, so[k].dtype) == (sp[k].shape, sp[k].dtype), k
    assert [n for n, _ in o.named_parameters()] == [n for n, _ in p.named_parameters()]
    n_o, n_p = (sum(t.numel() for t in m.parameters()) for m in (o, p))
    assert n_o == n_p
    if shape == "full":
        assert n_p == FULL_PARAMS
        assert so["blocks.0.mlp.fc.weight"].shape == (1536, 512)
    p.load_state_dict(random_state(o, 1), strict=True)
    o.load_state_dict(random_state(p, 2), strict=True)


# -- 3. init -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["small", "full"])
def test_same_seed_same_init(pr, shape):
    cfg = get_preset(PRESET) if shape == "full" else small_cfg()
    torch.manual_seed(1337)
    so = pr_gpt(pr, cfg).state_dict()
    after_o = torch.rand(4)
    torch.manual_seed(1337)
    sp = build_model(cfg).state_dict()
    after_p = torch.rand(4)
    assert_same_tensors(so, sp, f"init[{shape}]")
    assert torch.equal(after_o, after_p), "different number of RNG draws during init"


# -- 4. loss ---------------------------------------------------------------------------------------------

def test_loss_gradients_and_logits_equal(pr):
    """Eval mode (the PR's CastedLinear fake-quantizes in training mode: see the QAT tests)."""
    cfg = small_cfg()
    o, p = pr_gpt(pr, cfg).eval(), build_model(cfg).eval()
    sd = random_state(o, 3)
    o.load_state_dict(sd)
    p.load_state_dict(sd)
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, cfg.model.vocab_size, (3, 64), generator=g)
    y = torch.randint(0, cfg.model.vocab_size, (3, 64), generator=g)
    lo, lp = o(x, y), p(x, y)
    lo.backward()
    lp.backward()
    gp = dict(p.named_parameters())
    d_grad = max(max_abs_diff(t.grad, gp[n].grad) for n, t in o.named_parameters())
    print(f"\nloss pr={lo.item():.9f} pgolf={lp.item():.9f} max|dgrad|={d_grad:.3e}")
    assert lo.item() == lp.item() and d_grad == 0.0
    with torch.no_grad():  # the sliding evaluator's logits (PR: forward_logits)
        assert torch.equal(o.forward_logits(x), p(x))


# -- 9. sliding-window selection ---------------------------------------------------------------------

class RecordingLUT:
    """A byte table that records every target-id tensor the PR's evaluator looks up (= its scored targets:
    it indexes the table with each window's scored slice)."""

    def __init__(self, table: torch.Tensor):
        self.table, self.calls = table, []

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls.append(ids.detach().clone().reshape(-1))
        return self.table[ids]


class PositionModel(torch.nn.Module):
    """Uniform logits over a vocabulary as large as the stream: with tokens[i] = i, the target ids the
    PR's evaluator looks up are the absolute target positions (+1)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:  # PR's evaluator
        return torch.zeros(*x.shape, self.vocab)

    def forward(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:  # pgolf's
        logits = self.forward_logits(x).reshape(-1, self.vocab)
        return torch.nn.functional.cross_entropy(logits, y.reshape(-1), reduction=reduction)


def run_pr_sliding(pr, monkeypatch, model, tokens, base_bytes, has_space, is_boundary, L, S, batch_seqs):
    """The PR's eval_val_sliding on CPU: forward_logits runs eagerly, its cuda autocast is a no-op."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    args = type("Args", (), {"train_seq_len": L})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
        return pr.eval_val_sliding(args, model, 0, 1, CPU, tokens, base_bytes, has_space, is_boundary,
                                   stride=S, batch_seqs=batch_seqs)


def scored_counts_pr(pr, monkeypatch, n_targets: int, L: int, S: int, batch_seqs: int) -> torch.Tensor:
    lut = RecordingLUT(torch.ones(n_targets + 1, dtype=torch.int16))
    flags = torch.zeros(n_targets + 1, dtype=torch.bool)
    run_pr_sliding(pr, monkeypatch, PositionModel(n_targets + 1), torch.arange(n_targets + 1), lut, flags, flags,
                   L, S, batch_seqs)
    return torch.bincount(torch.cat(lut.calls) - 1, minlength=n_targets)


def window_counts(n_targets: int, L: int, S: int, window_rule: str) -> torch.Tensor:
    """How often pgolf's evaluator scores each target: the windows it is given (its masked accounting
    equals per-window scoring of these windows: tests/test_evaluate.py)."""
    counts = torch.zeros(n_targets, dtype=torch.long)
    for _, e, f in windows(n_targets, L, S, window_rule=window_rule):
        counts[f:e] += 1
    return counts


def scored_counts_pgolf(n_targets: int, L: int, S: int, window_rule: str) -> torch.Tensor:
    counts = window_counts(n_targets, L, S, window_rule)
    luts = ByteLUTs(torch.ones(n_targets + 1, dtype=torch.int16), *[torch.zeros(n_targets + 1, dtype=torch.bool)] * 2)
    r = eval_windows(PositionModel(n_targets + 1), torch.arange(n_targets + 1), luts, L, S, "drop", 5, 0, 1, CPU,
                     False, window_rule)
    assert r.tokens == r.bytes == int(counts.sum())  # the evaluator scores exactly these targets
    return counts


# The PR evaluates the validation stream truncated to a multiple of train_seq_len (load_validation_tokens),
# so its target count is always k * L; n = 4L + 1 and 3L + 37 also check the rule on other lengths.
@pytest.mark.parametrize("n_targets, L, S", [(256, 64, 16), (192, 64, 64), (229, 64, 16), (300, 64, 7)])
def test_sliding_selection_rescore_equals_pr(pr, monkeypatch, n_targets, L, S):
    want = scored_counts_pr(pr, monkeypatch, n_targets, L, S, batch_seqs=3)
    got = scored_counts_pgolf(n_targets, L, S, "rescore_tail")
    assert torch.equal(want, got)
    starts = [w[0] for w in windows(n_targets, L, S, window_rule="rescore_tail")]
    assert starts == [ws for ws in range(0, n_targets, S) if min(ws + L, n_targets) - ws >= S]


def test_expected_difference_window_rule_scored_once(pr, monkeypatch):
    """pgolf's default scores every target once; the PR re-scores the last S targets in each of its
    L/S - 1 trailing windows (its stream is a multiple of L). Restored by eval.window_rule=rescore_tail."""
    n, L, S = 256, 64, 16
    expected = torch.ones(n, dtype=torch.long)
    expected[n - S:] = L // S  # the last full window + (L/S - 1) trailing windows
    assert torch.equal(scored_counts_pr(pr, monkeypatch, n, L, S, batch_seqs=16), expected)
    assert torch.equal(scored_counts_pgolf(n, L, S, "once"), torch.ones(n, dtype=torch.long))
    # At the preset's 4096/64 on a 4-sequence stream: the last 64 targets count 64 times (4032 extra).
    big = window_counts(4 * 4096, 4096, 64, "rescore_tail")
    assert int(big.sum()) - 4 * 4096 == 63 * 64 and torch.all(big[-64:] == 64) and torch.all(big[:-64] == 1)
    assert torch.all(window_counts(4 * 4096, 4096, 64, "once") == 1)
    assert get_preset(PRESET).eval.window_rule == "once"


def test_sliding_eval_values_equal_on_a_real_model(pr, monkeypatch):
    """PR eval_val_sliding vs pgolf eval_windows(window_rule="rescore_tail") on the same weights and stream."""
    cfg = small_cfg()
    o, p = pr_gpt(pr, cfg), build_model(cfg)
    sd = random_state(o, 5)
    o.load_state_dict(sd)
    p.load_state_dict(sd)
    g = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, 1024, (4 * 64 + 1,), generator=g)
    luts = ByteLUTs(torch.randint(1, 4, (1024,), generator=g, dtype=torch.int16),
                    torch.rand(1024, generator=g) < 0.3, torch.rand(1024, generator=g) < 0.05)
    vl_o, vb_o = run_pr_sliding(pr, monkeypatch, o, tokens, luts.base_bytes, luts.has_leading_space,
                                luts.is_boundary, 64, 16, batch_seqs=16)
    r = eval_windows(p, tokens, luts, 64, 16, "drop", 16, 0, 1, CPU, False, "rescore_tail")
    d = max(abs(vl_o - r.val_loss), abs(vb_o - r.val_bpb))
    print(f"\nsliding pr=({vl_o:.9f}, {vb_o:.9f}) pgolf=({r.val_loss:.9f}, {r.val_bpb:.9f}) max diff {d:.2e}")
    assert d < 1e-6  # batch composition differs (PR: zero-padded windows of L), so not bitwise
