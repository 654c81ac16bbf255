"""cex/_speedups.c given what its callers never give it: a slot of another class, levels whose methods
(Python code the C loop calls) change or free the lists being read, a book side holding objects in a
reference cycle, a level key with a NUL, a checksum style it does not know; and Binance frames whose book
side is no array. Each must raise a clear error or do what the Python path does, never read or write
outside an object (the first four crashed the process or read freed memory before the fix).
"""

from __future__ import annotations

import gc
import weakref
from decimal import Decimal
from typing import Any

import pytest

import cex.exchanges.binance as binance_module
import cex.exchanges.kraken as kraken_module
from cex import book as book_module
from cex.book import L2Book
from cex.exchange import MalformedMessage, Parsed
from cex.exchanges.binance import Binance
from cex.exchanges.kraken import Kraken, _pairs_python
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


class _Emptying:
    """A size whose truth test empties the list of levels being applied and lets the freed levels' memory
    be reused: the C loop held a borrowed level (and read past the list's new end)."""

    def __init__(self, levels: list[Any], value: int) -> None:
        self.levels, self.value = levels, value

    def __bool__(self) -> bool:
        self.levels.clear()
        gc.collect()
        [(object(), object()) for _ in range(200)]
        return bool(self.value)

    def __repr__(self) -> str:
        return f"size {self.value}"


def _emptying_levels(n: int) -> list[Any]:
    levels: list[Any] = []
    levels.extend((Decimal(i), _Emptying(levels, 1)) for i in range(n))
    return levels


def test_apply_side_levels_emptied_by_a_size_as_the_python_loop_sees_them() -> None:
    answers = []
    for python in (True, False):
        book = L2Book()
        book.load([], [])
        levels = _emptying_levels(50)
        if python:
            book._update_python(levels, [])
        else:
            book.update(levels, [])
        answers.append([(price, size.value) for price, size in book.bid_levels()])  # type: ignore[attr-defined]
    assert answers[0] == answers[1] == [(Decimal(0), 1)]


def test_ordered_side_levels_emptied_by_a_size_leave_it_to_the_python_sort() -> None:
    levels = _emptying_levels(50)
    assert _speedups.ordered_side(levels) is None  # the list changed: cex.book sorts what it holds now
    assert levels == []
    assert book_module._sorted_side(_emptying_levels(50)) == ([], [])  # the Python path on what is left


class _Clearing:
    """A price that is not a Decimal and whose float() (the search key C makes of it) empties the book
    side's lists: C wrote the key into the emptied list (a NULL array) and searched past its end."""

    def __init__(self, lists: list[list[Any]], value: int) -> None:
        self.lists, self.value = lists, value

    def __float__(self) -> float:
        for side_list in self.lists:
            side_list.clear()
        gc.collect()
        return float(self.value)


def test_apply_side_book_lists_emptied_by_a_price_is_an_error() -> None:
    keys: list[Any] = [None] * 20
    prices: list[Any] = []
    sizes: list[Any] = [Decimal(1)] * 20
    texts: list[Any] = [None] * 20
    prices.extend(_Clearing([keys, prices, sizes, texts], i) for i in range(20))
    with pytest.raises(RuntimeError, match="a book side changed during apply_side"):
        _speedups.apply_side(keys, prices, sizes, texts, [(Decimal(7), Decimal(1))])
    assert keys == prices == sizes == texts == []


class _Level:
    """A Kraken level whose price attribute empties the list of levels being paired."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.qty = 2

    @property
    def price(self) -> int:
        self.items.clear()
        gc.collect()
        [object() for _ in range(200)]
        return 1


def test_pairs_items_emptied_by_an_attribute_as_the_python_loop_sees_them() -> None:
    answers = []
    for pair in (_pairs_python, _speedups.pairs):
        items: list[Any] = []
        items.extend(_Level(items) for _ in range(50))
        answers.append(pair(items, "price", "qty"))
    assert answers[0] == answers[1] == [(Decimal(1), Decimal(2))]


class _Exponent:
    """A price that is not a Decimal and whose str has an exponent: C calls make for its text."""

    def __str__(self) -> str:
        return "1E+5"


def test_top_texts_lists_emptied_by_make_is_an_error_not_a_read_past_them() -> None:
    prices: list[Any] = [_Exponent() for _ in range(20)]
    sizes: list[Any] = [Decimal(1)] * 20
    texts: list[str | None] = [None] * 20

    def make(price: Any, size: Any) -> str:
        prices.clear()
        sizes.clear()
        texts.clear()
        gc.collect()
        return "text"

    with pytest.raises(RuntimeError, match="changed while its checksum texts were made"):
        _speedups.top_texts(prices, sizes, texts, 10, True, 0, None, None, make)


def test_top_texts_refuses_a_style_it_does_not_make() -> None:
    """Style 2 was written as OKX's price:size where the Python path calls make."""
    prices, sizes = [Decimal("1.5")], [Decimal(2)]
    assert _speedups.top_texts(prices, sizes, [None], 10, False, 0, None, None, str) == ["1.5:2"]
    with pytest.raises(ValueError, match=r"style 0 \(OKX\) or 1 \(Kraken\), not 2"):
        _speedups.top_texts(prices, sizes, [None], 10, False, 2, None, None, lambda p, s: "made")


class _Price:
    """A price in a reference cycle through the book side's list that holds it."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.side: Any = None

    def __lt__(self, other: _Price) -> bool:
        return self.value < other.value

    def __gt__(self, other: _Price) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Price) and self.value == other.value

    def __hash__(self) -> int:
        return self.value

    def __float__(self) -> float:
        return float(self.value)


def test_a_cycle_through_a_book_side_is_collected() -> None:
    """ordered_side took every side's lists out of the cycle collector (right for Decimals, which hold
    nothing): a side of other objects in a cycle through the list was never freed. Same for a level such an
    object inserted by apply_side into a side of Decimals."""
    made = _speedups.ordered_side([(_Price(1), Decimal(1)), (_Price(2), Decimal(1))])
    assert made is not None
    prices, _ = made
    prices[0].side = prices
    ref = weakref.ref(prices[0])
    del made, prices
    gc.collect()
    assert ref() is None

    book = L2Book()
    book.load([(Decimal(1), Decimal(1)), (Decimal(3), Decimal(1))], [])
    assert not gc.is_tracked(book._bid_prices)  # Decimals only: out of the collector, as before
    price = _Price(2)
    book.update([(price, Decimal(1))], [])  # type: ignore[list-item]
    price.side = book._bid_prices
    ref = weakref.ref(price)
    del book, price
    gc.collect()
    assert ref() is None


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


def test_a_kraken_book_frame_with_a_second_channel_key_parses_as_without_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JSON's last key wins: '"channel":5' after '"channel":"book"' fails the typed decoder (the frame then
    goes to the general path, which maps no channel 5), but book_json's frame was taken as a book update."""
    frame = (
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":1.5,"qty":2.0}],'
        '"asks":[],"checksum":1,"timestamp":"2023-10-06T17:35:55.440295Z"}],"channel":5}'
    )
    with_c = repr(Kraken().parse(frame, 7))
    monkeypatch.setattr(kraken_module, "_book_json", None)
    assert with_c == repr(Kraken().parse(frame, 7)) == repr(Parsed())
