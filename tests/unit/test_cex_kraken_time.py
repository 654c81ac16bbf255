"""Kraken's ISO timestamps -> Unix ms: the remembered-second fast path against the standard library."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cex.exchanges.kraken import _ms

pytestmark = pytest.mark.unit

moments = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1))


@settings(max_examples=300, deadline=None)
@given(moments)
def test_kraken_time_is_the_moment_in_ms_truncated(moment: datetime) -> None:
    utc = moment.replace(tzinfo=UTC)
    expected = (utc - datetime(1970, 1, 1, tzinfo=UTC)) // datetime.resolution // 1000  # exact integer ms
    text = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # Kraken's form: six fraction digits and Z
    assert _ms(text) == expected
    assert _ms(text) == expected  # the second remembered gives the same
    assert _ms(utc.isoformat()) == expected  # other forms take the general path


def test_malformed_times_raise() -> None:
    assert _ms(None) is None and _ms("") is None
    for bad in ("2023-10-06T17:35:55.4402x5Z", "2023-13-06T17:35:55.440295Z", "not a time"):
        with pytest.raises(ValueError):
            _ms(bad)
