"""Property tests of the fast book path against plain references written here.

The hot path keeps each book side as two parallel sorted lists searched by ``bisect`` (``cex.book``), makes
``BookDelta``s in C or through slot descriptors (``cex.sync``) and makes checksum text in bulk with
fallbacks. Each
test drives it with random snapshots and deltas and compares with the simplest correct thing: a dict of
``Decimal`` sorted on demand, records made by ``BookDelta(...)``, checksum text built level by level from
the exchange's strings by the documented rule.
"""

from __future__ import annotations

import zlib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cex.book as book_module
import cex.sync as sync_module
from cex import _speedups
from cex._speedups import deltas
from cex.book import L2Book
from cex.checksum import kraken_checksum, okx_checksum
from cex.sync import BookMessage, BookSync, _deltas_python
from records.cex import BookDelta
from records.codec import to_json

pytestmark = pytest.mark.unit

Rows = list[tuple[str, str]]


def _text(units: int, scale: int, pad: int = 0) -> str:
    """``units`` × 10^-scale as plain decimal text, with ``pad`` extra trailing zeros (another spelling of
    the same value, as an exchange might send)."""
    digits = str(units).rjust(scale + 1, "0")
    text = f"{digits[:-scale]}.{digits[-scale:]}" if scale else digits
    return text + ("0" * pad if scale else ("." + "0" * pad if pad else ""))


prices = st.integers(1, 400)  # a narrow band: updates hit existing levels, bids and asks may cross
sizes = st.integers(0, 3_000)  # 0 removes the level
spelling = st.integers(0, 2)
scales = st.integers(0, 9)


@st.composite
def rows(draw: st.DrawFn, scale: int, allow_zero: bool) -> Rows:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        size = draw(sizes if allow_zero else sizes.filter(bool))
        out.append((_text(draw(prices), scale, draw(spelling)), _text(size, scale, draw(spelling))))
    return out


@st.composite
def sessions(draw: st.DrawFn) -> tuple[int, Rows, Rows, list[tuple[Rows, Rows]]]:
    scale = draw(scales)
    updates = draw(st.lists(st.tuples(rows(scale, True), rows(scale, True)), max_size=25))
    return scale, draw(rows(scale, False)), draw(rows(scale, False)), updates


class Reference:
    """The obvious book: a dict of Decimal per side, sorted when read."""

    def __init__(self, depth: int | None) -> None:
        self.depth = depth
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def apply(self, bids: Rows, asks: Rows) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, size in levels:
                if Decimal(size):
                    side[Decimal(price)] = Decimal(size)
                else:
                    side.pop(Decimal(price), None)
        if self.depth is not None:
            self.bids = dict(self.bid_levels()[: self.depth])
            self.asks = dict(self.ask_levels()[: self.depth])

    def bid_levels(self) -> list[tuple[Decimal, Decimal]]:
        return sorted(self.bids.items(), reverse=True)

    def ask_levels(self) -> list[tuple[Decimal, Decimal]]:
        return sorted(self.asks.items())


def _levels(rows: Rows) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in rows]


@pytest.mark.parametrize("update", ["C", "Python"])
@settings(max_examples=200, deadline=None)
@given(sessions(), st.sampled_from([None, 1, 3, 10]), st.sampled_from(["okx", "kraken v1", "kraken v2"]))
def test_book_equals_a_dict_of_decimal_reference(
    update: str, session: tuple[int, Rows, Rows, list[tuple[Rows, Rows]]], depth: int | None, rule: str
) -> None:
    # L2Book.update runs cex/_speedups.c's apply_side when built, else its Python loop: both are held
    c_update = book_module._apply_side
    assert c_update is not None, "cex/_speedups.c is not built (make install)"
    book_module._apply_side = c_update if update == "C" else None
    try:
        _book_session(session, depth, rule)
    finally:
        book_module._apply_side = c_update


def _book_session(
    session: tuple[int, Rows, Rows, list[tuple[Rows, Rows]]], depth: int | None, rule: str
) -> None:
    _, snap_bids, snap_asks, updates = session
    book, ref = L2Book(depth), Reference(depth)
    book.load(_levels(snap_bids), _levels(snap_asks), sequence=1)
    ref.apply(snap_bids, snap_asks)
    for n, (bids, asks) in enumerate([((), ()), *updates]):
        if (bids or asks) and n % 2:  # as OKX and Binance apply: with the keys read from the text
            bid_keys: list[float | None] = []
            ask_keys: list[float | None] = []
            bid_levels = book_module.row_levels(list(bids), None, bid_keys)
            ask_levels = book_module.row_levels(list(asks), None, ask_keys)
            book.update(bid_levels, ask_levels, bid_keys, ask_keys)
            ref.apply(list(bids), list(asks))
        elif bids or asks:
            book.update(_levels(list(bids)), _levels(list(asks)))
            ref.apply(list(bids), list(asks))
        assert book.bid_levels() == ref.bid_levels()
        assert book.ask_levels() == ref.ask_levels()
        assert book.bids == ref.bids and book.asks == ref.asks
        assert book.bid_levels(2) == ref.bid_levels()[:2] and book.ask_levels(2) == ref.ask_levels()[:2]
        assert book.best_bid() == (ref.bid_levels()[0] if ref.bids else None)
        assert book.best_ask() == (ref.ask_levels()[0] if ref.asks else None)
        crossed = bool(ref.bids and ref.asks and max(ref.bids) >= min(ref.asks))
        assert book.crossed() == crossed
        if depth is not None:
            assert len(book.bids) <= depth and len(book.asks) <= depth
        # checksum text is kept per level until the level changes (one rule per book, as in a feed): it
        # must equal text made afresh from the levels now in the book (held to the reference above)
        fresh_bids = [(format(p, "f"), format(q, "f")) for p, q in book.bid_levels()]
        fresh_asks = [(format(p, "f"), format(q, "f")) for p, q in book.ask_levels()]
        scale = session[0]
        if rule == "okx":
            assert okx_checksum(book) == _okx_reference(fresh_bids, fresh_asks)
        elif rule == "kraken v1":
            assert kraken_checksum(book) == _kraken_reference(fresh_bids, fresh_asks)
        else:
            assert kraken_checksum(book, scale, scale) == _kraken_reference(
                [(f"{p:.{scale}f}", f"{q:.{scale}f}") for p, q in book.bid_levels()],
                [(f"{p:.{scale}f}", f"{q:.{scale}f}") for p, q in book.ask_levels()],
            )


def _okx_reference(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """OKX's documented rule from the exchange's strings: top 25, bid:size:ask:size interleaved, the longer
    side's rest after; CRC32 as a signed 32-bit integer."""
    parts = []
    for i in range(max(len(bids[:25]), len(asks[:25]))):
        if i < len(bids):
            parts.extend(bids[i])
        if i < len(asks):
            parts.extend(asks[i])
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def _kraken_reference(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """Kraken's documented rule: top 10 asks ascending then bids descending, '.' removed, leading zeros
    stripped, price then quantity, CRC32 unsigned."""
    text = "".join(n.replace(".", "").lstrip("0") for p, q in (*asks[:10], *bids[:10]) for n in (p, q))
    return zlib.crc32(text.encode())


@st.composite
def one_spelling_books(draw: st.DrawFn) -> tuple[int, int, list[tuple[str, str]], list[tuple[str, str]]]:
    """A book as an exchange prints it: every price at one scale, every size at another; bids below asks.
    Small values make str(Decimal) write exponents (0.00000001 -> 1E-8): the fallback must catch them."""
    price_scale, size_scale = draw(scales), draw(scales)
    ticks = draw(st.lists(st.integers(1, 10_000), min_size=0, max_size=70, unique=True))
    cut = draw(st.integers(0, len(ticks)))
    ordered = sorted(ticks)
    levels = [(_text(t, price_scale), _text(draw(st.integers(1, 10**6)), size_scale)) for t in ordered]
    bids, asks = levels[:cut][::-1], levels[cut:]
    return price_scale, size_scale, bids, asks


@settings(max_examples=200, deadline=None)
@given(one_spelling_books())
def test_checksums_equal_the_documented_rule_over_the_exchange_strings(
    case: tuple[int, int, list[tuple[str, str]], list[tuple[str, str]]],
) -> None:
    price_scale, size_scale, bids, asks = case
    book = L2Book()
    book.load(_levels(bids), _levels(asks))
    assert okx_checksum(book) == _okx_reference(bids, asks)
    expected = _kraken_reference(bids, asks)
    assert kraken_checksum(book) == expected  # v1: the text as sent
    assert kraken_checksum(book, price_scale, size_scale) == expected  # v2: formatted to the precision
    # v2 numbers arrive as JSON numbers without trailing zeros: the precision restores them
    bare = L2Book()
    bare.load(
        [(Decimal(p).normalize(), Decimal(q).normalize()) for p, q in bids],
        [(Decimal(p).normalize(), Decimal(q).normalize()) for p, q in asks],
    )
    assert kraken_checksum(bare, price_scale, size_scale) == expected


@settings(max_examples=100, deadline=None)
@given(sessions())
def test_published_deltas_equal_records_made_by_their_constructor(
    session: tuple[int, Rows, Rows, list[tuple[Rows, Rows]]],
) -> None:
    _, snap_bids, snap_asks, updates = session
    sync = BookSync("okx", "BTC-USDT", "none")
    snap = BookMessage("BTC-USDT", True, _levels(snap_bids), _levels(snap_asks))
    sync.on_message(snap)
    for i, (bids, asks) in enumerate(updates):
        msg = BookMessage(
            "BTC-USDT",
            False,
            _levels(bids),
            _levels(asks),
            last=i,
            event_timestamp=1000 + i,
            atom_timestamp=7,
        )
        out = sync.on_message(msg)
        if not sync.book.valid:  # crossed: a Resync, no deltas
            break
        expected = [BookDelta("okx", "BTC-USDT", "bid", p, q, None, i, 1000 + i, 7) for p, q in msg.bids]
        expected += [BookDelta("okx", "BTC-USDT", "ask", p, q, None, i, 1000 + i, 7) for p, q in msg.asks]
        # the C maker in use (cex/_speedups.c) and the Python fallback both give exactly these records
        args = ("okx", "BTC-USDT", msg.bids, msg.asks, i, 1000 + i, 7)
        for made in (out, _deltas_python(*args), deltas(*args)):
            assert made == expected
            assert all(type(d) is BookDelta for d in made)
            assert [to_json(d) for d in made] == [to_json(e) for e in expected]  # what sinks publish
            assert [hash(d) for d in made] == [hash(e) for e in expected]


def test_the_c_extension_is_built_and_used() -> None:
    # `make install` builds cex/_speedups.c (gcc and the Python headers are part of the setup); if this
    # fails, the feed still works on the Python fallback, at about a third of the delta rate
    assert sync_module._deltas is deltas
    with pytest.raises(TypeError):
        deltas("okx", "BTC-USDT", [(Decimal(1),)], [], 1, 2, 3)  # a level is (price, size)
    with pytest.raises(TypeError):
        deltas("okx", "BTC-USDT", [], [])


# --- the parse and checksum fast paths: C and Python against Decimal(text) and the documented rules -----

number_texts = st.one_of(
    st.builds(_text, st.integers(0, 10**12), scales, spelling),
    st.sampled_from(["0", "1E-8", "1e+3", "-0.5", "0.00000001", "12345678901234567890.123456789"]),
)


@pytest.mark.parametrize("maker", ["C", "Python"])
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(number_texts, number_texts, st.sampled_from([(), ("0", "4")])), max_size=30))
def test_row_levels_equal_decimal_of_each_text(
    maker: str, rows: list[tuple[str, str, tuple[str, ...]]]
) -> None:
    # OKX/Binance rows [price, size, ...]: the cached Decimals are the ones Decimal(text) makes, digit for
    # digit (str), including the second time a text is seen (from the cache)
    make = book_module._row_levels if maker == "C" else book_module._row_levels_python
    assert make is not None, "cex/_speedups.c is not built (make install)"
    cache: dict[str, Decimal] = {}
    table = [[price, size, *rest] for price, size, rest in rows]
    for _ in range(2):
        got = make(table, cache)
        expected = [(Decimal(p), Decimal(q)) for p, q, _ in rows]
        assert got == expected
        assert [(str(p), str(q)) for p, q in got] == [(str(p), str(q)) for p, q in expected]
    texts = {t for p, q, _ in rows for t in (p, q)}
    if maker == "C" and _speedups.fast_decimals():
        # C makes each Decimal directly (cheaper than a cache lookup): the cache is not used
        assert cache == {}
    else:
        assert set(cache) == texts
    assert make(table, None) == expected  # no cache (REST snapshots): the same levels


decimal_texts = st.one_of(
    number_texts,
    st.from_regex(r"-?[0-9]{1,45}(\.[0-9]{1,45})?", fullmatch=True),
    st.sampled_from(
        [
            "-0",
            "0.000",
            "00.10",
            "5.",
            ".5",
            "+1",
            "1_0",
            " 2",
            "NaN",
            "-Infinity",
            "1e-5",
            "0E-8",
            "١٢",
            "9" * 19,
            "1" + "0" * 19,
            "9" * 38,
            "1" + "0" * 38,
            "-0." + "0" * 30 + "1",
            "1." + "0" * 40,
        ]
    ),
)


def test_decimals_are_made_directly_where_built() -> None:
    # the layout check of CPython's Decimal passed at import: the fast maker is in use (else every Decimal
    # comes from Decimal(text), correct but ~7x the cost)
    assert _speedups.fast_decimals()


@settings(max_examples=500, deadline=None)
@given(decimal_texts)
def test_decimals_made_in_c_are_decimal_of_the_text(text: str) -> None:
    # exactly Decimal(text): same sign, coefficient, exponent (as_tuple), same text, same hash, same
    # arithmetic; a text Decimal refuses is refused the same way
    try:
        expected = Decimal(text)
    except ArithmeticError:
        with pytest.raises(ArithmeticError):
            _speedups.decimal(text)
        return
    got = _speedups.decimal(text)
    assert type(got) is Decimal
    assert got.as_tuple() == expected.as_tuple()
    assert str(got) == str(expected)
    if expected.is_nan():
        return
    assert got == expected and hash(got) == hash(expected)
    assert got + Decimal("0.1") == expected + Decimal("0.1")
    assert got.is_signed() == expected.is_signed()
    assert [(p, str(q)) for p, q in book_module.row_levels([[text, text]], None)] == [(got, str(expected))]


@settings(max_examples=200, deadline=None)
@given(st.lists(number_texts, max_size=30))
def test_price_keys_read_from_the_text_equal_the_decimals_floats(texts: list[str]) -> None:
    # the search key C reads from a price's text is float(Decimal(text)) (both the nearest double), so the
    # binary search over keys made from texts and from Decimals agrees; None where C makes it from the Decimal
    keys: list[float | None] = []
    assert book_module._row_levels is not None, "cex/_speedups.c is not built (make install)"
    book_module._row_levels([[t, "1"] for t in texts], {}, keys)
    assert keys == [float(Decimal(t)) for t in texts]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("1E+5", 1e5),
        ("-0", 0.0),
        ("0.1", 0.1),
        ("1_000", None),
        ("Infinity", None),
        ("NaN", None),
        (" 2", None),
    ],
)
def test_a_price_text_the_double_parser_does_not_take_has_no_key(text: str, key: float | None) -> None:
    keys: list[float | None] = []
    assert book_module._row_levels is not None
    book_module._row_levels([[text, "1"]], None, keys)
    assert keys == [key]


@pytest.mark.parametrize("maker", ["C", "Python"])
@pytest.mark.parametrize(
    "row", [["1"], [], [1.5, "1"], ["1", None], ["abc", "1"]], ids=["short", "empty", "float", "none", "text"]
)
def test_row_levels_refuse_what_is_not_two_decimal_strings(maker: str, row: list[object]) -> None:
    # a float would be inexact, a short row is garbage: both are malformed messages for the feed
    make = book_module._row_levels if maker == "C" else book_module._row_levels_python
    assert make is not None
    with pytest.raises((TypeError, ValueError, ArithmeticError)):
        make([["1", "2"], row], {})


@pytest.mark.parametrize("texts", ["C", "Python"])
@settings(max_examples=150, deadline=None)
@given(one_spelling_books(), st.lists(st.tuples(st.booleans(), st.integers(0, 69)), max_size=10))
def test_checksum_texts_in_c_equal_the_python_makers(
    texts: str,
    case: tuple[int, int, list[tuple[str, str]], list[tuple[str, str]]],
    removals: list[tuple[bool, int]],
) -> None:
    # cex/_speedups.c top_texts makes OKX's and Kraken's level text itself (falling back to the Python
    # maker for exponents and other precisions): held to the documented rules, on either path, after
    # updates that remove levels (texts shift with their levels)
    c_top = book_module._top_texts
    assert c_top is not None, "cex/_speedups.c is not built (make install)"
    book_module._top_texts = c_top if texts == "C" else None
    try:
        price_scale, size_scale, bids, asks = case
        book = L2Book()
        book.load(_levels(bids), _levels(asks))
        for is_bid, index in [(True, 0), *removals]:
            side = bids if is_bid else asks
            if index < len(side) and index:
                price, _ = side.pop(index)
                book.update(
                    *(
                        ([(Decimal(price), Decimal(0))], [])
                        if is_bid
                        else ([], [(Decimal(price), Decimal(0))])
                    )
                )
            assert okx_checksum(book) == _okx_reference(bids, asks)
            assert kraken_checksum(book) == _kraken_reference(bids, asks)
            assert kraken_checksum(book, price_scale, size_scale) == _kraken_reference(bids, asks)
            assert kraken_checksum(book, price_scale + 1, size_scale) == _kraken_reference(
                [(f"{Decimal(p):.{price_scale + 1}f}", q) for p, q in bids],
                [(f"{Decimal(p):.{price_scale + 1}f}", q) for p, q in asks],
            )
    finally:
        book_module._top_texts = c_top


def test_prices_equal_as_doubles_are_still_told_apart() -> None:
    # the C search compares float keys, and Decimals only where two keys are equal: prices that differ
    # beyond a double's precision must still be separate levels, found again exactly
    base = Decimal("1.00000000000000000001")
    close = [base + Decimal(i) * Decimal("1E-20") for i in range(6)]
    assert len({float(p) for p in close}) == 1
    ref = Reference(None)
    book = L2Book()
    book.load([], [])
    order = [3, 0, 5, 1, 4, 2]
    for i in order:
        book.update([(close[i], Decimal(i + 1))], [])
        ref.bids[close[i]] = Decimal(i + 1)
    book.update([(close[2], Decimal(0)), (close[4], Decimal(9))], [])
    del ref.bids[close[2]]
    ref.bids[close[4]] = Decimal(9)
    assert book.bid_levels() == ref.bid_levels()
    with pytest.raises(ArithmeticError):  # a NaN or infinite price has no place in a book
        book.update([(Decimal("Infinity"), Decimal(1))], [])


@pytest.mark.parametrize("order", ["ascending", "descending", "as drawn"])
@settings(max_examples=150, deadline=None)
@given(scales.flatmap(lambda scale: rows(scale, True)))
def test_a_snapshot_side_loads_as_the_reference_orders_it(order: str, side: Rows) -> None:
    # cex/_speedups.c ordered_side takes a strictly ordered side in one pass (zero sizes dropped), and
    # hands anything else (repeated prices, no order) back to the sort: both give the reference's levels
    levels = _levels(side)
    if order != "as drawn":
        levels.sort(key=lambda level: level[0], reverse=order == "descending")
    ref = Reference(None)
    ref.apply([], [(format(p, "f"), format(q, "f")) for p, q in levels if q])  # load: zeros dropped first
    c_ordered = book_module._ordered_side
    assert c_ordered is not None, "cex/_speedups.c is not built (make install)"
    try:
        for maker in (c_ordered, None):
            book_module._ordered_side = maker
            book = L2Book()
            book.load([], iter(levels))  # a generator too (L3Book.to_l2 passes one)
            assert book.ask_levels() == ref.ask_levels()
            assert [str(p) for p, _ in book.ask_levels()] == [str(p) for p, _ in ref.ask_levels()]
    finally:
        book_module._ordered_side = c_ordered


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 60), st.integers(0, 5)), max_size=12),
    st.lists(st.tuples(st.integers(61, 120), st.integers(0, 5)), max_size=12),
    st.sampled_from(["exchange order", "reversed", "shuffled"]),
    st.one_of(st.none(), st.integers(1, 8)),
    st.booleans(),
)
def test_a_snapshot_record_is_the_book_whatever_order_its_levels_came_in(
    bid_ticks: list[tuple[int, int]],
    ask_ticks: list[tuple[int, int]],
    order: str,
    depth: int | None,
    then_update: bool,
) -> None:
    # whatever the order, zeros or repeats a snapshot's levels come in, and after an update, the published
    # record is the book best first (bids descending, asks ascending), against a plain dict reference
    def side(ticks: list[tuple[int, int]], descending: bool) -> list[tuple[Decimal, Decimal]]:
        levels = [(Decimal(p) / 10, Decimal(s)) for p, s in ticks]
        levels.sort(key=lambda level: level[0], reverse=descending)
        if order == "reversed":
            levels.reverse()
        elif order == "shuffled":
            levels = levels[1::2] + levels[0::2]
        return levels

    bids, asks = side(bid_ticks, True), side(ask_ticks, False)
    # a snapshot's rule: zero sizes dropped, a price given twice keeps its last non-zero size
    expected_bids = {price: size for price, size in bids if size}
    expected_asks = {price: size for price, size in asks if size}
    book = L2Book()
    book.load(bids, asks, 7)
    if then_update:
        book.update([(Decimal("0.1"), Decimal(2))], [(Decimal("12.0"), Decimal(0))])
        expected_bids[Decimal("0.1")] = Decimal(2)
        expected_asks.pop(Decimal("12.0"), None)
    record = book.snapshot("okx", "BTC-USDT", 5, depth)
    assert record.bids == tuple(sorted(expected_bids.items(), reverse=True)[:depth])
    assert record.asks == tuple(sorted(expected_asks.items())[:depth])
    assert (record.sequence, record.atom_timestamp) == (7, 5)


@pytest.mark.parametrize("maker", ["C", "Python"])
@pytest.mark.parametrize("row", ["12", "1234", b"12", 12, None])
def test_a_book_row_that_is_no_list_is_refused(maker: str, row: object) -> None:
    # a garbled side ["12"]: the Python maker read the string's characters as price 1 and size 2
    make = book_module._row_levels if maker == "C" else book_module._row_levels_python
    assert make is not None, "cex/_speedups.c is not built (make install)"
    with pytest.raises((ValueError, TypeError)):
        make([row], None)
