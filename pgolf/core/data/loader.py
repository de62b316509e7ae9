"""Training stream, batch slicing and validation tokens, token-for-token like the official loader.

``TokenStream`` and ``DistributedTokenLoader`` reproduce ``train_gpt.py`` of openai/parameter-golf:
shards are read in sorted path order, sequentially, wrapping around forever; each batch takes one
contiguous chunk of ``(local_tokens + 1) * world_size`` tokens and rank ``r`` keeps the ``r``-th
span, so a pgolf run and an official run on the same shards see the same tokens in the same order.
Unlike the original, shards are memory-mapped, the stream position can be saved and restored, and
with ``vocab_size`` every chunk read is checked for ids outside the vocabulary (one ``max`` over tokens
that are read anyway), so a bad shard is an error naming the file, not an IndexError in the embedding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pgolf.core import paths
from pgolf.core.data.shards import ShardError, read_shard


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder, shard pattern or tokenizer could not be found; the message lists what was tried."""


def _sorted_files(files) -> list[Path]:
    # The official loader sorts glob() strings; sorting str(path) is the same order.
    out = sorted((Path(f) for f in files), key=str)
    if not out:
        raise DatasetNotFoundError("no shard files given")
    return out


class TokenStream:
    """Reads shards in sorted order, one after another, and wraps around forever."""

    def __init__(self, files: list[Path], vocab_size: int | None = None):
        self.files = _sorted_files(files)
        self.vocab_size = vocab_size  # None: ids are not checked
        self._load(0, 0)

    def _load(self, file_idx: int, pos: int) -> None:
        self.file_idx = file_idx
        self.tokens = read_shard(self.files[file_idx])
        self.pos = pos

    def _advance_file(self) -> None:
        self._load((self.file_idx + 1) % len(self.files), 0)

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` tokens as a uint16 tensor, crossing shard boundaries (and wrapping) as needed."""
        if n <= 0:
            raise ValueError(f"TokenStream.take: n must be positive, got {n}")
        chunks: list[np.ndarray] = []
        remaining = n
        empty_in_a_row = 0
        while remaining > 0:
            avail = self.tokens.size - self.pos
            if avail <= 0:
                empty_in_a_row += 1
                if empty_in_a_row > len(self.files):
                    raise ValueError(f"all {len(self.files)} training shards are empty, e.g. {self.files[0]}")
                self._advance_file()
                continue
            empty_in_a_row = 0
            k = min(remaining, avail)
            piece = self.tokens[self.pos : self.pos + k]
            if self.vocab_size is not None and int(piece.max()) >= self.vocab_size:
                self._reject(piece)
            chunks.append(piece)
            self.pos += k
            remaining -= k
        out = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        return torch.from_numpy(np.array(out, dtype=np.uint16))  # copy: the memmap is read-only

    def _reject(self, piece: np.ndarray) -> None:
        at = int(np.argmax(piece >= self.vocab_size))
        raise ShardError(f"{self.files[self.file_idx]}: token id {int(piece[at])} at token {self.pos + at} is outside "
                         f"the model's vocabulary [0, {self.vocab_size}); the shard belongs to another tokenizer or is corrupt")

    def state_dict(self) -> dict:
        return {"file_idx": self.file_idx, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        """Continue at the saved position; the file list must be the same as when it was saved."""
        file_idx, pos = int(state["file_idx"]), int(state["pos"])
        if not 0 <= file_idx < len(self.files):
            raise ValueError(f"stream state file_idx={file_idx} out of range for {len(self.files)} shard files")
        self._load(file_idx, 0)
        if not 0 <= pos <= self.tokens.size:
            raise ValueError(f"stream state pos={pos} out of range for {self.files[file_idx]} ({self.tokens.size} tokens)")
        self.pos = pos


class DistributedTokenLoader:
    """Per-rank (x, y) batches from one shared stream, with the official slicing."""

    def __init__(self, files: list[Path], rank: int, world_size: int, device: torch.device | str = "cpu",
                 vocab_size: int | None = None):
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"DistributedTokenLoader: need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.stream = TokenStream(files, vocab_size)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` int64 of shape ``(local_tokens // seq_len, seq_len)`` on the loader's device."""
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        if seq_len <= 0 or local_tokens <= 0 or local_tokens % seq_len:
            raise ValueError(
                f"batch tokens per rank and micro-step must be a positive multiple of seq_len: global_tokens={global_tokens} "
                f"// (world_size={self.world_size} * grad_accum_steps={grad_accum_steps}) = {local_tokens}, seq_len={seq_len}"
            )
        per_rank_span = local_tokens + 1
        chunk = self.stream.take(per_rank_span * self.world_size)
        start = self.rank * per_rank_span
        local = chunk[start : start + per_rank_span].to(dtype=torch.int64)
        x = local[:-1].reshape(-1, seq_len)  # (local_tokens // seq_len, seq_len)
        y = local[1:].reshape(-1, seq_len)
        non_blocking = self.device.type == "cuda"
        return x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


def load_validation_tokens(files: list[Path], seq_len: int, tail: Literal["drop", "score"] = "drop") -> torch.Tensor:
    """All validation tokens (uint16). ``drop``: truncated to ``k * seq_len + 1`` like the official loader."""
    files = _sorted_files(files)
    tokens = torch.from_numpy(np.concatenate([np.asarray(read_shard(f), dtype=np.uint16) for f in files]))
    if tail == "score":
        return tokens
    if tail != "drop":
        raise ValueError(f"load_validation_tokens: tail must be 'drop' or 'score', got {tail!r}")
    n = tokens.numel()
    usable = ((n - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ValueError(
            f"validation split too short for seq_len={seq_len}: {n} tokens in {len(files)} file(s) starting {files[0]}"
        )
    return tokens[: usable + 1]


@dataclass
class Dataset:
    """A resolved dataset: shard lists, tokenizer, and the manifest if the folder has one."""

    root: Path
    train_files: list[Path]
    val_files: list[Path]
    tokenizer_path: Path
    manifest: dict | None


def resolve_dataset(data_cfg, vocab_size: int) -> Dataset:
    """Find shards and tokenizer for a ``DataConfig`` (fields ``path``, ``*_pattern``, ``tokenizer_path``).

    An empty ``path`` is the embedded corpus built for ``vocab_size`` (``default_sp<vocab_size>``); errors about
    it name the exact ``pgolf data build`` command that makes it."""
    default = not data_cfg.path
    root = paths.default_dataset_dir(vocab_size) if default else Path(data_cfg.path).expanduser()
    root = root.resolve()
    hint = f" (build it with `{paths.default_build_command(vocab_size)}`)" if default else ""
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset folder {root} does not exist{hint}")
    manifest_file = root / "manifest.json"
    manifest = None
    if manifest_file.is_file():
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest_file}: not valid JSON ({exc})") from exc
    train_files = sorted(root.glob(data_cfg.train_pattern), key=str)
    # CaseOps byte sidecars (fineweb_val_bytes_*.bin) match the val glob but are not token shards
    val_files = sorted((p for p in root.glob(data_cfg.val_pattern) if not p.name.startswith("fineweb_val_bytes_")),
                       key=str)
    for split, pattern, found in (("train", data_cfg.train_pattern, train_files), ("val", data_cfg.val_pattern, val_files)):
        if not found:
            raise DatasetNotFoundError(f"no {split} shards match {pattern!r} in {root}{hint}")
    return Dataset(root, train_files, val_files, _resolve_tokenizer(data_cfg.tokenizer_path, root, manifest, vocab_size, hint), manifest)


def _resolve_tokenizer(explicit: str, root: Path, manifest: dict | None, vocab_size: int, hint: str) -> Path:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(f"tokenizer file {path} (data.tokenizer_path) does not exist")
        return path.resolve()
    tried = [root / "tokenizer.model"]
    if manifest and isinstance(manifest.get("tokenizer"), str):
        tried.append(root / manifest["tokenizer"])
    tried.append(root.parent.parent / "tokenizers" / f"fineweb_{vocab_size}_bpe.model")  # official data/ layout
    for path in tried:
        if path.is_file():
            return path.resolve()
    raise DatasetNotFoundError(
        f"no tokenizer found for dataset {root}; tried: {', '.join(str(p) for p in tried)}; "
        f"set data.tokenizer_path{hint}"
    )
