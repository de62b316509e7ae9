"""val_loss and val_bpb, computed as the official script does, plus full-tail and sliding modes.

bpb = (sum of token NLL / ln 2) / (sum of bytes of the scored target tokens), bytes from the
SentencePiece lookup tables (leading-space and boundary rules, byte-fallback = 1 byte).

Window selection (``windows``): every target position in the stream is scored exactly once.
- non-overlapping (stride 0): consecutive windows of L; "drop" leaves the tail < L unscored
  (official; the loader truncates it), "score" scores it in one shorter final window;
- sliding (stride S): windows start every S tokens; the first scores all of its positions, each
  later one only its last S, so every scored token beyond the first window sees >= L - S tokens of
  context. Windows stop once every position is scored (no double-counted tail, unlike the PR #124 fix of PR #50's dropped tail).
- sliding with ``window_rule="rescore_tail"``: the rule of the seed PRs' evaluator (e.g.
  https://github.com/openai/parameter-golf/pull/128): a window starts every S tokens while it still
  has >= S targets, and each short trailing window scores its last S targets again, so the last S
  targets of the stream are counted up to L/S times. The trainer also gives it the official
  validation stream (truncated to a multiple of train_seq_len), as those PRs do.
- sliding with ``window_rule="full_windows"``: PR #326's rule
  (https://github.com/openai/parameter-golf/pull/326): only windows of the full length L, so the
  targets after the last one are never scored; the trainer first cuts the stream to a multiple of
  the eval length L, as that PR's loader does.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def bits_per_byte(val_loss: float, tokens: float, val_bytes: float) -> float:
    """Bits per token times tokens per byte, in the official script's order of operations (so the last bit agrees)."""
    return (val_loss / math.log(2.0)) * (tokens / val_bytes)


@dataclass
class ByteLUTs:
    base_bytes: Tensor  # int16[table]
    has_leading_space: Tensor  # bool[table]
    is_boundary: Tensor  # bool[table]

    @classmethod
    def from_numpy(cls, luts: tuple[np.ndarray, np.ndarray, np.ndarray], device: torch.device) -> "ByteLUTs":
        b, s, z = luts
        return cls(torch.as_tensor(b, dtype=torch.int16, device=device),
                   torch.as_tensor(s, dtype=torch.bool, device=device),
                   torch.as_tensor(z, dtype=torch.bool, device=device))

    def token_bytes(self, prev_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        """Bytes of each target token (int16, same shape as the ids)."""
        nb = self.base_bytes[tgt_ids].to(torch.int16)
        return nb + (self.has_leading_space[tgt_ids] & ~self.is_boundary[prev_ids]).to(torch.int16)

    def count(self, prev_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        return self.token_bytes(prev_ids, tgt_ids).to(torch.float64).sum()

    # The byte accounting the evaluators call; a CaseOps sidecar (pgolf.core.data.sidecar.SidecarBytes) answers the
    # same two calls from the targets' stream positions instead of their pieces.
    def target_bytes(self, prev_ids: Tensor, tgt_ids: Tensor, positions: Tensor) -> Tensor:
        """Bytes of each target (``positions``: their stream positions, unused here)."""
        return self.token_bytes(prev_ids, tgt_ids)

    def span_bytes(self, prev_ids: Tensor, tgt_ids: Tensor, start: int, end: int) -> Tensor:
        """float64 bytes of the targets ``tgt_ids`` at stream positions ``start..end-1``."""
        return self.count(prev_ids, tgt_ids)


@dataclass
class EvalResult:
    val_loss: float
    val_bpb: float
    tokens: int  # target tokens scored
    bytes: int


def windows(n_targets: int, seq_len: int, stride: int = 0, tail: str = "drop",
            window_rule: str = "once") -> list[tuple[int, int, int]]:
    """(start, end, score_from) triples: inputs tokens[start:end], targets tokens[start+1:end+1],
    losses counted for positions score_from..end-1 (absolute target indices). ``tail="truncate"`` first cuts the
    targets to a multiple of ``seq_len`` (PR #1394 scores only that prefix, sliding or not)."""
    L = seq_len
    if tail == "truncate":
        n_targets = (n_targets // L) * L
    out: list[tuple[int, int, int]] = []
    if 0 < stride < L and window_rule == "full_windows":
        return [(ws, ws + L, ws if ws == 0 else ws + L - stride) for ws in range(0, n_targets - L + 1, stride)]
    if 0 < stride < L and window_rule == "rescore_tail":
        starts = [ws for ws in range(0, n_targets, stride) if min(ws + L, n_targets) - ws >= stride]
        return [(ws, min(ws + L, n_targets), 0 if ws == 0 else min(ws + L, n_targets) - stride) for ws in starts]
    if stride <= 0 or stride >= L:
        full = n_targets // L
        out = [(i * L, (i + 1) * L, i * L) for i in range(full)]
        if tail == "score" and full * L < n_targets:
            out.append((full * L, n_targets, full * L))
        return out
    ws = 0
    while True:
        end = min(ws + L, n_targets)
        score_from = 0 if ws == 0 else ws + L - stride
        if score_from >= n_targets:
            break
        out.append((ws, end, score_from))
        if end >= n_targets:
            break
        ws += stride
    return out


def window_mode(seq_len: int, stride: int, tail: str, window_rule: str = "once") -> str:
    """The label runs and ``pgolf eval`` report for a window evaluation (the rule only when not the default)."""
    rule = "" if window_rule == "once" else f",rule={window_rule}"
    return f"windows(seq_len={seq_len},stride={stride},tail={tail}{rule})"


def _equal_length_batches(wins: list[tuple[int, int, int]], batch_seqs: int) -> list[list[tuple[int, int, int]]]:
    """Consecutive runs of at most ``batch_seqs`` windows of one length (only tail windows are shorter)."""
    out: list[list[tuple[int, int, int]]] = []
    for w in wins:
        if out and len(out[-1]) < batch_seqs and out[-1][0][1] - out[-1][0][0] == w[1] - w[0]:
            out[-1].append(w)
        else:
            out.append([w])
    return out


def _reduce(*ts: Tensor) -> None:
    if dist.is_available() and dist.is_initialized():
        for t in ts:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def batch_mean_loss(model: nn.Module, x: Tensor, y: Tensor, part_seqs: int = 0) -> Tensor:
    """``model(x, y)``, the batch's mean cross-entropy; with ``part_seqs`` > 0 computed ``part_seqs`` rows at a time.

    In parts, the model gives each part's per-token losses (``reduction="none"``) and the mean is taken by the
    kernel that takes it for the whole batch: ``nll_loss`` (mean) of a one-class input holding minus each loss
    sums exactly the log-probabilities the whole-batch ``cross_entropy`` sums, in the same (cascaded) order, and
    divides by the same count. Rows are independent (causal attention within a row), so on CPU the result is
    bit-identical to the whole batch at a fraction of its memory (``tests/test_evaluate.py`` checks the bits);
    on CUDA a matmul's kernel may depend on the row count, so the trainer uses parts on CPU only."""
    if part_seqs <= 0 or x.size(0) <= part_seqs:
        return model(x, y).detach()
    nll = torch.cat([model(x[i:i + part_seqs], y[i:i + part_seqs], reduction="none").detach()
                     for i in range(0, x.size(0), part_seqs)])  # (B * T,) in the whole batch's order
    return F.nll_loss(nll.neg().unsqueeze(1), torch.zeros_like(nll, dtype=torch.int64), reduction="mean")


@torch.inference_mode()
def eval_official(model: nn.Module, val_tokens: Tensor, luts: ByteLUTs, seq_len: int, val_batch_size: int,
                  rank: int, world_size: int, grad_accum_steps: int, device: torch.device,
                  autocast: bool, part_seqs: int = 0, *, doc_mask_bos: int | None = None) -> EvalResult:
    """The official evaluator: non-overlapping windows, batch means weighted by batch size. ``part_seqs`` > 0:
    each batch's mean goes through the model ``part_seqs`` sequences at a time (:func:`batch_mean_loss`).

    ``luts`` may be a byte sidecar (bytes of the target at stream position i: ``sidecar[i]``). ``doc_mask_bos`` (a
    token id, not None): each batch is one packed row attended document by document (segments from that BOS token,
    cut every ``seq_len`` tokens), as the 2026-04-27 record's ``eval_val`` does (pgolf.core.model.docmask)."""
    local_batch_tokens = val_batch_size // (world_size * grad_accum_steps)
    if local_batch_tokens < seq_len:
        raise ValueError(f"train.val_batch_size={val_batch_size} gives fewer than one sequence of {seq_len} per "
                         f"rank (world_size={world_size}, grad_accum_steps={grad_accum_steps})")
    local_batch_seqs = local_batch_tokens // seq_len
    total_seqs = (val_tokens.numel() - 1) // seq_len
    seq_start, seq_end = (total_seqs * rank) // world_size, (total_seqs * (rank + 1)) // world_size
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    tok = torch.zeros((), device=device, dtype=torch.float64)
    byt = torch.zeros((), device=device, dtype=torch.float64)
    was_training = model.training
    model.eval()
    ctx = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if autocast else nullcontext()
    for bs in range(seq_start, seq_end, local_batch_seqs):
        be = min(bs + local_batch_seqs, seq_end)
        local = val_tokens[bs * seq_len: be * seq_len + 1].to(device=device, dtype=torch.int64)
        x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
        with ctx:
            if doc_mask_bos is not None:
                from pgolf.core.model.docmask import cu_seqlens_from_tokens
                cu, _ = cu_seqlens_from_tokens(local[:-1], doc_mask_bos, seq_len)  # max_seqlen: seq_len bounds it
                loss = model(x.reshape(1, -1), y.reshape(1, -1), cu_seqlens=cu, max_seqlen=seq_len).detach()
            else:
                loss = batch_mean_loss(model, x, y, part_seqs)
        loss_sum += loss.to(torch.float64) * float(y.numel())
        tok += float(y.numel())
        byt += luts.span_bytes(x.reshape(-1), y.reshape(-1), bs * seq_len + 1, be * seq_len + 1)
    _reduce(loss_sum, tok, byt)
    model.train(was_training)
    val_loss = (loss_sum / tok).item()
    return EvalResult(val_loss, bits_per_byte(val_loss, tok.item(), byt.item()), int(tok.item()), int(byt.item()))


def compile_for_eval(model: nn.Module) -> nn.Module:
    """The window evaluator's forward, compiled (CUDA): static shapes, one graph per window length when
    :func:`eval_windows` runs with ``fixed_batch=True``. The training wrapper cannot be reused: it is
    compiled for the training call (mean loss) and may be wrapped in DDP."""
    return torch.compile(model, dynamic=False)


@torch.inference_mode()
def eval_windows(model: nn.Module, val_tokens: Tensor, luts: ByteLUTs, seq_len: int, stride: int, tail: str,
                 batch_seqs: int, rank: int, world_size: int, device: torch.device, autocast: bool,
                 window_rule: str = "once", *, fixed_batch: bool = False, doc_mask_bos: int | None = None) -> EvalResult:
    """Score the windows of :func:`windows` with per-token losses summed in float64.

    The accounting is masks over each batch (no per-window Python work), so at FineWeb scale
    (stride 64: ~1M windows) the forward passes, not the bookkeeping, set the pace.

    ``fixed_batch`` pads every short batch to ``batch_seqs`` rows that score nothing, so a compiled
    forward (:func:`compile_for_eval`) sees one batch shape per window length instead of recompiling
    for the last batch. Rows are independent (causal attention within a row), so the scores are the
    same up to kernel-level rounding.

    ``luts`` may be a byte sidecar (bytes by stream position). ``doc_mask_bos`` (a token id, not None): the batch's
    windows are packed into one row, each window and each document in it (from that BOS token) attended by itself."""
    n_targets = val_tokens.numel() - 1
    wins = windows(n_targets, seq_len, stride, tail, window_rule)
    mine = wins[(len(wins) * rank) // world_size: (len(wins) * (rank + 1)) // world_size]
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    tok = torch.zeros((), device=device, dtype=torch.float64)
    byt = torch.zeros((), device=device, dtype=torch.float64)
    was_training = model.training
    model.eval()
    ctx = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if autocast else nullcontext()
    for batch in _equal_length_batches(mine, batch_seqs):
        length = batch[0][1] - batch[0][0]
        pad = batch_seqs - len(batch) if fixed_batch else 0
        starts = torch.tensor([w[0] for w in batch] + [batch[0][0]] * pad, dtype=torch.int64)
        offsets = torch.tensor([w[2] - w[0] for w in batch] + [length] * pad, dtype=torch.int64, device=device)
        idx = starts[:, None] + torch.arange(length, dtype=torch.int64)[None, :]  # (B, T) input positions
        x = val_tokens[idx].to(device=device, dtype=torch.int64)
        y = val_tokens[idx + 1].to(device=device, dtype=torch.int64)
        with ctx:
            if doc_mask_bos is not None:
                cu = _window_segments(x, doc_mask_bos)
                nll = model(x.reshape(1, -1), y.reshape(1, -1), reduction="none", cu_seqlens=cu, max_seqlen=length)
            else:
                nll = model(x, y, reduction="none")
            nll = nll.detach().view(len(starts), length)
        scored = torch.arange(length, device=device)[None, :] >= offsets[:, None]  # (B, T): this window's targets
        loss_sum += torch.where(scored, nll.to(torch.float64), 0.0).sum()
        tok += scored.sum()
        nbytes = luts.target_bytes(x, y, idx + 1).to(device)
        byt += torch.where(scored, nbytes, 0).to(torch.float64).sum()
    _reduce(loss_sum, tok, byt)
    model.train(was_training)
    val_loss = (loss_sum / tok).item()
    return EvalResult(val_loss, bits_per_byte(val_loss, tok.item(), byt.item()), int(tok.item()), int(byt.item()))


def _window_segments(x: Tensor, bos_id: int) -> Tensor:
    """cu_seqlens of the rows of ``x`` (B, T) packed into one row: a segment at each row start and each BOS."""
    from pgolf.core.model.docmask import build_cu_seqlens

    b, t = x.shape
    starts = torch.unique(torch.cat([torch.arange(b, device=x.device) * t,
                                     (x.reshape(-1) == bos_id).nonzero(as_tuple=True)[0]]))
    return build_cu_seqlens(starts.tolist(), b * t, 0, device=x.device)[0]
