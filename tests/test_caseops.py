"""CaseOps (pgolf.data.caseops): round trip, refusals, per-token original bytes; parity with the record's
``lossless_caps.py`` (``PGOLF_PR1855_LOSSLESS_CAPS``) and its SentencePiece model (``PGOLF_PR1855_CASEOPS_MODEL``),
each skipped without its file."""

from __future__ import annotations

import os

import pytest

from pgolf.data import caseops
from pgolf.data.caseops import ALLCAPS, CAPNEXT, ESC, TITLE, CaseOpsError

TRICKY = [
    "",
    "plain lowercase text.",
    "The NASA Launch of iPhone and McDonald's eBay; A I x Y.",
    "ABc aBC AbC ABCdef x1Y2z 3D 42nd HTTP2 mRNA",
    "Ünïcödé Straße ÉCOLE naïve Café CAFÉ ΑΘΗΝΑ Москва 東京 𝔘𝔫𝔦",
    f"operators in the input: {TITLE}{ALLCAPS}{CAPNEXT}{ESC} and {ESC}{ESC}A{TITLE}b",
    f"{ESC}",
    "tabs\tand\nnew\n\nlines  double  spaces \u2581 U+2581",
    "Digits 0123456789 and MiXeD CaSe WoRdS",
]


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip(text):
    enc = caseops.encode(text)
    assert caseops.decode(enc) == text
    assert not any("A" <= c <= "Z" for c in enc)  # every ASCII capital became an operator


def test_the_documented_examples():
    assert caseops.encode("The NASA Launch") == f"{TITLE}the {ALLCAPS}nasa {TITLE}launch"
    assert caseops.encode("McDonald iPhone A") == f"{TITLE}mc{CAPNEXT}donald i{CAPNEXT}phone {TITLE}a"
    assert caseops.encode(f"x{ESC}y") == f"x{ESC}{ESC}y"


@pytest.mark.parametrize("bad", [f"{TITLE}", f"a{TITLE}b", f"{CAPNEXT}a", f"{ALLCAPS} x", f"{ESC}", f"{ESC}a", "Ab",
                                 f"a{CAPNEXT}{CAPNEXT}b"])
def test_decode_refuses_what_encode_never_writes(bad):
    with pytest.raises(CaseOpsError):
        caseops.decode(bad)


def test_original_byte_counts_credit_the_original_text():
    text = "The NASA café x" + TITLE
    enc = caseops.encode(text)
    counts = caseops.original_byte_counts(list(enc))  # one piece per character
    assert sum(counts) == len(text.encode("utf-8"))
    assert counts[0] == 0 and counts[1] == 1  # TITLE, then "t"
    # an escape split across two pieces credits the escaped character to the second
    assert caseops.original_byte_counts([f"a{ESC}", f"{TITLE}b"]) == [1, 4]
    with pytest.raises(CaseOpsError):
        caseops.original_byte_counts([f"a{ESC}"])


# ------------------------------------------------------------------------------------------ parity with the record

def _record_caps():
    path = os.environ.get("PGOLF_PR1855_LOSSLESS_CAPS")
    if not path or not os.path.isfile(path):
        pytest.skip("PGOLF_PR1855_LOSSLESS_CAPS (the record's lossless_caps.py) not set")
    from pgolf_testing import imported_script
    return imported_script(path, "_pr1855_lossless_caps")


def _record_model():
    path = os.environ.get("PGOLF_PR1855_CASEOPS_MODEL")
    if not path or not os.path.isfile(path):
        pytest.skip("PGOLF_PR1855_CASEOPS_MODEL (the record's CaseOps SentencePiece model) not set")
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=path)


def _sample_documents(n: int = 40) -> list[str]:
    from pgolf.data import corpus
    docs = corpus.default_corpus_documents(verbatim=True)
    return [d[:1500] for d in docs[:: max(1, len(docs) // n)][:n]] + TRICKY


def test_transform_equals_the_records():
    with _record_caps() as rec:
        for text in _sample_documents():
            enc = caseops.encode(text)
            assert enc == rec.encode_lossless_caps_v2(text)
            assert caseops.decode(enc) == rec.decode_lossless_caps_v2(enc) == text
        assert rec.get_text_transform_control_symbols(caseops.TRANSFORM) == list(caseops.OPERATORS)


def test_token_byte_counts_equal_the_records_with_its_model():
    """Same ids and same per-token original bytes as the record's exporter: its
    ``surface_piece_original_byte_counts`` over the ``piece.surface`` of SentencePiece's proto (needs protobuf)."""
    pytest.importorskip("google.protobuf")
    sp = _record_model()
    total = 0
    with _record_caps() as rec:
        for text in _sample_documents():
            enc = caseops.encode(text)
            ids, counts = caseops.encode_with_byte_counts(sp, enc)
            proto = sp.encode_as_proto(enc)
            want = rec.surface_piece_original_byte_counts([p.surface for p in proto.pieces],
                                                          text_transform_name=rec.LOSSLESS_CAPS_CASEOPS_V1)
            assert ids == sp.encode(enc, out_type=int) == [p.id for p in proto.pieces]
            assert counts == want
            total += len(ids)
    assert total > 5000
