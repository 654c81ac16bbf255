"""OKX through the whole feed machinery against a local OKX server replaying the recorded frames.

Recorded (2022-05-13): every level, trade, ticker and checksum. Constructed: seqId/prevSeqId, mid-stream
snapshots (checksum 0) and the faults. Truth: the server's own market book (plain dicts), i.e. the book of
an uninterrupted replay; the recorded checksums are verified on every update the feed applies.
"""

from __future__ import annotations

import pytest

from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.sync import Resync
from core.retry import RetryPolicy
from devnet.exchanges import okx as okx_server
from devnet.exchanges.server import Fault, ReplayServer
from records.cex import Ticker, Trade
from tests.cex_harness import NEVER_STALE, market_levels, run_feed, stale_after_for

pytestmark = pytest.mark.integration

SYMBOLS = {"BTC-USDT": "BTC-USDT", "UNI-USD-PERP": "UNI-USD-SWAP", "BTC-USD-220527": "BTC-USD-220527"}
FAST = RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2)


# Only the "silent" fault (1.5 s of silence) needs a short stale threshold: see NEVER_STALE.


def _feed(server: ReplayServer, connections: int = 1, stale_after: float = NEVER_STALE) -> FeedHandler:
    exchange = Okx(ws_url=server.url)
    exchange.ping_interval = 0.2  # type: ignore[misc]
    return FeedHandler(exchange, list(SYMBOLS), ["book", "trades", "ticker"], connections=connections,
                       stale_after=stale_after, retry=FAST)  # fmt: skip


async def _replay(faults: list[Fault] | None = None, connections: int = 1, during: object = None,  # type: ignore[no-untyped-def]
                  stale_after: float = NEVER_STALE):  # fmt: skip
    server = await okx_server.OkxServer(okx_server.events(), faults, wait_for_sessions=connections).start()
    try:
        return await run_feed(server, _feed(server, connections, stale_after), SYMBOLS, during=during), server
    finally:
        await server.stop()


async def test_clean_replay_verifies_every_checksum_and_publishes_every_trade() -> None:
    run, _ = await _replay()
    assert run.resyncs() == []
    counters = run.feed.counters()["books"]
    assert sum(c.applied for c in counters.values()) == 287
    assert sum(c.checksum_failures for c in counters.values()) == 0
    assert len(run.of(Trade)) == 74 and len(run.of(Ticker)) == 28


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("drop", "gap"),
        ("reorder", "gap"),
        ("corrupt", "checksum"),
        ("close", "disconnected"),
        ("silent", "stale"),
        ("reset", "reset"),
    ],
)
async def test_fault_is_detected_resynced_and_the_book_ends_equal(kind: str, reason: str) -> None:
    """Each fault is detected as itself: every resync is of the fault's kind, and a fault in one book's
    stream resyncs that book only, once (no staleness can mask a gap);
    run_feed returns only once the feed's and the consumer's books equal the server's (an uninterrupted
    replay's), checked again here."""
    faults = [Fault(0, "BTC-USDT", 40, kind)]
    run, server = await _replay(faults, stale_after=stale_after_for(faults))
    resyncs = [(r.symbol, r.reason) for r in run.of(Resync)]
    assert ("BTC-USDT", reason) in resyncs and {r for _, r in resyncs} == {reason}
    if kind not in ("close", "silent"):  # those two hit every book of the connection
        assert resyncs == [("BTC-USDT", reason)]
    assert run.feed.sync("BTC-USDT").counters.snapshots >= 2  # rebuilt from a new snapshot
    for symbol, native in SYMBOLS.items():
        assert run.consumers[symbol].levels() == market_levels(server, native)


async def test_duplicate_is_ignored_without_resync() -> None:
    run, _ = await _replay([Fault(0, "BTC-USDT", 40, "duplicate")])
    assert run.resyncs() == []
    assert run.feed.sync("BTC-USDT").counters.ignored == 1


async def test_an_unanswered_resubscribe_is_asked_again() -> None:
    """The server leaves the first books re-subscription unanswered (constructed): the book stays invalid,
    publishes nothing, and asks again after stale_after; it ends equal to the market's."""
    server = okx_server.OkxServer(okx_server.events(), [Fault(0, "BTC-USDT", 40, "corrupt")], pace=0.003)
    server.ignore_resubscribes = 1
    await server.start()
    try:
        feed = _feed(server)
        # the re-ask waits for this silence on the unanswered book; 1.5 s, not less: the other books'
        # messages come every few ms, but a loaded machine can stall this process (server and feed both)
        # for a few hundred ms, which a shorter threshold would take for a stale feed
        feed.stale_after = 1.5
        run = await run_feed(server, feed, SYMBOLS)
    finally:
        await server.stop()
    assert run.resyncs() == ["checksum"]
    assert server.ignore_resubscribes == 0  # the first request was dropped, a later one answered
    assert run.feed.sync("BTC-USDT").counters.snapshots == 2
