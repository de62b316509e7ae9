"""Pack a readable script the way the records pack ``train_gpt.py``: minify, compress, base85, one-line ``exec``.

- minify with ``python-minifier`` (the records' ``pyminify``; its default transforms: local names renamed,
  literals hoisted, argument and return annotations removed; class-attribute annotations kept, since
  dataclass fields are read from them, and module-level names kept);
- compress with raw LZMA2 (preset 9 | extreme, no container: PR #1394's record) and with brotli at
  quality 11 (PR #1855's record); the smaller wins;
- base85-encode and wrap in a one-line loader that decompresses and ``exec``\\ s the source in the
  script's own module namespace (so ``__name__ == "__main__"`` and ``__file__`` are the packed file's).

:func:`unpack` reverses it from the packed file's text alone (tests check it gives the minified source).
"""

from __future__ import annotations

import base64
import lzma
import re
from dataclasses import dataclass

import brotli
import python_minifier

LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
LOADERS = {
    "lzma2": ('import lzma as L,base64 as B\n'
              'exec(L.decompress(B.b85decode("{payload}"),format=L.FORMAT_RAW,filters=[{{"id":L.FILTER_LZMA2}}]))\n'),
    "brotli": ('import brotli as R,base64 as B\n'
               'exec(R.decompress(B.b85decode("{payload}")))\n'),
}
RULE = "packed train_gpt.py (pyminify + lzma2|brotli + base85)"


@dataclass(frozen=True)
class Packed:
    text: str  # the packed train_gpt.py
    minified: str  # the source it executes
    method: str  # "lzma2" or "brotli"

    @property
    def bytes(self) -> int:
        return len(self.text.encode("utf-8"))


def minify(source: str) -> str:
    return python_minifier.minify(source, remove_literal_statements=True)


def pack(source: str) -> Packed:
    """The smallest of the packings of ``source`` (ties: lzma2, which needs only the standard library)."""
    return compress_minified(minify(source))


def compress_minified(small: str) -> Packed:
    raw = small.encode("utf-8")
    blobs = {"lzma2": lzma.compress(raw, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS),
             "brotli": brotli.compress(raw, quality=11)}
    best = min(blobs, key=lambda k: (len(blobs[k]), k != "lzma2"))
    text = LOADERS[best].format(payload=base64.b85encode(blobs[best]).decode("ascii"))
    return Packed(text, small, best)


_PAYLOAD = re.compile(r'b85decode\("([^"]*)"\)')


def unpack(text: str) -> str:
    """The source a packed file executes (raises ValueError for a file :func:`pack` did not write)."""
    m = _PAYLOAD.search(text)
    if m is None:
        raise ValueError("not a packed pgolf script: no b85decode(\"...\") payload")
    blob = base64.b85decode(m.group(1))
    if text.startswith("import lzma"):
        return lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}]).decode("utf-8")
    if text.startswith("import brotli"):
        return brotli.decompress(blob).decode("utf-8")
    raise ValueError("not a packed pgolf script: unknown loader")
