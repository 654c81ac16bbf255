"""Kraken v2 through the whole feed machinery against a local Kraken server.

Recorded (2021-04-17, v1): every level and every update checksum, converted to v2 envelopes (constructed,
see ``devnet/exchanges/kraken_v2.py``); mid-stream snapshots and faults are constructed. Truth: the
server's own market book (plain dicts, truncated to depth 1000), i.e. the book of an uninterrupted replay.

Kraken has no sequence ids: a lost or reordered update is seen only through the checksum over the top 10
levels, so the faults here are put on updates that touch the top 10 (chosen from the recording by the
market's book, not by the code under test); a lost update deeper in the book is invisible by design.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from cex.exchanges.kraken import Kraken
from cex.feed import FeedHandler
from core.retry import RetryPolicy
from devnet.exchanges import kraken as kraken_server
from devnet.exchanges.server import Fault, MarketBook
from tests.cex_harness import Run, run_feed, stale_after_for

pytestmark = pytest.mark.integration

SYMBOL, NATIVE = "SC-EUR", "SC/EUR"
SYMBOLS = {SYMBOL: NATIVE, "KSM-BTC": "KSM/BTC", "XMR-USD": "XMR/USD"}
FAST = RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2)


def _top10_updates(native: str) -> list[int]:
    """Indexes (among the symbol's book frames) of updates that change a level inside the top 10."""
    book = MarketBook(kraken_server.DEPTH)
    out = []
    for nth, event in enumerate(e for e in kraken_server.events() if e.symbol == native):
        if event.channel == "book":
            bids, asks = book.as_decimals()
            worst_bid = bids[:10][-1][0] if bids else Decimal(0)
            worst_ask = asks[:10][-1][0] if asks else Decimal("Infinity")
            if any(Decimal(p) >= worst_bid for p, _ in event.bids) or any(
                Decimal(p) <= worst_ask for p, _ in event.asks
            ):
                out.append(nth)
        book.frames += 1
        if event.channel == "snapshot":
            book.load(event.bids, event.asks)
        else:
            book.apply(event.bids, event.asks)
    return out


async def _replay(faults: list[Fault] | None = None, connections: int = 1) -> Run:
    server = await kraken_server.KrakenServer(
        kraken_server.events(), faults, wait_for_sessions=connections
    ).start()
    try:
        exchange = Kraken(ws_url=server.url, depth=kraken_server.DEPTH)
        feed = FeedHandler(
            exchange,
            list(SYMBOLS),
            ["book"],
            connections=connections,
            stale_after=stale_after_for(faults),
            retry=FAST,
        )
        return await run_feed(server, feed, SYMBOLS, depth=kraken_server.DEPTH)
    finally:
        await server.stop()


async def test_clean_replay_verifies_every_recorded_checksum() -> None:
    run = await _replay()
    assert run.resyncs() == []
    counters = run.feed.counters()["books"]
    applied = sum(c.applied for c in counters.values())
    assert applied == sum(
        1 for e in kraken_server.events() if e.channel == "book" and e.symbol in SYMBOLS.values()
    )
    assert sum(c.checksum_failures for c in counters.values()) == 0


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("drop", "checksum"),
        ("reorder", "checksum"),
        ("corrupt", "checksum"),
        ("close", "disconnected"),
        ("silent", "stale"),
    ],
)
async def test_fault_is_detected_resynced_and_the_book_ends_equal(kind: str, reason: str) -> None:
    candidates = [n for n in _top10_updates(NATIVE) if n >= 30]
    nth = candidates[0]
    if kind == "reorder":  # two consecutive top-10 updates, so swapping them changes the top 10 in between
        nth = next(n for n in candidates if n + 1 in candidates)
    run = await _replay([Fault(0, NATIVE, nth, kind)])
    assert reason in run.resyncs()
    assert run.feed.sync(SYMBOL).counters.snapshots >= 2
