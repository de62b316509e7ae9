"""Document-packing train loader (``data.order="doc_packing"``), the 2026-04-27 record's ``DocumentPackingLoader``.

The record (https://github.com/openai/parameter-golf/pull/1855) reads its train shards in sorted order, cyclically,
and cuts each batch as one packed row per rank, with the documents' starts (BOS tokens) for document-masked
attention (:mod:`pgolf.core.model.docmask`). The rule, as implemented here:

- a shard is read from its first BOS token (tokens before it are never used);
- a batch of ``local_tokens = global_tokens // (world_size * grad_accum_steps)`` per rank takes
  ``(local_tokens + 1) * world_size`` tokens from the cursor; rank ``r`` keeps span ``r``, ``x`` its first
  ``local_tokens`` tokens and ``y`` the next ones, both of shape ``(1, local_tokens)``; the cursor advances by
  the whole chunk;
- when the chunk does not fit in the rest of the shard, that rest is dropped and the next shard (cyclically)
  is read from its first BOS;
- ``cu_seqlens`` and ``max_seqlen`` come from the BOS positions among the rank's inputs, documents cut every
  ``seq_len`` tokens from their start (``max_doc_len = train_seq_len``), padded to 64 entries
  (:func:`pgolf.core.model.docmask.build_cu_seqlens`).

``next_batch`` returns ``(x, y, cu_seqlens, max_seqlen)``; the trainer passes the last two to the model when
``model.doc_mask`` is on. The position (shard index and cursor) can be saved and restored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pgolf.core.data.loader import _sorted_files
from pgolf.core.data.shards import ShardError, read_shard
from pgolf.core.model.docmask import CU_BUCKET, build_cu_seqlens

ORDER = "doc_packing"


class DocumentPackingLoader:
    """Packed rows of whole documents with their ``cu_seqlens`` (module docstring)."""

    def __init__(self, files: list[Path], rank: int, world_size: int, bos_id: int = 1,
                 device: torch.device | str = "cpu", vocab_size: int | None = None, cu_bucket: int = CU_BUCKET):
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"DocumentPackingLoader: need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        if bos_id < 0:
            raise ValueError(f"data.order={ORDER!r} needs documents that start with BOS (model.bos_id >= 0), got {bos_id}")
        self.files = _sorted_files(files)
        self.rank, self.world_size, self.bos_id = rank, world_size, bos_id
        self.device = torch.device(device)
        self.vocab_size, self.cu_bucket = vocab_size, cu_bucket
        self._load(0)

    def _load(self, file_idx: int, cursor: int | None = None) -> None:
        self.file_idx = file_idx
        self.tokens = read_shard(self.files[file_idx])
        self.bos_idx = np.flatnonzero(np.asarray(self.tokens) == self.bos_id)
        if self.bos_idx.size == 0:
            raise ShardError(f"{self.files[file_idx]}: no BOS token (id {self.bos_id}); data.order={ORDER!r} packs "
                             "documents that start with BOS (build the data with BOS per document)")
        self.cursor = int(self.bos_idx[0]) if cursor is None else cursor

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int):
        """``(x, y, cu_seqlens, max_seqlen)``: int64 ``(1, local_tokens)`` rows on the loader's device, int32
        ``cu_seqlens`` there too, ``max_seqlen`` an int."""
        local = global_tokens // (self.world_size * grad_accum_steps)
        if local <= 0 or seq_len <= 0:
            raise ValueError(f"batch tokens per rank and micro-step must be positive: global_tokens={global_tokens} "
                             f"// (world_size={self.world_size} * grad_accum_steps={grad_accum_steps}) = {local}")
        span = local + 1
        chunk = span * self.world_size
        tried = 0
        while self.cursor + chunk > self.tokens.size:
            tried += 1
            if tried > len(self.files):
                raise ValueError(f"no train shard holds a batch of {chunk} tokens after its first BOS (e.g. "
                                 f"{self.files[0]}); use fewer batch tokens or larger shards")
            self._load((self.file_idx + 1) % len(self.files))
        start = self.cursor + self.rank * span
        buf = np.asarray(self.tokens[start : start + span], dtype=np.int64)
        if self.vocab_size is not None and int(buf.max()) >= self.vocab_size:
            at = int(np.argmax(buf >= self.vocab_size))
            raise ShardError(f"{self.files[self.file_idx]}: token id {int(buf[at])} at token {start + at} is outside "
                             f"the model's vocabulary [0, {self.vocab_size}); the shard belongs to another tokenizer "
                             "or is corrupt")
        lo, hi = np.searchsorted(self.bos_idx, [start, start + local], side="left")
        starts = (self.bos_idx[lo:hi] - start).tolist()
        cu, max_seqlen = build_cu_seqlens(starts, local, seq_len, self.cu_bucket)
        self.cursor += chunk
        row = torch.from_numpy(buf)
        nb = self.device.type == "cuda"
        return (row[None, :-1].to(self.device, non_blocking=nb), row[None, 1:].to(self.device, non_blocking=nb),
                cu.to(self.device, non_blocking=nb), max_seqlen)

    def state_dict(self) -> dict:
        return {"order": ORDER, "file_idx": self.file_idx, "cursor": self.cursor, "shards": len(self.files)}

    def load_state_dict(self, state: dict) -> None:
        """Continue at a saved position (same shard list)."""
        if state.get("order") != ORDER:
            raise ValueError(f"loader state {sorted(state)} is not a {ORDER} loader's (data.order changed?)")
        if state.get("shards") != len(self.files) or not 0 <= int(state["file_idx"]) < len(self.files):
            raise ValueError(f"{ORDER} loader state {state} does not match this loader's {len(self.files)} shards")
        self._load(int(state["file_idx"]), int(state["cursor"]))
