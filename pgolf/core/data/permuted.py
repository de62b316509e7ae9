"""Train batches in a seeded random block order (``data.order="permuted"``), separate from the init seed.

The train stream (every train shard concatenated in sorted path order, read through memory maps, never
loaded whole) is cut into non-overlapping blocks of ``seq_len + 1`` tokens, block ``b`` covering stream
tokens ``[b * (seq_len + 1), (b + 1) * (seq_len + 1))``; the tail shorter than a block is never read.
Epoch ``e`` visits the blocks in ``torch.randperm(n_blocks, generator=g)`` with ``g`` seeded by
:func:`epoch_seed` ``(order_seed, e)``. Each micro-step takes the next ``world_size * n_local`` blocks of
that order (crossing into the next epoch when one ends) and rank ``r`` keeps the ``r``-th run of ``n_local``;
so one optimizer step reads the same ``train_batch_tokens / seq_len`` blocks whatever the world size and
grad-accumulation split. A block gives ``x = block[:-1]``, ``y = block[1:]``.

The default ``data.order="sequential"`` is the official stream (:class:`~pgolf.core.data.loader.DistributedTokenLoader`);
:func:`make_train_loader` picks one of the two.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from pgolf.core.config import Config
from pgolf.core.data.loader import DistributedTokenLoader, _sorted_files
from pgolf.core.data.shards import ShardError, read_shard


def epoch_seed(order_seed: int, epoch: int) -> int:
    """The generator seed of one epoch's block order: the first 8 bytes of sha256(f"{order_seed}/{epoch}")."""
    return int.from_bytes(hashlib.sha256(f"{order_seed}/{epoch}".encode()).digest()[:8], "little")


def epoch_order(n_blocks: int, order_seed: int, epoch: int) -> torch.Tensor:
    """The block indices of ``epoch`` in visiting order (int64, a permutation of ``range(n_blocks)``)."""
    g = torch.Generator().manual_seed(epoch_seed(order_seed, epoch))
    return torch.randperm(n_blocks, generator=g)


class PermutedBlockLoader:
    """Per-rank ``(x, y)`` batches of whole blocks in a seeded per-epoch permutation (module docstring)."""

    def __init__(self, files: list[Path], rank: int, world_size: int, seq_len: int, order_seed: int,
                 device: torch.device | str = "cpu", vocab_size: int | None = None):
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"PermutedBlockLoader: need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        if seq_len <= 0:
            raise ValueError(f"PermutedBlockLoader: seq_len must be positive, got {seq_len}")
        self.files = _sorted_files(files)
        self.rank, self.world_size, self.seq_len, self.order_seed = rank, world_size, seq_len, order_seed
        self.device = torch.device(device)
        self.vocab_size = vocab_size
        self.shards = [read_shard(f) for f in self.files]  # memory maps: nothing is read yet
        sizes = np.array([s.size for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # stream offset of each shard's first token
        self.block_len = seq_len + 1
        self.n_blocks = int(self.starts[-1]) // self.block_len
        if self.n_blocks == 0:
            raise ValueError(f"the {len(self.files)} train shard(s) hold {int(self.starts[-1])} tokens, fewer than one "
                             f"block of train_seq_len + 1 = {self.block_len}")
        self._seek(0, 0)

    def _seek(self, epoch: int, cursor: int) -> None:
        self.epoch, self.cursor = epoch, cursor
        self.order = epoch_order(self.n_blocks, self.order_seed, epoch)

    def next_blocks(self, n: int) -> list[int]:
        """The next ``n`` block indices of the global order, moving to the next epoch as needed."""
        out: list[int] = []
        while len(out) < n:
            if self.cursor == self.n_blocks:
                self._seek(self.epoch + 1, 0)
            take = min(n - len(out), self.n_blocks - self.cursor)
            out.extend(self.order[self.cursor : self.cursor + take].tolist())
            self.cursor += take
        return out

    def read_block(self, b: int) -> np.ndarray:
        """Block ``b``'s ``seq_len + 1`` tokens (uint16), read across shard boundaries when it spans one."""
        lo, hi = b * self.block_len, (b + 1) * self.block_len
        parts = []
        i = int(np.searchsorted(self.starts, lo, side="right")) - 1
        while lo < hi:
            while self.starts[i + 1] <= lo:  # skip empty shards
                i += 1
            end = min(hi, int(self.starts[i + 1]))
            piece = self.shards[i][lo - int(self.starts[i]) : end - int(self.starts[i])]
            if self.vocab_size is not None and piece.size and int(piece.max()) >= self.vocab_size:
                at = int(np.argmax(piece >= self.vocab_size))
                raise ShardError(f"{self.files[i]}: token id {int(piece[at])} at token {lo - int(self.starts[i]) + at} is "
                                 f"outside the model's vocabulary [0, {self.vocab_size}); the shard belongs to another "
                                 "tokenizer or is corrupt")
            parts.append(piece)
            lo = end
        return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` int64 of shape ``(local_tokens // seq_len, seq_len)``, like the sequential loader's."""
        if seq_len != self.seq_len:
            raise ValueError(f"PermutedBlockLoader was built for seq_len={self.seq_len}, asked for {seq_len}")
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        if local_tokens <= 0 or local_tokens % seq_len:
            raise ValueError(
                f"batch tokens per rank and micro-step must be a positive multiple of seq_len: global_tokens={global_tokens} "
                f"// (world_size={self.world_size} * grad_accum_steps={grad_accum_steps}) = {local_tokens}, seq_len={seq_len}"
            )
        n_local = local_tokens // seq_len
        blocks = self.next_blocks(n_local * self.world_size)[self.rank * n_local : (self.rank + 1) * n_local]
        local = torch.from_numpy(np.stack([self.read_block(b) for b in blocks]).astype(np.int64))  # (n_local, seq_len+1)
        x, y = local[:, :-1], local[:, 1:]
        non_blocking = self.device.type == "cuda"
        return (x.contiguous().to(self.device, non_blocking=non_blocking),
                y.contiguous().to(self.device, non_blocking=non_blocking))

    def state_dict(self) -> dict:
        return {"order": "permuted", "order_seed": self.order_seed, "n_blocks": self.n_blocks,
                "block_len": self.block_len, "epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        """Continue at the saved position; seed, shards and seq_len must be those it was saved with."""
        if state.get("order") != "permuted":
            raise ValueError(f"loader state {sorted(state)} is not a permuted loader's (data.order changed?)")
        mine = {"order_seed": self.order_seed, "n_blocks": self.n_blocks, "block_len": self.block_len}
        saved = {k: state.get(k) for k in mine}
        if saved != mine:
            raise ValueError(f"permuted loader state {saved} does not match this loader {mine}")
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        if epoch < 0 or not 0 <= cursor <= self.n_blocks:
            raise ValueError(f"permuted loader state epoch={epoch} cursor={cursor} out of range ({self.n_blocks} blocks)")
        self._seek(epoch, cursor)


def make_train_loader(cfg: Config, files: list[Path], rank: int, world_size: int, device: torch.device | str):
    """The trainer's train loader for ``cfg.data.order``: official sequential stream, permuted blocks, or the
    record's shuffled windows (:mod:`pgolf.core.data.shuffled`)."""
    if cfg.data.order == "sequential":
        return DistributedTokenLoader(files, rank, world_size, device, vocab_size=cfg.model.vocab_size)
    if cfg.data.order == "doc_packing":
        from pgolf.core.data.packing import DocumentPackingLoader
        return DocumentPackingLoader(files, rank, world_size, cfg.model.bos_id, device, vocab_size=cfg.model.vocab_size)
    if cfg.data.order == "record_shuffled":
        from pgolf.core.data.shuffled import RecordShuffledLoader
        return RecordShuffledLoader(files, rank, world_size, cfg.train.train_seq_len, cfg.data.order_seed, device,
                                    vocab_size=cfg.model.vocab_size)
    return PermutedBlockLoader(files, rank, world_size, cfg.train.train_seq_len, cfg.data.order_seed, device,
                               vocab_size=cfg.model.vocab_size)
