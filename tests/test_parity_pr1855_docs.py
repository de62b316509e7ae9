"""Parity with the 2026-04-27 record (PR #1855, https://github.com/openai/parameter-golf/tree/main/records/
track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611) for its document pieces: the
segments of ``_build_cu_seqlens``, the ``DocumentPackingLoader`` (one rank and two), attention with ``cu_seqlens``
and the byte accounting of ``eval_val`` with the CaseOps sidecar. Its ``train_gpt.py`` comes from
``PGOLF_PR1855_TRAIN_GPT`` (skipped without it), imported with flash-attention and Triton stubbed
(:func:`pgolf_testing.record_pr1855_stubs`); its ``flash_attn_varlen_func`` is replaced by SDPA run on each segment
alone, and its pinned-memory calls by plain CPU tensors (no accelerator here)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgolf_testing import imported_script, record_pr1855_stubs, reference_script_or_skip

PR_PATH = reference_script_or_skip("PGOLF_PR1855_TRAIN_GPT", "PR #1855")

from pgolf.core.data.shards import write_shard  # noqa: E402
from pgolf.core.model.docmask import build_cu_seqlens  # noqa: E402


@pytest.fixture(scope="module")
def rec():
    with record_pr1855_stubs(), imported_script(PR_PATH, "_pr1855_train_gpt_docs") as mod:
        mod.BOS_ID = 1
        yield mod


@pytest.fixture
def no_pinning(monkeypatch):
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, **kw: empty(*a, **kw))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **kw: self)


def test_segments_equal_the_records(rec):
    g = np.random.default_rng(0)
    for trial in range(200):
        total = int(g.integers(1, 300))
        starts = sorted(set(g.integers(0, total, size=int(g.integers(0, 12))).tolist()))
        max_doc = int(g.choice([0, 7, 32, 2048]))
        bucket = int(g.choice([1, 8, 64]))
        want_cu, want_max = rec._build_cu_seqlens(list(starts), total, "cpu", max_doc, bucket)
        got_cu, got_max = build_cu_seqlens(starts, total, max_doc, bucket)
        assert torch.equal(got_cu, want_cu) and got_max == want_max, (trial, starts, total, max_doc)


def _stream(n_docs: int, seed: int, vocab: int = 50) -> np.ndarray:
    g = np.random.default_rng(seed)
    docs = [np.concatenate([[1], g.integers(2, vocab, int(g.integers(1, 90)))]) for _ in range(n_docs)]
    return np.concatenate([g.integers(2, vocab, 5)] + docs).astype(np.uint16)  # a few tokens before the first BOS


@pytest.mark.parametrize("world_size", [1, 2])
def test_packing_loader_equals_the_records(rec, tmp_path, no_pinning, world_size):
    """Same (x, y, cu_seqlens, max_seqlen) as the record's loader, rank by rank, over enough batches to wrap
    around three shards twice (a shard's rest is dropped when a batch does not fit)."""
    from pgolf.core.data.packing import DocumentPackingLoader

    for i, seed in enumerate((1, 2, 3)):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", _stream(60 + 20 * i, seed))
    files = sorted(tmp_path.glob("fineweb_train_*.bin"))
    seq_len, accum, global_tokens = 64, 2, 2 * 2 * 200
    for rank in range(world_size):
        h = types.SimpleNamespace(rank=rank, world_size=world_size, train_seq_len=seq_len,
                                  train_files=str(tmp_path / "fineweb_train_*.bin"))
        theirs = rec.DocumentPackingLoader(h, torch.device("cpu"))
        ours = DocumentPackingLoader(files, rank, world_size, bos_id=1)
        for step in range(40):
            tx, ty, tcu, tmax = theirs.next_batch(global_tokens, accum)
            ox, oy, ocu, omax = ours.next_batch(global_tokens, seq_len, accum)
            assert torch.equal(ox, tx) and torch.equal(oy, ty), (rank, step)
            assert torch.equal(ocu, tcu) and omax == tmax, (rank, step)
        assert ours.file_idx != 0 or ours.cursor > 0


def test_packing_loader_resumes_where_it_stopped(tmp_path):
    from pgolf.core.data.packing import DocumentPackingLoader

    write_shard(tmp_path / "fineweb_train_000000.bin", _stream(80, 5))
    write_shard(tmp_path / "fineweb_train_000001.bin", _stream(80, 6))
    files = sorted(tmp_path.glob("*.bin"))
    a = DocumentPackingLoader(files, 0, 1)
    for _ in range(7):
        a.next_batch(256, 64, 1)
    b = DocumentPackingLoader(files, 0, 1)
    b.load_state_dict(a.state_dict())
    for _ in range(10):
        assert all(torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v
                   for u, v in zip(a.next_batch(256, 64, 1), b.next_batch(256, 64, 1)))


def _varlen_by_segments(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, window_size=None):
    """flash_attn_varlen_func's layout ((T, H, hd), int32 starts) through SDPA on each segment by itself."""
    out = torch.zeros_like(q)
    cu = cu_seqlens_q.tolist()
    for a, b in zip(cu[:-1], cu[1:]):
        if b > a:
            y = F.scaled_dot_product_attention(q[a:b].transpose(0, 1)[None], k[a:b].transpose(0, 1)[None],
                                               v[a:b].transpose(0, 1)[None], is_causal=causal,
                                               enable_gqa=q.size(1) != k.size(1))
            out[a:b] = y[0].transpose(0, 1)
    return out


@pytest.mark.parametrize("xsa", [False, True])
def test_attention_with_cu_seqlens_equals_the_records(rec, monkeypatch, xsa):
    """The record's CausalSelfAttention given cu_seqlens (its varlen kernel as SDPA per segment) and pgolf's
    (block-diagonal mask through SDPA) with the same weights agree on a packed row of four documents, one of them
    cut by max_doc_len."""
    from pgolf.core.model.docmask import cu_seqlens_from_tokens
    from pgolf.core.model.layers import CausalSelfAttention

    monkeypatch.setattr(rec, "flash_attn_varlen_func", _varlen_by_segments)
    dim, H, KV, T = 64, 4, 2, 60
    torch.manual_seed(0)
    theirs = rec.CausalSelfAttention(dim, H, KV, 10000.0, 5.0, 32, yarn=False, gate_window=12,
                                     sparse_attn_gate=True, sparse_attn_gate_scale=0.5)
    theirs.use_xsa = xsa
    ours = CausalSelfAttention(dim, H, KV, 10000.0, 5.0, 32, ntk=True, xsa=xsa, gate_window=12, gate_scale=0.5,
                               doc_mask=True)
    w = {n: torch.randn(*s) / 8 for n, s in (("q", (dim, dim)), ("k", (dim // 2, dim)), ("v", (dim // 2, dim)),
                                             ("o", (dim, dim)))}
    with torch.no_grad():
        ours.c_q.weight.copy_(w["q"]), ours.c_k.weight.copy_(w["k"]), ours.c_v.weight.copy_(w["v"])
        ours.proj.weight.copy_(w["o"])
        gw = torch.randn(H, 12)
        ours.attn_gate_w.copy_(gw), theirs.attn_gate_w.copy_(gw)
    tokens = torch.randint(2, 50, (T,))
    tokens[[0, 7, 20, 51]] = 1  # documents of 7, 13, 31 (cut at 20 + 24) and 9 tokens
    cu, mx = cu_seqlens_from_tokens(tokens, 1, max_doc_len=24)
    x = torch.randn(1, T, dim)
    want = theirs(x, w["q"], w["k"], w["v"], w["o"], cu_seqlens=cu, max_seqlen=mx)
    got = ours(x, cu, mx)
    assert (got - want).abs().max() < 1e-6
    assert (ours(x) - want).abs().max() > 1e-3  # the mask is live


def test_sidecar_byte_accounting_equals_the_records_eval_val(rec, tmp_path):
    """pgolf's official-mode evaluation with a CaseOps byte sidecar and document masking gives the record's
    eval_val loss and bpb (its model replaced by one stand-in that both call the same way)."""
    from pgolf.core.data.sidecar import SidecarBytes
    from pgolf.core.evaluate import eval_official

    torch.manual_seed(0)
    n, seq_len, vocab = 4 * 32 + 1, 32, 50
    tokens = torch.randint(2, vocab, (n,))
    tokens[[0, 10, 45, 90]] = 1
    sidecar = torch.randint(0, 5, (n,), dtype=torch.int32)

    class Stub(torch.nn.Module):  # logits depend on the token and on its segment's length so far
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, vocab)

        def seg_pos(self, cu, T):
            from pgolf.core.model.docmask import segment_ids
            seg = segment_ids(cu, T)
            return torch.arange(T) - cu.long()[seg]

        def forward_logits(self, ids, cu_seqlens=None, max_seqlen=0):
            return self.emb(ids) + self.seg_pos(cu_seqlens, ids.size(1)).float()[None, :, None] * 0.01

        def forward(self, ids, target_ids=None, reduction="mean", cu_seqlens=None, max_seqlen=0):
            logits = self.forward_logits(ids, cu_seqlens, max_seqlen).reshape(-1, vocab)
            return F.cross_entropy(logits, target_ids.reshape(-1), reduction=reduction)

    model = Stub()
    h = types.SimpleNamespace(eval_seq_len=seq_len, val_batch_tokens=2 * seq_len, world_size=1, grad_accum_steps=1,
                              rank=0)
    val = types.SimpleNamespace(val_tokens=tokens, val_bytes=sidecar)
    want_loss, want_bpb = rec.eval_val(h, torch.device("cpu"), val, model)
    got = eval_official(model, tokens, SidecarBytes(sidecar, "sidecar"), seq_len, 2 * seq_len, 0, 1, 1,
                        torch.device("cpu"), False, doc_mask_bos=1)
    assert abs(got.val_loss - want_loss) < 1e-6 and abs(got.val_bpb - want_bpb) < 1e-6
    assert got.bytes == int(sidecar[1:].sum())
