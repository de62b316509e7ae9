"""Muon's step against the 2026-04-27 record's (PR #1855, https://github.com/openai/parameter-golf/tree/main/
records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611) and the 2026-04-29
record's (PR #1868, the same step with explicit bf16 -> fp32 casts): each script's ``Muon`` on its parameter
banks (3-D tensors, matrices stacked), single process, against pgolf's ``Muon`` on the same matrices one
parameter each (bank matrix b is pgolf's matrix b). The scripts are imported from ``PGOLF_PR1855_TRAIN_GPT`` /
``PGOLF_PR1868_TRAIN_GPT`` with their stubs (:func:`pgolf_testing.record_pr1855_stubs`); each test skips without
its script.

The record's step: gradient cast to bf16, momentum kept in bf16, Nesterov, MuonEq-R, Polar Express Newton-Schulz
in bf16 batched over the bank, decoupled WD, then ``p += -lr * scale * update`` in fp32. pgolf's default
(``optim.muon_momentum_dtype=grad``) keeps the momentum in the gradient's dtype (fp32) and multiplies the bf16
update by the scale in bf16; ``bf16`` is the record's step."""

from __future__ import annotations

import pytest
import torch

from pgolf_testing import imported_script, record_pr1855_stubs, reference_script_or_skip

SCRIPTS = {"pr1855": "PGOLF_PR1855_TRAIN_GPT", "pr1868": "PGOLF_PR1868_TRAIN_GPT"}
# The presets' Muon: LR 0.026, momentum 0.97 (0.92 at the warmup's start), WD 0.095, MuonEq-R, Polar Express x5.
LR, WD, STEPS = 0.026, 0.095, 5
MOMENTA = (0.92, 0.9203, 0.9207)  # the warmup's first steps: the group's momentum changes every step
# The record's banks at a small width: d=64, KV dim 32, MLP 4x, 2 layers: (2L, d, d) square Q/O,
# (2L, kv, d) wide K/V, (L, 4d, d) tall MLP up, (L, d, 4d) wide MLP down; their shape scales are 1 or 2, exact in
# bf16, so one more tall bank, rows 3x cols (scale sqrt(3)), tells where the scale is applied.
BANKS = {"qo_bank": (4, 64, 64), "kv_bank": (4, 32, 64), "mlp_up_bank": (2, 256, 64), "mlp_down_bank": (2, 64, 256),
         "tall_bank": (2, 192, 64)}


@pytest.fixture(scope="module", params=sorted(SCRIPTS))
def rec(request):
    path = reference_script_or_skip(SCRIPTS[request.param], request.param)
    import torch._dynamo  # noqa: F401  an optimizer's constructor imports it; under the Triton stub it cannot
    with record_pr1855_stubs(), imported_script(path, f"_{request.param}_muon") as mod:
        yield mod


def _weights_and_grads(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = {n: torch.randn(*s, generator=g) * 0.05 for n, s in BANKS.items()}
    grads = [{n: torch.randn(*s, generator=g) * 1e-3 for n, s in BANKS.items()} for _ in MOMENTA]
    return w, grads


def _step_diffs(rec, momentum_dtype: str) -> tuple[list[float], list[float]]:
    """Per step: the max abs difference of all weights, the record's Muon on the banks vs pgolf's Muon (bf16
    Newton-Schulz, as on CUDA) on their matrices; and the largest change of a record weight in that step."""
    from pgolf.core.optim import Muon

    w, grads = _weights_and_grads()
    banks = [torch.nn.Parameter(w[n].clone()) for n in BANKS]
    mats = [[torch.nn.Parameter(w[n][b].clone()) for b in range(w[n].shape[0])] for n in BANKS]
    theirs = rec.Muon(banks, lr=LR, momentum=MOMENTA[0], backend_steps=STEPS, weight_decay=WD, row_normalize=True)
    ours = Muon([p for ps in mats for p in ps], lr=LR, momentum=MOMENTA[0], backend_steps=STEPS, weight_decay=WD,
                ns_dtype=torch.bfloat16, row_normalize=True, ns_coeffs="polar_express", momentum_dtype=momentum_dtype)
    diffs, moves = [], []
    for mom, grad in zip(MOMENTA, grads):
        for opt in (theirs, ours):
            opt.param_groups[0]["momentum"] = mom
        for n, bank, ps in zip(BANKS, banks, mats):
            bank.grad = grad[n].clone()
            for b, p in enumerate(ps):
                p.grad = grad[n][b].clone()
        before = [bank.detach().clone() for bank in banks]
        theirs.step()
        ours.step()
        moves.append(max(float((bank.detach() - b0).abs().max()) for bank, b0 in zip(banks, before)))
        diffs.append(max(float((bank.detach()[b] - p.detach()).abs().max())
                         for bank, ps in zip(banks, mats) for b, p in enumerate(ps)))
    return diffs, moves


def test_bf16_momentum_reproduces_the_records_muon_step_bit_for_bit(rec):
    """optim.muon_momentum_dtype=bf16: after each of 3 steps (momentum changing as in the warmup) every matrix of
    every bank shape (square, wide, tall) equals the record's bit for bit. With bf16 momentum but the scale
    applied in bf16 before the add (pgolf's order), the sqrt(3) bank is off by 2.5e-5 to 6.9e-5."""
    assert _step_diffs(rec, "bf16")[0] == [0.0] * len(MOMENTA)


def test_default_momentum_differs_from_the_records_step(rec):
    """pgolf's default step (fp32 gradient and momentum, scale applied in bf16) is not the record's: the weights
    differ from the first step on (9.4e-4, 1.2e-3, 1.3e-3 here), by a fraction of the step's largest weight change
    (1.4e-2 to 1.5e-2): bf16 Newton-Schulz from inputs rounded differently, not another update."""
    diffs, moves = _step_diffs(rec, "grad")
    assert all(0 < d < 0.15 * m for d, m in zip(diffs, moves)), (diffs, moves)


def test_unknown_momentum_dtype_is_refused():
    from pgolf.core.optim import Muon

    with pytest.raises(ValueError, match="momentum dtype"):
        Muon([torch.nn.Parameter(torch.zeros(2, 2))], lr=0.1, momentum=0.9, backend_steps=1, momentum_dtype="fp16")
