"""Redundant connections (``connections=2``): one killed mid-stream loses nothing.

Recorded data through the local replay servers (OKX v5 2022-05-13; Kraken v1 2021-04-17 as v2). Truth: a
clean single-connection run of the same recording (trades, tickers) and the server's market book.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cex.exchanges.kraken import Kraken
from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.sync import Resync
from core.retry import RetryPolicy
from devnet.exchanges import kraken as kraken_server
from devnet.exchanges import okx as okx_server
from devnet.exchanges.server import ReplayServer
from records.cex import Ticker, Trade
from tests.cex_harness import Run, run_feed

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=0, base_delay=0.3, max_delay=0.5)  # the killed connection stays down a while
OKX_SYMBOLS = {"BTC-USDT": "BTC-USDT", "UNI-USD-PERP": "UNI-USD-SWAP", "BTC-USD-220527": "BTC-USD-220527"}


def _kill_at(position: int, index: int) -> Any:
    async def kill(feed: FeedHandler, server: ReplayServer) -> None:
        for _ in range(20_000):  # polls the market's position (no event to wait on per position)
            if server.position >= position:
                break
            await asyncio.sleep(0.001)
        feed.kill(index)

    return kill


async def _okx(connections: int, during: Any = None) -> Run:
    server = await okx_server.OkxServer(
        okx_server.events(), pace=0.002, wait_for_sessions=connections
    ).start()
    try:
        exchange = Okx(ws_url=server.url)
        exchange.ping_interval = 0.2  # type: ignore[misc]
        feed = FeedHandler(exchange, list(OKX_SYMBOLS), ["book", "trades", "ticker"], connections=connections,
                           stale_after=5, retry=FAST)  # fmt: skip
        return await run_feed(server, feed, OKX_SYMBOLS, during=during)
    finally:
        await server.stop()


def _trades(run: Run) -> list[tuple[str, str | None, str, str, str]]:
    return sorted((t.symbol, t.trade_id, str(t.price), str(t.size), t.taker_side) for t in run.of(Trade))


def _tickers(run: Run) -> list[tuple[Any, ...]]:
    return sorted((t.symbol, t.event_timestamp, t.bid_price, t.ask_price) for t in run.of(Ticker))


@pytest.mark.parametrize("killed", [0, 1])
async def test_okx_two_connections_one_killed_lose_nothing(killed: int) -> None:
    clean = await _okx(1)
    run = await _okx(2, during=_kill_at(150, killed))
    conns = run.feed.counters()["connections"]
    assert conns[killed].disconnects >= 1 and conns[killed].connects >= 2  # it was killed and came back
    assert sum(c.duplicates for c in conns) > 0  # both connections delivered; copies were dropped
    assert _trades(run) == _trades(clean) and len(_trades(run)) == 74
    assert _tickers(run) == _tickers(clean)
    assert [p for p in run.published if isinstance(p, Resync)] == []  # the book never went invalid
    lag = run.feed.counters()["lag"]
    assert set(lag[1 - killed]) == set(OKX_SYMBOLS) and set(lag[1 - killed].values()) == {0}  # caught up


async def test_kraken_two_connections_leader_killed_hands_over_with_a_snapshot() -> None:
    symbols = {"SC-EUR": "SC/EUR", "KSM-BTC": "KSM/BTC"}
    server = await kraken_server.KrakenServer(kraken_server.events(), pace=0.002, wait_for_sessions=2).start()
    try:
        exchange = Kraken(ws_url=server.url, depth=kraken_server.DEPTH)
        feed = FeedHandler(exchange, list(symbols), ["book"], connections=2, stale_after=5, retry=FAST)
        run = await run_feed(server, feed, symbols, depth=kraken_server.DEPTH, during=_kill_at(200, 0))
    finally:
        await server.stop()
    # the consumer's book (harness) matched the market's at the end, through the handover
    assert run.feed.counters()["connections"][0].disconnects >= 1
    assert all(run.consumers[s].valid for s in symbols)
    assert all(run.feed.published_book(s) is run.feed.sync(s, 1) for s in symbols)  # connection 1 took over
