"""Exchange (CEX) data: trades, books, tickers, funding, open interest and candles (docs/api.md, "CEX").

Lists page by ``id`` (the order rows were stored in, which is the feed's order) with the same opaque
cursors as the chain lists; a first page pins the newest id, so paging while a feed writes never repeats or
skips a row, and new rows wait for a new query. Times (``from_time``, ``to_time``, ``at``) are Unix seconds
(fractions allowed, to the µs) or ISO-8601, and select on ``atom_timestamp``, the moment dexnode received a
message; candles select on their ``start`` (the exchange's time). Prices and sizes are decimal strings
exactly as stored. The SQL lives in ``sinks.cex_read``, which ``cex`` shares.

A book is the live one when a feed of that exchange and symbol runs in this process (``create_app(...,
books=...)``, any ``LiveBooks``) and no ``at`` is given; otherwise it is rebuilt from storage at ``at``
(default: the latest stored moment): by price level, or by order id for an L3 book (``coinbase-l3``),
which ``level=3`` answers order by order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Path, Query

from api.cursor import Cursor, decode, fingerprint
from api.deps import PoolDep, StateDep
from api.errors import RESPONSES, bad_request, not_found, reject_unknown_params
from api.listing import JsonBytes
from api.params import ListArgs, check_range, iso_time, list_args
from sinks import cex_read
from sinks.cex_books import Order

router = APIRouter(tags=["cex"], dependencies=[Depends(reject_unknown_params)], responses=RESPONSES)
Args = Annotated[ListArgs, Depends(list_args)]

EXCHANGE_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,79}$"
MAX_DEPTH = 10_000
_SECONDS = re.compile(r"^([0-9]{1,19})(?:\.([0-9]{1,6}))?$")
MAX_US = 2**62

Exchange = Annotated[
    str | None, Query(pattern=EXCHANGE_PATTERN, description="exchange name, as `dexnode cex --exchange`")
]
Symbol = Annotated[
    str | None, Query(pattern=SYMBOL_PATTERN, description="BASE-QUOTE, perpetuals BASE-QUOTE-PERP")
]
Moment = Annotated[
    str | None,
    Query(
        max_length=40,
        description="Unix seconds (fractions to the µs allowed) or ISO-8601 (no offset means UTC), inclusive",
    ),
]


class LiveBook(Protocol):
    """A book as a running feed holds it: levels best first, ``timestamp`` in µs."""

    @property
    def sequence(self) -> int | None: ...

    @property
    def valid(self) -> bool: ...

    @property
    def timestamp(self) -> int | None: ...

    @property
    def bids(self) -> Sequence[tuple[Decimal, Decimal]]: ...

    @property
    def asks(self) -> Sequence[tuple[Decimal, Decimal]]: ...

    @property
    def orders(self) -> Sequence[Order] | None:
        """An L3 book's resting orders (order_id, side, price, size); None for an L2 book."""


class LiveBooks(Protocol):
    """The books of the feeds running in this process (``cex.pipeline.FeedBooks`` for FeedHandlers)."""

    def book(self, exchange: str, symbol: str, depth: int | None) -> LiveBook | None: ...


def parse_moment(name: str, value: str | None) -> int | None:
    """µs since the epoch from Unix seconds (``1700000000.25``) or ISO-8601 (a naive time is UTC)."""
    if value is None:
        return None
    text = value.strip()
    match = _SECONDS.match(text)
    if match:
        micros = int(match.group(1)) * 1_000_000 + int((match.group(2) or "0").ljust(6, "0"))
    else:
        delta = iso_time(name, value, text) - datetime(1970, 1, 1, tzinfo=UTC)
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not 0 <= micros <= MAX_US:
        raise bad_request(f"{name}: {value!r} is out of range")
    return micros


def _levels(levels: Sequence[tuple[Decimal, Decimal]], depth: int | None) -> list[list[str]]:
    chosen = levels if depth is None else levels[:depth]
    return [[format(p, "f"), format(s, "f")] for p, s in chosen]


async def _list(
    pool: Any,
    table: str,
    resource: str,
    args: ListArgs,
    exchange: str | None,
    symbol: str | None,
    from_time: str | None,
    to_time: str | None,
) -> JsonBytes:
    start, end = parse_moment("from_time", from_time), parse_moment("to_time", to_time)
    check_range("from_time", start, "to_time", end)
    symbol = None if symbol is None else symbol.upper()
    filters = {"exchange": exchange, "symbol": symbol, "from_time": start, "to_time": end}
    fp = fingerprint(resource, args.order, filters)
    after = None
    if args.cursor is not None:
        cursor = decode(args.cursor, (int,), fp)
        pin, after = cursor.head_number, int(cursor.key[0])
    else:
        pin = await cex_read.newest_id(pool, table)
    rows = await cex_read.page(
        pool,
        table,
        exchange=exchange,
        symbol=symbol,
        from_us=start,
        to_us=end,
        after=after,
        pin=pin,
        limit=args.limit + 1,
        descending=args.order == "desc",
    )
    more = len(rows) > args.limit
    rows = rows[: args.limit]
    next_cursor = Cursor(pin, "", (rows[-1][0],), fp).encode() if more and rows else None
    return JsonBytes({"data": [data for _, data in rows], "next_cursor": next_cursor})


@router.get("/cex/trades", response_class=JsonBytes)
async def trades(
    pool: PoolDep,
    args: Args,
    exchange: Exchange = None,
    symbol: Symbol = None,
    from_time: Moment = None,
    to_time: Moment = None,
) -> JsonBytes:
    """Exchange trades in the order they were stored (the ``Trade`` record's JSON)."""
    return await _list(pool, "cex_trades", "cex/trades", args, exchange, symbol, from_time, to_time)


@router.get("/cex/tickers", response_class=JsonBytes)
async def tickers(
    pool: PoolDep,
    args: Args,
    exchange: Exchange = None,
    symbol: Symbol = None,
    from_time: Moment = None,
    to_time: Moment = None,
) -> JsonBytes:
    """Best bid and ask as the exchange published them (the ``Ticker`` record's JSON)."""
    return await _list(pool, "cex_tickers", "cex/tickers", args, exchange, symbol, from_time, to_time)


@router.get("/cex/funding", response_class=JsonBytes)
async def funding(
    pool: PoolDep,
    args: Args,
    exchange: Exchange = None,
    symbol: Symbol = None,
    from_time: Moment = None,
    to_time: Moment = None,
) -> JsonBytes:
    """Perpetuals' funding rates (the ``FundingRate`` record's JSON)."""
    return await _list(pool, "funding_rates", "cex/funding", args, exchange, symbol, from_time, to_time)


@router.get("/cex/open-interest", response_class=JsonBytes)
async def open_interest(
    pool: PoolDep,
    args: Args,
    exchange: Exchange = None,
    symbol: Symbol = None,
    from_time: Moment = None,
    to_time: Moment = None,
) -> JsonBytes:
    """Perpetuals' open interest (the ``OpenInterest`` record's JSON)."""
    return await _list(pool, "open_interest", "cex/open-interest", args, exchange, symbol, from_time, to_time)


@router.get("/cex/candles", response_class=JsonBytes)
async def candles(
    pool: PoolDep,
    args: Args,
    exchange: Annotated[str, Query(pattern=EXCHANGE_PATTERN)],
    symbol: Annotated[str, Query(pattern=SYMBOL_PATTERN)],
    interval: Literal["1m", "5m", "15m", "1h", "4h", "1d"] = "1m",
    from_time: Moment = None,
    to_time: Moment = None,
) -> JsonBytes:
    """OHLCV from the stored 1-minute candles (built from trades by the feed), aggregated in SQL to the
    interval; buckets aligned on Unix time, selected by their ``start`` (ms, the exchange's time)."""
    start, end = parse_moment("from_time", from_time), parse_moment("to_time", to_time)
    check_range("from_time", start, "to_time", end)
    symbol = symbol.upper()
    width = cex_read.CANDLE_INTERVALS_MS[interval]
    first = 0 if start is None else start // 1000 // width * width
    stop = MAX_US if end is None else end // 1000 // width * width + width
    descending = args.order == "desc"
    filters = {
        "exchange": exchange,
        "symbol": symbol,
        "interval": interval,
        "from_time": start,
        "to_time": end,
    }
    fp = fingerprint("cex/candles", args.order, filters)
    if args.cursor is not None:
        after = int(decode(args.cursor, (int,), fp).key[0])
        first, stop = (first, min(stop, after)) if descending else (max(first, after + width), stop)
    rows = await cex_read.candles(
        pool,
        exchange=exchange,
        symbol=symbol,
        interval=interval,
        first_ms=first,
        stop_ms=stop,
        limit=args.limit + 1,
        descending=descending,
    )
    more = len(rows) > args.limit
    rows = rows[: args.limit]
    next_cursor = Cursor(0, "", (rows[-1]["start"],), fp).encode() if more and rows else None
    return JsonBytes({"data": rows, "next_cursor": next_cursor})


@router.get("/cex/books/{exchange}/{symbol}", response_class=JsonBytes)
async def book(
    state: StateDep,
    exchange: Annotated[str, Path(pattern=EXCHANGE_PATTERN)],
    symbol: Annotated[str, Path(pattern=SYMBOL_PATTERN)],
    depth: Annotated[int | None, Query(ge=1, le=MAX_DEPTH, description="price levels per side")] = None,
    at: Moment = None,
    level: Annotated[
        int, Query(ge=2, le=3, description="2: [price, size] levels; 3: [price, size, order_id] orders (L3)")
    ] = 2,
) -> JsonBytes:
    """The order book: the live one when the feed runs in this process (and no ``at``), else rebuilt
    from storage at ``at`` (the last snapshot at or before it and every delta after it; an L3 book by
    order id). ``level=3``: each resting order, best price first, time priority within a level."""
    symbol = symbol.upper()
    moment = parse_moment("at", at)
    books: LiveBooks | None = getattr(state, "books", None)
    if moment is None and books is not None:
        live = books.book(exchange, symbol, depth)
        if live is not None and (level == 2 or live.orders is not None):
            sides = _order_sides(live.orders or (), depth) if level == 3 else None
            return _book_json(exchange, symbol, live.sequence, live.valid, live.timestamp, live.bids,
                              live.asks, depth, sides)  # fmt: skip
    stored = await cex_read.rebuild_book(state.pool, exchange, symbol, moment)
    if stored.last_id is None:
        when = "" if moment is None else f" at or before {at}"
        raise not_found(f"no stored book of {exchange} {symbol}{when} (no snapshot stored)")
    sides = None
    if level == 3:
        if stored.valid and stored.orders is None:
            raise bad_request(f"level=3: the stored book of {exchange} {symbol} is by price level (L2), "
                              "not by order id")  # fmt: skip
        sides = _order_sides(stored.orders or [], depth)
    return _book_json(exchange, symbol, stored.sequence, stored.valid, stored.timestamp, stored.bids,
                      stored.asks, depth, sides)  # fmt: skip


def _order_sides(orders: Sequence[Order], depth: int | None) -> tuple[list[list[str]], list[list[str]]]:
    """[price, size, order_id] per side, best price first, arrival order within a level; ``depth``
    counts price levels."""
    out = []
    for side in ("bid", "ask"):
        chosen = sorted((o for o in orders if o[1] == side), key=lambda o: o[2], reverse=side == "bid")
        prices: set[Decimal] = set()
        rows = []
        for order_id, _, price, size in chosen:
            if depth is not None and price not in prices and len(prices) == depth:
                break
            prices.add(price)
            rows.append([format(price, "f"), format(size, "f"), order_id])
        out.append(rows)
    return out[0], out[1]


def _book_json(
    exchange: str,
    symbol: str,
    sequence: int | None,
    valid: bool,
    timestamp: int | None,
    bids: Sequence[tuple[Decimal, Decimal]],
    asks: Sequence[tuple[Decimal, Decimal]],
    depth: int | None,
    orders: tuple[list[list[str]], list[list[str]]] | None = None,
) -> JsonBytes:
    if orders is not None:
        bid_rows, ask_rows = orders
    else:
        bid_rows, ask_rows = _levels(bids, depth), _levels(asks, depth)
    data = {
        "exchange": exchange,
        "symbol": symbol,
        "sequence": sequence,
        "valid": valid,
        "timestamp": timestamp if timestamp is not None else time.time_ns() // 1000,
        "bids": bid_rows if valid else [],
        "asks": ask_rows if valid else [],
    }
    return JsonBytes({"data": data})
