"""Keeping one symbol's book right: sequence rules, checksum and crossed checks, snapshots, resync.

Pure (no I/O): ``BookSync`` takes parsed ``BookMessage``s and returns what may be published (book deltas
and snapshots as records) and, when a check fails, a ``Resync`` asking the feed for a new snapshot. A book
that failed a check is marked invalid and publishes nothing until a snapshot rebuilds it.

Sequence rules (``BookMessage`` carries the exchange's ids normalised to first/last/prev):

- ``range`` (Binance spot): an update covers ids ``first..last``; ignore ``last <= local``; a gap when
  ``first > local + 1``; then local = ``last``. After a REST snapshot the buffered updates with
  ``last <= lastUpdateId`` are dropped (Binance's rule as corrected in 2025-11).
- ``prev`` (OKX ``prevSeqId``, Binance USDⓈ-M ``pu``, Bybit ``u - 1``): the update must follow exactly the
  local id; ``last <= local`` is a duplicate (another connection, or a replay) and is ignored, unless
  ``last < prev``: the exchange reset its sequence (OKX maintenance), which needs a new snapshot.
- ``none`` (Kraken): no ids; integrity from the checksum after each message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Literal

from cex.book import L2Book, Level
from records.cex import BookDelta, BookSnapshot

SequenceRule = Literal["range", "prev", "none"]
Verify = Callable[[L2Book, "BookMessage"], bool]


@dataclass(slots=True)
class BookMessage:
    """One book message of one symbol, parsed from the exchange's text (levels are absolute sizes)."""

    symbol: str
    snapshot: bool
    bids: list[Level]
    asks: list[Level]
    first: int | None = None  # first update id covered (Binance U)
    last: int | None = None  # the book's id after this message (Binance u, OKX seqId, Bybit u)
    prev: int | None = None  # the id the book must be at before it (OKX prevSeqId, Binance pu)
    checksum: int | None = None  # the exchange's checksum after applying it (None or 0: not sent)
    event_timestamp: int | None = None
    atom_timestamp: int = 0
    engine_sequence: int | None = None  # Bybit ``seq``: kept on the records, not checked
    engine_timestamp: int | None = None  # Bybit ``cts``
    # the levels' search keys made from the exchange's text by ``cex.book.row_levels`` (None: not made)
    bid_keys: list[float | None] | None = None
    ask_keys: list[float | None] | None = None


@dataclass(frozen=True, slots=True)
class Resync:
    """The book of ``symbol`` was found wrong (or went stale) and is being rebuilt from a snapshot."""

    exchange: str
    symbol: str
    reason: str  # gap | checksum | crossed | stale | reset | disconnected
    sequence: int | None


Published = BookDelta | BookSnapshot | Resync


@dataclass(slots=True)
class SyncCounters:
    applied: int = 0
    ignored: int = 0  # duplicates (last <= local) and updates before the snapshot
    buffered: int = 0
    gaps: int = 0
    checksum_failures: int = 0
    crossed: int = 0
    resyncs: int = 0
    snapshots: int = 0


@dataclass(slots=True)
class BookSync:
    exchange: str
    symbol: str
    rule: SequenceRule
    verify: Verify | None = None  # the exchange's checksum check after a message is applied
    buffer_until_snapshot: bool = False  # REST snapshots (Binance): keep updates while it is fetched
    depth: int | None = None
    book: L2Book = field(init=False)
    buffer: list[BookMessage] = field(default_factory=list)
    fresh: bool = False  # no update applied since the snapshot (Binance futures: the first one spans it)
    counters: SyncCounters = field(default_factory=SyncCounters)

    def __post_init__(self) -> None:
        self.book = L2Book(self.depth)

    @property
    def waiting(self) -> bool:
        """No valid book: waiting for a snapshot."""
        return not self.book.valid

    def on_message(self, msg: BookMessage) -> list[Published]:
        if msg.snapshot:
            return self.on_snapshot(msg)
        book = self.book
        if not book.valid:
            if self.buffer_until_snapshot:
                self.buffer.append(msg)
                self.counters.buffered += 1
            else:
                self.counters.ignored += 1
            return []
        verdict = self._verdict(msg)
        if verdict == "ignore":
            self.counters.ignored += 1
            return []
        if verdict != "apply":
            if verdict == "gap":
                self.counters.gaps += 1
            return [self.invalidate(verdict)]
        return self._apply(msg)

    def on_snapshot(self, msg: BookMessage) -> list[Published]:
        """A snapshot (ws or REST) rebuilds the book; buffered updates after it are replayed. A snapshot
        older than a valid book (a second connection's, a late resubscribe) is ignored."""
        book = self.book
        if book.valid and msg.last is not None and book.sequence is not None and msg.last <= book.sequence:
            self.counters.ignored += 1
            return []
        pending = self.buffer
        self.buffer = []
        book.load(msg.bids, msg.asks, msg.last)
        self.fresh = True
        self.counters.snapshots += 1
        bad = self._check(msg)
        if bad:
            return [self.invalidate(bad)]
        first = book.snapshot(
            self.exchange, self.symbol, msg.atom_timestamp, event_timestamp=msg.event_timestamp
        )
        if msg.engine_sequence is not None or msg.engine_timestamp is not None:
            first = replace(first, engine_sequence=msg.engine_sequence, engine_timestamp=msg.engine_timestamp)
        out: list[Published] = [first]
        for update in pending:
            if update.last is not None and msg.last is not None and update.last <= msg.last:
                self.counters.ignored += 1  # already in the snapshot
                continue
            out.extend(self.on_message(update))
            if not book.valid:
                break
        return out

    def needs_snapshot_refetch(self, snapshot_last: int | None) -> bool:
        """Binance: a REST snapshot older than the first buffered update cannot be continued; fetch again."""
        if not self.buffer or snapshot_last is None:
            return False
        first = self.buffer[0].first
        return first is not None and snapshot_last < first - 1

    def invalidate(self, reason: str) -> Resync:
        self.book.valid = False
        self.counters.resyncs += 1
        self.buffer = []
        return Resync(self.exchange, self.symbol, reason, self.book.sequence)

    def _verdict(self, msg: BookMessage) -> str:
        local = self.book.sequence
        if self.rule == "none" or local is None or msg.last is None:
            return "apply"
        if self.rule == "prev" and not (self.fresh and msg.first is not None):
            if msg.prev is not None and msg.last < msg.prev:
                return "reset"
            if msg.last <= local and not (msg.prev == msg.last == local):
                return "ignore"
            if msg.prev is not None and msg.prev != local:
                return "gap"
            return "apply"
        if msg.last <= local:
            return "ignore"
        if msg.first is not None and msg.first > local + 1:
            return "gap"
        return "apply"

    def _apply(self, msg: BookMessage) -> list[Published]:
        book = self.book
        book.update(msg.bids, msg.asks, msg.bid_keys, msg.ask_keys)
        self.fresh = False
        if msg.last is not None:
            book.sequence = msg.last
        self.counters.applied += 1
        bad = self._check(msg)
        if bad:
            return [self.invalidate(bad)]
        out = _deltas(
            self.exchange, self.symbol, msg.bids, msg.asks, msg.last, msg.event_timestamp, msg.atom_timestamp
        )
        if msg.engine_sequence is not None or msg.engine_timestamp is not None:  # Bybit only pays this
            for delta in out:
                _SET_ENGINE_SEQUENCE(delta, msg.engine_sequence)
                _SET_ENGINE_TIMESTAMP(delta, msg.engine_timestamp)
        return out

    def _check(self, msg: BookMessage) -> str | None:
        if self.verify is not None and msg.checksum and not self.verify(self.book, msg):
            self.counters.checksum_failures += 1
            return "checksum"
        if self.book.crossed():
            self.counters.crossed += 1
            return "crossed"
        return None


# ``BookDelta`` is a frozen dataclass: its ``__init__`` sets each field through ``object.__setattr__``, ~1 µs
# a record, and a book message publishes one per level. ``cex/_speedups.c`` (built by ``make install``)
# allocates the record and fills its slots directly, ~0.07 µs; without it, setting the slots through their
# descriptors makes the same record (equal, same type, same fields) in half the time of ``__init__``. Both
# are bound to the fields by name: a field added to ``BookDelta`` fails here at import, never silently.
_FIELDS = [
    "exchange",
    "symbol",
    "side",
    "price",
    "size",
    "order_id",
    "sequence",
    "event_timestamp",
    "atom_timestamp",
    "engine_sequence",
    "engine_timestamp",
]
if [f.name for f in fields(BookDelta)] != _FIELDS or hasattr(BookDelta, "__post_init__"):
    raise TypeError("BookDelta changed: update cex.sync._deltas_python and cex/_speedups.c")
_SLOTS = [BookDelta.__dict__[name].__set__ for name in _FIELDS]
_SET_ENGINE_SEQUENCE, _SET_ENGINE_TIMESTAMP = _SLOTS[9:]
_ZERO = Decimal(0)
DeltaMaker = Callable[[str, str, list[Level], list[Level], int | None, int | None, int], list[Published]]


def _deltas_python(exchange: str, symbol: str, bids: list[Level], asks: list[Level], sequence: int | None,
                   event_timestamp: int | None, atom_timestamp: int) -> list[Published]:  # fmt: skip
    """One ``BookDelta`` per level of an applied message, bids first, in the message's order."""
    new = object.__new__
    set_exchange, set_symbol, set_side, set_price, set_size, set_order, set_seq, set_ets, set_ats = _SLOTS[:9]
    set_engine_seq, set_engine_ts = _SLOTS[9:]
    out: list[Published] = []
    append = out.append
    for side, levels in (("bid", bids), ("ask", asks)):
        for price, size in levels:
            delta = new(BookDelta)
            set_exchange(delta, exchange)
            set_symbol(delta, symbol)
            set_side(delta, side)
            set_price(delta, price)
            set_size(delta, size)
            set_order(delta, None)
            set_seq(delta, sequence)
            set_ets(delta, event_timestamp)
            set_ats(delta, atom_timestamp)
            set_engine_seq(delta, None)
            set_engine_ts(delta, None)
            append(delta)
    return out


def _complete(maker: DeltaMaker) -> bool:
    """Whether ``maker`` fills every field (a C extension built before a field was added leaves it unset)."""
    try:
        made = maker("x", "x", [(_ZERO, _ZERO)], [], None, None, 0)[0]
        return all(hasattr(made, name) for name in _FIELDS)
    except (TypeError, ValueError):
        return False


try:
    from cex._speedups import bind, deltas
except ImportError:  # not built (no compiler at install): the Python version
    _deltas: DeltaMaker = _deltas_python
else:
    bind(BookDelta)
    _deltas = deltas if _complete(deltas) else _deltas_python
