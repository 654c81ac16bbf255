"""What the feed keeps per connection (counters, ids seen) and the recent-records memory that drops another
connection's copies."""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from records.cex import Trade
from records.codec import Record

_RECENT = 100_000  # records remembered for de-duplication across connections


@dataclass(slots=True)
class ConnectionCounters:
    messages: int = 0
    malformed: int = 0
    duplicates: int = 0  # book updates or trades another connection delivered first
    gaps: int = 0
    resyncs: int = 0
    stale: int = 0
    rollovers: int = 0
    connects: int = 0
    disconnects: int = 0


@dataclass(slots=True)
class Connection:
    index: int
    ws: Any = None
    counters: ConnectionCounters = field(default_factory=ConnectionCounters)
    last_sequence: int | None = None  # the exchange's per-connection message counter, where it has one
    book_sequence: dict[str, int] = field(default_factory=dict)  # the last book id it delivered, per symbol
    endpoint: int = 0  # which of the exchange's URLs it uses (the next one after a failed connect)


def identity(record: Record) -> object | None:
    """What makes two copies of a record the same message: a trade's id, else every field but the receipt
    time when the exchange stamped it; None when nothing does (Binance bookTicker has neither)."""
    if isinstance(record, Trade) and record.trade_id is not None:
        return (record.symbol, record.trade_id)
    if getattr(record, "event_timestamp", None) is not None:
        return dataclasses.replace(record, atom_timestamp=0)  # type: ignore[call-arg]
    return None


@dataclass
class Recent:
    """The identities of the last ``size`` records published."""

    size: int = _RECENT
    seen: set[object] = field(default_factory=set)
    order: deque[object] = field(default_factory=deque)

    def first_time(self, key: object) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        self.order.append(key)
        if len(self.order) > self.size:
            self.seen.discard(self.order.popleft())
        return True
