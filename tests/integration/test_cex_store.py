"""CEX records through Postgres: a redundant feed with one connection killed stores the same trades and the
same book as one clean connection.

Recorded OKX v5 frames (2022-05-13) through the local OKX server (constructed: seqIds, mid-stream snapshots,
the kill). Truth: the clean run's stored rows, and the server's market book for the rebuilt book.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from cex.candles import CandleBuilder
from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.store import CexStore
from core.database import DatabaseInfo
from core.retry import RetryPolicy
from devnet.exchanges import okx as okx_server
from devnet.exchanges.server import ReplayServer
from records.cex import Trade
from tests.cex_harness import Run, run_feed

pytestmark = pytest.mark.integration

SYMBOLS = {"BTC-USDT": "BTC-USDT", "UNI-USD-PERP": "UNI-USD-SWAP", "BTC-USD-220527": "BTC-USD-220527"}


async def _run(connections: int, kill_at: int | None) -> tuple[Run, okx_server.OkxServer]:
    async def kill(feed: FeedHandler, server: ReplayServer) -> None:
        for _ in range(20_000):
            if kill_at is not None and server.position >= kill_at:
                feed.kill(0)
                return
            await asyncio.sleep(0.001)

    server = await okx_server.OkxServer(
        okx_server.events(), pace=0.002, wait_for_sessions=connections
    ).start()
    try:
        exchange = Okx(ws_url=server.url)
        retry = RetryPolicy(attempts=0, base_delay=0.3, max_delay=0.5)
        feed = FeedHandler(exchange, list(SYMBOLS), ["book", "trades", "ticker"], connections=connections,
                           stale_after=5, retry=retry, snapshot_every=0.2)  # fmt: skip
        return await run_feed(server, feed, SYMBOLS, during=kill if kill_at else None), server
    finally:
        await server.stop()


async def _store_and_read(dsn: str, run: Run) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE cex_trades, cex_book_events, cex_tickers, candles")
    finally:
        await conn.close()
    store = await CexStore.connect(dsn)
    try:
        candles = CandleBuilder()
        built = [c for t in run.of(Trade) for c in candles.add(t)]
        await store.write(run.published)
        await store.write(run.of(Trade))  # the same trades again (a restart): stored once
        await store.write(built)
        conn = await asyncpg.connect(dsn)
        try:
            trades = [tuple(r) for r in await conn.fetch(
                "SELECT exchange, symbol, trade_id, price::text, size::text, taker_side, event_timestamp "
                "FROM cex_trades ORDER BY symbol, trade_id")]  # fmt: skip
            tickers = await conn.fetchval("SELECT count(*) FROM cex_tickers")
            candle_sql = "SELECT symbol, start, open, high, low, close, volume, trades FROM candles"
            candle_rows = [tuple(r) for r in await conn.fetch(candle_sql + " ORDER BY symbol, start")]
        finally:
            await conn.close()
        books = {s: await store.rebuild_book("okx", s) for s in SYMBOLS}
    finally:
        await store.close()
    return {"trades": trades, "tickers": tickers, "books": books, "candles": candle_rows}


async def test_two_connections_one_killed_store_what_one_clean_connection_stores(
    migrated_db: DatabaseInfo,
) -> None:
    clean_run, server = await _run(1, None)
    clean = await _store_and_read(migrated_db.dsn, clean_run)
    redundant_run, _ = await _run(2, 150)
    assert redundant_run.feed.counters()["connections"][0].connects >= 2  # the kill happened
    redundant = await _store_and_read(migrated_db.dsn, redundant_run)

    assert len(clean["trades"]) == 74
    assert redundant["trades"] == clean["trades"]
    assert redundant["tickers"] == clean["tickers"] == 28
    assert redundant["candles"] == clean["candles"]
    for symbol, native in SYMBOLS.items():
        bids, asks = server.books[native].as_decimals()
        for stored in (clean["books"][symbol], redundant["books"][symbol]):
            assert stored.valid and (stored.bids, stored.asks) == (bids, asks), symbol


async def test_trades_keep_every_digit_and_candles_match_the_trades(migrated_db: DatabaseInfo) -> None:
    run, _ = await _run(1, None)
    stored = await _store_and_read(migrated_db.dsn, run)
    raw = {(t.symbol, t.trade_id): t for t in run.of(Trade)}
    for _, symbol, trade_id, price, size, side, ts in stored["trades"]:
        t = raw[(symbol, trade_id)]
        assert (Decimal(price), Decimal(size), side, ts) == (t.price, t.size, t.taker_side, t.event_timestamp)
    # candles, computed here from the stored trades independently: per symbol and minute
    expected: dict[tuple[str, int], list[Any]] = {}
    for _, symbol, _, price, size, _, ts in sorted(stored["trades"], key=lambda r: (r[1], r[6], int(r[2]))):
        expected.setdefault((symbol, ts - ts % 60_000), []).append((Decimal(price), Decimal(size)))
    assert len(stored["candles"]) == len(expected)
    for symbol, start, o, h, low, c, v, n in stored["candles"]:
        trades = expected[(symbol, start)]
        assert (h, low, v, n) == (max(p for p, _ in trades), min(p for p, _ in trades),
                                  sum((s for _, s in trades), Decimal(0)), len(trades))  # fmt: skip
        assert o in {p for p, _ in trades} and c in {p for p, _ in trades}
