"""The 16,000,000-byte cap check as a function of (artifact bytes, code bytes, cap)."""

from __future__ import annotations

import pytest

from pgolf.core import accounting


@pytest.mark.parametrize("artifact, code, cap, line", [
    (15_900_000, 100_000, None, None),  # exactly at the cap fits
    (15_900_001, 100_000, None, "over_cap: total 16,000,001 bytes > 16,000,000 by 1 "
                                "(artifact 15,900,001 + code 100,000)"),
    (16_023_456, 100_000, None, "over_cap: total 16,123,456 bytes > 16,000,000 by 123,456 "
                                "(artifact 16,023,456 + code 100,000)"),
    (900, 200, 1000, "over_cap: total 1,100 bytes > 1,000 by 100 (artifact 900 + code 200)"),
    (800, 200, 1000, None),
])
def test_over_cap_line(artifact, code, cap, line):
    assert accounting.over_cap_line(artifact, code, cap) == line
    assert accounting.fits(artifact, code, cap) is (line is None)


def test_the_cap_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(accounting, "CAP_BYTES", 1000)
    assert accounting.over_cap_line(900, 200).startswith("over_cap: total 1,100 bytes > 1,000 by 100")
    assert not accounting.fits(900, 200)
