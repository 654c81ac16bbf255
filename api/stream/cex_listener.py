"""CEX rows announced by ``cex.store.CexStore`` (``NOTIFY dexnode_cex``) read back and fed to the hub.

A notification names, per table, the range of ids one batch wrote, and the keys of the candles it
upserted (docs/api-websocket.md). The rows are read back in id order (``sinks.cex_read``), which is the
feed's order within a table. A range may hold another writer's rows (two ``dexnode cex`` processes share
the identity sequences): ids already published are skipped, so each row is fanned out once.

A book this process has not seen before starts from storage: its book is rebuilt up to the row before the
first announced one and handed to the hub as a snapshot (an L3 book: with one delta per resting order), so a
``cex_book`` client of a ``serve`` started after ``dexnode cex`` gets a full book, not deltas on nothing. CEX
channels are live only: notifications missed while the listening connection was down are not made up. A stored
resync carries its reason (migration 0008), so clients here get the same ``resync`` message as clients of the
process that runs the feed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import asyncpg
import orjson

from api.stream.cex import CexItem
from records.cex import BookDelta, BookSnapshot
from sinks import cex_read
from sinks.cex_read import NOTIFY_CHANNEL, StoredResync

__all__ = ["NOTIFY_CHANNEL", "CexNotifyReader"]
log = logging.getLogger("dexnode.api.listener")
RECENT_IDS = 200_000  # per table: published ids remembered to skip a repeated one


class CexHub(Protocol):
    def publish_cex(self, items: Sequence[CexItem]) -> None: ...

    def holds_book(self, exchange: str, symbol: str) -> bool: ...


class _Recent:
    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.order: deque[int] = deque()

    def first_time(self, value: int) -> bool:
        if value in self.ids:
            return False
        self.ids.add(value)
        self.order.append(value)
        if len(self.order) > RECENT_IDS:
            self.ids.discard(self.order.popleft())
        return True


class CexNotifyReader:
    def __init__(self, pool: asyncpg.Pool, hub: CexHub) -> None:
        self.pool = pool
        self.hub = hub
        self.recent: dict[str, _Recent] = {}
        self.skipped = 0  # malformed notifications (counted, logged)

    async def handle(self, payload: str) -> None:
        try:
            doc = orjson.loads(payload)
            ranges = {str(t): (int(r[0]), int(r[1])) for t, r in doc["ranges"].items()}
            keys = [(str(k[0]), str(k[1]), str(k[2]), int(k[3])) for k in doc["candles"]]
            unknown = set(ranges) - set(cex_read.TABLES)
            if unknown:
                raise ValueError(f"unknown table(s) {sorted(unknown)}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            self.skipped += 1
            log.warning("skipped a malformed %s notification (%s): %.200s", NOTIFY_CHANNEL, exc, payload)
            return
        items: list[CexItem] = []
        for table, (first, last) in ranges.items():
            rows = await cex_read.records_between(self.pool, table, first, last)
            recent = self.recent.setdefault(table, _Recent())
            rows = [(i, r) for i, r in rows if recent.first_time(i)]
            if table == "cex_book_events":
                items.extend(await self._books_from_storage(rows))
            items.extend(r for _, r in rows)
        items.extend(await cex_read.candles_at(self.pool, keys))
        if items:
            self.hub.publish_cex(items)

    async def _books_from_storage(self, rows: Sequence[tuple[int, CexItem]]) -> list[CexItem]:
        """Snapshots from storage of the books these rows change that the hub has not seen yet."""
        first: dict[tuple[str, str], int] = {}
        for row_id, item in rows:
            if isinstance(item, BookDelta | BookSnapshot | StoredResync):
                first.setdefault((item.exchange, item.symbol), row_id)
        out: list[CexItem] = []
        for (exchange, symbol), row_id in first.items():
            if self.hub.holds_book(exchange, symbol):
                continue
            book = await cex_read.rebuild_book(self.pool, exchange, symbol, upto_id=row_id - 1)
            if not book.valid:
                continue
            moment = book.timestamp if book.timestamp is not None else time.time_ns() // 1000
            out.append(BookSnapshot(exchange, symbol, tuple(book.bids), tuple(book.asks), book.sequence, None,
                                    moment))  # fmt: skip
            # an L3 book: its orders follow the snapshot, as the feed publishes them
            out.extend(
                BookDelta(exchange, symbol, side, price, size, order_id, book.sequence, None, moment)
                for order_id, side, price, size in book.orders or ()
            )
        return out
