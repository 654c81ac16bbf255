"""Bybit v5 through the whole feed machinery against a local Bybit server.

Recorded (2021-04-17, v2 inverse BTCUSD/EOSUSD): every level change and trade; constructed: the v5 envelopes
and ``u`` ids (see ``devnet/exchanges/bybit.py``), mid-stream snapshots and faults. Truth: the server's
market book (plain dicts), i.e. the book of an uninterrupted replay, and the recorded trades.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from cex.exchanges.bybit import Bybit
from cex.feed import FeedHandler
from core.retry import RetryPolicy
from devnet.exchanges import bybit as bybit_server
from devnet.exchanges import recording
from devnet.exchanges.server import Fault
from records.cex import Trade
from tests.cex_harness import NEVER_STALE, Run, run_feed, stale_after_for

pytestmark = pytest.mark.integration

SYMBOLS = {"BTC-USD-PERP": "BTCUSD", "EOS-USD-PERP": "EOSUSD"}
FAST = RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2)


async def _replay(faults: list[Fault] | None = None) -> Run:
    server = await bybit_server.BybitServer(bybit_server.events(), faults).start()
    try:
        exchange = Bybit(ws_url=server.url, depth=bybit_server.DEPTH)
        exchange.ping_interval = 0.2  # type: ignore[misc]
        feed = FeedHandler(exchange, list(SYMBOLS), ["book", "trades"], stale_after=stale_after_for(faults),
                           retry=FAST)  # fmt: skip
        return await run_feed(server, feed, SYMBOLS)
    finally:
        await server.stop()


async def test_clean_replay_applies_every_delta_and_keeps_every_trade() -> None:
    run = await _replay()
    assert run.resyncs() == []
    counters = run.feed.counters()["books"]
    assert sum(c.applied for c in counters.values()) == 1016
    recorded = [
        t
        for p in recording.received(recording.FIXTURES / "bybit" / "BYBIT.ws.26.0")
        if '"topic":"trade.' in p
        for t in json.loads(p, parse_float=Decimal)["data"]
    ]
    got = run.of(Trade)
    assert len(got) == len(recorded) == 150
    for t, r in zip(got, recorded, strict=True):
        assert (t.trade_id, t.price, t.size, t.taker_side, t.event_timestamp) == (
            r["trade_id"],
            r["price"],
            Decimal(r["size"]),
            r["side"].lower(),
            r["trade_time_ms"],
        )


@pytest.mark.parametrize(
    ("kind", "reason"), [("drop", "gap"), ("reorder", "gap"), ("close", "disconnected"), ("silent", "stale")]
)
async def test_fault_is_detected_resynced_and_the_book_ends_equal(kind: str, reason: str) -> None:
    run = await _replay([Fault(0, "BTCUSD", 100, kind)])
    assert reason in run.resyncs()
    assert run.feed.sync("BTC-USD-PERP").counters.snapshots >= 2


async def test_the_fallback_endpoint_is_used_when_the_primary_cannot_be_reached() -> None:
    """The primary endpoint refuses connections (a closed local port); the second one (here the local
    server, standing in for Bybit's second CDN) serves the feed."""
    assert Bybit().urls(["BTC-USD-PERP"], ["book"]) == [
        "wss://stream.bybit.com/v5/public/inverse",
        "wss://stream.bytick.com/v5/public/inverse",
    ]
    server = await bybit_server.BybitServer(bybit_server.events()).start()
    try:
        exchange = Bybit(ws_url="ws://127.0.0.1:9", depth=bybit_server.DEPTH, fallbacks=[server.url])
        exchange.ping_interval = 0.2  # type: ignore[misc]
        feed = FeedHandler(exchange, list(SYMBOLS), ["book", "trades"], stale_after=NEVER_STALE, retry=FAST)
        run = await run_feed(server, feed, SYMBOLS)
    finally:
        await server.stop()
    conn = run.feed.conns[0]
    assert conn.endpoint % 2 == 1 and conn.counters.connects == 1  # refused once, then the fallback
    assert run.resyncs() == [] and len(run.of(Trade)) == 150
