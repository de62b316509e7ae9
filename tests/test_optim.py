import math

import pytest
import torch

from pgolf.core.config import Config, apply_overrides
from pgolf.core.model import build_model
from pgolf.core.optim import (
    Muon,
    build_optimizers,
    lr_multiplier,
    muon_momentum,
    split_params,
    zeropower_via_newtonschulz5,
)


@pytest.mark.parametrize("shape", [(64, 64), (64, 256), (256, 64)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_newton_schulz_orthogonalizes(shape, dtype):
    torch.manual_seed(0)
    G = torch.randn(*shape)
    X = zeropower_via_newtonschulz5(G, steps=5, dtype=dtype).float()
    sv = torch.linalg.svdvals(X)
    # the quintic iteration maps singular values into roughly [0.7, 1.2], not exactly 1; the very
    # smallest singular values of a random square matrix are not lifted in 5 steps
    assert sv.max() < 1.3 and (sv > 0.5).float().mean() > 0.9
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(X.flatten(), (U @ Vh).flatten(), dim=0) > 0.95


def test_muon_step_scale_and_weight_decay():
    p = torch.nn.Parameter(torch.ones(32, 64))
    p.grad = torch.randn(32, 64)
    opt = Muon([p], lr=0.1, momentum=0.0, backend_steps=5, nesterov=False, weight_decay=0.5, ns_dtype=torch.float32)
    expected = torch.ones(32, 64) * (1 - 0.1 * 0.5) - 0.1 * zeropower_via_newtonschulz5(p.grad, 5, dtype=torch.float32)
    opt.step()
    assert torch.allclose(p.data, expected, atol=1e-6)
    tall = torch.nn.Parameter(torch.zeros(128, 32))
    tall.grad = torch.randn(128, 32)
    Muon([tall], lr=1.0, momentum=0.0, backend_steps=5, nesterov=False, ns_dtype=torch.float32).step()
    ref = zeropower_via_newtonschulz5(tall.grad, 5, dtype=torch.float32) * 2.0  # sqrt(128/32)
    assert torch.allclose(tall.data, -ref, atol=1e-6)


def test_param_groups_cover_everything_once():
    c = apply_overrides(Config(), {"model.num_layers": 2, "model.smear_gate": "per_dim", "model.bigram_buckets": 64,
                                   "model.tie_embeddings": False})
    m = build_model(c)
    groups = split_params(m, c.model.control_patterns)
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    names = {id(p): n for n, p in m.named_parameters()}
    assert {names[id(p)] for p in groups["embed"]} == {"tok_emb.weight", "bigram.table.weight"}
    assert "bigram.proj.weight" in {names[id(p)] for p in groups["matrix"]}
    assert {"smear.gate", "bigram.scale", "skip_weights"} <= {names[id(p)] for p in groups["scalar"]}
    assert [names[id(p)] for p in groups["head"]] == ["lm_head.weight"]
    opts, muon = build_optimizers(m, c, fused=False)
    assert len(opts) == 4 and muon in opts


def test_momentum_warmup():
    c = apply_overrides(Config(), {"optim.muon_momentum_warmup_start": 0.92, "optim.muon_momentum": 0.99,
                                   "optim.muon_momentum_warmup_steps": 1500})
    assert muon_momentum(0, c) == pytest.approx(0.92)
    assert muon_momentum(750, c) == pytest.approx(0.955)
    assert muon_momentum(5000, c) == pytest.approx(0.99)


def test_linear_warmdown_by_iterations_and_by_wallclock():
    c = apply_overrides(Config(), {"train.max_wallclock_seconds": 0, "train.iterations": 1000,
                                   "schedule.warmdown_iters": 200})
    assert lr_multiplier(0, 0, c) == 1.0 and lr_multiplier(799, 0, c) == 1.0
    assert lr_multiplier(800, 0, c) == pytest.approx(1.0)
    assert lr_multiplier(900, 0, c) == pytest.approx(0.5)
    assert lr_multiplier(999, 0, c) == pytest.approx(0.005)
    w = apply_overrides(c, {"train.max_wallclock_seconds": 100.0})
    # 100 ms/step so far: warmdown = 200 steps * 100 ms = 20 s; 10 s remain -> 0.5
    assert lr_multiplier(900, 90_000.0, w) == pytest.approx(0.5)
    assert lr_multiplier(100, 10_000.0, w) == 1.0
    # slow hardware: warmdown_ms exceeds the cap and the LR decays from the start (a known pitfall of wallclock warmdown)
    slow = apply_overrides(w, {"schedule.warmdown_iters": 5000})
    assert lr_multiplier(10, 1000.0, slow) < 1.0


def test_cosine_fraction_and_floor():
    c = apply_overrides(Config(), {"train.max_wallclock_seconds": 600.0, "schedule.warmdown": "cosine",
                                   "schedule.warmdown_frac": 0.5, "schedule.min_lr_frac": 0.1})
    assert lr_multiplier(0, 200_000.0, c) == 1.0
    assert lr_multiplier(0, 300_000.0, c) == pytest.approx(1.0)
    assert lr_multiplier(0, 450_000.0, c) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(0, 599_000.0, c) == pytest.approx(0.1)  # floor
    lin = apply_overrides(c, {"schedule.warmdown": "linear", "schedule.min_lr_frac": 0.0})
    assert lr_multiplier(0, 450_000.0, lin) == pytest.approx(0.5)


def test_cosine_warmdown_by_iterations_and_wallclock_cap():
    """PR #326's cosine: progress (step - start) / warmdown_iters (iterations), and a wallclock warmdown
    capped at schedule.warmdown_cap_frac of the cap."""
    c = apply_overrides(Config(), {"train.max_wallclock_seconds": 0, "train.iterations": 1000,
                                   "schedule.warmdown": "cosine", "schedule.warmdown_iters": 200})
    assert lr_multiplier(799, 0, c) == 1.0 and lr_multiplier(800, 0, c) == 1.0
    assert lr_multiplier(900, 0, c) == 0.5 * (1.0 + math.cos(math.pi * 0.5))
    long = apply_overrides(c, {"schedule.warmdown_iters": 4000})  # longer than the run: starts at 1, never 0
    assert lr_multiplier(0, 0, long) == 1.0
    assert lr_multiplier(999, 0, long) == 0.5 * (1.0 + math.cos(math.pi * 999 / 4000))
    w = apply_overrides(c, {"train.max_wallclock_seconds": 600.0, "schedule.warmdown_iters": 3000})
    step, elapsed = 500, 500 * 688.0  # 688 ms/step: 3000 steps of warmdown would be 2064 s
    capped = apply_overrides(w, {"schedule.warmdown_cap_frac": 0.5})
    assert lr_multiplier(step, elapsed, capped) == 0.5 * (1.0 + math.cos(math.pi * (1.0 - 256_000.0 / 300_000.0)))
    assert lr_multiplier(step, elapsed, w) < lr_multiplier(step, elapsed, capped)
    assert lr_multiplier(100, 100 * 688.0, capped) == 1.0  # 531 s left: before the capped 300 s warmdown


def test_ns_coefficients_official_and_polar_express():
    from pgolf.core.optim import NS_COEFFS, POLAR_EXPRESS_COEFFS, ns_coefficients

    assert ns_coefficients("official", 3) == (NS_COEFFS,) * 3
    assert ns_coefficients("polar_express", 3) == POLAR_EXPRESS_COEFFS[:3]
    assert ns_coefficients("polar_express", 9) == POLAR_EXPRESS_COEFFS  # 5 iterations, not 9
    with pytest.raises(ValueError, match="polar_express"):
        ns_coefficients("cubic", 5)


def test_default_newton_schulz_is_the_official_iteration():
    """The default keeps the official arithmetic, (c * A) @ A grouping included (baseline bit for bit)."""
    torch.manual_seed(1)
    G = torch.randn(48, 96)
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16)
    X /= X.norm() + 1e-7
    for _ in range(5):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    assert torch.equal(zeropower_via_newtonschulz5(G, 5, dtype=torch.bfloat16), X)


def test_polar_express_orthogonalizes_tighter_in_five_steps():
    """Polar Express lifts the small singular values further than the fixed quintic in the same 5 steps."""
    G = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    sv = {c: torch.linalg.svdvals(zeropower_via_newtonschulz5(G, 5, dtype=torch.float32, coeffs=c))
          for c in ("official", "polar_express")}
    assert sv["polar_express"].min() > sv["official"].min() + 0.1
    assert sv["polar_express"].max() < 1.2


def test_muon_ns_coeffs_switch_reaches_the_optimizer():
    cfg = apply_overrides(Config(), {"model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4,
                                     "model.num_kv_heads": 2, "model.vocab_size": 64})
    assert cfg.optim.muon_ns_coeffs == "official"
    steps = {}
    for coeffs in ("official", "polar_express"):
        torch.manual_seed(0)
        model = build_model(cfg.replace({"optim.muon_ns_coeffs": coeffs}))
        _, muon = build_optimizers(model, cfg.replace({"optim.muon_ns_coeffs": coeffs}), fused=False)
        assert muon.ns_coeffs == coeffs
        for p in muon.param_groups[0]["params"]:
            p.grad = torch.ones_like(p) + torch.arange(p.numel()).view_as(p) % 7
        muon.step()
        steps[coeffs] = [p.detach().clone() for p in muon.param_groups[0]["params"]]
    assert any(not torch.equal(a, b) for a, b in zip(steps["official"], steps["polar_express"]))


def test_muon_bf16_momentum_is_the_hand_computed_step():
    """optim.muon_momentum_dtype=bf16 reaches the optimizer and is the record's step (PR #1855), computed here by
    hand for a tall matrix: bf16 gradient and momentum, Nesterov, bf16 Newton-Schulz of the unscaled update, WD,
    then p += -lr * sqrt(rows / cols) * update in fp32. The default keeps an fp32 momentum and another step."""
    cfg = apply_overrides(Config(), {"model.num_layers": 1, "model.model_dim": 32, "model.num_heads": 2,
                                     "model.num_kv_heads": 1, "model.vocab_size": 64, "model.mlp_mult": 3,
                                     "optim.muon_ns_dtype": "bfloat16", "optim.muon_weight_decay": 0.1})
    assert cfg.optim.muon_momentum_dtype == "grad"
    model = build_model(cfg)
    _, muon = build_optimizers(model, cfg.replace({"optim.muon_momentum_dtype": "bf16"}), fused=False)
    _, default = build_optimizers(build_model(cfg), cfg, fused=False)
    p = next(q for q in muon.param_groups[0]["params"] if q.size(0) > q.size(1))  # MLP up, 96 x 32: scale sqrt(3)
    q = next(q for q in default.param_groups[0]["params"] if q.shape == p.shape)
    q.data.copy_(p.data)
    w0 = p.detach().clone()
    lr, m, wd = 0.02, 0.9, 0.1
    buf = torch.zeros(p.shape, dtype=torch.bfloat16)
    for opt in (muon, default):
        opt.param_groups[0].update(lr=lr, momentum=m)
    for step in range(2):
        grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(step)) * 1e-2
        for opt in (muon, default):
            for r in opt.param_groups[0]["params"]:
                r.grad = None
        p.grad, q.grad = grad.clone(), grad.clone()
        muon.step()
        default.step()
        g = grad.bfloat16()
        buf = buf.mul(m).add(g)
        update = zeropower_via_newtonschulz5(g.add(buf, alpha=m), steps=5, dtype=torch.bfloat16)
        w0 = w0 * (1 - lr * wd)
        w0 = w0.add(update, alpha=-lr * (p.size(0) / p.size(1)) ** 0.5)
        assert torch.equal(p.detach(), w0)
        assert muon.state[p]["momentum_buffer"].dtype == torch.bfloat16
        assert default.state[q]["momentum_buffer"].dtype == torch.float32
        assert not torch.equal(q.detach(), w0)
