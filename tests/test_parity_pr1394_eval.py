"""Sliding-window evaluation parity with PR #1394 (https://github.com/openai/parameter-golf/pull/1394, record
2026-04-05): the record's ``eval_val_sliding`` (imported from ``PGOLF_PR1394_TRAIN_GPT``; the module skips
without it) and pgolf's ``eval_windows`` with ``eval.tail=score`` score the same targets with the same context on
a tiny stream, so loss and bpb agree. The record compiles its forward and runs it under CUDA autocast; here
``torch.compile`` is the identity and autocast is off (CPU), which changes neither the selection nor the sums."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
from torch import nn

from pgolf_testing import imported_script, reference_script_or_skip, stubbed_modules

PR_PATH = reference_script_or_skip("PGOLF_PR1394_TRAIN_GPT", "PR #1394")

from pgolf.core.evaluate import ByteLUTs, eval_windows, windows  # noqa: E402

VOCAB = 37


@pytest.fixture(scope="module")
def rec():
    with stubbed_modules("flash_attn_interface"), imported_script(PR_PATH, "_pr1394_train_gpt") as mod:
        yield mod


class ContextModel(nn.Module):
    """Logits that depend on the whole prefix (a causal running mean of embeddings), so a window's context
    changes each scored token's loss: a selection that gave a token other context would change the sum."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = nn.Parameter(torch.randn(VOCAB, 8, generator=g))
        self.out = nn.Parameter(torch.randn(8, VOCAB, generator=g))

    def forward_logits(self, x):
        e = self.emb[x]
        mean = e.cumsum(1) / torch.arange(1, x.shape[1] + 1).view(1, -1, 1)
        return mean @ self.out

    def forward(self, x, y=None, reduction="mean"):
        logits = self.forward_logits(x)
        if y is None:
            return logits
        return nn.functional.cross_entropy(logits.reshape(-1, VOCAB).float(), y.reshape(-1), reduction=reduction)


@pytest.mark.parametrize("n_tokens,seq_len,stride", [(200, 32, 8), (201, 32, 16), (97, 16, 4), (64, 16, 16)])
def test_sliding_window_scores_equal_the_records(rec, monkeypatch, n_tokens, seq_len, stride):
    g = torch.Generator().manual_seed(n_tokens)
    tokens = torch.randint(0, VOCAB, (n_tokens,), generator=g)
    luts = ByteLUTs(torch.randint(1, 4, (VOCAB,), generator=g, dtype=torch.int16),
                    torch.rand(VOCAB, generator=g) < 0.3, torch.rand(VOCAB, generator=g) < 0.1)
    model = ContextModel()
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    h = types.SimpleNamespace(eval_seq_len=seq_len, eval_stride=stride, rank=0, world_size=1)
    val = types.SimpleNamespace(val_tokens=tokens, base_bytes_lut=luts.base_bytes,
                                has_leading_space_lut=luts.has_leading_space, is_boundary_token_lut=luts.is_boundary)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the record asks for CUDA autocast, which is off on a CPU-only machine
        their_loss, their_bpb = rec.eval_val_sliding(h, torch.device("cpu"), val, model, batch_seqs=3)
    ours = eval_windows(model, tokens, luts, seq_len, stride, "score", 3, 0, 1, torch.device("cpu"), False)
    assert ours.tokens == n_tokens - 1  # every target once
    assert ours.val_loss == pytest.approx(float(their_loss), rel=1e-12)
    assert ours.val_bpb == pytest.approx(float(their_bpb), rel=1e-12)
    # the selection itself: the record's window starts are exactly pgolf's
    starts = [ws for ws in range(0, n_tokens - 1, stride) if ws + seq_len - stride < n_tokens - 1]
    assert [w[0] for w in windows(n_tokens - 1, seq_len, stride, "score")] == starts
