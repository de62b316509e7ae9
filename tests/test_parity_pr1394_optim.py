"""Optimizer and schedule parity with PR #1394 (https://github.com/openai/parameter-golf/pull/1394, record
2026-04-05), against the record's own code imported from ``PGOLF_PR1394_TRAIN_GPT`` (the module skips without
it): the MuonEq-R update (row-normalized Muon with decoupled weight decay), the optimizer groups with their LRs
and weight decays, and the LR schedule (linear warmdown over the last 66.7% of the wallclock less the GPTQ
reserve, or of the iterations). The record's ``training_frac`` and ``lr_mul`` are closures inside
``train_model``; the test compiles them from the script's source with the record's hyperparameters."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

from pgolf_testing import imported_script, reference_script_or_skip, stubbed_modules

PR_PATH = reference_script_or_skip("PGOLF_PR1394_TRAIN_GPT", "PR #1394")

from pgolf.core import optim  # noqa: E402
from pgolf.core.model import build_model  # noqa: E402
from pgolf.running.presets import get_preset  # noqa: E402

PRESET = "pr1394_sp8192_gptq_sdclip_loop45x2"
SMALL = {"VOCAB_SIZE": "128", "NUM_LAYERS": "4", "MODEL_DIM": "64", "EMBEDDING_DIM": "64", "NUM_HEADS": "4",
         "NUM_KV_HEADS": "2", "LOOP_START": "1", "LOOP_END": "2", "XSA_LAST_N": "4", "ROPE_DIMS": "8"}


@pytest.fixture(scope="module")
def rec():
    with stubbed_modules("flash_attn_interface"), imported_script(PR_PATH, "_pr1394_optim", SMALL) as mod:
        # its Newton-Schulz is wrapped in torch.compile at import: the plain function (the same code) on CPU
        mod.zeropower_via_newtonschulz5 = getattr(mod.zeropower_via_newtonschulz5, "_torchdynamo_orig_callable",
                                                  mod.zeropower_via_newtonschulz5)
        yield mod


@pytest.mark.parametrize("shape", [(48, 96), (96, 48)])
@pytest.mark.parametrize("row_normalize", [True, False])
def test_muoneq_r_update_equals_the_records(rec, shape, row_normalize):
    g = torch.Generator().manual_seed(shape[0])
    w0 = torch.randn(shape, generator=g) * 0.05
    grads = [torch.randn(shape, generator=g) * torch.rand(shape[0], 1, generator=g) * 3 for _ in range(3)]
    params = [torch.nn.Parameter(w0.clone()) for _ in range(2)]
    theirs = rec.Muon([params[0]], lr=0.02, momentum=0.95, backend_steps=5, weight_decay=0.085,
                      row_normalize=row_normalize)
    ours = optim.Muon([params[1]], lr=0.02, momentum=0.95, backend_steps=5, weight_decay=0.085,
                      ns_dtype=torch.bfloat16, row_normalize=row_normalize)
    for grad in grads:
        for p, opt in zip(params, (theirs, ours), strict=True):
            p.grad = grad.clone()
            opt.step()
        assert torch.equal(params[0].data, params[1].data)
    other = torch.nn.Parameter(w0.clone())
    flipped = optim.Muon([other], lr=0.02, momentum=0.95, backend_steps=5, weight_decay=0.085,
                         ns_dtype=torch.bfloat16, row_normalize=not row_normalize)
    for grad in grads:
        other.grad = grad.clone()
        flipped.step()
    assert not torch.equal(other.data, params[1].data)  # the switch changes the update


def test_row_normalize_gives_unit_rows():
    g = torch.randn(5, 7) * torch.arange(1, 6).view(-1, 1)
    assert torch.allclose(optim.row_normalize(g).norm(dim=-1), torch.ones(5), atol=1e-6)


def test_optimizer_groups_lrs_and_weight_decays_equal_the_records(rec):
    torch.manual_seed(0)
    theirs_model = rec.GPT(rec.Hyperparameters())
    cfg = get_preset(PRESET).replace({
        "model.vocab_size": 128, "model.num_layers": 4, "model.model_dim": 64, "model.num_heads": 4,
        "model.num_kv_heads": 2, "model.loop_layers": "1,2", "model.xsa_last_n": 4, "model.rope_dims": 8})
    ours_model = build_model(cfg)
    theirs = rec.Optimizers(rec.Hyperparameters(), theirs_model)
    ours, _ = optim.build_optimizers(ours_model, cfg, fused=False)

    def described(opts, model):
        names = {id(p): n for n, p in model.named_parameters()}
        out = []
        for opt in opts:
            for grp in opt.param_groups:
                wd = grp.get("weight_decay", 0.0)
                out.append((sorted(names[id(p)] for p in grp["params"]), grp["lr"], wd,
                            grp.get("betas"), grp.get("row_normalize")))
        return sorted(out)

    assert described(list(theirs), theirs_model) == described(ours, ours_model)


def record_schedule(rec, h, max_wallclock_ms):
    """The record's ``training_frac`` and ``lr_mul``, compiled from its ``train_model`` source."""
    fn = ast.parse(inspect.getsource(rec.train_model)).body[0]
    nested = [n for n in fn.body if isinstance(n, ast.FunctionDef) and n.name in ("training_frac", "lr_mul")]
    assert len(nested) == 2
    ns = {"h": h, "max_wallclock_ms": max_wallclock_ms}
    exec(compile(ast.Module(body=nested, type_ignores=[]), PR_PATH, "exec"), ns)  # noqa: S102
    return ns["training_frac"], ns["lr_mul"]


@pytest.mark.parametrize("wallclock", [True, False])
def test_lr_schedule_equals_the_records(rec, wallclock):
    h = rec.Hyperparameters()
    cfg = get_preset(PRESET)
    if wallclock:
        max_ms = 1000.0 * h.max_wallclock_seconds - 1000.0 * h.gptq_reserve_seconds
        points = [(s, ms) for s, ms in zip(range(0, 9000, 300), range(0, 600_000, 20_000), strict=False)]
    else:
        cfg = cfg.replace({"train.max_wallclock_seconds": 0})
        max_ms = None
        points = [(s, 123.0) for s in range(0, h.iterations + 1, 250)]
    training_frac, lr_mul = record_schedule(rec, h, max_ms)
    values = [(lr_mul(training_frac(s, ms)), optim.lr_multiplier(s, ms, cfg)) for s, ms in points]
    assert all(abs(a - b) < 1e-12 for a, b in values), values
    assert min(v for v, _ in values) < 0.1 and max(v for v, _ in values) == 1.0  # the grid crosses the warmdown


def test_muon_momentum_warmup_equals_the_records(rec):
    h, cfg = rec.Hyperparameters(), get_preset(PRESET)
    for step in (0, 1, 700, 1499, 1500, 5000):
        frac = min(step / h.muon_momentum_warmup_steps, 1.0)
        assert optim.muon_momentum(step, cfg) == (1 - frac) * h.muon_momentum_warmup_start + frac * h.muon_momentum
