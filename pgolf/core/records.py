"""Reading a run folder's records strictly: ``status.json``, ``summary.json`` and the artifact's sha256.

A record that a reader expects but cannot use is an error naming the file, never a run silently left out of a
table: a truncated or non-JSON file, a status that is not an object with a string ``status``, and a finished
run whose scores (``val_loss``, ``val_bpb``, ``q_val_loss``, ``q_val_bpb``) are missing, null, strings or not
finite. Readers that may skip such runs take an explicit option (``pgolf results --skip-broken``).

``summary.json`` records ``artifact_sha256``, the sha256 of the artifact's bytes; every loader of a run's
artifact compares it (:func:`check_artifact_sha256`). Runs written before the field existed (the committed
runs under ``runs/``) have none: their artifact is then checked only by its own format (zlib's Adler-32, xz's
CRC-64, zstd's frame checksum when present, pgolf's CRC-32 envelope around brotli) and by loading it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
SCORE_KEYS = ("val_loss", "val_bpb", "q_val_loss", "q_val_bpb")  # what a finished run must record as numbers


class RunRecordError(ValueError):
    """A run record (status.json, summary.json, the artifact against its sha256) cannot be used; the message
    names the file and what was expected."""


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`RunRecordError` naming the file when it is unreadable or not an object."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunRecordError(f"{path}: damaged run record: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise RunRecordError(f"{path}: damaged run record: holds a JSON {type(obj).__name__}, expected an object")
    return obj


def read_status_record(path: Path) -> dict[str, Any]:
    """``status.json`` as recorded: an object whose ``status`` is a string."""
    status = read_json_object(path)
    if not isinstance(status.get("status"), str):
        raise RunRecordError(f"{path}: damaged run record: 'status' is {status.get('status')!r}, expected a string "
                             f"such as 'finished'")
    return status


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_summary(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Refuse a finished run's summary whose scores are not finite numbers (missing, null, "2.1", NaN)."""
    if summary.get("status") != "finished":
        return summary
    for key in SCORE_KEYS:
        if not _is_number(summary.get(key)):
            got = "missing" if key not in summary else repr(summary[key])
            raise RunRecordError(f"{path}: damaged run record: {key} is {got}, expected a finite number "
                                 f"in a finished run's summary")
    sha = summary.get("artifact_sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
        raise RunRecordError(f"{path}: damaged run record: artifact_sha256 is {sha!r}, expected 64 hex digits")
    return summary


def read_summary(path: Path) -> dict[str, Any]:
    """``summary.json``, checked by :func:`check_summary`."""
    return check_summary(Path(path), read_json_object(path))


def check_artifact_sha256(artifact: Path, blob: bytes) -> None:
    """Compare ``blob`` (the bytes of ``artifact``) with the ``artifact_sha256`` of the ``summary.json`` beside it.

    No summary, or a summary without the field (runs written before it existed): nothing to compare, the
    artifact is checked by its format alone."""
    from pgolf.core.export import sha256
    summary_path = Path(artifact).parent / SUMMARY_FILE
    if not summary_path.is_file():
        return
    summary = read_json_object(summary_path)
    want = summary.get("artifact_sha256")
    if want is None:
        return
    recorded_file = summary.get("artifact_file")
    if isinstance(recorded_file, str) and recorded_file != Path(artifact).name:
        raise RunRecordError(f"{artifact}: not the artifact of its run record: {summary_path} records "
                             f"{recorded_file} (sha256 {str(want)[:16]}...)")
    got = sha256(blob)
    if got != want:
        raise RunRecordError(f"{artifact}: artifact does not match its run record: sha256 {got[:16]}..., "
                             f"{summary_path} says {str(want)[:16]}... (damaged or replaced; refusing to score it)")
