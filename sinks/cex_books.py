"""A stored order book rebuilt at a moment: ``rebuild_book`` (the API's ``/v1/cex/books``, the websocket
listener, ``cex.store``), for L2 books (by price level) and L3 books (by order id).

What is stored (``cex.store``, one ``cex_book_events`` row each, in the feed's order): a ``snapshot`` row (the
L2 levels), ``delta`` rows and ``resync`` rows. An L2 delta sets a level's absolute size. An L3 book
(Coinbase Exchange ``full``, ``cex.l3``) stores each snapshot as its L2 view followed by one delta per
resting order at the snapshot's sequence (``order_id`` set, ``size`` the order's remaining size), then one
delta per order a message changed (size 0: the order left the book); a delta that moves an order's price
comes after the zero at the old price, so the order goes to the back of its new level's queue.

Rebuild at a moment: the stored stream up to the newest row received by then (a prefix in id order: the feed's
order), from its last snapshot and every delta after it; a resync after them means the book was known wrong
from there until the next snapshot (not valid, empty). A book whose deltas carry order ids is kept by order id
and aggregated into levels; its snapshot's own levels must equal the aggregate of the orders stored after it
at its sequence (a snapshot stored without its orders, or with part of them, answers not valid rather than a
wrong book).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

Levels = list[tuple[Decimal, Decimal]]
Order = tuple[str, str, Decimal, Decimal]  # order_id, side (bid | ask), price, size
FAR_FUTURE = 2**62


@dataclass(frozen=True)
class StoredBook:
    sequence: int | None
    valid: bool
    bids: Levels  # best first
    asks: Levels
    timestamp: int | None = None  # atom_timestamp (µs) of the newest event the book includes
    last_id: int | None = None  # id of that event in cex_book_events
    orders: list[Order] | None = None  # an L3 book's resting orders (arrival order); None for L2 books

    def orders_of(self, side: str) -> list[Order]:
        """One side's orders best price first, in time priority within a level."""
        chosen = [o for o in self.orders or () if o[1] == side]
        return sorted(chosen, key=lambda o: o[2], reverse=side == "bid")  # stable: arrival order kept


def json_levels(value: Any) -> list[list[str]]:
    return orjson.loads(value) if isinstance(value, str) else (value or [])


def _aggregate(orders: Iterable[Order]) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    for _, side, price, size in orders:
        levels = bids if side == "bid" else asks
        levels[price] = levels.get(price, Decimal(0)) + size
    return bids, asks


def replay(snapshot: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> StoredBook:
    """The book from a stored snapshot row and the delta/resync rows after it (id order). Pure: rows are
    mappings with the ``cex_book_events`` columns (``price``/``size`` as text or Decimal)."""
    bids = {Decimal(p): Decimal(s) for p, s in json_levels(snapshot["bids"])}
    asks = {Decimal(p): Decimal(s) for p, s in json_levels(snapshot["asks"])}
    snap_sequence = snapshot["sequence"]
    sequence, timestamp, last_id = snap_sequence, snapshot["atom_timestamp"], snapshot["id"]
    orders: dict[str, Order] | None = None
    checked = False  # an L3 snapshot's levels compared with the orders stored after it

    def invalid() -> StoredBook:
        return StoredBook(sequence, False, [], [], timestamp, last_id)

    for row in rows:
        if row["kind"] == "resync":
            return StoredBook(row["sequence"], False, [], [], row["atom_timestamp"], row["id"])
        order_id = row["order_id"]
        if order_id is not None and orders is None:
            orders = {}  # an L3 book: its snapshot's orders follow the snapshot as deltas
        if orders is not None and not checked and row["sequence"] != snap_sequence:
            checked = True
            if _aggregate(orders.values()) != (bids, asks):
                return invalid()
        side, price, size = row["side"], Decimal(row["price"]), Decimal(row["size"])
        if orders is not None and order_id is not None:
            held = orders.get(order_id)
            if held is not None and (not size or held[2] != price):
                del orders[order_id]  # gone, or moved: to the back of its new level
            if size:
                orders[order_id] = (order_id, side, price, size)
        else:
            levels = bids if side == "bid" else asks
            if size:
                levels[price] = size
            else:
                levels.pop(price, None)
        sequence = row["sequence"] if row["sequence"] is not None else sequence
        timestamp, last_id = row["atom_timestamp"], row["id"]
    if orders is None:
        return StoredBook(sequence, True, sorted(bids.items(), reverse=True), sorted(asks.items()), timestamp,
                          last_id)  # fmt: skip
    if not checked and _aggregate(orders.values()) != (bids, asks):
        return invalid()
    by_bid, by_ask = _aggregate(orders.values())
    return StoredBook(sequence, True, sorted(by_bid.items(), reverse=True), sorted(by_ask.items()),
                      timestamp, last_id, list(orders.values()))  # fmt: skip


async def rebuild_book(
    conn: asyncpg.Connection | asyncpg.Pool,
    exchange: str,
    symbol: str,
    at: int | None = None,
    *,
    upto_id: int | None = None,
) -> StoredBook:
    """The stored book at ``at`` (µs; None: the latest) and ``id <= upto_id``: the rows up to the newest one
    with ``atom_timestamp <= at``, from their last snapshot and the deltas after it; not valid (and
    empty) when a resync came after them.
    The rows are read in one repeatable-read snapshot (a pool is given a connection for it)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as one:
            return await rebuild_book(one, exchange, symbol, at, upto_id=upto_id)
    upto = upto_id if upto_id is not None else FAR_FUTURE
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if at is not None:
            # the stored stream up to the newest row received by ``at``: a prefix by id, so a snapshot
            # fetched over REST (received after the updates buffered meanwhile, stored before them) and a
            # resync (stamped when written) are never skipped while rows after them are taken. A resync's
            # stamp is its write time, later than the rows received with it (the snapshot ending it
            # among them), so it never ends the prefix: its id places it
            upto = await conn.fetchval(
                "SELECT id FROM cex_book_events WHERE exchange = $1 AND symbol = $2 AND atom_timestamp <= $3"
                " AND id <= $4 AND kind <> 'resync' ORDER BY atom_timestamp DESC, id DESC LIMIT 1",
                exchange,
                symbol,
                at,
                upto,
            )
            if upto is None:
                return StoredBook(None, False, [], [])
        snap = await conn.fetchrow(
            "SELECT id, sequence, bids, asks, atom_timestamp FROM cex_book_events WHERE exchange = $1"
            " AND symbol = $2 AND kind = 'snapshot' AND id <= $3 ORDER BY id DESC LIMIT 1",
            exchange,
            symbol,
            upto,
        )
        if snap is None:
            return StoredBook(None, False, [], [])
        rows = await conn.fetch(
            "SELECT id, kind, side, price::text AS price, size::text AS size, order_id, sequence,"
            " atom_timestamp FROM cex_book_events WHERE exchange = $1 AND symbol = $2"
            " AND kind IN ('delta', 'resync') AND id > $3 AND id <= $4 ORDER BY id",
            exchange,
            symbol,
            snap["id"],
            upto,
        )
    return replay(snap, rows)
