"""Load torch files without running code from them.

``torch.load(weights_only=False)`` unpickles arbitrary objects, so a crafted artifact or checkpoint
(a class whose ``__reduce__`` calls ``os.system``) runs code the moment it is opened. pgolf only ever
writes tensors and plain Python values (dict, list, tuple, str, int, float, bool, None) into its
files, and the official ``int8_clean_per_row_v1`` artifact holds nothing else either, so every load
goes through torch's restricted ``weights_only`` unpickler; a file that needs more is refused.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch


class UnsafeFileError(ValueError):
    """A file holds pickled objects other than tensors and plain Python values; it was not unpickled."""


def load_plain(source: str | Path | io.BytesIO, *, name: str | Path, kind: str, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; ``name`` and ``kind`` ("pgolf checkpoint", ...) go in the error."""
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(str(exc))
        raise UnsafeFileError(
            f"{name}: not a {kind}: it holds pickled objects other than tensors and plain Python values, and pgolf "
            f"does not unpickle those (loading them could run code from the file). Unpickler said: {reason}"
        ) from None


def _unpickler_reason(message: str) -> str:
    """The line of torch's long weights-only message that says what was refused (e.g. GLOBAL posix.system)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not ln.strip().startswith(boilerplate)]
    return " ".join(lines) or "unsupported pickle content"
