"""Binance spot through the whole feed machinery against a local Binance stream + REST server.

Recorded (2021-10-12): every depthUpdate, bookTicker and aggTrade frame and the four REST snapshots, which
the server answers verbatim while the market stands where they were taken. Constructed: snapshots asked
later (from the server's market book) and the faults. Truth: the server's market book, i.e. the book of an
uninterrupted replay.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal

import pytest

from cex.exchanges.binance import Binance
from cex.feed import FeedHandler
from core.retry import RetryPolicy
from devnet.exchanges import binance as binance_server
from devnet.exchanges import recording
from devnet.exchanges.server import Fault
from records.cex import Ticker, Trade
from tests.cex_harness import NEVER_STALE, Run, run_feed, stale_after_for

pytestmark = pytest.mark.integration

SYMBOLS = {"NKN-USDT": "NKNUSDT", "BLZ-ETH": "BLZETH", "LRC-BTC": "LRCBTC", "RUNE-EUR": "RUNEEUR"}
binance_symbol = {native: ours for ours, native in SYMBOLS.items()}
FAST = RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2)


async def _replay(
    faults: list[Fault] | None = None, pace: float = 0.002
) -> tuple[Run, binance_server.BinanceServer]:
    server = binance_server.BinanceServer(binance_server.events(), faults, pace=pace, silence=2.5)
    await server.start()
    try:
        exchange = Binance(ws_url=f"{server.url}/stream", rest_url=server.rest_url)
        stale_after = stale_after_for(faults, short=1.5)
        feed = FeedHandler(
            exchange, list(SYMBOLS), ["book", "trades", "ticker"], stale_after=stale_after, retry=FAST
        )
        return await run_feed(server, feed, SYMBOLS), server
    finally:
        await server.stop()


async def test_clean_replay_syncs_with_the_recorded_rest_snapshots() -> None:
    run, server = await _replay()
    assert run.resyncs() == []
    assert sorted(server.served_recorded) == sorted(SYMBOLS.values())  # each book began from its recording
    assert len(run.of(Trade)) == 2 and len(run.of(Ticker)) == 84


@pytest.mark.parametrize(
    ("kind", "reason"), [("drop", "gap"), ("reorder", "gap"), ("close", "disconnected"), ("silent", "stale")]
)
async def test_fault_is_detected_resynced_and_the_book_ends_equal(kind: str, reason: str) -> None:
    run, _ = await _replay([Fault(0, "NKNUSDT", 20, kind)])
    assert reason in run.resyncs()
    assert run.feed.sync("NKN-USDT").counters.snapshots >= 2


async def test_duplicate_is_ignored_without_resync() -> None:
    run, _ = await _replay([Fault(0, "NKNUSDT", 20, "duplicate")])
    assert run.resyncs() == []
    assert run.feed.sync("NKN-USDT").counters.ignored >= 1


async def test_connection_rollover_before_the_24h_limit_loses_nothing() -> None:
    """Binance closes a connection after 24 h; here each is retired after 0.3 s (constructed timing): its
    successor subscribes first, both are read for 0.2 s, copies are dropped. Nothing is lost, no resync."""
    server = binance_server.BinanceServer(binance_server.events(), pace=0.004)
    await server.start()
    try:
        exchange = Binance(ws_url=f"{server.url}/stream", rest_url=server.rest_url)
        feed = FeedHandler(
            exchange,
            list(SYMBOLS),
            ["book", "trades", "ticker"],
            stale_after=NEVER_STALE,
            retry=FAST,
            max_connection_age=0.3,
            rollover_overlap=0.2,
        )
        run = await run_feed(server, feed, SYMBOLS)
    finally:
        await server.stop()
    counters = run.feed.counters()["connections"][0]
    assert counters.rollovers >= 2 and counters.disconnects == 0
    assert run.resyncs() == []
    assert len(run.of(Trade)) == 2  # once each: by trade id
    # bookTicker carries no exchange time or id in the record: an overlap can repeat one, never lose one
    recorded = Counter(
        (binance_symbol[d["s"]], Decimal(d["b"]), Decimal(d["B"]), Decimal(d["a"]), Decimal(d["A"]))
        for d in (
            json.loads(p)["data"]
            for p in recording.received(recording.FIXTURES / "binance" / "BINANCE.ws.1.0")
        )
        if "e" not in d
    )
    got = Counter((t.symbol, t.bid_price, t.bid_size, t.ask_price, t.ask_size) for t in run.of(Ticker))
    assert sum(recorded.values()) == 84 and not recorded - got
