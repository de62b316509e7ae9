"""Model parity with PR #1394 (https://github.com/openai/parameter-golf/pull/1394, record 2026-04-05): the
record's ``GPT`` (imported from ``PGOLF_PR1394_TRAIN_GPT``; the module skips without it) and pgolf's model with
the preset's switches, at a small shape with the same structure (XSA on the last half, partial RoPE, depth
scaling, gated skips, a looped 2-block segment run 3 times): same parameter names and shapes, the same
same-seed init, and the same loss for the same weights and tokens with looping off and on.

The record imports flash-attention at import time (stubbed here) and calls it on (B, T, H, hd) tensors; the test
gives it a causal SDPA stand-in with the same layout, on CPU in fp32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf_testing import imported_script, max_abs_diff, random_state, reference_script_or_skip, stubbed_modules

PR_PATH = reference_script_or_skip("PGOLF_PR1394_TRAIN_GPT", "PR #1394")

from pgolf.core.model import build_model  # noqa: E402
from pgolf.running.presets import get_preset  # noqa: E402

SHAPE = {"VOCAB_SIZE": "128", "NUM_LAYERS": "6", "MODEL_DIM": "64", "EMBEDDING_DIM": "64", "NUM_HEADS": "4",
         "NUM_KV_HEADS": "2", "TRAIN_SEQ_LEN": "32", "ROPE_DIMS": "8", "XSA_LAST_N": "3", "LOOP_START": "2",
         "LOOP_END": "3", "NUM_LOOPS": "2"}


def flash_sdpa(q, k, v, causal=True):
    """flash_attn_func's layout, (B, T, H, hd), through SDPA (GQA: head h reads kv head h // (H / KV))."""
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                                       enable_gqa=q.size(2) != k.size(2))
    return y.transpose(1, 2)


@pytest.fixture(scope="module")
def rec():
    with stubbed_modules("flash_attn_interface"), imported_script(PR_PATH, "_pr1394_train_gpt", SHAPE) as mod:
        mod.flash_attn_3_func = flash_sdpa
        yield mod


@pytest.fixture(scope="module")
def rec_defaults():
    with stubbed_modules("flash_attn_interface"), imported_script(PR_PATH, "_pr1394_defaults") as mod:
        yield mod


def pgolf_cfg():
    return get_preset("pr1394_sp8192_gptq_sdclip_loop45x2").replace({
        "model.vocab_size": 128, "model.num_layers": 6, "model.model_dim": 64, "model.num_heads": 4,
        "model.num_kv_heads": 2, "train.train_seq_len": 32, "model.rope_dims": 8, "model.xsa_last_n": 3,
        "model.loop_layers": "2,3", "model.loop_count": 2})


def both(rec, seed: int = 0):
    torch.manual_seed(seed)
    theirs = rec.GPT(rec.Hyperparameters())
    torch.manual_seed(seed)
    ours = build_model(pgolf_cfg())
    return theirs, ours


def test_preset_values_are_the_records_defaults(rec_defaults):
    h, c = rec_defaults.Hyperparameters, get_preset("pr1394_sp8192_gptq_sdclip_loop45x2")
    m, o = c.model, c.optim
    assert (m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult) == (11, 512, 8, 4, 4.0)
    assert (m.xsa_last_n, m.rope_dims, m.qk_gain_init, m.ln_scale_by_depth, m.skip_gates) == (
        h.xsa_last_n, h.rope_dims, h.qk_gain_init, h.ln_scale, h.skip_gates_enabled)
    assert (m.loop_layers, m.loop_count, m.loop_start_frac) == ((h.loop_start, h.loop_end), h.num_loops,
                                                                h.enable_looping_at)
    assert (o.matrix_lr, o.scalar_lr, o.tied_embed_lr, o.muon_weight_decay, o.embed_weight_decay,
            o.adam_weight_decay, o.grad_clip_norm, o.muon_row_normalize) == (
        h.matrix_lr, h.scalar_lr, h.tied_embed_lr, h.muon_wd, h.embed_wd, h.adam_wd, h.grad_clip_norm,
        h.muon_row_normalize)
    assert (o.muon_momentum, o.muon_momentum_warmup_start, o.muon_momentum_warmup_steps) == (
        h.muon_momentum, h.muon_momentum_warmup_start, h.muon_momentum_warmup_steps)
    assert (c.schedule.warmdown_frac, c.averaging.ema_decay, c.train.train_batch_tokens, c.train.train_seq_len) == (
        h.warmdown_frac, h.ema_decay, h.train_batch_tokens, h.train_seq_len)
    assert (c.export.sdclip_sigmas_matrix, c.export.sdclip_sigmas_embed, c.export.gptq_reserve_seconds,
            c.eval.stride) == (h.matrix_clip_sigmas, h.embed_clip_sigmas, h.gptq_reserve_seconds, h.eval_stride)


def test_names_shapes_and_loop_order_equal_the_records(rec):
    theirs, ours = both(rec)
    assert {k: tuple(v.shape) for k, v in theirs.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert (ours.encoder_indices, ours.decoder_indices) == (theirs.encoder_indices, theirs.decoder_indices)
    assert [b.attn.xsa for b in ours.blocks] == [b.attn.use_xsa for b in theirs.blocks]
    assert [b.ln_scale for b in ours.blocks] == [b.ln_scale_factor for b in theirs.blocks]


def test_parameter_registration_order_equals_the_records(rec):
    """clip_grad_norm_ sums the parameters' norms in registration order: the same order as the record's, so the
    grad-clip norm is summed in the same order (the preset's docstring says so)."""
    theirs, ours = both(rec)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


@pytest.mark.parametrize("seed", [0, 7])
def test_same_seed_init_equals_the_records(rec, seed):
    theirs, ours = both(rec, seed)
    t, o = theirs.state_dict(), ours.state_dict()
    for k in t:
        assert torch.equal(t[k], o[k]), k


@pytest.mark.parametrize("looping", [False, True])
@pytest.mark.parametrize("seq_len", [32, 64])  # 64: past the training length, the NTK-scaled partial RoPE
def test_loss_for_the_same_weights_equals_the_records(rec, looping, seq_len):
    theirs, ours = both(rec)
    sd = random_state(ours, seed=3, control=("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_"))
    theirs.load_state_dict(sd)
    ours.load_state_dict(sd)
    theirs.looping_active = ours.looping_active = looping
    g = torch.Generator().manual_seed(seq_len)
    x = torch.randint(0, 128, (2, seq_len), generator=g)
    y = torch.randint(0, 128, (2, seq_len), generator=g)
    with torch.no_grad():
        a, b = theirs(x, y), ours(x, y)
        assert max_abs_diff(theirs.forward_logits(x), ours(x)) < 2e-5
    assert abs(a.item() - b.item()) < 1e-5
    ours.looping_active = not looping  # the flag matters: the other order gives another loss
    with torch.no_grad():
        assert abs(ours(x, y).item() - b.item()) > 1e-4


@pytest.mark.parametrize("loop", [{"LOOP_START": "1", "LOOP_END": "3", "NUM_LOOPS": "1"},
                                  {"LOOP_START": "2", "LOOP_END": "2", "NUM_LOOPS": "3"}, {"NUM_LOOPS": "0"}])
def test_loop_environment_names_give_the_records_layer_order(loop):
    """LOOP_START/LOOP_END/NUM_LOOPS read by pgolf's from_env give the record's virtual layer order."""
    from pgolf.core.config import from_env

    env = {**SHAPE, **loop}
    with stubbed_modules("flash_attn_interface"), imported_script(PR_PATH, "_pr1394_loop", env) as mod:
        theirs = mod.GPT(mod.Hyperparameters())
    ours = build_model(from_env(pgolf_cfg(), loop))
    assert (ours.encoder_indices, ours.decoder_indices) == (theirs.encoder_indices, theirs.decoder_indices)
