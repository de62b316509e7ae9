"""SentencePiece tokenizers and the byte accounting behind ``val_bpb``.

Training uses the options of the official sp1024 export (openai/parameter-golf
``data/download_hf_docs_and_tokenize.py``): BPE, byte fallback, digits split, ``nmt_nfkc``
normalization, no dummy prefix, character coverage 0.999, ids pad=0 bos=1 eos=2 unk=3.
Two deliberate differences, both about *which text* the trainer sees, not how it trains:

- the trainer gets one line of text per sentence and ``max_sentence_length`` is raised to 64 KiB,
  because SentencePiece silently drops longer sentences (the official export fed whole documents
  and lost the long ones);
- one thread and an in-memory model writer, so two trainings give byte-identical ``.model`` files
  (with ``model_prefix`` the output path is stored inside the model, and thread count changes it).

The byte lookup tables follow ``build_sentencepiece_luts`` in the official ``train_gpt.py``.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

SPACE_PIECE = "\u2581"  # "▁", SentencePiece's marker for a space
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# The official export's trainer options (see the module docstring for the two additions).
OFFICIAL_TRAINER_OPTIONS: dict = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": PAD_ID,
    "bos_id": BOS_ID,
    "eos_id": EOS_ID,
    "unk_id": UNK_ID,
    "hard_vocab_limit": False,
}
DETERMINISM_OPTIONS: dict = {"num_threads": 1, "max_sentence_length": 65536, "minloglevel": 2}


class TokenizerError(ValueError):
    """A tokenizer is missing, unreadable, or unfit for byte accounting."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sentences(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        for line in text.replace("\x00", " ").split("\n"):
            line = line.strip()
            if line:
                yield line


def _iter_file(path: Path) -> Iterator[str]:
    with path.open("r", encoding="utf-8") as f:
        yield from f


def train_sentencepiece(
    text_iter_or_file: Iterable[str] | str | Path,
    out_prefix: str | Path,
    vocab_size: int = 1024,
    **trainer_overrides,
) -> Path:
    """Train a BPE tokenizer; write ``<out_prefix>.model`` and ``.vocab`` atomically; return the .model path.

    ``text_iter_or_file`` is a text file path or an iterable of texts (documents or lines); input
    order is kept as given, so the same input gives the same bytes. Raises :class:`TokenizerError`
    if the result has no standalone "▁" piece (see :func:`check_tokenizer`).
    """
    import sentencepiece as spm

    texts = _iter_file(Path(text_iter_or_file)) if isinstance(text_iter_or_file, (str, Path)) else text_iter_or_file
    out_prefix = Path(out_prefix)
    options = {**OFFICIAL_TRAINER_OPTIONS, **DETERMINISM_OPTIONS, **trainer_overrides}
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_sentences(texts), model_writer=writer, vocab_size=int(vocab_size), **options
    )
    model_bytes = writer.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    check_tokenizer(sp, name=f"{out_prefix}.model (just trained)")
    model_path = out_prefix.with_name(out_prefix.name + ".model")
    vocab_path = out_prefix.with_name(out_prefix.name + ".vocab")
    atomic_write_bytes(model_path, model_bytes)
    vocab_lines = (f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.vocab_size()))
    atomic_write_bytes(vocab_path, "".join(vocab_lines).encode("utf-8"))
    return model_path


def load_tokenizer(path: str | Path):
    """A ``SentencePieceProcessor`` for ``path``, with an error naming the file if it cannot be read."""
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer file does not exist")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise TokenizerError(f"{path}: not a readable SentencePiece model ({exc})") from exc


def check_tokenizer(sp, name: str = "tokenizer") -> None:
    """Raise :class:`TokenizerError` unless ``sp`` has a standalone, normal "▁" piece.

    Without it a space is encoded as the three byte-fallback tokens of U+2581, each counted as one
    byte, so val_bpb comes out too low (openai/parameter-golf issue #897).
    """
    piece_id = sp.piece_to_id(SPACE_PIECE)
    ok = (
        0 <= piece_id < sp.vocab_size()
        and sp.id_to_piece(piece_id) == SPACE_PIECE
        and not (sp.is_unknown(piece_id) or sp.is_control(piece_id) or sp.is_unused(piece_id) or sp.is_byte(piece_id))
    )
    if not ok:
        raise TokenizerError(
            f"{name}: no standalone '{SPACE_PIECE}' (U+2581) piece; spaces would be byte-fallback tokens and "
            "val_bpb would overcount bytes (parameter-golf issue #897). Retrain with more text or a larger vocab."
        )


def build_byte_luts(sp, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(base_bytes int16, has_leading_space bool, is_boundary bool)`` per token id, the official rules.

    Table size is ``max(sp.vocab_size(), vocab_size)``. Control, unknown, unused and out-of-tokenizer
    ids are boundaries with 0 bytes; byte-fallback pieces are 1 byte; any other piece is the UTF-8
    length of its text with one leading "▁" removed, and that "▁" sets ``has_leading_space``.
    """
    sp_vocab_size = int(sp.vocab_size())
    table_size = max(sp_vocab_size, int(vocab_size))
    base_bytes = np.zeros(table_size, dtype=np.int16)
    has_leading_space = np.zeros(table_size, dtype=np.bool_)
    is_boundary = np.ones(table_size, dtype=np.bool_)
    for token_id in range(sp_vocab_size):
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
            continue
        is_boundary[token_id] = False
        if sp.is_byte(token_id):
            base_bytes[token_id] = 1
            continue
        piece = sp.id_to_piece(token_id)
        if piece.startswith(SPACE_PIECE):
            has_leading_space[token_id] = True
            piece = piece[1:]
        base_bytes[token_id] = len(piece.encode("utf-8"))
    return base_bytes, has_leading_space, is_boundary


def count_bytes(target_ids, prev_ids, luts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> int:
    """Bytes the official eval credits to ``target_ids``: base bytes plus a space unless after a boundary."""
    base_bytes, has_leading_space, is_boundary = luts
    tgt = np.asarray(target_ids, dtype=np.int64).reshape(-1)
    prev = np.asarray(prev_ids, dtype=np.int64).reshape(-1)
    if tgt.shape != prev.shape:
        raise ValueError(f"count_bytes: target_ids has {tgt.size} ids but prev_ids has {prev.size}")
    space = has_leading_space[tgt] & ~is_boundary[prev]
    return int(base_bytes[tgt].astype(np.int64).sum() + space.sum())
