"""Size accounting against the challenge cap: artifact bytes + code bytes <= 16,000,000 (decimal).

"Code bytes" are the bytes of the submission's one file for the run's configuration: the ``train_gpt.py``
that ``pgolf submit`` writes, generated from this core and packed as the records pack theirs
(:mod:`pgolf.submit`; computed once per configuration and core source, then cached). The raw size of the
core's sources (:func:`raw_code_bytes`, every ``.py`` under ``pgolf/core/``) is what pgolf counted before it
could write that file; ``pgolf size`` shows both, and the readable generated script's size. The official baseline's single file is 47,642 bytes.
"""

from __future__ import annotations

from pathlib import Path

CAP_BYTES = 16_000_000
CORE = Path(__file__).resolve().parent
CODE_BYTES_NOTE = "packed train_gpt.py of this configuration (pyminify + lzma2|brotli + base85; pgolf submit)"


def core_sources() -> list[Path]:
    """The training core's Python sources, in a stable order (the folder, not a hand-kept list)."""
    return sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)


def raw_code_bytes() -> int:
    """The UTF-8 bytes of every Python source in the training core (unpacked, unbundled)."""
    return sum(len(p.read_text(encoding="utf-8").encode("utf-8")) for p in core_sources())


def code_bytes(cfg) -> int:
    """The size of the packed single-file submission for ``cfg`` (a :class:`pgolf.core.config.Config`)."""
    from pgolf.submit.cache import packed_code_bytes  # the generator reads this core; imported only when counting
    return packed_code_bytes(cfg)


class OverCapError(RuntimeError):
    """A run with ``export.require_fit`` produced a submission over the cap."""


def fits(artifact_bytes: int, code: int, cap_bytes: int | None = None) -> bool:
    return artifact_bytes + code <= (CAP_BYTES if cap_bytes is None else cap_bytes)


def over_cap_line(artifact_bytes: int, code: int, cap_bytes: int | None = None) -> str | None:
    """The console/train.log line for a submission over the cap (None when it fits).

    ``cap_bytes`` None reads :data:`CAP_BYTES` at call time (tests lower it to reach this path)."""
    cap = CAP_BYTES if cap_bytes is None else cap_bytes
    total = artifact_bytes + code
    if total <= cap:
        return None
    return (f"over_cap: total {total:,} bytes > {cap:,} by {total - cap:,} "
            f"(artifact {artifact_bytes:,} + code {code:,})")
