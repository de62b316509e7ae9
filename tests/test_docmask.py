"""Document-masked attention (pgolf.core.model.docmask, ``cu_seqlens`` through the GPT): segments, the mask, and the
whole model on a packed row equal to the model run on each document alone."""

from __future__ import annotations

import pytest
import torch

from pgolf.core.config import ModelConfig
from pgolf.core.model.docmask import build_cu_seqlens, cu_seqlens_from_tokens, document_mask


def test_segments_start_at_documents_and_every_max_doc_len():
    cu, mx = build_cu_seqlens([3, 10], 20, max_doc_len=4, bucket_size=8)
    assert cu.dtype == torch.int32
    assert cu.tolist() == [0, 3, 7, 10, 14, 18, 20, 20]  # doc 0..3, 3..10 cut at 7, 10..20 cut at 14 and 18
    assert mx == 4
    cu, mx = build_cu_seqlens([0, 5], 9, bucket_size=64)
    assert cu.tolist()[:3] == [0, 5, 9] and len(cu) == 64 and set(cu.tolist()[2:]) == {9} and mx == 5


def test_mask_is_block_diagonal_causal():
    cu, _ = build_cu_seqlens([2, 5], 7, bucket_size=4)
    m = document_mask(cu, 7).int()
    assert m[4].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert m[5].tolist() == [0, 0, 0, 0, 0, 1, 0]
    assert m[1].tolist() == [1, 1, 0, 0, 0, 0, 0]


def _model(**kw):
    from pgolf.core.model.gpt import GPT
    kw = {"doc_mask": True, **kw}
    cfg = ModelConfig(vocab_size=64, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2, **kw)
    torch.manual_seed(0)
    model = GPT(cfg, train_seq_len=32, ntk=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # zero-init projections would hide the attention
    return model


@pytest.mark.parametrize("kw", [{}, {"smear_gate": "input", "gate_window": 8, "sparse_attn_gate": True,
                                     "control_patterns": (*ModelConfig().control_patterns, "attn_gate_w"),
                                     "parallel_start_layer": 3,
                                     "xsa_last_n": 2}])
def test_packed_row_equals_each_document_alone(kw):
    """Documents (each starting with BOS = 1) packed into one row with cu_seqlens give, token for token, the logits
    of the same model run on every document by itself; without cu_seqlens the later documents differ."""
    if "parallel_start_layer" in kw:
        kw["control_patterns"] = (*kw["control_patterns"], "parallel_resid_lambdas", "parallel_post_lambdas")
    model = _model(**kw)
    g = torch.Generator().manual_seed(1)
    docs = [torch.cat([torch.tensor([1]), torch.randint(2, 64, (n - 1,), generator=g)]) for n in (9, 17, 5, 20)]
    row = torch.cat(docs)[None]
    cu, mx = cu_seqlens_from_tokens(row[0], bos_id=1, max_doc_len=32)
    with torch.no_grad():
        packed = model(row, cu_seqlens=cu, max_seqlen=mx)[0]
        alone = torch.cat([model(d[None])[0] for d in docs])
        plain = model(row)[0]
    assert (packed - alone).abs().max() < 1e-5
    assert (plain - alone)[9:].abs().max() > 1e-3
    # losses too (the trainer's call: mean cross-entropy over the packed row)
    y = torch.randint(0, 64, row.shape, generator=g)
    with torch.no_grad():
        loss = model(row, y, cu_seqlens=cu, max_seqlen=mx)
    want = torch.nn.functional.cross_entropy(alone, y[0])
    assert abs(loss.item() - want.item()) < 1e-5


def test_a_batch_of_several_rows_is_refused():
    model = _model()
    cu, mx = build_cu_seqlens([0], 8)
    with pytest.raises(ValueError, match="one row"):
        model(torch.zeros(2, 8, dtype=torch.long), cu_seqlens=cu, max_seqlen=mx)


def test_cu_seqlens_need_the_switch():
    with pytest.raises(ValueError, match="without model.doc_mask"):
        _model(doc_mask=False)(torch.zeros(1, 8, dtype=torch.long), cu_seqlens=build_cu_seqlens([0], 8)[0])


@pytest.mark.gpu
def test_flash_varlen_equals_the_mask_on_cuda():
    """On CUDA with flash-attention importable, the varlen kernel and the block-diagonal mask give the same
    attention in bf16 (the kernel's rounding)."""
    from pgolf.core.model import docmask

    if not torch.cuda.is_available() or docmask.FLASH_VARLEN is None:
        pytest.skip("needs CUDA and flash-attention (flash_attn_interface or flash_attn)")
    torch.manual_seed(0)
    T, H, KV, hd = 300, 8, 4, 64
    q, k, v = (torch.randn(1, h, T, hd, device="cuda", dtype=torch.bfloat16) for h in (H, KV, KV))
    tokens = torch.randint(2, 50, (T,), device="cuda")
    tokens[[0, 40, 41, 200]] = 1
    cu, mx = cu_seqlens_from_tokens(tokens, 1, max_doc_len=128)
    flash = docmask.document_attention(q, k, v, cu, mx)
    masked = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=document_mask(cu, T),
                                                              enable_gqa=True)
    assert (flash.float() - masked.float()).abs().max() < 2e-2
