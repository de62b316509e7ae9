"""CaseOps: a bijective capitalization transform with four reserved operator characters.

The 2026-04-27 record (https://github.com/openai/parameter-golf/pull/1855, its ``lossless_caps.py``, transform
``lossless_caps_caseops_v1``) tokenizes text in which ASCII capitals are replaced by lowercase letters and
operators, so that ``The``, ``THE`` and ``the`` share the pieces of ``the``. The rules, over each maximal run of
ASCII letters ``[A-Za-z]+`` (a *word*; other characters, non-ASCII letters included, are kept as they are):

- all lowercase: unchanged;
- two or more letters, all uppercase: ``ALLCAPS`` + the word in lowercase;
- an uppercase letter followed by lowercase ones only (or a single capital): ``TITLE`` + the word in lowercase;
- any other mix: ``TITLE`` if the first letter is uppercase, then the letters in lowercase with ``CAPNEXT``
  before each later uppercase one (``McDonald`` -> TITLE ``mc`` CAPNEXT ``donald``, ``iPhone`` -> ``i`` CAPNEXT
  ``phone``).

An operator character that occurs in the input is written as ``ESC`` + that character. The operators are the
private-use characters U+E001..U+E004 (TITLE, ALLCAPS, CAPNEXT, ESC); a tokenizer must reserve them as pieces
(SentencePiece ``user_defined_symbols``).

``val_bpb`` is counted on the original text: each token is credited with the UTF-8 bytes of the original text it
stands for (:func:`original_byte_counts`): operators and ESC count 0, an escaped character its own UTF-8 length,
every other character its UTF-8 length (ASCII letters 1, whatever their case was).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TRANSFORM = "lossless_caps_caseops_v1"  # the record's name for it
TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)
_CASE_MARKS = frozenset((TITLE, ALLCAPS, CAPNEXT))

_WORD_OR_OPERATOR = re.compile("[A-Za-z]+|[\ue001-\ue004]")


class CaseOpsError(ValueError):
    """A string is not the output of :func:`encode` (a dangling or misplaced operator); the message says where."""


def _encode_word(word: str) -> str:
    low = word.lower()
    if word == low:
        return word
    if len(word) >= 2 and word == word.upper():
        return ALLCAPS + low
    if word[0].isupper() and word[1:] == low[1:]:
        return TITLE + low
    out = [TITLE] if word[0].isupper() else []
    out.append(low[0])
    for ch in word[1:]:
        if ch.isupper():
            out.append(CAPNEXT)
        out.append(ch.lower())
    return "".join(out)


def _encode_match(m: re.Match) -> str:
    s = m.group(0)
    return ESC + s if s in OPERATORS else _encode_word(s)


def encode(text: str) -> str:
    """The transformed text (module docstring)."""
    return _WORD_OR_OPERATOR.sub(_encode_match, text)


def _is_ascii_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def decode(text: str) -> str:
    """The inverse of :func:`encode`; a string it cannot come from raises :class:`CaseOpsError`."""
    out: list[str] = []
    mode = None  # TITLE / ALLCAPS waiting for the next word's first letter
    capnext = False
    in_word = False  # the previous output character was an ASCII letter of the current word
    allcaps_word = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == ESC:
            if i + 1 >= n:
                raise CaseOpsError(f"ESC at the end of the text (position {i})")
            nxt = text[i + 1]
            if nxt not in OPERATORS:
                raise CaseOpsError(f"ESC followed by {nxt!r} at position {i}; only the operators are escaped")
            if mode is not None or capnext:
                raise CaseOpsError(f"case operator before an escaped character at position {i}")
            out.append(nxt)
            in_word = allcaps_word = False
            i += 2
            continue
        if ch in (TITLE, ALLCAPS):
            if mode is not None or capnext or in_word:
                raise CaseOpsError(f"{'TITLE' if ch == TITLE else 'ALLCAPS'} inside a word at position {i}")
            mode = ch
        elif ch == CAPNEXT:
            if capnext or mode is not None or not in_word:
                raise CaseOpsError(f"CAPNEXT not inside a word at position {i}")
            capnext = True
        elif _is_ascii_letter(ch):
            if not ch.islower():
                raise CaseOpsError(f"uppercase letter {ch!r} at position {i}; capitals are written with operators")
            if not in_word:
                allcaps_word = mode == ALLCAPS
                out.append(ch.upper() if mode is not None else ch)
                mode = None
                in_word = True
            else:
                out.append(ch.upper() if (allcaps_word or capnext) else ch)
            capnext = False
        else:
            if mode is not None or capnext:
                raise CaseOpsError(f"case operator not followed by a letter at position {i}")
            out.append(ch)
            in_word = allcaps_word = False
        i += 1
    if mode is not None or capnext:
        raise CaseOpsError("case operator at the end of the text")
    return "".join(out)


def original_byte_counts(surfaces: Iterable[str]) -> list[int]:
    """UTF-8 bytes of the original text each piece stands for, ``surfaces`` being the pieces' transformed text in
    order (their concatenation a transformed string): operators and ESC 0, an escaped operator 3, anything else its
    UTF-8 length. An escape can span two pieces (its character is credited to the second)."""
    counts: list[int] = []
    escaped = False
    for surface in surfaces:
        total = 0
        for ch in surface:
            if escaped:
                total += len(ch.encode("utf-8"))
                escaped = False
            elif ch == ESC:
                escaped = True
            elif ch not in _CASE_MARKS:
                total += len(ch.encode("utf-8"))
        counts.append(total)
    if escaped:
        raise CaseOpsError("ESC at the end of the last piece")
    return counts


def encode_with_byte_counts(sp, transformed: str) -> tuple[list[int], list[int]]:
    """Token ids of ``transformed`` and the original UTF-8 bytes of each token.

    A piece's surface is the slice of the input it covers (SentencePiece's character offsets: for a character
    spelled in byte-fallback pieces the last of them holds it, the others are empty), as the record takes
    ``piece.surface`` of the encoding's proto."""
    enc = sp.encode(transformed, return_type="offset_mapping")
    surfaces = [transformed[a:b] for a, b in enc["offsets"]]
    return list(enc["ids"]), original_byte_counts(surfaces)
