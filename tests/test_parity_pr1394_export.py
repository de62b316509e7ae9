"""Export parity with PR #1394 (https://github.com/openai/parameter-golf/pull/1394, record 2026-04-05):
its full-Hessian GPTQ, its standard-deviation clip and its byte-shuffle + brotli compressor, against the
record's own functions imported from ``PGOLF_PR1394_TRAIN_GPT`` (the module skips without it).

The script imports flash-attention 3 at import time; a stub module stands in for it while these tests run
(none of the functions compared here calls it)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from pgolf_testing import imported_script, reference_script_or_skip

PR_PATH = reference_script_or_skip("PGOLF_PR1394_TRAIN_GPT", "PR #1394")
brotli = pytest.importorskip("brotli")

from pgolf.core.compress import byte_shuffle, byte_unshuffle, compress, decompress, detect  # noqa: E402


@pytest.fixture(scope="module")
def rec():
    saved = sys.modules.get("flash_attn_interface")
    stub = types.ModuleType("flash_attn_interface")
    stub.flash_attn_func = None  # only the attention forward calls it
    sys.modules["flash_attn_interface"] = stub
    try:
        with imported_script(PR_PATH, "_pr1394_train_gpt") as mod:
            yield mod
    finally:
        if saved is None:
            sys.modules.pop("flash_attn_interface", None)
        else:
            sys.modules["flash_attn_interface"] = saved


def payload(n: int = 50_001) -> bytes:
    """fp16-like bytes (odd length on purpose: the planes differ in length)."""
    g = torch.Generator().manual_seed(0)
    b = (torch.randn(n // 2 + 1, generator=g) * 0.02).to(torch.float16).view(torch.uint8).numpy().tobytes()
    return b[:n]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 50_000, 50_001])
def test_byte_shuffle_equals_the_records(rec, n):
    raw = payload(n) if n else b""
    assert byte_shuffle(raw) == rec._byte_shuffle(raw)
    assert byte_unshuffle(byte_shuffle(raw)) == raw == rec._byte_unshuffle(byte_shuffle(raw))


def test_brotli_bytes_equal_the_records(rec):
    """Same payload -> the same compressed bytes (same shuffle, quality 11, brotli's default window), and
    each side reads the other's blob."""
    raw = payload()
    ours = compress(raw, "brotli")
    assert ours == rec._compress(raw, "brotli")
    assert detect(ours) == "brotli" and decompress(ours) == raw == rec._decompress(ours, "brotli")
