"""Train batches sampled like the 2026-04-05 record's shuffled sequence loader (``data.order="record_shuffled"``).

The record (https://github.com/openai/parameter-golf/pull/1394) replaced the stream with independent random
windows per rank. The rule, as implemented here:

- Rank ``r`` of ``W`` reads only its own train shards, ``files[r::W]`` of the sorted list, with its own
  ``numpy`` generator ``PCG64(order_seed * W + r)`` (the record: ``PCG64(rank)``, i.e. ``order_seed=0``).
- Drawing a shard of ``n`` tokens: a phase ``p``, uniform in ``[0, min(seq_len - 1, n - seq_len - 1)]``
  (``p = 0`` and no draw when that bound is <= 0), then the window starts ``p + k * seq_len`` for ``k`` in
  ``rng.permutation((n - 1 - p) // seq_len)``; starts are used from the end of that list. Every shard of the
  rank is drawn, in file order, at construction and again when all of them are used up (an "epoch").
- Each sequence of a batch: a shard is chosen with ``rng.choice`` with probability proportional to its unused
  starts, its next start ``s`` is taken, and ``x = tokens[s : s + seq_len]``, ``y = tokens[s + 1 : s + seq_len + 1]``.

So a rank sees every window of its shards once per epoch in random order, windows never overlap, and ranks
never share a shard (at least ``W`` train shards are needed). A fresh loader starts over; the trainer builds one
after its compile warm-up and one for GPTQ calibration, as the record does. The position (generator states
and the starts used since the last draw) can be saved and restored; each rank's state is its own, so the
trainer gathers them into the checkpoint (``{"by_rank": [...]}``, see :meth:`RecordShuffledLoader.state_dict`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pgolf.core.data.loader import _sorted_files
from pgolf.core.data.shards import ShardError, read_shard

ORDER = "record_shuffled"


def rank_seed(order_seed: int, rank: int, world_size: int) -> int:
    """The seed of rank ``rank``'s generator: ``order_seed * world_size + rank`` (the record's is ``rank``)."""
    return order_seed * world_size + rank


def _rng_state(rng: np.random.Generator) -> dict:
    """The generator's state with its 128-bit integers as strings (checkpoints hold only plain small values)."""
    s = rng.bit_generator.state
    return {"state": str(s["state"]["state"]), "inc": str(s["state"]["inc"]),
            "has_uint32": int(s["has_uint32"]), "uinteger": int(s["uinteger"])}


def _set_rng_state(rng: np.random.Generator, saved: dict) -> None:
    rng.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
                               "has_uint32": int(saved["has_uint32"]), "uinteger": int(saved["uinteger"])}


class RecordShuffledLoader:
    """Per-rank ``(x, y)`` batches of random non-overlapping windows of the rank's own shards (module docstring)."""

    def __init__(self, files: list[Path], rank: int, world_size: int, seq_len: int, order_seed: int = 0,
                 device: torch.device | str = "cpu", vocab_size: int | None = None):
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"RecordShuffledLoader: need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        if seq_len <= 0:
            raise ValueError(f"RecordShuffledLoader: seq_len must be positive, got {seq_len}")
        all_files = _sorted_files(files)
        self.files = all_files[rank::world_size]
        if not self.files:
            raise ValueError(f"data.order={ORDER!r} gives each rank its own train shards (files[rank::world_size]), but "
                             f"{len(all_files)} shard(s) leave rank {rank} of {world_size} none; use at least "
                             f"{world_size} train shards or data.order='permuted'")
        self.rank, self.world_size, self.seq_len, self.order_seed = rank, world_size, seq_len, order_seed
        self.device = torch.device(device)
        self.vocab_size = vocab_size
        self.shards = [read_shard(f) for f in self.files]  # memory maps: nothing is read yet
        self.num_tokens = [int(s.size) for s in self.shards]
        self.rng = np.random.Generator(np.random.PCG64(rank_seed(order_seed, rank, world_size)))
        self.epoch = -1
        self._draw_all()
        if not self.left.any():
            raise ValueError(f"rank {rank}'s train shards {[str(f) for f in self.files]} hold {self.num_tokens} tokens: "
                             f"no shard has a window of train_seq_len + 1 = {seq_len + 1} tokens")

    def _draw(self, n: int) -> np.ndarray:
        """One shard's window starts (int64), in the order they are used from the end (module docstring)."""
        max_phase = min(self.seq_len - 1, max(0, n - self.seq_len - 1))
        phase = int(self.rng.integers(max_phase + 1)) if max_phase > 0 else 0
        order = self.rng.permutation(max(0, (n - 1 - phase) // self.seq_len))
        return phase + order.astype(np.int64) * self.seq_len

    def _draw_all(self) -> None:
        self.epoch_rng = _rng_state(self.rng)  # enough to draw this epoch's starts again on resume
        self.epoch += 1
        self.starts = [self._draw(n) for n in self.num_tokens]
        self.left = np.array([s.size for s in self.starts], dtype=np.int64)  # unused starts per shard

    def _window(self, si: int, start: int) -> np.ndarray:
        w = self.shards[si][start : start + self.seq_len + 1]
        if self.vocab_size is not None and int(w.max()) >= self.vocab_size:
            at = int(np.argmax(w >= self.vocab_size))
            raise ShardError(f"{self.files[si]}: token id {int(w[at])} at token {start + at} is outside the model's "
                             f"vocabulary [0, {self.vocab_size}); the shard belongs to another tokenizer or is corrupt")
        return w

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` int64 of shape ``(local_tokens // seq_len, seq_len)``, like the other loaders'."""
        if seq_len != self.seq_len:
            raise ValueError(f"RecordShuffledLoader was built for seq_len={self.seq_len}, asked for {seq_len}")
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        if local_tokens <= 0 or local_tokens % seq_len:
            raise ValueError(
                f"batch tokens per rank and micro-step must be a positive multiple of seq_len: global_tokens={global_tokens} "
                f"// (world_size={self.world_size} * grad_accum_steps={grad_accum_steps}) = {local_tokens}, seq_len={seq_len}"
            )
        rows = np.empty((local_tokens // seq_len, seq_len + 1), dtype=np.int64)
        for row in rows:
            if self.left.sum() <= 0:
                self._draw_all()
            weights = self.left.astype(np.float64)
            si = int(self.rng.choice(len(self.files), p=weights / weights.sum()))
            self.left[si] -= 1
            row[:] = self._window(si, int(self.starts[si][self.left[si]]))
        local = torch.from_numpy(rows)  # (n_local, seq_len + 1)
        non_blocking = self.device.type == "cuda"
        return (local[:, :-1].contiguous().to(self.device, non_blocking=non_blocking),
                local[:, 1:].contiguous().to(self.device, non_blocking=non_blocking))

    def _identity(self) -> dict:
        return {"order_seed": self.order_seed, "rank": self.rank, "world_size": self.world_size, "seq_len": self.seq_len,
                "num_tokens": list(self.num_tokens)}

    def state_dict(self) -> dict:
        """This rank's position. ``per_rank``: other ranks' states differ, so a checkpoint needs every rank's."""
        used = [int(s.size - k) for s, k in zip(self.starts, self.left, strict=True)]
        return {"order": ORDER, "per_rank": True, **self._identity(), "epoch": self.epoch, "epoch_rng": self.epoch_rng,
                "rng": _rng_state(self.rng), "used": used}

    def load_state_dict(self, state: dict) -> None:
        """Continue at a saved position: this rank's :meth:`state_dict`, or ``{"by_rank": [one per rank]}``."""
        if state.get("order") != ORDER:
            raise ValueError(f"loader state {sorted(state)} is not a {ORDER} loader's (data.order changed?)")
        if "by_rank" in state:
            if len(state["by_rank"]) != self.world_size:
                raise ValueError(f"{ORDER} loader state was saved by {len(state['by_rank'])} ranks, this run has "
                                 f"{self.world_size}; resume with the same world size")
            state = state["by_rank"][self.rank]
        mine, saved = self._identity(), {k: state.get(k) for k in self._identity()}
        if saved != mine:
            raise ValueError(f"{ORDER} loader state {saved} does not match this loader {mine}")
        _set_rng_state(self.rng, state["epoch_rng"])
        self.epoch = int(state["epoch"]) - 1
        self._draw_all()
        used = [int(u) for u in state["used"]]
        if len(used) != len(self.starts) or any(not 0 <= u <= s.size for u, s in zip(used, self.starts)):
            raise ValueError(f"{ORDER} loader state used={used} out of range for {[s.size for s in self.starts]} windows")
        self.left = np.array([s.size - u for s, u in zip(self.starts, used)], dtype=np.int64)
        _set_rng_state(self.rng, state["rng"])
