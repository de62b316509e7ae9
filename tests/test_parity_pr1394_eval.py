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


@pytest.mark.parametrize("n_tokens,seq_len,stride", [(471, 32, 8), (200, 32, 16), (97, 16, 16)])
def test_as_pr_tail_scores_the_records_truncated_stream(rec, monkeypatch, tmp_path, n_tokens, seq_len, stride):
    """The record loads the validation stream cut to k * eval_seq_len + 1 tokens (its load_validation_tokens) and
    slides over that; ``eval.tail=truncate`` (the ``_as_pr`` preset) scores exactly those targets from the whole
    stream, while the preset (``eval.tail=score``) scores every target: 470 against 448 for 471 tokens at 32."""
    import numpy as np

    from pgolf.core.data.loader import load_validation_tokens
    from pgolf.core.data.shards import write_shard
    from pgolf.running.presets import get_preset

    g = torch.Generator().manual_seed(n_tokens)
    write_shard(tmp_path / "fineweb_val_000000.bin", torch.randint(0, VOCAB, (n_tokens,), generator=g).numpy()
                .astype(np.uint16))
    luts = ByteLUTs(torch.randint(1, 4, (VOCAB,), generator=g, dtype=torch.int16),
                    torch.rand(VOCAB, generator=g) < 0.3, torch.rand(VOCAB, generator=g) < 0.1)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    theirs_tokens = rec.load_validation_tokens(str(tmp_path / "fineweb_val_*.bin"), seq_len)
    ours_tokens = load_validation_tokens([tmp_path / "fineweb_val_000000.bin"], seq_len, tail="score")
    assert ours_tokens.numel() == n_tokens  # pgolf's sliding evaluation loads the whole stream
    h = types.SimpleNamespace(eval_seq_len=seq_len, eval_stride=stride, rank=0, world_size=1)
    val = types.SimpleNamespace(val_tokens=theirs_tokens, base_bytes_lut=luts.base_bytes,
                                has_leading_space_lut=luts.has_leading_space, is_boundary_token_lut=luts.is_boundary)
    model = ContextModel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_loss, their_bpb = rec.eval_val_sliding(h, torch.device("cpu"), val, model, batch_seqs=3)
    preset = get_preset("pr1394_sp8192_gptq_sdclip_loop45x2")
    as_pr = get_preset("pr1394_sp8192_gptq_sdclip_loop45x2_as_pr")
    run = {tail: eval_windows(model, ours_tokens.long(), luts, seq_len, stride, tail, 3, 0, 1, torch.device("cpu"),
                              False) for tail in (preset.eval.tail, as_pr.eval.tail)}
    record_targets = ((n_tokens - 1) // seq_len) * seq_len
    assert run["truncate"].tokens == record_targets == theirs_tokens.numel() - 1
    assert run["truncate"].val_loss == pytest.approx(float(their_loss), rel=1e-12)
    assert run["truncate"].val_bpb == pytest.approx(float(their_bpb), rel=1e-12)
    assert run["score"].tokens == n_tokens - 1
    if n_tokens == 471:
        assert (run["truncate"].tokens, run["score"].tokens) == (448, 470)
    if record_targets < n_tokens - 1:
        assert run["score"].val_loss != pytest.approx(float(their_loss), rel=1e-9)


@pytest.mark.parametrize("stride", [0, 8])
def test_truncate_tail_windows_end_at_a_multiple_of_seq_len(stride):
    """``tail=truncate`` is the windows of the stream cut to a multiple of seq_len: the same as ``drop`` without
    sliding, and sliding stops before the tail instead of reaching the end."""
    assert windows(470, 32, stride, "truncate") == windows(448, 32, stride, "drop")
    assert max(w[1] for w in windows(470, 32, stride, "truncate")) == 448
    if stride:
        assert max(w[1] for w in windows(470, 32, stride, "drop")) == 470
