"""Each seed technique does what it claims: gates at init, no cross-document smear, bigram causality,
init schemes."""

import math

import pytest
import torch

from pgolf.core.config import Config, ConfigError, apply_overrides
from pgolf.core.model import build_model
from pgolf.core.model.embed import BigramHash, SmearGate

SMALL = {"model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2}


@pytest.mark.parametrize("mode, init, g", [("scalar", "identity", 1 / (1 + math.exp(-3))), ("per_dim", "half", 0.5)])
def test_smear_gate_at_init(mode, init, g):
    s = SmearGate(8, mode, init, bos_id=-1)
    assert s.gate.numel() == (8 if mode == "per_dim" else 1)
    x = torch.randn(1, 3, 8)
    ids = torch.tensor([[5, 6, 7]])
    out = s(x, ids)
    assert torch.allclose(out[:, 0], g * x[:, 0])  # zero predecessor at position 0
    assert torch.allclose(out[:, 2], g * x[:, 2] + (1 - g) * x[:, 1])


def test_smear_never_crosses_a_document_boundary():
    s = SmearGate(8, "per_dim", "half", bos_id=1)
    x = torch.randn(1, 4, 8)
    ids = torch.tensor([[9, 9, 1, 9]])  # BOS at position 2 starts a new document
    out = s(x, ids)
    assert torch.allclose(out[:, 2], 0.5 * x[:, 2])  # nothing from the previous document
    assert torch.allclose(out[:, 3], 0.5 * x[:, 3] + 0.5 * x[:, 2])
    # and the full model: the BOS position and after do not depend on the previous document
    c = apply_overrides(Config(), {**SMALL, "model.smear_gate": "per_dim", "model.bigram_buckets": 31,
                                   "model.bigram_dim": 8, "model.unet_skips": False})
    m = build_model(c).eval()
    torch.nn.init.normal_(m.blocks[0].attn.proj.weight, std=0.1)
    a = torch.tensor([[5, 6, 7, 1, 8, 9]])
    b = torch.tensor([[5, 6, 3, 1, 8, 9]])  # previous document differs only in its last token
    # attention still sees the previous document (flat-stream eval allows it) but the embedding path does not:
    emb = lambda ids: m.smear(m.tok_emb(ids) + m.bigram(ids), ids)
    assert torch.equal(emb(a)[:, 3:], emb(b)[:, 3:])


def test_bigram_hash_is_causal_and_uses_reserved_bucket():
    bh = BigramHash(101, 8, 16, 0.05, bos_id=1)
    ids = torch.tensor([[4, 5, 6, 1, 7]])
    buckets = bh.bucket_ids(ids)
    assert buckets[0, 0] == 100 and buckets[0, 3] == 100
    assert buckets[0, 2] == (36313 * 6 ^ 27191 * 5) % 100
    ids2 = ids.clone()
    ids2[0, 4] = 9
    assert torch.equal(bh.bucket_ids(ids2)[0, :4], buckets[0, :4])
    assert bh.scale.item() == pytest.approx(0.05)
    assert torch.count_nonzero(bh.proj.weight) == 0 and bh.table.weight.std() > 0  # trainable from step 1


def test_bigram_gets_gradients():
    c = apply_overrides(Config(), {**SMALL, "model.bigram_buckets": 64, "model.bigram_dim": 16})
    m = build_model(c)
    torch.nn.init.normal_(m.blocks[0].attn.proj.weight, std=0.1)
    x = torch.randint(0, 1024, (2, 16))
    m(x, x).backward()
    assert m.bigram.proj.weight.grad.abs().sum() > 0


def test_phase_transition_resid_mix_init():
    c = apply_overrides(Config(), {"model.num_layers": 10, "model.resid_mix_init": "phase"})
    m = build_model(c)
    p0 = m.blocks[0].resid_mix[:, 0]
    assert p0[0].item() == pytest.approx(1 / (1 + math.exp(1.5)), abs=1e-6)  # 0.18 on x, 0.82 on x0
    assert p0[1].item() == pytest.approx(1 - 1 / (1 + math.exp(1.5)), abs=1e-6)
    assert m.blocks[9].resid_mix[0, 0].item() == pytest.approx(1 / (1 + math.exp(-1.5)), abs=1e-6)


def test_orthogonal_init_and_gain_scaled_projections():
    c = apply_overrides(Config(), {**SMALL, "model.init": "orthogonal", "model.proj_init_gain": 1.0})
    m = build_model(c)
    w = m.blocks[0].attn.c_q.weight
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-5)
    p = m.blocks[0].attn.proj.weight
    g = 1.0 / math.sqrt(2 * 2)
    assert torch.allclose(p @ p.T, g * g * torch.eye(64), atol=1e-5)
    base = build_model(apply_overrides(Config(), SMALL))
    assert torch.count_nonzero(base.blocks[0].attn.proj.weight) == 0  # default: zero-init projections


def test_overtone_embedding_spectrum():
    c = apply_overrides(Config(), {**SMALL, "model.embed_init": "overtone"})
    s = torch.linalg.svdvals(build_model(c).tok_emb.weight)
    k = torch.arange(1, s.numel() + 1, dtype=s.dtype)
    assert torch.allclose(s, s[0] * k.pow(-0.5), rtol=1e-4)


def test_options_are_off_by_default_and_baseline_unchanged():
    torch.manual_seed(0)
    a = build_model(Config()).state_dict()
    torch.manual_seed(0)
    b = build_model(apply_overrides(Config(), {"model.smear_gate": "scalar", "model.bigram_buckets": 128})).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # options never shift the baseline's init


RECORDS_EMB = {**SMALL, "model.model_dim": 128, "model.smear_gate": "per_dim", "model.bigram_buckets": 97,
               "model.bigram_dim": 64, "model.init": "orthogonal"}


def test_records_module_order_and_bigram_init():
    """module_order=records builds BigramHash/SmearGate right after tok_emb (the records' parameter order and
    init RNG stream); bigram_init=ortho_proj zeroes the table and gives the projection orthogonal/sqrt(2L)."""
    c = apply_overrides(Config(), {**RECORDS_EMB, "model.module_order": "records", "model.bigram_init": "ortho_proj"})
    torch.manual_seed(0)
    m = build_model(c)
    names = [n for n, _ in m.named_parameters()]
    assert names[:6] == ["skip_weights", "tok_emb.weight", "bigram.scale", "bigram.table.weight",
                         "bigram.proj.weight", "smear.gate"]
    assert not m.bigram.table.weight.any()
    w = m.bigram.proj.weight  # (128, 64)
    assert torch.allclose(w.T @ w, torch.eye(64) / (2 * 2), atol=1e-6)
    torch.manual_seed(0)
    official = build_model(apply_overrides(c, {"model.module_order": "official"}))
    assert not torch.equal(official.tok_emb.weight, m.tok_emb.weight)  # the bigram's draws now come first
    x = torch.randint(0, 1024, (2, 16))
    m(x, x).backward()  # both branches train from step 1: the table gets a gradient through the projection
    assert m.bigram.table.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("override, match", [({"model.init": "default"}, "needs model.init='orthogonal'"),
                                             ({"model.bigram_dim": 32}, ">= 64")])
def test_ortho_proj_bigram_init_refuses_a_dead_branch(override, match):
    from pgolf.core.config import ConfigError
    with pytest.raises(ConfigError, match=f"model.bigram_init.*{match}"):
        apply_overrides(Config(), {**RECORDS_EMB, "model.bigram_init": "ortho_proj", **override})


def test_swa_min_snapshots_and_param_dtype():
    from pgolf.core.averaging import WeightAverager
    from pgolf.core.config import AveragingConfig
    m = torch.nn.Linear(4, 3, bias=False).bfloat16()
    seq = [torch.randn(3, 4).bfloat16() for _ in range(3)]

    def run(**kw):
        avg = WeightAverager(m, AveragingConfig(mode="swa", swa_every=1, swa_start_lr_scale=1.0, **kw))
        for i, w in enumerate(seq):
            m.weight.data.copy_(w)
            avg.update(m, i + 1, 0.5)
        return avg
    fp32 = run().averaged_state(m)["weight"]
    assert torch.equal(fp32, (sum(w.float() for w in seq) / 3).bfloat16())
    param = run(swa_dtype="param").averaged_state(m)["weight"]
    assert torch.equal(param, ((seq[0] + seq[1] + seq[2]) / 3).bfloat16())  # summed in bf16, as the records
    assert run(swa_min_snapshots=4).averaged_state(m) is None and run(swa_min_snapshots=3).averaged_state(m) is not None


def test_smear_previous_form_is_the_current_form_with_the_gate_negated():
    """model.smear_gated=previous: (1-g)*x_t + g*x_{t-1} (the PR #162 lineage), BOS handling unchanged."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, generator=g)
    prev_form, cur_form = SmearGate(8, "per_dim", "half", 1, "previous"), SmearGate(8, "per_dim", "half", 1)
    with torch.no_grad():
        prev_form.gate.copy_(a)
        cur_form.gate.copy_(-a)
    x = torch.randn(2, 5, 8, generator=g)
    ids = torch.tensor([[5, 6, 1, 7, 8], [9, 1, 2, 3, 4]])
    out = prev_form(x, ids)
    s = torch.sigmoid(a)
    assert torch.allclose(out[:, 3], (1 - s) * x[:, 3] + s * x[:, 2])
    assert torch.allclose(out[0, 2], (1 - s) * x[0, 2])  # BOS: nothing from the previous document
    assert torch.allclose(out, cur_form(x, ids), atol=1e-6)


RECORDS = {**SMALL, "model.smear_gate": "per_dim", "model.smear_init": "half", "model.bigram_buckets": 128,
           "model.bigram_dim": 64, "model.init": "orthogonal", "model.bigram_init": "ortho_proj",
           "model.module_order": "records"}


def test_records_module_order_state_dict_order_and_rng_shift():
    m = build_model(apply_overrides(Config(), RECORDS))
    names = list(m.state_dict())
    assert names[:6] == ["skip_weights", "tok_emb.weight", "bigram.scale", "bigram.table.weight",
                         "bigram.proj.weight", "smear.gate"] and names[6].startswith("blocks.0.")
    assert torch.count_nonzero(m.bigram.table.weight) == 0
    w = m.bigram.proj.weight * math.sqrt(2 * 2)  # orthogonal, scaled by 1/sqrt(2L)
    assert torch.allclose(w.T @ w, torch.eye(64), atol=1e-5)
    assert torch.count_nonzero(m.blocks[0].attn.proj.weight) == 0  # block projections stay zero
    # the bigram is built before the blocks (and its projection initialized first): every later draw shifts
    torch.manual_seed(0)
    a = build_model(apply_overrides(Config(), RECORDS)).state_dict()
    torch.manual_seed(0)
    b = build_model(apply_overrides(Config(), {**RECORDS, "model.module_order": "official"})).state_dict()
    assert not torch.equal(a["tok_emb.weight"], b["tok_emb.weight"])
    assert not torch.equal(a["blocks.0.attn.c_q.weight"], b["blocks.0.attn.c_q.weight"])
    assert list(b)[-4:] == ["smear.gate", "bigram.scale", "bigram.table.weight", "bigram.proj.weight"]


def test_ortho_proj_bigram_init_needs_orthogonal_init():
    with pytest.raises(ConfigError, match="model.bigram_init"):
        apply_overrides(Config(), {**RECORDS, "model.init": "default"})
