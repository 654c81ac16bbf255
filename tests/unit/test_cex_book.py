"""The order book and its checksums against recorded real feeds (``../shared/fixtures/cex/``).

Oracle: the checksum each exchange put in each recorded frame (OKX ``books`` v5, 2022-05-13; Kraken
``book-1000`` v1, 2021-04-17), i.e. the exchange's own top-of-book after that frame. Every frame is
compared, and the number compared is held to the count the recordings carry (290 OKX, 472 Kraken).
"""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from pathlib import Path

import pytest

from cex.book import L2Book, L3Book, levels_of
from cex.checksum import kraken_checksum, kraken_checksum_text, okx_checksum
from devnet.exchanges import recording

pytestmark = pytest.mark.unit


def test_every_okx_books_frame_checksum_matches(fixtures_dir: Path) -> None:
    books: dict[str, L2Book] = {}
    compared = snapshots = 0
    for payload in recording.received(fixtures_dir / "cex" / "okx" / "OKX.ws.1.0"):
        msg = json.loads(payload)
        if msg.get("arg", {}).get("channel") != "books" or "data" not in msg:
            continue
        inst = msg["arg"]["instId"]
        (data,) = msg["data"]
        if msg["action"] == "snapshot":
            snapshots += 1
            books[inst] = L2Book()
            books[inst].load(levels_of(data["bids"]), levels_of(data["asks"]))
        else:
            books[inst].update(levels_of(data["bids"]), levels_of(data["asks"]))
        assert not books[inst].crossed()
        assert okx_checksum(books[inst]) == data["checksum"], (inst, data["ts"])
        compared += 1
    assert (compared, snapshots) == (290, 3)


def _kraken_v1_frames(path: Path) -> list[tuple[int, dict[str, list[list[str]]], str | None]]:
    """(channel id, merged side dicts, checksum) of every book data frame; v1 may split asks and bids
    over two dicts (``[id, {a}, {b, c}, name, pair]``)."""
    out = []
    for payload in recording.received(path):
        msg = json.loads(payload)
        if not isinstance(msg, list):
            continue
        merged: dict[str, list[list[str]]] = {}
        checksum = None
        for part in msg[1:-2]:
            for key, value in part.items():
                if key == "c":
                    checksum = value
                else:
                    merged[key] = value
        out.append((msg[0], merged, checksum))
    return out


def test_every_kraken_v1_book_update_checksum_matches(fixtures_dir: Path) -> None:
    depth = 1000
    books: dict[int, L2Book] = {}
    compared = snapshots = 0
    for channel, sides, checksum in _kraken_v1_frames(
        fixtures_dir / "cex" / "kraken" / "KRAKEN.ws.50.0.first500lines"
    ):
        if "as" in sides or "bs" in sides:
            snapshots += 1
            books[channel] = L2Book(depth)
            books[channel].load(levels_of(sides.get("bs", [])), levels_of(sides.get("as", [])))
            continue
        book = books[channel]
        # a level's later entry in the same message wins: applied in order, then truncated
        book.update(levels_of(sides.get("b", [])), levels_of(sides.get("a", [])))
        assert checksum is not None
        assert not book.crossed()
        assert kraken_checksum(book) == int(checksum), channel
        compared += 1
    assert (compared, snapshots) == (472, 10)


def test_kraken_checksum_text_follows_the_documented_rule() -> None:
    # Kraken's v2 documentation example shape: price 45285.2 qty 0.00100000 -> "452852" + "100000"
    text = kraken_checksum_text([("45285.2", "0.00100000")], [("45283.5", "0.10000000")])
    assert text == "452852100000" + "452835" + "10000000"
    book = L2Book()
    book.load([(Decimal("45283.5"), Decimal("0.1"))], [(Decimal("45285.2"), Decimal("0.001"))])
    # v2 numbers arrive without trailing zeros: the instrument's precision restores them
    assert kraken_checksum(book, price_decimals=1, qty_decimals=8) == zlib.crc32(text.encode())


def test_book_orders_levels_and_detects_crossing() -> None:
    book = L2Book(depth=2)
    book.load(
        [(Decimal("99"), Decimal("1")), (Decimal("98"), Decimal("2")), (Decimal("97"), Decimal("3"))],
        [(Decimal("101"), Decimal("1")), (Decimal("102"), Decimal("2"))],
        sequence=7,
    )
    assert book.bid_levels() == [(Decimal("99"), Decimal("1")), (Decimal("98"), Decimal("2"))]
    assert book.ask_levels(1) == [(Decimal("101"), Decimal("1"))]
    assert (book.sequence, book.valid, book.crossed()) == (7, True, False)
    book.update([(Decimal("101.5"), Decimal("1"))], [(Decimal("101"), Decimal("0"))])
    assert book.best_bid() == (Decimal("101.5"), Decimal("1"))
    assert book.ask_levels() == [(Decimal("102"), Decimal("2"))]
    assert not book.crossed()
    book.set("bid", Decimal("102"), Decimal("1"))
    assert book.crossed()  # a bid at the best ask: a level was lost somewhere
    book.truncate(2)  # set() does not truncate; update() does
    assert [p for p, _ in book.bid_levels()] == [Decimal("102"), Decimal("101.5")]


def test_l3_book_keeps_orders_per_level_in_arrival_order() -> None:
    book = L3Book()
    book.add("a", "bid", Decimal("10"), Decimal("1"))
    book.add("b", "bid", Decimal("10"), Decimal("2"))
    book.add("c", "ask", Decimal("11"), Decimal("5"))
    assert list(book.bids[Decimal("10")]) == ["a", "b"]
    assert book.level("bid", Decimal("10")) == Decimal("3")
    assert book.change("a", Decimal("0.5")) and book.level("bid", Decimal("10")) == Decimal("2.5")
    assert book.remove("b") and not book.remove("b") and not book.change("zz", Decimal(1))
    assert book.to_l2().bid_levels() == [(Decimal("10"), Decimal("0.5"))]
    book.remove("a")
    assert Decimal("10") not in book.bids
    book.add("d", "bid", Decimal("11"), Decimal("1"))
    assert book.crossed()
