"""Parity of ``eval.ttt=phased_lora`` (pgolf.core.ttt) with the 2026-04-27 record's ``eval_val_ttt_phased``
(PR #1855, https://github.com/openai/parameter-golf/tree/main/records/track_10min_16mb/
2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611): its ``train_gpt.py`` imported from
``PGOLF_PR1855_TRAIN_GPT`` (skips without it), flash-attention replaced by SDPA (its varlen call by a block-diagonal
causal mask), its MLP eager, on CPU in float32, in one process (its batch counters are files under /tmp named by
``RUN_ID``; the test gives a fresh id and removes them)."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgolf_testing import imported_script, record_pr1855_stubs, reference_script_or_skip

PR_PATH = reference_script_or_skip("PGOLF_PR1855_TRAIN_GPT", "PR #1855")

from test_parity_pr1855 import MODEL_ENV, _banks_to_pgolf, _flash_sdpa, _pgolf_model_cfg  # noqa: E402

from pgolf.core import ttt  # noqa: E402
from pgolf.core.config import from_env  # noqa: E402
from pgolf.core.evaluate import ByteLUTs  # noqa: E402
from pgolf.core.model import build_model  # noqa: E402

# Small enough for CPU, large enough to reach every rule: 8 documents in batches of 3 (a short batch gets fresh
# adapters), windows of 24 that slide over documents longer than that, 2 global phases after 5 documents with
# several LR chunks, K/O/MLP adapters on, the loop (one adapter per block call), the two-lane decoder, both gates.
# The global phase's sequences are 64 long and no document is longer, so no attention segment is cut inside a
# document (see CUT_ENV). TRAIN_SEQ_LEN=128: pgolf's NTK RoPE (eval.ntk) rescales calls longer than the
# training length, the record's (ROPE_YARN=0, its run's setting) never does; no call here is longer than 128.
TTT_ENV = {"TTT_ENABLED": "1", "TTT_LORA_RANK": "4", "TTT_CHUNK_SIZE": "8", "TTT_EVAL_SEQ_LEN": "24",
           "TTT_BATCH_SIZE": "3", "TTT_LORA_LR": "0.01", "TTT_WEIGHT_DECAY": "0.5", "TTT_BETA2": "0.99",
           "PHASED_TTT_PREFIX_DOCS": "5", "PHASED_TTT_NUM_PHASES": "2", "GLOBAL_TTT_LR": "0.01",
           "GLOBAL_TTT_MOMENTUM": "0.9", "GLOBAL_TTT_CHUNK_TOKENS": "64", "GLOBAL_TTT_BATCH_SEQS": "2",
           "EVAL_SEQ_LEN": "64", "EVAL_STRIDE": "8", "TRAIN_SEQ_LEN": "128"}
# The documented difference: global-phase sequences of 16, so documents are cut into 16-token attention
# segments; at such a cut the record's SmearGate still reads the token before it, pgolf's does not.
CUT_ENV = {**TTT_ENV, "GLOBAL_TTT_CHUNK_TOKENS": "40", "EVAL_SEQ_LEN": "16", "TRAIN_SEQ_LEN": "32"}
DOC_LENGTHS = (37, 9, 52, 20, 14, 30, 6, 44)
VOCAB, BOS, SEED = 64, 1, 123


def _varlen_sdpa(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=True, window_size=(-1, -1)):
    """flash_attn_varlen_func on one packed row (T, H, hd): causal attention inside each cu_seqlens segment."""
    t = q.size(0)
    bounds = torch.unique(cu_seqlens_q.long())
    seg = torch.bucketize(torch.arange(t), bounds[1:], right=True)
    pos = torch.arange(t)
    mask = (seg[:, None] == seg[None, :]) & (pos[None, :] <= pos[:, None])
    y = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                       attn_mask=mask, enable_gqa=q.size(1) != k.size(1))
    return y[0].transpose(0, 1)


def _stream() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.cat([torch.cat([torch.tensor([BOS]), torch.randint(2, VOCAB, (n - 1,), generator=g)])
                      for n in DOC_LENGTHS])


def _luts():
    rng = np.random.default_rng(3)
    base = rng.integers(1, 5, VOCAB).astype(np.int16)
    space = rng.random(VOCAB) < 0.3
    boundary = np.zeros(VOCAB, dtype=bool)
    boundary[:2] = True
    return base, space, boundary


def _run_both(ttt_env: dict[str, str]):
    """(per chunk step: max abs diff of the scored per-token losses; pgolf's TTTResult; the record's val_loss and
    val_bpb)."""
    run_id = f"pgolf_test_{uuid.uuid4().hex}"
    env = {**MODEL_ENV, **ttt_env, "RUN_ID": run_id}
    tokens = _stream()
    base, space, boundary = _luts()
    with record_pr1855_stubs(), imported_script(PR_PATH, "_pr1855_ttt", env) as mod:
        pass  # runs outside the stubs: fused AdamW (the record's TTT optimizer) looks for the real Triton
    try:
        mod.flash_attn_3_func = _flash_sdpa
        mod.flash_attn_varlen_func = _varlen_sdpa
        mod.BOS_ID = BOS
        h = mod.Hyperparameters()
        torch.manual_seed(0)
        theirs = mod.GPT(h)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in theirs.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for block in theirs.blocks:
            block.mlp.use_fused = False  # its Triton MLP (training mode, global phase): eager, same math
        theirs.looping_active = True
        cfg = from_env(_pgolf_model_cfg(), ttt_env)
        ours = build_model(cfg)
        ours.load_state_dict(_banks_to_pgolf(theirs), strict=True)
        ours.looping_active = True
        val_data = type("V", (), dict(
            val_tokens=tokens, base_bytes_lut=torch.as_tensor(base), has_leading_space_lut=torch.as_tensor(space),
            is_boundary_token_lut=torch.as_tensor(boundary), caseops_enabled=False, val_bytes=None))()
        want_chunks = []

        def forward_ttt(x, y, lora):
            out = theirs.forward_ttt(x, y, lora=lora)
            want_chunks.append(out.detach().clone())
            return out
        torch.manual_seed(SEED)
        want_loss, want_bpb = mod.eval_val_ttt_phased(h, theirs, torch.device("cpu"), val_data, forward_ttt)
    finally:
        for name in ("ttt_counter_", "ttt_prefix_counter_", "ttt_pause_flag_"):
            try:
                os.remove(f"/tmp/{name}{run_id}")
            except FileNotFoundError:
                pass
    assert cfg.eval.ttt == "phased_lora" and cfg.eval.seq_len == int(ttt_env["EVAL_SEQ_LEN"])
    got_chunks: list[ttt.ChunkBatch] = []
    res = ttt.eval_ttt_phased(ours, tokens, ByteLUTs.from_numpy((base, space, boundary), torch.device("cpu")),
                              cfg.eval, bos_id=BOS, global_seq_len=cfg.eval.seq_len, seed=SEED,
                              on_chunk=got_chunks.append)
    assert res.phases == 2 and res.docs == len(DOC_LENGTHS)
    # batches (longest first) of 3, 3 and 2 documents: 7, 4 and 3 chunk steps of 8 targets
    assert len(got_chunks) == len(want_chunks) == 14
    assert all(cb.losses.shape == want.shape for cb, want in zip(got_chunks, want_chunks))
    diffs = [(cb.losses - want)[cb.scored].abs().max().item() for cb, want in zip(got_chunks, want_chunks)]
    print(f"ttt parity: max abs diff per-token loss {max(diffs):.3e} over {len(diffs)} chunk steps "
          f"(first batch {max(diffs[:7]):.3e}); val_loss {res.val_loss:.10f} vs {want_loss:.10f}, "
          f"val_bpb {res.val_bpb:.10f} vs {want_bpb:.10f}")
    return diffs, res, want_loss, want_bpb


def test_phased_lora_ttt_per_chunk_losses_equal_the_records():
    """The record's eval_val_ttt_phased on its GPT (loop on, lanes from layer 4, sparse and smear gates, every
    weight perturbed) against pgolf's on the mapped weights, same seed for the adapters' A: every chunk forward's
    per-token losses (the record's ``forward_ttt`` outputs; pgolf's ``on_chunk``), and val_loss / val_bpb. Before
    the first global phase they are bit-identical; after it, within float32 rounding of the SGD steps."""
    diffs, res, want_loss, want_bpb = _run_both(TTT_ENV)
    assert max(diffs[:7]) == 0.0
    assert max(diffs) < 1e-4
    assert res.val_loss == pytest.approx(want_loss, abs=1e-6) and res.val_bpb == pytest.approx(want_bpb, abs=1e-6)


def test_documents_cut_in_the_global_phase_are_the_documented_difference():
    """With documents longer than the global phase's sequences, the record's SmearGate reads across the cut (it
    runs on the packed row) and pgolf's does not: the phases' weights differ by more than rounding, so the
    batches after them do; the first batch (before any phase) stays bit-identical."""
    diffs, _, _, _ = _run_both(CUT_ENV)
    assert max(diffs[:7]) == 0.0
    assert max(diffs[7:]) > 1e-3
