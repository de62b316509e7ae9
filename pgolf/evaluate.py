"""val_loss and val_bpb, computed as the official script does, plus full-tail and sliding modes.

bpb = (sum of token NLL / ln 2) / (sum of bytes of the scored target tokens), bytes from the
SentencePiece lookup tables (leading-space and boundary rules, byte-fallback = 1 byte).

Window selection (``windows``): every target position in the stream is scored exactly once.
- non-overlapping (stride 0): consecutive windows of L; "drop" leaves the tail < L unscored
  (official; the loader truncates it), "score" scores it in one shorter final window;
- sliding (stride S): windows start every S tokens; the first scores all of its positions, each
  later one only its last S, so every scored token beyond the first window sees >= L - S tokens of
  context. Windows stop once every position is scored (no double-counted tail, records.md s.8).
- ``rule="rescore_tail"`` restores the sliding rule of PR #124 kept by the records (e.g. PR #314): a
  window starts every S tokens while at least S targets remain, and each window after the first scores
  its last S targets, so the last S targets are scored again by every trailing (shorter) window. The
  trainer pairs it with the records' stream cut to a multiple of L.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn


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

    def count(self, prev_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        nb = self.base_bytes[tgt_ids].to(torch.int16)
        nb += (self.has_leading_space[tgt_ids] & ~self.is_boundary[prev_ids]).to(torch.int16)
        return nb.to(torch.float64).sum()


@dataclass
class EvalResult:
    val_loss: float
    val_bpb: float
    tokens: int  # target tokens scored
    bytes: int


def windows(n_targets: int, seq_len: int, stride: int = 0, tail: str = "drop",
            rule: str = "once") -> list[tuple[int, int, int]]:
    """(start, end, score_from) triples: inputs tokens[start:end], targets tokens[start+1:end+1],
    losses counted for positions score_from..end-1 (absolute target indices)."""
    L = seq_len
    out: list[tuple[int, int, int]] = []
    if stride <= 0 or stride >= L:
        full = n_targets // L
        out = [(i * L, (i + 1) * L, i * L) for i in range(full)]
        if tail == "score" and full * L < n_targets:
            out.append((full * L, n_targets, full * L))
        return out
    if rule == "rescore_tail":
        starts = [ws for ws in range(0, n_targets, stride) if ws == 0 or min(ws + L, n_targets) - ws >= stride]
        for ws in starts:
            end = min(ws + L, n_targets)
            out.append((ws, end, ws if ws == 0 else max(end - stride, ws)))
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


def _reduce(*ts: Tensor) -> None:
    if dist.is_available() and dist.is_initialized():
        for t in ts:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


@torch.inference_mode()
def eval_official(model: nn.Module, val_tokens: Tensor, luts: ByteLUTs, seq_len: int, val_batch_size: int,
                  rank: int, world_size: int, grad_accum_steps: int, device: torch.device,
                  autocast: bool) -> EvalResult:
    """The official evaluator: non-overlapping windows, batch means weighted by batch size."""
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
            loss = model(x, y).detach()
        loss_sum += loss.to(torch.float64) * float(y.numel())
        tok += float(y.numel())
        byt += luts.count(x.reshape(-1), y.reshape(-1))
    _reduce(loss_sum, tok, byt)
    model.train(was_training)
    val_loss = (loss_sum / tok).item()
    return EvalResult(val_loss, val_loss / math.log(2.0) * tok.item() / byt.item(), int(tok.item()), int(byt.item()))


@torch.inference_mode()
def eval_windows(model: nn.Module, val_tokens: Tensor, luts: ByteLUTs, seq_len: int, stride: int, tail: str,
                 batch_seqs: int, rank: int, world_size: int, device: torch.device, autocast: bool,
                 rule: str = "once") -> EvalResult:
    """Score the windows of :func:`windows` with per-token losses summed in float64."""
    n_targets = val_tokens.numel() - 1
    wins = windows(n_targets, seq_len, stride, tail, rule)
    mine = wins[(len(wins) * rank) // world_size: (len(wins) * (rank + 1)) // world_size]
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    tok = torch.zeros((), device=device, dtype=torch.float64)
    byt = torch.zeros((), device=device, dtype=torch.float64)
    was_training = model.training
    model.eval()
    ctx = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if autocast else nullcontext()
    i = 0
    while i < len(mine):
        length = mine[i][1] - mine[i][0]
        j = i
        while j < len(mine) and j - i < batch_seqs and mine[j][1] - mine[j][0] == length:
            j += 1
        batch = mine[i:j]
        x = torch.stack([val_tokens[s:e] for s, e, _ in batch]).to(device=device, dtype=torch.int64)
        y = torch.stack([val_tokens[s + 1:e + 1] for s, e, _ in batch]).to(device=device, dtype=torch.int64)
        with ctx:
            nll = model(x, y, reduction="none").detach().view(len(batch), length)
        for r, (s, e, f) in enumerate(batch):
            off = f - s
            loss_sum += nll[r, off:].to(torch.float64).sum()
            tok += e - f
            byt += luts.count(x[r, off:], y[r, off:])
        i = j
    _reduce(loss_sum, tok, byt)
    model.train(was_training)
    val_loss = (loss_sum / tok).item()
    return EvalResult(val_loss, val_loss / math.log(2.0) * tok.item() / byt.item(), int(tok.item()), int(byt.item()))
