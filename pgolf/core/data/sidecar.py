"""The per-token byte sidecar of a CaseOps dataset: ``val_bpb`` counted on the original text's bytes.

A CaseOps dataset (``pgolf data build --caseops``, or the 2026-04-27 record's ``prepare_caseops_data.py``,
https://github.com/openai/parameter-golf/pull/1855) tokenizes transformed text, so the SentencePiece byte tables
would count the bytes of the transformed pieces. Next to each validation shard ``fineweb_val_XXXXXX.bin`` it has
``fineweb_val_bytes_XXXXXX.bin``: the same shard format (256-word header, then uint16), one entry per token: the
UTF-8 bytes of the original text that token stands for (BOS and the case operators 0). As in the record's
``eval_val``, the bytes of a scored target at stream position ``i`` are ``sidecar[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pgolf.core.data.shards import ShardError, read_header, read_shard

SIDECAR_PREFIX = "fineweb_val_bytes_"
VAL_PREFIX = "fineweb_val_"


def is_sidecar(path: Path) -> bool:
    return Path(path).name.startswith(SIDECAR_PREFIX)


def sidecar_path(val_shard: Path) -> Path:
    """``fineweb_val_000003.bin`` -> ``fineweb_val_bytes_000003.bin`` in the same folder."""
    p = Path(val_shard)
    if not p.name.startswith(VAL_PREFIX):
        raise ShardError(f"{p}: a byte sidecar belongs to a shard named {VAL_PREFIX}<index>.bin")
    return p.with_name(SIDECAR_PREFIX + p.name[len(VAL_PREFIX):])


def load_sidecar(val_files: list[Path]) -> Tensor:
    """The sidecar of the whole validation stream (int32, one entry per token of ``val_files`` in order). Each
    sidecar shard must exist and hold exactly as many entries as its token shard (an error names the file)."""
    parts = []
    for shard in val_files:
        side = sidecar_path(shard)
        if not side.is_file():
            raise ShardError(f"{side}: byte sidecar missing for {Path(shard).name} (a CaseOps dataset scores val_bpb "
                             "on the original bytes; rebuild it with `pgolf data build --caseops`)")
        n_tok, n_side = read_header(shard)["num_tokens"], read_header(side)["num_tokens"]
        if n_tok != n_side:
            raise ShardError(f"{side}: {n_side} byte entries, but its token shard {Path(shard).name} has {n_tok} "
                             "tokens; the sidecar belongs to another build")
        parts.append(np.asarray(read_shard(side), dtype=np.int32))
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32))


@dataclass
class SidecarBytes:
    """Bytes per stream position (the evaluators take it in place of :class:`pgolf.core.evaluate.ByteLUTs`)."""

    per_token: Tensor  # int32, one entry per validation token, on the evaluation device
    source: str  # where it was read (for logs)

    def to(self, device: torch.device) -> "SidecarBytes":
        return SidecarBytes(self.per_token.to(device), self.source)

    def span_bytes(self, prev_ids: Tensor, tgt_ids: Tensor, start: int, end: int) -> Tensor:
        """float64 bytes of the targets at stream positions ``start..end-1`` (the ids are not needed)."""
        return self.per_token[start:end].to(torch.float64).sum()

    def target_bytes(self, prev_ids: Tensor, tgt_ids: Tensor, positions: Tensor) -> Tensor:
        """Bytes of the targets at ``positions`` (any shape; the ids are not needed)."""
        return self.per_token[positions.to(self.per_token.device)]
