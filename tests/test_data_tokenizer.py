"""Tokenizer training and the official byte accounting (base bytes, leading space, boundaries)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import sentencepiece as spm

from pgolf.core.data.tokenizer import (
    BOS_ID,
    OFFICIAL_TRAINER_OPTIONS,
    TokenizerError,
    build_byte_luts,
    check_tokenizer,
    count_bytes,
    load_tokenizer,
    train_sentencepiece,
)
from pgolf.data.corpus import default_corpus_documents

VOCAB = 384  # smallest round size above the ~317 pieces (bytes + specials + characters) this text needs


@pytest.fixture(scope="module")
def docs():
    return default_corpus_documents()[:50]  # ~216 KB of Sherlock Holmes


@pytest.fixture(scope="module")
def tiny(docs, tmp_path_factory):
    path = train_sentencepiece(docs, tmp_path_factory.mktemp("tok") / "tiny", VOCAB)
    return path, load_tokenizer(path)


def test_training_matches_official_ids_and_is_deterministic(docs, tiny, tmp_path):
    path, sp = tiny
    assert sp.vocab_size() == VOCAB
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert sp.id_to_piece(4) == "<0x00>" and sp.is_byte(4)  # byte fallback right after the specials
    assert path.with_suffix(".vocab").read_text(encoding="utf-8").splitlines()[1].startswith("<s>\t")
    again = train_sentencepiece(docs, tmp_path / "elsewhere" / "other_name", VOCAB)
    assert again.read_bytes() == path.read_bytes()  # no path or thread count stored in the model


def test_byte_luts_on_hand_checked_pieces(tiny):
    _, sp = tiny
    ids = {p: sp.piece_to_id(p) for p in ["▁the", "ing", "<0x41>", "▁"]}
    assert all(i != sp.unk_id() for i in ids.values()), ids
    base, space, boundary = build_byte_luts(sp, vocab_size=VOCAB + 16)
    assert base.dtype == np.int16 and space.dtype == np.bool_ and base.size == VOCAB + 16
    expect = {"▁the": (3, True), "ing": (3, False), "<0x41>": (1, False), "▁": (0, True)}
    for piece, (nbytes, lead) in expect.items():
        i = ids[piece]
        assert (base[i], space[i], boundary[i]) == (nbytes, lead, False), piece
    for i in [0, 1, 2, 3, VOCAB, VOCAB + 15]:  # pad, bos, eos, unk, ids past the tokenizer
        assert (base[i], space[i], boundary[i]) == (0, False, True), i

    # BOS ▁the ing ▁the ▁ : 3 (space dropped after BOS) + 3 + (3+1) + (0+1)
    seq = [BOS_ID, ids["▁the"], ids["ing"], ids["▁the"], ids["▁"]]
    assert count_bytes(seq[1:], seq[:-1], (base, space, boundary)) == 11


def test_decoded_text_bytes_equal_utf8_length(tiny):
    _, sp = tiny
    luts = build_byte_luts(sp, VOCAB)
    texts = ["Holmes said: the cafe\u0301 costs 12\u20ac \u2192 done.", "It was the best of times; \u00fcber 3,141 days."]
    stream = []
    for text in texts:
        ids = sp.encode(text)
        stream += [BOS_ID, *ids]
        assert any(sp.is_byte(i) for i in ids)  # the byte-fallback path is exercised
    expected = sum(len(sp.decode(sp.encode(t)).encode("utf-8")) for t in texts)
    stream = np.array(stream)
    assert count_bytes(stream[1:], stream[:-1], luts) == expected


def test_missing_space_piece_is_an_error(tmp_path):
    rng = random.Random(0)
    no_spaces = ["".join(rng.choice("abcdef") for _ in range(200)) for _ in range(200)]
    with pytest.raises(TokenizerError, match="897"):
        train_sentencepiece(no_spaces, tmp_path / "nospace", 300)
    assert not (tmp_path / "nospace.model").exists()

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(no_spaces), model_writer=writer, vocab_size=300,
                                   minloglevel=2, **OFFICIAL_TRAINER_OPTIONS)
    with pytest.raises(TokenizerError, match="U\\+2581"):
        check_tokenizer(spm.SentencePieceProcessor(model_proto=writer.getvalue()))


def test_load_tokenizer_errors_name_the_file(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "x.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="junk.model"):
        load_tokenizer(tmp_path / "junk.model")
