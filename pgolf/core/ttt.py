"""Phased score-first LoRA test-time training: ``eval.ttt=phased_lora``, the evaluation of the 2026-04-27 record
(PR #1855, https://github.com/openai/parameter-golf/tree/main/records/track_10min_16mb/
2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611).

Documents start at BOS tokens (each one's span runs to and includes the next BOS, whose prediction it scores).
They are sorted by length, cut into batches of ``ttt_batch_size``, and the batches run longest first. Each
document of a batch gets its own rank-r LoRA adapters: on Q, K, V, the attention output (read from the
attention's input) and the MLP output (read from the MLP's input) of every block *call* (a looped block gets one
adapter per pass), and on the output head. A document is read left to right in chunks of ``ttt_chunk_size``
targets: each chunk is **scored first** (its window: the last ``ttt_eval_seq_len`` tokens up to the chunk's end),
and only then are the adapters trained on that chunk's (already scored) losses with AdamW. The adapters' B is
zeroed for every batch; A is kept across the batches of a phase (``ttt_warm_start_a``).
After the first ``ttt_prefix_docs * k / ttt_num_phases`` documents (k = 1..phases; counted in whole batches), a
global phase trains every weight of the model with SGD on the documents scored so far (those first in length
order, up to the boundary), with attention masked at document starts, and fresh adapters follow.

The model's own forward is unchanged: the adapters ride on forward hooks of its modules
(:func:`adapters_attached`), so every option of pgolf's GPT (loop, parallel lanes, gates, smear) runs as trained.

Distributed: ranks take the batches of each phase's stretch of the queue round-robin (the record hands them out
first-come through lock files), the global phase splits its sequences across ranks and averages gradients, and
the sums are all-reduced. On one process the order equals the record's; on several, a rank's warm-started A
passes through other batches than the record's (first-come) would give it, so the numbers may differ slightly.
The other documented difference (docs/records-pr1855.md): in the global phase a document longer than the sequence
length is cut into attention segments, and pgolf's SmearGate does not read across such a cut (the record's does).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.core.config import ConfigError, EvalConfig
from pgolf.core.evaluate import ByteLUTs, bits_per_byte

EVAL_BUDGET_SECONDS = 600.0  # the challenge's evaluation limit (on 8xH100)


# -- documents, windows, batches, phases ---------------------------------------------------------------------

def find_docs(tokens: Tensor, bos_id: int) -> list[tuple[int, int]]:
    """(start, length) of each document: from a BOS to the next BOS inclusive (the last one to the stream's end).
    Tokens before the first BOS belong to no document and are not scored."""
    starts = (tokens == bos_id).nonzero(as_tuple=True)[0].tolist()
    docs = []
    for i, s in enumerate(starts):
        end = starts[i + 1] + 1 if i + 1 < len(starts) else tokens.numel()
        if end - s >= 2:
            docs.append((s, end - s))
    return docs


def chunk_window(ci: int, pred_len: int, num_chunks: int, chunk_size: int, seq_len: int) -> tuple[int, int, int, int]:
    """(window start, window length, chunk offset in the window, chunk length) of chunk ``ci`` of a document
    with ``pred_len`` targets: the chunk's targets and at most ``seq_len`` inputs ending with them."""
    chunk_end = pred_len if ci == num_chunks - 1 else (ci + 1) * chunk_size
    win_start = max(0, chunk_end - seq_len)
    chunk_start = ci * chunk_size
    return win_start, chunk_end - win_start, chunk_start - win_start, chunk_end - chunk_start


def doc_batches(docs: list[tuple[int, int]], batch_size: int) -> list[tuple[int, list[tuple[int, tuple[int, int]]]]]:
    """The processing queue: documents sorted by length (stable), cut into batches; batches longest first.
    Each entry: (batch index in length order, [(document index, (start, length)), ...])."""
    by_len = sorted(enumerate(docs), key=lambda e: e[1][1])
    batches = list(enumerate(by_len[i:i + batch_size] for i in range(0, len(by_len), batch_size)))
    batches.sort(key=lambda b: -max(length for _, (_, length) in b[1]))
    return batches


def phase_boundaries(num_docs: int, prefix_docs: int, num_phases: int) -> list[int]:
    limit = max(0, min(num_docs, prefix_docs))
    return [limit * (k + 1) // num_phases for k in range(num_phases)] if limit else []


def phase_ends(batch_sizes: list[int], boundaries: list[int]) -> list[int]:
    """Queue index of the batch after which each global phase runs: the first batch at whose end the documents
    scored reach the phase's boundary; at most one phase per batch (the record's pause rule)."""
    ends, done, p = [], 0, 0
    for qi, n in enumerate(batch_sizes):
        if p >= len(boundaries):
            break
        done += n
        if done >= boundaries[p]:
            ends.append(qi)
            p += 1
    return ends


# -- adapters ------------------------------------------------------------------------------------------------

class BatchedLoRA(nn.Module):
    """One rank-r adapter per batch row: x (B, T, in) -> (x A^T) B^T * alpha / r; A ~ U(+-1/sqrt(in)), B = 0."""

    def __init__(self, bsz: int, in_features: int, out_features: int, rank: int, alpha: float,
                 generator: torch.Generator):
        super().__init__()
        self.bound, self.scale = 1.0 / math.sqrt(in_features), alpha / rank
        self.A = nn.Parameter(torch.empty(bsz, rank, in_features).uniform_(-self.bound, self.bound,
                                                                            generator=generator))
        self.B = nn.Parameter(torch.zeros(bsz, out_features, rank))

    def reset(self, warm_start_a: bool, generator: torch.Generator) -> None:
        with torch.no_grad():
            if not warm_start_a:
                self.A.copy_(torch.empty(self.A.shape).uniform_(-self.bound, self.bound, generator=generator))
            self.B.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return ((x @ self.A.transpose(1, 2)) @ self.B.transpose(1, 2)) * self.scale


KINDS = ("q", "v", "k", "mlp", "o")  # creation order after the head's adapter: the order A draws the RNG


class DocumentAdapters(nn.Module):
    """The adapters of a batch of documents: the head, and per block call (slot) Q, V, K, MLP, O."""

    def __init__(self, model: nn.Module, bsz: int, ev: EvalConfig, generator: torch.Generator):
        super().__init__()
        cfg = model.cfg
        dim, vocab = cfg.model_dim, cfg.vocab_size
        kv_dim = cfg.num_kv_heads * (dim // cfg.num_heads)
        self.bsz, self.num_slots = bsz, len(block_calls(model))
        r, a = ev.ttt_lora_rank, ev.ttt_lora_alpha
        self.head = BatchedLoRA(bsz, dim, vocab, r, a, generator)
        outs = {"q": dim, "v": kv_dim, "k": kv_dim, "mlp": dim, "o": dim}
        enabled = {"q": True, "v": True, "k": ev.ttt_k_lora, "mlp": ev.ttt_mlp_lora, "o": ev.ttt_o_lora}
        self.slots = nn.ModuleDict({kind: nn.ModuleList([BatchedLoRA(bsz, dim, outs[kind], r, a, generator)
                                                         for _ in range(self.num_slots)])
                                    for kind in KINDS if enabled[kind]})

    def reset(self, warm_start_a: bool, generator: torch.Generator) -> None:
        self.head.reset(warm_start_a, generator)
        for kind in KINDS:
            for lora in self.slots[kind] if kind in self.slots else ():
                lora.reset(warm_start_a, generator)


def block_calls(model: nn.Module) -> list[int]:
    """The block indices in the order the forward calls them (a looped block once per pass)."""
    if model.looping_active:
        return [*model.encoder_indices, *model.decoder_indices]
    return list(range(len(model.blocks)))


@contextmanager
def adapters_attached(model: nn.Module, adapters: DocumentAdapters) -> Iterator[Callable[[], None]]:
    """Forward hooks that add each slot's adapter to Q, K, V (the projections' outputs), to the attention's
    output (from its input) and to the MLP's output (from its input). The n-th call of a module kind in a forward
    is slot n. Yields the function that starts a forward (resets the call counters); the hooks go on exit."""
    calls = dict.fromkeys(KINDS, 0)

    def hook(kind: str):
        def add(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
            slot = calls[kind]
            calls[kind] += 1
            return out + adapters.slots[kind][slot](args[0])
        return add

    targets = {"q": lambda b: b.attn.c_q, "k": lambda b: b.attn.c_k, "v": lambda b: b.attn.c_v,
               "o": lambda b: b.attn, "mlp": lambda b: b.mlp}
    handles = [targets[kind](block).register_forward_hook(hook(kind))
               for block in model.blocks for kind in KINDS if kind in adapters.slots]

    def start() -> None:
        for kind in calls:
            calls[kind] = 0
    try:
        yield start
    finally:
        for h in handles:
            h.remove()


def adapted_token_losses(model: nn.Module, adapters: DocumentAdapters, start: Callable[[], None], x: Tensor,
                         y: Tensor) -> Tensor:
    """Per-token cross-entropy (B, T) of the model with the batch's adapters (hooks attached), the head's adapter
    added to the logits before the softcap."""
    start()
    h = model.hidden(x)
    z = F.linear(h, model.tok_emb.weight) if model.lm_head is None else model.lm_head(h)
    z = z + adapters.head(h)
    logits = model.logit_softcap * torch.tanh(z / model.logit_softcap)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                           reduction="none").reshape(y.shape)


# -- one chunk: score, then train ----------------------------------------------------------------------------

def _chunk_step(losses_fn: Callable[[], Tensor], opt: torch.optim.Optimizer, train_rows: Tensor | None,
                chunk_offset: int, chunk_size: int, grad_steps: int) -> Tensor:
    """Score the chunk, then (``train_rows``: rows whose chunk is not their document's last) train the adapters
    on the scored losses of the chunk's targets. Returns the losses the chunk is scored with."""
    losses = losses_fn()
    if train_rows is not None:
        for step in range(grad_steps):
            cur = losses if step == 0 else losses_fn()
            per_doc = cur[:, chunk_offset:chunk_offset + chunk_size].mean(dim=-1)
            opt.zero_grad(set_to_none=True)
            (per_doc * train_rows).sum().backward()
            opt.step()
    return losses.detach()


@dataclass
class ChunkBatch:
    """One chunk step of a batch (for tests and studies): the losses of its forward and which entries it scored."""
    queue_index: int
    chunk: int
    doc_ids: list[int]  # index into find_docs() per row
    window_starts: list[int]  # stream position of each row's first input token
    losses: Tensor  # (B, T) float32
    scored: Tensor  # (B, T) bool


@dataclass
class TTTResult:
    val_loss: float
    val_bpb: float
    tokens: int
    bytes: int
    docs: int
    phases: int  # global phases run
    eval_time_s: float


# -- the global phase ----------------------------------------------------------------------------------------

def doc_segments(x: Tensor, bos_id: int, max_len: int) -> list[tuple[int, int]]:
    """(start, end) of the attention segments of a packed row: cut at each BOS (and at 0), long ones every
    ``max_len`` tokens (the record's ``_build_cu_seqlens``)."""
    starts = (x == bos_id).nonzero(as_tuple=True)[0].tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    bounds = starts + [x.numel()]
    segs = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        segs.extend((p, min(p + max_len, e)) for p in range(s, e, max_len))
    return segs


def masked_mean_loss(model: nn.Module, x: Tensor, y: Tensor, bos_id: int, max_len: int) -> Tensor:
    """Mean token loss of a packed row with attention kept inside each document segment: the segments run as
    the rows of one right-padded batch (causal attention never reads the padding)."""
    segs = doc_segments(x, bos_id, max_len)
    width = max(e - s for s, e in segs)
    xs = torch.zeros(len(segs), width, dtype=x.dtype, device=x.device)
    ys = torch.zeros_like(xs)
    real = torch.zeros(len(segs), width, dtype=torch.bool, device=x.device)
    for i, (s, e) in enumerate(segs):
        xs[i, :e - s], ys[i, :e - s], real[i, :e - s] = x[s:e], y[s:e], True
    nll = model(xs, ys, reduction="none").view(len(segs), width)
    return torch.where(real, nll, 0.0).sum() / x.numel()


def global_phase(model: nn.Module, tokens: Tensor, ev: EvalConfig, seq_len: int, bos_id: int, rank: int,
                 world_size: int, device: torch.device, autocast: bool,
                 log: Callable[[str], None] | None = None) -> None:
    """SGD (momentum, cosine LR over chunks of ``ttt_global_chunk_tokens``, the last chunk not trained on) on
    every weight over ``tokens`` (scored documents, concatenated), in sequences of ``seq_len``."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=ev.ttt_global_lr, momentum=ev.ttt_global_momentum)
    total = tokens.numel() - 1
    step_tokens = ev.ttt_global_chunk_tokens
    num_chunks = (total + step_tokens - 1) // step_tokens
    warmup = max(0, min(ev.ttt_global_warmup_chunks, num_chunks - 1))
    ctx = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if autocast else nullcontext()
    t0 = time.perf_counter()
    for ci in range(num_chunks - 1 if ev.ttt_global_epochs > 0 else 0):  # the last chunk is never trained on
        c0, c1 = ci * step_tokens, min((ci + 1) * step_tokens, total)
        n_seqs = (c1 - c0) // seq_len
        if n_seqs <= 0:
            continue
        if ci < warmup:
            lr = ev.ttt_global_warmup_start_lr + (ev.ttt_global_lr - ev.ttt_global_warmup_start_lr) * (
                ci / max(warmup - 1, 1))
        else:
            lr = ev.ttt_global_lr * 0.5 * (1.0 + math.cos(math.pi * max(ci - warmup, 0)
                                                          / max(num_chunks - 1 - warmup, 1)))
        for g in opt.param_groups:
            g["lr"] = lr
        s0, s1 = n_seqs * rank // world_size, n_seqs * (rank + 1) // world_size
        batch = ev.ttt_global_batch_seqs
        steps = math.ceil(math.ceil(n_seqs / world_size) / batch)  # every rank steps as often as the busiest
        for _ in range(ev.ttt_global_epochs):
            for i in range(steps):
                b0, b1 = s0 + i * batch, min(s0 + (i + 1) * batch, s1)
                opt.zero_grad(set_to_none=True)
                if b0 < b1:  # a rank with fewer sequences adds zero gradients for its missing steps
                    local = tokens[c0 + b0 * seq_len:c0 + b1 * seq_len + 1].to(device=device, dtype=torch.int64)
                    with ctx:
                        loss = masked_mean_loss(model, local[:-1], local[1:], bos_id, seq_len)
                    loss.backward()
                if world_size > 1:
                    for p in params:
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                        p.grad.mul_(1.0 / world_size)
                if ev.ttt_global_grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, ev.ttt_global_grad_clip)
                opt.step()
        if log is not None:
            log(f"tttg: c{ci + 1}/{num_chunks} lr:{lr:.6f} t:{time.perf_counter() - t0:.1f}s")
    for p in params:
        p.requires_grad_(False)


# -- the evaluation ------------------------------------------------------------------------------------------

def eval_ttt_phased(model: nn.Module, val_tokens: Tensor, luts: ByteLUTs, ev: EvalConfig, *, bos_id: int,
                    global_seq_len: int, seed: int, rank: int = 0, world_size: int = 1,
                    device: torch.device | None = None, autocast: bool = False,
                    log: Callable[[str], None] | None = None,
                    on_chunk: Callable[[ChunkBatch], None] | None = None) -> TTTResult:
    """Score ``val_tokens`` with phased score-first LoRA TTT. ``model`` is not changed (the global phases train a
    copy). ``seed`` seeds the draws of the adapters' A matrices (one CPU generator, in the record's order)."""
    t_start = time.perf_counter()
    device = device or val_tokens.device
    docs = find_docs(val_tokens, bos_id)
    if not docs:
        raise ConfigError(f"eval.ttt=phased_lora: the validation stream has no document start (no token "
                          f"model.bos_id={bos_id}); test-time training reads documents from BOS positions")
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    queue = doc_batches(docs, ev.ttt_batch_size)
    bounds = phase_boundaries(len(docs), ev.ttt_prefix_docs, ev.ttt_num_phases)
    ends = phase_ends([len(b) for _, b in queue], bounds)
    if log is not None:
        log(f"ttt_phased: total_docs:{len(docs)} prefix_docs:{bounds[-1] if bounds else 0} "
            f"suffix_docs:{len(docs) - (bounds[-1] if bounds else 0)} num_phases:{ev.ttt_num_phases} "
            f"boundaries:{bounds}")
    ctx = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if autocast else nullcontext()
    fused = device.type in ("cuda", "cpu")
    tokens_i = val_tokens.to(torch.int64)
    n_tok = val_tokens.numel()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    byte_sum = torch.zeros((), device=device, dtype=torch.float64)
    tok_sum = torch.zeros((), device=device, dtype=torch.float64)
    chunk, seq = ev.ttt_chunk_size, ev.ttt_eval_seq_len
    reusable = DocumentAdapters(model, ev.ttt_batch_size, ev, gen).to(device)
    scored_docs: list[tuple[int, int, int, int]] = []  # (length-order batch, row, start, length)
    segment_start = 0
    segments = [(e, True) for e in ends] + ([(len(queue) - 1, False)] if not ends or ends[-1] < len(queue) - 1 else [])
    for phase, (phase_end, global_after) in enumerate(segments, start=1):
        for qi in range(segment_start, phase_end + 1):
            if (qi - segment_start) % world_size != rank:
                scored_docs.extend((queue[qi][0], row, s, n) for row, (_, (s, n)) in enumerate(queue[qi][1]))
                continue
            order_idx, entries = queue[qi]
            bsz = len(entries)
            if bsz == reusable.bsz:
                reusable.reset(ev.ttt_warm_start_a, gen)
                adapters = reusable
            else:
                adapters = DocumentAdapters(model, bsz, ev, gen).to(device)
            opt = torch.optim.AdamW(adapters.parameters(), lr=ev.ttt_lora_lr, betas=(ev.ttt_beta1, ev.ttt_beta2),
                                    eps=1e-10, weight_decay=ev.ttt_weight_decay, fused=fused)
            pred_lens = [n - 1 for _, (_, n) in entries]
            n_chunks = [(p + chunk - 1) // chunk for p in pred_lens]
            n_chunks_t = torch.tensor(n_chunks, dtype=torch.int64, device=device)
            with adapters_attached(model, adapters) as start:
                for ci in range(max(n_chunks)):
                    starts = torch.zeros(bsz, dtype=torch.int64)
                    lens = torch.zeros(bsz, dtype=torch.int64)
                    offs = torch.zeros(bsz, dtype=torch.int64)
                    clens = torch.zeros(bsz, dtype=torch.int64)
                    for b, (_, (doc_start, _)) in enumerate(entries):
                        if ci < n_chunks[b]:
                            ws, wl, co, cl = chunk_window(ci, pred_lens[b], n_chunks[b], chunk, seq)
                            starts[b], lens[b], offs[b], clens[b] = doc_start + ws, wl, co, cl
                    _, width, offset, _ = chunk_window(ci, (ci + 1) * chunk, ci + 1, chunk, seq)
                    cols = torch.arange(width + 1)
                    idx = (starts[:, None] + cols[None, :]).clamp_(max=n_tok - 1)
                    window = tokens_i[idx].to(device)
                    valid = (cols[None, :width] < lens[:, None]).to(device)
                    x = torch.where(valid, window[:, :width], 0)
                    y = torch.where(valid, window[:, 1:], 0)
                    train_rows = (n_chunks_t - 1 > ci).float() if any(ci < n - 1 for n in n_chunks) else None

                    def losses_fn() -> Tensor:
                        with ctx:
                            return adapted_token_losses(model, adapters, start, x, y)

                    losses = _chunk_step(losses_fn, opt, train_rows, offset, chunk, ev.ttt_grad_steps)
                    pos = torch.arange(width, device=device)[None, :]
                    offs_d, clens_d = offs.to(device)[:, None], clens.to(device)[:, None]
                    scored = (clens_d > 0) & (pos >= offs_d) & (pos < offs_d + clens_d)
                    with torch.no_grad():
                        loss_sum += torch.where(scored, losses.to(torch.float64), 0.0).sum()
                        tgt_bytes = luts.target_bytes(x, y, idx[:, 1:]).to(device)  # a sidecar: by stream position
                        byte_sum += torch.where(scored, tgt_bytes, 0).to(torch.float64).sum()
                        tok_sum += clens.sum().to(device=device, dtype=torch.float64)
                    if on_chunk is not None:
                        on_chunk(ChunkBatch(qi, ci, [d for d, _ in entries], starts.tolist(), losses, scored))
            scored_docs.extend((order_idx, row, s, n) for row, (_, (s, n)) in enumerate(entries))
        segment_start = phase_end + 1
        if global_after:  # a global phase on the documents scored so far (first in length order)
            chosen = sorted(scored_docs)[:bounds[phase - 1]]
            if log is not None:
                log(f"ttpp: phase:{phase}/{len(bounds)} gd:{len(chosen)} t:{time.perf_counter() - t_start:.1f}s")
            if chosen:
                phase_tokens = torch.cat([val_tokens[s:s + n] for _, _, s, n in chosen])
            else:
                phase_tokens = val_tokens[:0]
            global_phase(model, phase_tokens, ev, global_seq_len, bos_id, rank, world_size, device, autocast, log)
            reusable = DocumentAdapters(model, ev.ttt_batch_size, ev, gen).to(device)
    if world_size > 1:
        for t in (loss_sum, byte_sum, tok_sum):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    if device.type == "cuda":
        torch.cuda.synchronize()
    val_loss = (loss_sum / tok_sum).item()
    return TTTResult(val_loss, bits_per_byte(val_loss, tok_sum.item(), byte_sum.item()), int(tok_sum.item()),
                     int(byte_sum.item()), len(docs), len(ends), time.perf_counter() - t_start)
