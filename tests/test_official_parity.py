"""Parity with the official baseline ``train_gpt.py`` of openai/parameter-golf.

The official script is not part of this repository. Point ``PGOLF_OFFICIAL_TRAIN_GPT`` at a copy of
it to run these tests; without it they are skipped. They run on CPU in fp32 (the official module
imports on CPU; its CUDA-only code lives inside ``main()``), and compare, piece by piece:
model structure and init, loss and gradients, the int8 export format, Muon, the token stream, the
byte lookup tables, the evaluator, the LR / momentum schedules and whole optimizer steps.
"""

from __future__ import annotations

import io
import warnings
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pgolf_testing import imported_script, max_abs_diff, random_state, reference_script_or_skip

OFFICIAL_PATH = reference_script_or_skip("PGOLF_OFFICIAL_TRAIN_GPT", "the official baseline")

from pgolf.core import optim as pg_optim  # noqa: E402
from pgolf.core.config import DEFAULT_CONTROL_PATTERNS, Config, ExportConfig, apply_overrides  # noqa: E402
from pgolf.core.data import loader as pg_loader  # noqa: E402
from pgolf.core.data.shards import write_shard  # noqa: E402
from pgolf.core.data.tokenizer import build_byte_luts, train_sentencepiece  # noqa: E402
from pgolf.core.evaluate import ByteLUTs, eval_official  # noqa: E402
from pgolf.core.export import dequantize_state_dict, export_artifact, load_artifact, quantize_state_dict  # noqa: E402
from pgolf.core.model import build_model  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
BASELINE_PARAMS = 17_059_912
BASELINE_ENTRIES = 92


# -- helpers ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def off():
    """The official module, imported from PGOLF_OFFICIAL_TRAIN_GPT under a private name."""
    with imported_script(OFFICIAL_PATH, "_official_train_gpt") as mod:
        yield mod


def tiny_cfg() -> Config:
    """The ``tiny`` shape: 4 layers, width 128, 4 heads / 2 KV heads (other settings baseline)."""
    return apply_overrides(Config(), {"model.num_layers": 4, "model.model_dim": 128, "model.num_heads": 4,
                                      "model.num_kv_heads": 2, "train.train_seq_len": 256})


def official_gpt(off, cfg: Config):
    m = cfg.model
    assert float(m.mlp_mult).is_integer(), "the official GPT takes an integer mlp_mult"
    return off.GPT(vocab_size=m.vocab_size, num_layers=m.num_layers, model_dim=m.model_dim, num_heads=m.num_heads,
                   num_kv_heads=m.num_kv_heads, mlp_mult=int(m.mlp_mult), tie_embeddings=m.tie_embeddings,
                   tied_embed_init_std=m.tied_embed_init_std, logit_softcap=m.logit_softcap, rope_base=m.rope_base,
                   qk_gain_init=m.qk_gain_init)








def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert list(a) == list(b), f"{what}: different keys/order"
    for k in a:
        assert a[k].dtype == b[k].dtype, f"{what}[{k}]: dtype {a[k].dtype} vs {b[k].dtype}"
        assert a[k].shape == b[k].shape, f"{what}[{k}]: shape {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
        assert torch.equal(a[k], b[k]), f"{what}[{k}]: max abs diff {max_abs_diff(a[k], b[k])}"


# -- 1. structure ---------------------------------------------------------------------------------

def test_structure_and_strict_cross_loading(off):
    cfg = Config()
    o, p = official_gpt(off, cfg), build_model(cfg)
    so, sp = o.state_dict(), p.state_dict()
    assert len(so) == len(sp) == BASELINE_ENTRIES
    assert list(so) == list(sp)
    for k in so:
        assert (so[k].shape, so[k].dtype) == (sp[k].shape, sp[k].dtype), k
    assert sum(t.numel() for t in o.parameters()) == sum(t.numel() for t in p.parameters()) == BASELINE_PARAMS
    assert [n for n, _ in o.named_parameters()] == [n for n, _ in p.named_parameters()]
    # strict loading both ways (non-persistent rotary buffers are not in either state dict)
    p.load_state_dict(random_state(o, 1), strict=True)
    o.load_state_dict(random_state(p, 2), strict=True)


# -- 2. init ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["baseline", "tiny"])
def test_same_seed_same_init(off, shape):
    cfg = Config() if shape == "baseline" else tiny_cfg()
    torch.manual_seed(1337)
    so = official_gpt(off, cfg).state_dict()
    torch.manual_seed(1337)
    sp = build_model(cfg).state_dict()
    assert_same_tensors(so, sp, f"init[{shape}]")
    # ...and the RNG is left in the same state (nothing extra drawn)
    torch.manual_seed(7)
    official_gpt(off, cfg)
    a = torch.rand(4)
    torch.manual_seed(7)
    build_model(cfg)
    assert torch.equal(a, torch.rand(4))


# -- 3. loss and gradients ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape, batch, seq", [("tiny", 4, 64), ("baseline", 2, 32)])
def test_loss_and_gradients_equal(off, shape, batch, seq):
    cfg = Config() if shape == "baseline" else tiny_cfg()
    o, p = official_gpt(off, cfg), build_model(cfg)
    sd = random_state(o, 3)
    o.load_state_dict(sd)
    p.load_state_dict(sd)
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, cfg.model.vocab_size, (batch, seq), generator=g)
    y = torch.randint(0, cfg.model.vocab_size, (batch, seq), generator=g)
    lo, lp = o(x, y), p(x, y)
    lo.backward()
    lp.backward()
    d_loss = abs(lo.item() - lp.item())
    gp = dict(p.named_parameters())
    d_grad = max(max_abs_diff(t.grad, gp[n].grad) for n, t in o.named_parameters())
    print(f"\n[{shape}] loss official={lo.item():.9f} pgolf={lp.item():.9f} |dloss|={d_loss:.3e} max|dgrad|={d_grad:.3e}")
    assert d_loss <= 1e-6 and d_grad <= 1e-6
    assert lo.item() == lp.item(), "expected bitwise-equal losses (same ops in the same order)"
    assert d_grad == 0.0, "expected bitwise-equal gradients"


# -- 4. export -------------------------------------------------------------------------------------

def _extended_state(off) -> dict[str, torch.Tensor]:
    """Baseline weights plus entries that exercise every export branch."""
    cfg = Config()
    sd = random_state(official_gpt(off, cfg), 5)
    g = torch.Generator().manual_seed(6)
    sd["extra.step_count"] = torch.tensor([3, 1, 4], dtype=torch.int64)  # non-float passthrough
    sd["extra.small_bf16"] = torch.randn(40, 40, generator=g).bfloat16()  # small -> fp16, orig dtype kept
    sd["extra.small_fp16"] = torch.randn(100, generator=g).half()  # small fp16 stays as is
    sd["extra.big_vector"] = torch.randn(70_000, generator=g)  # large non-matrix: per-tensor scale
    sd["extra.big_bf16_matrix"] = (torch.randn(300, 256, generator=g) * 3).bfloat16()  # per-row, dtype kept
    sd["extra.zero_rows"] = torch.zeros(300, 256)  # clip 0 -> scale floor
    return sd


def test_export_quantized_object_and_dequantization_bitwise_equal(off):
    sd = _extended_state(off)
    obj_o, _ = off.quantize_state_dict_int8(sd)
    obj_p, _ = quantize_state_dict(sd, ExportConfig(), control=DEFAULT_CONTROL_PATTERNS)
    assert obj_p["__quant_format__"] == obj_o["__quant_format__"] == "int8_clean_per_row_v1"
    assert list(obj_p) == list(obj_o)
    for part in ("quantized", "scales", "passthrough"):
        assert_same_tensors(obj_o[part], obj_p[part], part)
    for part in ("dtypes", "qmeta", "passthrough_orig_dtypes"):
        assert obj_o[part] == obj_p[part], part
    deq_o = off.dequantize_state_dict_int8(obj_o)
    # each dequantizer on both objects
    for name, d in (("pgolf(official obj)", dequantize_state_dict(obj_o)),
                    ("pgolf(pgolf obj)", dequantize_state_dict(obj_p)),
                    ("official(pgolf obj)", off.dequantize_state_dict_int8(obj_p))):
        assert_same_tensors(deq_o, d, name)


def test_export_artifacts_load_across(off):
    sd = random_state(official_gpt(off, Config()), 8)
    obj_o, _ = off.quantize_state_dict_int8(sd)
    buf = io.BytesIO()
    torch.save(obj_o, buf)
    official_blob = zlib.compress(buf.getvalue(), level=9)
    deq_o = off.dequantize_state_dict_int8(obj_o)
    # official artifact -> pgolf loader
    assert_same_tensors(deq_o, load_artifact(official_blob), "load_artifact(official blob)")
    # pgolf artifact -> the official load path (zlib.decompress + torch.load + dequantize)
    pgolf_blob, report = export_artifact(sd, ExportConfig(), control=DEFAULT_CONTROL_PATTERNS)
    assert report["format"] == "int8_clean_per_row_v1"
    obj = torch.load(io.BytesIO(zlib.decompress(pgolf_blob)), map_location="cpu")
    assert_same_tensors(deq_o, off.dequantize_state_dict_int8(obj), "official(pgolf blob)")
    print(f"\nartifact bytes official={len(official_blob)} pgolf={len(pgolf_blob)}")
    assert pgolf_blob == official_blob, "same object, torch.save and zlib-9: expected byte-identical artifacts"
    # and the dequantized weights load strictly into both models
    build_model(Config()).load_state_dict(load_artifact(pgolf_blob), strict=True)
    official_gpt(off, Config()).load_state_dict(deq_o, strict=True)


# -- 5. Muon ---------------------------------------------------------------------------------------

SHAPES = [(64, 32), (32, 64), (48, 48), (128, 40)]


def test_newton_schulz_equal(off):
    g = torch.Generator().manual_seed(9)
    for shape in SHAPES:
        G = torch.randn(shape, generator=g)
        a = off.zeropower_via_newtonschulz5(G, steps=5)
        b = pg_optim.zeropower_via_newtonschulz5(G, steps=5, dtype=torch.bfloat16)
        assert a.dtype == b.dtype == torch.bfloat16
        assert torch.equal(a, b), f"{shape}: max abs diff {max_abs_diff(a, b)}"


def test_muon_steps_equal(off):
    g = torch.Generator().manual_seed(10)
    init = [torch.randn(s, generator=g) * 0.02 for s in SHAPES]
    po = [torch.nn.Parameter(t.clone()) for t in init]
    pp = [torch.nn.Parameter(t.clone()) for t in init]
    oo = off.Muon(po, lr=0.04, momentum=0.95, backend_steps=5)
    op = pg_optim.Muon(pp, lr=0.04, momentum=0.95, backend_steps=5, ns_dtype=torch.bfloat16)
    for step in range(3):  # several steps: the momentum buffers matter from step 2 on
        for a, b in zip(po, pp):
            grad = torch.randn(a.shape, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        for opt in (oo, op):
            opt.param_groups[0]["momentum"] = 0.85 + 0.05 * step
            opt.step()
        for i, (a, b) in enumerate(zip(po, pp)):
            assert torch.equal(a, b), f"step {step} param {i}: max abs diff {max_abs_diff(a, b)}"
            assert torch.equal(oo.state[a]["momentum_buffer"], op.state[b]["momentum_buffer"])


# -- 6. data order ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity_shards")
    rng = np.random.default_rng(11)
    for i, n in enumerate([1000, 1537, 3, 777]):  # uneven sizes, one tiny shard
        write_shard(root / f"fineweb_train_{i:06d}.bin", rng.integers(0, 1024, n, dtype=np.uint16))
    for i, n in enumerate([700, 451]):
        write_shard(root / f"fineweb_val_{i:06d}.bin", rng.integers(0, 1024, n, dtype=np.uint16))
    return root


@pytest.mark.parametrize("world_size, accum", [(1, 8), (1, 1), (2, 4), (2, 1)])
def test_train_batches_equal(off, shard_dir, world_size, accum):
    pattern = str(shard_dir / "fineweb_train_*.bin")
    files = sorted(shard_dir.glob("fineweb_train_*.bin"))
    seq = 32
    global_tokens = world_size * accum * 4 * seq  # 4 sequences per rank and micro-step
    for rank in range(world_size):
        lo = off.DistributedTokenLoader(pattern, rank, world_size, CPU)
        lp = pg_loader.DistributedTokenLoader(files, rank, world_size, CPU)
        for call in range(40):  # > 3317 tokens in total: crosses every boundary and wraps around
            xo, yo = lo.next_batch(global_tokens, seq, accum)
            xp, yp = lp.next_batch(global_tokens, seq, accum)
            assert xo.dtype == xp.dtype == torch.int64
            assert torch.equal(xo, xp) and torch.equal(yo, yp), f"rank {rank} call {call}"
        assert (lo.stream.file_idx, lo.stream.pos) == (lp.stream.file_idx, lp.stream.pos)


@pytest.mark.parametrize("seq_len", [32, 100, 1150])
def test_validation_tokens_equal(off, shard_dir, seq_len):
    vo = off.load_validation_tokens(str(shard_dir / "fineweb_val_*.bin"), seq_len)
    vp = pg_loader.load_validation_tokens(sorted(shard_dir.glob("fineweb_val_*.bin")), seq_len, tail="drop")
    assert vo.dtype == vp.dtype and torch.equal(vo, vp)


# -- 7. byte LUTs ----------------------------------------------------------------------------------

TEXT = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Numbers 12345 and 67890, symbols: @#$%^&*()! Café, naïve, jalapeño, 東京, Ünïcödé ✓.",
    "It was the best of times, it was the worst of times, it was the age of wisdom,",
    "it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
] * 60


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("parity_tok")
    path = train_sentencepiece(TEXT, root / "tok", vocab_size=512)
    return spm.SentencePieceProcessor(model_file=str(path))


@pytest.mark.parametrize("extra", [0, 37])
def test_byte_luts_equal(off, sp_model, extra):
    vocab = int(sp_model.vocab_size()) + extra  # extra: a table wider than the tokenizer
    lo = off.build_sentencepiece_luts(sp_model, vocab, CPU)
    lp = build_byte_luts(sp_model, vocab)
    for a, b in zip(lo, lp):
        b = torch.as_tensor(b)
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert bool(lp[1].any()) and bool(lp[2][:4].all())  # the tokenizer really has "▁" pieces and specials


# -- 8. evaluation ---------------------------------------------------------------------------------

def test_eval_equal(off, sp_model):
    cfg = apply_overrides(tiny_cfg(), {"model.vocab_size": int(sp_model.vocab_size())})
    o, p = official_gpt(off, cfg), build_model(cfg)
    sd = random_state(o, 12)
    o.load_state_dict(sd)
    p.load_state_dict(sd)
    ids = np.concatenate([[1] + sp_model.encode(t) for t in TEXT])
    seq_len = 64
    assert ids.size > 37 * seq_len + 1
    val = torch.from_numpy(ids[: 37 * seq_len + 1].astype(np.uint16))  # 37 sequences
    val_batch_size = 8 * 5 * seq_len  # 5 sequences per micro-batch: the last batch is partial
    lo = off.build_sentencepiece_luts(sp_model, cfg.model.vocab_size, CPU)
    args = SimpleNamespace(val_batch_size=val_batch_size, train_seq_len=seq_len)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vl_o, vb_o = off.eval_val(args, o, 0, 1, CPU, 8, val, *lo)
    if not torch.cuda.is_available():
        assert any("CUDA is not available" in str(w.message) for w in caught)  # autocast disabled, runs in fp32
    luts = ByteLUTs.from_numpy(build_byte_luts(sp_model, cfg.model.vocab_size), CPU)
    r = eval_official(p, val, luts, seq_len, val_batch_size, 0, 1, 8, CPU, autocast=False)
    r_same_model = eval_official(o, val, luts, seq_len, val_batch_size, 0, 1, 8, CPU, autocast=False)
    print(f"\neval official=({vl_o:.9f}, {vb_o:.9f}) pgolf=({r.val_loss:.9f}, {r.val_bpb:.9f}) "
          f"|dloss|={abs(vl_o - r.val_loss):.3e} |dbpb|={abs(vb_o - r.val_bpb):.3e}")
    assert (r.val_loss, r.val_bpb) == (vl_o, vb_o)
    assert (r_same_model.val_loss, r_same_model.val_bpb) == (vl_o, vb_o)
    assert r.tokens == 37 * seq_len
    assert p.training and o.training  # both evaluators restore train mode


# -- 9. schedules ----------------------------------------------------------------------------------

def official_lr_mul(step: int, elapsed_ms: float, iterations: int, warmdown_iters: int,
                    max_wallclock_seconds: float) -> float:
    """``lr_mul`` from ``main()`` of the official script (a closure there, so restated here)."""
    max_wallclock_ms = 1000.0 * max_wallclock_seconds if max_wallclock_seconds > 0 else None
    if warmdown_iters <= 0:
        return 1.0
    if max_wallclock_ms is None:
        warmdown_start = max(iterations - warmdown_iters, 0)
        return max((iterations - step) / max(warmdown_iters, 1), 0.0) if warmdown_start <= step < iterations else 1.0
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = warmdown_iters * step_ms
    remaining_ms = max(max_wallclock_ms - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0


def official_muon_momentum(step: int, start: float, end: float, warmup_steps: int) -> float:
    frac = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return (1 - frac) * start + frac * end


@pytest.mark.parametrize("wallclock", [0.0, 600.0, 2.5])
@pytest.mark.parametrize("iterations, warmdown", [(20000, 1200), (20000, 150), (1000, 1200), (300, 0), (50, 1)])
def test_lr_multiplier_matches(wallclock, iterations, warmdown):
    cfg = apply_overrides(Config(), {"train.iterations": iterations, "schedule.warmdown_iters": warmdown,
                                     "train.max_wallclock_seconds": wallclock})
    steps = sorted({0, 1, 2, 5, 49, 50, 51, 299, 300, 999, 1000, 7000, 18799, 18800, 18850, 19999, 20000, 20001})
    for step in steps:
        for elapsed in (0.0, 1.0, 37.5, 999.9, 2500.0, 5e4, 5.2e5, 5.99e5, 6e5, 6.5e5):
            want = official_lr_mul(step, elapsed, iterations, warmdown, wallclock)
            got = pg_optim.lr_multiplier(step, elapsed, cfg)
            assert got == want, (step, elapsed, got, want)


@pytest.mark.parametrize("warmup_steps", [0, 1, 100, 500])
def test_muon_momentum_matches(warmup_steps):
    cfg = apply_overrides(Config(), {"optim.muon_momentum_warmup_steps": warmup_steps})
    o = cfg.optim
    for step in list(range(0, 12)) + [99, 100, 101, 250, 499, 500, 501, 10_000]:
        want = official_muon_momentum(step, o.muon_momentum_warmup_start, o.muon_momentum, warmup_steps)
        assert pg_optim.muon_momentum(step, cfg) == want


# -- whole training steps: official optimizer split + schedule vs pgolf's -------------------------

def official_optimizers(off, model, cfg: Config):
    """The optimizer setup of the official ``main()`` (restated: it is inline code there), fused=False on CPU."""
    o = cfg.optim
    block_named_params = list(model.blocks.named_parameters())
    pats = off.CONTROL_TENSOR_NAME_PATTERNS
    matrix = [p for n, p in block_named_params if p.ndim == 2 and not any(s in n for s in pats)]
    scalar = [p for n, p in block_named_params if p.ndim < 2 or any(s in n for s in pats)]
    if model.skip_weights.numel() > 0:
        scalar.append(model.skip_weights)
    kw = dict(betas=(o.beta1, o.beta2), eps=o.adam_eps, fused=False)
    tok = torch.optim.Adam([{"params": [model.tok_emb.weight], "lr": o.tied_embed_lr, "base_lr": o.tied_embed_lr}], **kw)
    muon = off.Muon(matrix, lr=o.matrix_lr, momentum=o.muon_momentum, backend_steps=o.muon_backend_steps)
    for g in muon.param_groups:
        g["base_lr"] = o.matrix_lr
    sc = torch.optim.Adam([{"params": scalar, "lr": o.scalar_lr, "base_lr": o.scalar_lr}], **kw)
    return [tok, muon, sc], muon


def test_training_steps_equal(off, shard_dir):
    cfg = apply_overrides(tiny_cfg(), {"train.iterations": 4, "schedule.warmdown_iters": 3,
                                       "train.max_wallclock_seconds": 0.0, "optim.muon_ns_dtype": "bfloat16",
                                       "optim.muon_momentum_warmup_steps": 2})
    torch.manual_seed(1337)
    o = official_gpt(off, cfg)
    torch.manual_seed(1337)
    p = build_model(cfg)
    opts_o, muon_o = official_optimizers(off, o, cfg)
    opts_p, muon_p = pg_optim.build_optimizers(p, cfg, fused=False)
    files = sorted(shard_dir.glob("fineweb_train_*.bin"))
    lo = off.DistributedTokenLoader(str(shard_dir / "fineweb_train_*.bin"), 0, 1, CPU)
    lp = pg_loader.DistributedTokenLoader(files, 0, 1, CPU)
    accum, seq, tokens = 2, 32, 2 * 2 * 32
    for step in range(cfg.train.iterations):
        for model, opts, muon, loader, lr_fn, mom_fn in (
            (o, opts_o, muon_o, lo,
             lambda s: official_lr_mul(s, 0.0, cfg.train.iterations, cfg.schedule.warmdown_iters, 0.0),
             lambda s: official_muon_momentum(s, 0.85, 0.95, 2)),
            (p, opts_p, muon_p, lp, lambda s: pg_optim.lr_multiplier(s, 0.0, cfg),
             lambda s: pg_optim.muon_momentum(s, cfg)),
        ):
            scale = lr_fn(step)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            for _ in range(accum):
                x, y = loader.next_batch(tokens, seq, accum)
                (model(x, y) * (1.0 / accum)).backward()
            for g in muon.param_groups:
                g["momentum"] = mom_fn(step)
            for opt in opts:
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * scale
            for opt in opts:
                opt.step()
        so, sp = o.state_dict(), p.state_dict()
        worst = max(max_abs_diff(so[k], sp[k]) for k in so)
        assert worst == 0.0, f"after step {step + 1}: max abs param diff {worst}"
