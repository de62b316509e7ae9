"""Size accounting against the challenge cap: artifact bytes + code bytes <= 16,000,000 (decimal).

Until pgolf has a single-file submission exporter, "code bytes" counts the UTF-8 bytes of the pgolf
modules a submission needs to train and evaluate (:data:`SUBMISSION_MODULES`), not the CLI,
notebook, plotting or launcher code. The official baseline's single file is 47,642 bytes.
"""

from __future__ import annotations

from pathlib import Path

CAP_BYTES = 16_000_000
PACKAGE = Path(__file__).resolve().parent
SUBMISSION_MODULES = (
    "config.py", "quant.py", "qat.py", "export.py", "compress.py", "optim.py", "evaluate.py", "averaging.py",
    "train.py", "model/__init__.py", "model/gpt.py", "model/layers.py", "model/mlp.py", "model/embed.py",
    "data/loader.py", "data/shards.py", "data/tokenizer.py", "data/identity.py", "safe_load.py",
)
CODE_BYTES_NOTE = "pgolf training+eval modules (pgolf.accounting.SUBMISSION_MODULES), no single-file exporter yet"


def code_bytes() -> int:
    return sum(len((PACKAGE / m).read_text(encoding="utf-8").encode("utf-8")) for m in SUBMISSION_MODULES
               if (PACKAGE / m).exists())


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
