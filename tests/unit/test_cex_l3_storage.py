"""An L3 book's stored rows replayed by order id (``sinks.cex_books.replay``, what ``/v1/cex/books`` answers)
and kept by the hub (``api.stream.cex.HeldBook``, what a new ``cex_book`` subscriber starts from). Rows and
records are written out here; expected books are worked out by hand."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from api.stream.cex import CexFanOut, HeldBook
from records.cex import BookDelta, BookSnapshot
from sinks.cex_books import replay

pytestmark = pytest.mark.unit

D = Decimal


def snapshot_row(bids: list[list[str]], asks: list[list[str]], sequence: int = 10) -> dict[str, Any]:
    return {
        "id": 1,
        "kind": "snapshot",
        "sequence": sequence,
        "bids": bids,
        "asks": asks,
        "atom_timestamp": 100,
    }


def order(row_id: int, order_id: str, side: str, price: str, size: str, sequence: int) -> dict[str, Any]:
    return {"id": row_id, "kind": "delta", "side": side, "price": price, "size": size, "order_id": order_id,
            "sequence": sequence, "atom_timestamp": 100 + row_id}  # fmt: skip


# the snapshot: bids 100 (a 1 + b 2), 99 (c 5); asks 101 (d 1); then its orders at its sequence
SNAPSHOT = snapshot_row([["100", "3"], ["99", "5"]], [["101", "1"]])
ORDERS = [
    order(2, "a", "bid", "100", "1", 10),
    order(3, "b", "bid", "100", "2", 10),
    order(4, "c", "bid", "99", "5", 10),
    order(5, "d", "ask", "101", "1", 10),
]


def test_orders_replayed_by_id_with_time_priority() -> None:
    rows = [
        *ORDERS,
        order(6, "a", "bid", "100", "0.5", 11),  # partly filled: keeps its place
        order(7, "b", "bid", "100", "0", 12),  # moved: gone from 100 ...
        order(8, "b", "bid", "99", "2", 12),  # ... to the back of 99
        order(9, "d", "ask", "101", "0", 13),  # filled
        order(10, "e", "ask", "102", "4", 14),
    ]
    book = replay(SNAPSHOT, rows)
    assert book.valid and book.sequence == 14 and book.timestamp == 110 and book.last_id == 10
    assert book.bids == [(D("100"), D("0.5")), (D("99"), D("7"))]
    assert book.asks == [(D("102"), D("4"))]
    assert [(o[0], o[2], o[3]) for o in book.orders_of("bid")] == [
        ("a", D("100"), D("0.5")), ("c", D("99"), D("5")), ("b", D("99"), D("2")),
    ]  # fmt: skip


def test_a_snapshot_stored_without_all_its_orders_is_not_a_valid_book() -> None:
    assert not replay(SNAPSHOT, ORDERS[:3]).valid  # cut inside the snapshot's orders
    assert not replay(SNAPSHOT, [*ORDERS[:3], order(6, "e", "ask", "102", "4", 11)]).valid
    assert replay(SNAPSHOT, ORDERS).valid


def test_resync_after_the_snapshot_means_no_book() -> None:
    resync = {"id": 6, "kind": "resync", "sequence": 10, "atom_timestamp": 200, "order_id": None}
    book = replay(SNAPSHOT, [*ORDERS, resync])
    assert not book.valid and book.bids == book.asks == [] and book.last_id == 6


def test_l2_rows_stay_by_level() -> None:
    rows = [{"id": 2, "kind": "delta", "side": "bid", "price": "100", "size": "7", "order_id": None,
             "sequence": 11, "atom_timestamp": 101}]  # fmt: skip
    book = replay(SNAPSHOT, rows)
    assert book.valid and book.orders is None and book.bids == [(D("100"), D("7")), (D("99"), D("5"))]


def delta(order_id: str, side: str, price: str, size: str, sequence: int) -> BookDelta:
    return BookDelta("coinbase-l3", "BTC-USD", side, D(price), D(size), order_id, sequence, None, 1)


def test_the_hub_keeps_an_l3_book_by_order_and_starts_a_new_subscriber_with_its_orders() -> None:
    snap = BookSnapshot("coinbase-l3", "BTC-USD", ((D("100"), D("3")),), ((D("101"), D("1")),), 10, None, 1)
    fan = CexFanOut()
    fan.publish([snap, delta("a", "bid", "100", "1", 10), delta("b", "bid", "100", "2", 10),
                 delta("d", "ask", "101", "1", 10), delta("a", "bid", "100", "0", 11),
                 delta("b", "bid", "100", "1.5", 12), delta("e", "bid", "98", "2", 13)])  # fmt: skip
    held: HeldBook = fan.books[("coinbase-l3", "BTC-USD")]
    assert held.valid and held.sequence == 13
    assert held.snapshot().bids == ((D("100"), D("1.5")), (D("98"), D("2")))
    assert [(d.order_id, d.price, d.size) for d in held.order_deltas()] == [
        ("b", D("100"), D("1.5")), ("d", D("101"), D("1")), ("e", D("98"), D("2")),
    ]  # fmt: skip
    # a periodic snapshot of the same book, followed by its orders, starts the orders over
    fan.publish([snap, delta("a", "bid", "100", "3", 14)])
    assert held.snapshot().bids == ((D("100"), D("3")),) and held.snapshot().asks == ()
