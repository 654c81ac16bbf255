"""cex/_speedups.c given what its callers never give it: a slot of another class, a level key with a NUL,
a checksum style it does not know; and Binance frames whose book side is no array. Each must raise a clear
error or do what the Python path does, never read or write outside an object.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

import cex.exchanges.binance as binance_module
from cex.exchange import MalformedMessage
from cex.exchanges.binance import Binance
from records.cex import BookDelta

_speedups: Any
try:
    from cex import _speedups
except ImportError:  # pragma: no cover - make install builds it
    _speedups = None

pytestmark = [pytest.mark.unit, pytest.mark.skipif(_speedups is None, reason="cex/_speedups.c not built")]

_FIELDS = (
    "exchange", "symbol", "side", "price", "size", "order_id", "sequence", "event_timestamp",
    "atom_timestamp", "engine_sequence", "engine_timestamp",
)  # fmt: skip


class _Wide:
    __slots__ = tuple(f"s{i}" for i in range(40))


def test_bind_refuses_a_slot_of_another_class_or_one_slot_twice() -> None:
    """A member descriptor of a bigger class set on the record class: its offset lies past the end of the
    record, where deltas() wrote (out of the object). Two fields that are one slot: the first value leaked."""
    narrow: Any = type("Narrow", (), {"__slots__": _FIELDS[:-1]})
    narrow.engine_timestamp = _Wide.__dict__["s39"]
    twice: Any = type("Twice", (), {"__slots__": _FIELDS[:-1]})
    twice.engine_timestamp = twice.__dict__["engine_sequence"]
    try:
        with pytest.raises(TypeError, match=r"Narrow\.engine_timestamp is not an object slot of its own"):
            _speedups.bind(narrow)
        with pytest.raises(TypeError, match=r"Twice\.engine_sequence and \.engine_timestamp are one slot"):
            _speedups.bind(twice)
    finally:
        _speedups.bind(BookDelta)  # what cex.sync bound at import
    made = _speedups.deltas("x", "X-Y", [(Decimal(1), Decimal(2))], [], 5, 6, 7)
    assert made == [BookDelta("x", "X-Y", "bid", Decimal(1), Decimal(2), None, 5, 6, 7)]


def test_top_texts_refuses_a_style_it_does_not_make() -> None:
    """Style 2 was written as OKX's price:size where the Python path calls make."""
    prices, sizes = [Decimal("1.5")], [Decimal(2)]
    assert _speedups.top_texts(prices, sizes, [None], 10, False, 0, None, None, str) == ["1.5:2"]
    with pytest.raises(ValueError, match=r"style 0 \(OKX\) or 1 \(Kraken\), not 2"):
        _speedups.top_texts(prices, sizes, [None], 10, False, 2, None, None, lambda p, s: "made")


def test_book_json_level_keys_are_compared_whole() -> None:
    """A key with a NUL was compared up to the NUL: "price\\0x" matched "price"."""
    frame = '{"bids":[{"price":1.5,"qty":2}]}'
    assert _speedups.book_json(frame, "price", "qty") == {"bids": [(Decimal("1.5"), Decimal(2))]}
    assert _speedups.book_json(frame, "price\0x", "qty") is None


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
