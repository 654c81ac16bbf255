"""Keeping one symbol's L3 book (orders by id) right: per-product sequence, REST snapshot, resync.

Pure (no I/O), the L3 counterpart of ``cex.sync.BookSync`` with the same face for ``cex.feed``
(``on_message``, ``on_snapshot``, ``invalidate``, ``buffer``, ``book``, ``counters``,
``needs_snapshot_refetch``), chosen by an exchange that declares ``book_level = 3`` (Coinbase Exchange
``full``).

Rule (Coinbase Exchange's documented order-book procedure): buffer messages until the REST snapshot
arrives; drop buffered messages with ``sequence <= snapshot.sequence``; then every message must be exactly
``last + 1`` (a message at or below ``last`` is a duplicate from another connection and is ignored; above
``last + 1`` one was lost: the book is invalid, a ``Resync`` is published, a new snapshot fetched). Every
message of the product counts (``received`` too, which changes no resting order). A ``match`` whose maker
is not on the book, or a crossed book, also means the book is wrong.

Published: after a snapshot (and whenever the feed republishes the book: ``republish``, periodic snapshots
and a new leader) a ``BookSnapshot`` of the aggregated levels (the L2 view at its sequence), then
one ``BookDelta`` per resting order (``order_id`` set, ``size`` its remaining size); after each message one
``BookDelta`` per order it changed (size 0: gone). A consumer keeping orders applies the deltas by
``order_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from cex.book import L3Book, Side
from cex.sync import Published, Resync, SyncCounters
from records.cex import BookDelta, BookSnapshot

Op = Literal["open", "done", "match", "change"]


@dataclass(frozen=True, slots=True)
class OrderOp:
    """One change to resting orders: ``open`` (order rests with ``size``), ``done`` (gone), ``match``
    (``size`` traded off the maker ``order_id``), ``change`` (new ``size``, and ``price`` when moved)."""

    op: Op
    order_id: str
    side: Side
    price: Decimal | None
    size: Decimal


@dataclass(slots=True)
class L3Message:
    symbol: str
    snapshot: bool
    last: int  # the product's sequence of this message (of the snapshot)
    ops: list[OrderOp] = field(default_factory=list)
    event_timestamp: int | None = None
    atom_timestamp: int = 0

    @property
    def first(self) -> int:
        return self.last


@dataclass(slots=True)
class L3Sync:
    exchange: str
    symbol: str
    book: L3Book = field(default_factory=L3Book)
    buffer: list[L3Message] = field(default_factory=list)
    counters: SyncCounters = field(default_factory=SyncCounters)

    def on_message(self, msg: L3Message) -> list[Published]:
        if msg.snapshot:
            return self.on_snapshot(msg)
        book = self.book
        if not book.valid:
            self.buffer.append(msg)
            self.counters.buffered += 1
            return []
        assert book.sequence is not None
        if msg.last <= book.sequence:
            self.counters.ignored += 1
            return []
        if msg.last != book.sequence + 1:
            self.counters.gaps += 1
            return [self.invalidate("gap")]
        return self._apply(msg)

    def on_snapshot(self, msg: L3Message) -> list[Published]:
        book = self.book
        if book.valid and book.sequence is not None and msg.last <= book.sequence:
            self.counters.ignored += 1
            return []
        pending, self.buffer = self.buffer, []
        book.clear()
        for op in msg.ops:
            assert op.price is not None
            book.add(op.order_id, op.side, op.price, op.size)
        book.sequence, book.valid = msg.last, True
        self.counters.snapshots += 1
        if book.crossed():
            self.counters.crossed += 1
            return [self.invalidate("crossed")]
        out: list[Published] = [self._l2_snapshot(msg.last, msg.event_timestamp, msg.atom_timestamp)]
        out.extend(self._delta(op.order_id, msg) for op in msg.ops)
        for update in pending:
            if update.last <= msg.last:
                self.counters.ignored += 1  # already in the snapshot
                continue
            out.extend(self.on_message(update))
            if not book.valid:
                break
        return out

    def _l2_snapshot(self, sequence: int | None, event_ts: int | None, atom_timestamp: int) -> BookSnapshot:
        """The book's L2 view (price levels, orders' sizes summed) as a snapshot record."""
        l2 = self.book.to_l2()
        return BookSnapshot(
            self.exchange,
            self.symbol,
            tuple(l2.bid_levels()),
            tuple(l2.ask_levels()),
            sequence,
            event_ts,
            atom_timestamp,
        )

    def republish(self, atom_timestamp: int) -> list[Published]:
        """The valid book again as a consumer starts from it (a periodic snapshot, a new leader): the L2
        view, then one delta per resting order at the book's sequence, each level's orders in time
        priority; an L2 snapshot alone would leave a consumer keeping orders (or storage) without them."""
        book = self.book
        out: list[Published] = [self._l2_snapshot(book.sequence, None, atom_timestamp)]
        for side, levels in (("bid", book.bids), ("ask", book.asks)):
            for price, queue in levels.items():
                for order_id, size in queue.items():
                    out.append(BookDelta(self.exchange, self.symbol, side, price, size, order_id,
                                         book.sequence, None, atom_timestamp))  # fmt: skip
        return out

    def needs_snapshot_refetch(self, snapshot_last: int | None) -> bool:
        """A snapshot older than the first buffered message leaves the messages between unknown."""
        return bool(self.buffer) and snapshot_last is not None and snapshot_last < self.buffer[0].last - 1

    def invalidate(self, reason: str) -> Resync:
        self.book.valid = False
        self.counters.resyncs += 1
        self.buffer = []
        return Resync(self.exchange, self.symbol, reason, self.book.sequence)

    def _apply(self, msg: L3Message) -> list[Published]:
        book = self.book
        book.sequence = msg.last
        self.counters.applied += 1
        out: list[Published] = []
        for op in msg.ops:
            entry = book.orders.get(op.order_id)
            if op.op == "open":
                assert op.price is not None
                book.add(op.order_id, op.side, op.price, op.size)
            elif entry is None:
                if op.op == "match":  # a trade against an order this book does not hold: it is wrong
                    self.counters.gaps += 1
                    return [self.invalidate("gap")]
                continue  # done/change of an order never on the book (market orders, not yet open)
            elif op.op == "done":
                out.append(self._gone(op.order_id, entry, msg))
                book.remove(op.order_id)
                continue
            elif op.op == "match":
                book.change(op.order_id, entry[2] - op.size)
            elif op.price is not None and op.price != entry[1]:  # change of price: re-queued
                book.remove(op.order_id)
                out.append(self._gone(op.order_id, entry, msg))
                book.add(op.order_id, entry[0], op.price, op.size)
            else:
                book.change(op.order_id, op.size)
            out.append(self._delta(op.order_id, msg, entry))
        if book.crossed():
            self.counters.crossed += 1
            return [self.invalidate("crossed")]
        return out

    def _delta(
        self, order_id: str, msg: L3Message, entry: tuple[Side, Decimal, Decimal] | None = None
    ) -> BookDelta:
        """The order as it stands now (size 0 when it left the book; ``entry``: where it was)."""
        now = self.book.orders.get(order_id)
        side, price, size = now if now is not None else (*entry[:2], Decimal(0))  # type: ignore[index]
        return BookDelta(self.exchange, self.symbol, side, price, size, order_id, msg.last,
                         msg.event_timestamp, msg.atom_timestamp)  # fmt: skip

    def _gone(self, order_id: str, entry: tuple[Side, Decimal, Decimal], msg: L3Message) -> BookDelta:
        side, price, _ = entry
        return BookDelta(self.exchange, self.symbol, side, price, Decimal(0), order_id, msg.last,
                         msg.event_timestamp, msg.atom_timestamp)  # fmt: skip
