"""cex/_speedups.c given what its callers never give it: Binance frames whose book side is no array.
Each must raise a clear error or do what the Python path does.
"""

from __future__ import annotations

from typing import Any

import pytest

import cex.exchanges.binance as binance_module
from cex.exchange import MalformedMessage
from cex.exchanges.binance import Binance

_speedups: Any
try:
    from cex import _speedups
except ImportError:  # pragma: no cover - make install builds it
    _speedups = None

pytestmark = [pytest.mark.unit, pytest.mark.skipif(_speedups is None, reason="cex/_speedups.c not built")]


@pytest.mark.parametrize("side", ['"x"', "5", "null", "true", '"12"'])
@pytest.mark.parametrize("with_c", [True, False], ids=["book_json", "orjson"])
def test_a_binance_side_that_is_no_array_is_refused_at_parse(
    side: str, with_c: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """book_json passes a side that is no array through as it is: the depth event went on to the book
    sync (where applying it raised, invalidated a valid book and refetched its snapshot; a snapshot body
    raised in the book's load) instead of being refused at parse as a malformed frame, as without C."""
    if not with_c:
        monkeypatch.setattr(binance_module, "_book_json", None)
    exchange = Binance()
    exchange.symbols["NKNUSDT"] = "NKN-USDT"
    frame = (
        '{"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"NKNUSDT","U":1,"u":2,'
        f'"b":{side},"a":[["0.3529","10968"]]}}}}'
    ).encode()
    with pytest.raises((TypeError, ValueError, MalformedMessage)):
        exchange.parse(frame, 7)
    snapshot = f'{{"lastUpdateId":5,"bids":{side},"asks":[]}}'.encode()
    with pytest.raises((TypeError, ValueError)):
        exchange.parse_snapshot("NKN-USDT", snapshot, 7)
