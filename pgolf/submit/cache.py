"""The packed script's size per configuration, computed once and cached (what ``code_bytes`` counts).

Minifying the bundle takes seconds, so the minified template (the bundle specialised to the configuration's
switches, with the configuration left as a placeholder, :func:`pgolf.submit.bundle.template_source`) is
minified once per core source and set of switch values, and kept in memory and on disk; a configuration's
script is the minified template with the minified configuration literal put in its place, then compressed
(:func:`packed_for`). ``pgolf submit`` writes exactly that text as ``train_gpt.py``, so the size counted here
is the size of the file it writes.

The disk cache lives in ``$PGOLF_CACHE`` (default ``$XDG_CACHE_HOME/pgolf`` or ``~/.cache/pgolf``), outside
the repository, keyed on the core's and this package's sources, the minifier's version, the switches and,
for sizes, the configuration; a stale entry is never read because its key changes with the sources.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import python_minifier

from pgolf.core.config import Config
from pgolf.submit import bundle, fold
from pgolf.submit.pack import RULE, Packed, compress_minified, minify

_MINIFIED: dict[str, str] = {}
_SIZES: dict[str, int] = {}


def cache_dir() -> Path:
    env = os.environ.get("PGOLF_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pgolf"


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _write(path: Path, text: str) -> None:
    """Best effort (a read-only home must not fail a run): temp file + rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def minified_template(cfg: Config) -> str:
    """The minified template of ``cfg``'s switches (:func:`pgolf.submit.bundle.template_source`)."""
    folding = fold.folding_for(cfg)
    key = _key(bundle.sources_sha256(), python_minifier.__name__, _minifier_version(), folding.key)
    if key not in _MINIFIED:
        path = cache_dir() / "code" / f"template-{key[:32]}.py"
        text = _read(path)
        if text is None or text.count(bundle.PLACEHOLDER) != 1:
            text = minify(bundle.template_source(folding))
            _write(path, text)
        _MINIFIED[key] = text
    return _MINIFIED[key]


def _minifier_version() -> str:
    from importlib.metadata import version
    return version("python-minifier")


def minified_literal(cfg: Config) -> str:
    """The configuration literal as the minifier writes it (``x=<literal>`` minified without hoisting, whose
    module-level names could clash with the template's, and ``x=`` cut)."""
    small = python_minifier.minify("x=" + bundle.defaults_literal(cfg), hoist_literals=False).strip()
    if not small.startswith("x="):
        raise RuntimeError(f"minifier gave an unexpected form for the configuration: {small[:40]!r}")
    return small[2:]


def packed_for(cfg: Config) -> Packed:
    """The packed ``train_gpt.py`` of ``cfg``."""
    return compress_minified(bundle.fill(minified_template(cfg), minified_literal(cfg)))


def packed_code_bytes(cfg: Config) -> int:
    """``len(packed_for(cfg).text)`` in bytes, cached on disk per configuration and source."""
    template_key = _key(bundle.sources_sha256(), _minifier_version())
    key = _key(template_key, json.dumps(bundle.script_defaults(cfg), sort_keys=True, default=str))
    if key in _SIZES:
        return _SIZES[key]
    path = cache_dir() / "code" / f"size-{key[:32]}.json"
    text = _read(path)
    try:
        size = int(json.loads(text)["packed_bytes"]) if text else None
    except (ValueError, KeyError, TypeError):
        size = None
    if size is None:
        size = packed_for(cfg).bytes
        _write(path, json.dumps({"packed_bytes": size, "rule": RULE}))
    _SIZES[key] = size
    return size
