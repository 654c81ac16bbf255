"""Coinbase Advanced Trade through the whole feed machinery against a local Coinbase server.

Recorded (2021-04-17, Coinbase Pro): every level change and trade; constructed: the Advanced Trade envelopes
and per-connection ``sequence_num`` (see ``devnet/exchanges/coinbase.py``), mid-stream snapshots and faults.
Truth: the server's market book (plain dicts), i.e. the book of an uninterrupted replay, and the recorded
trades (taker side = the other side of the recorded maker side).
"""

from __future__ import annotations

import json

import pytest

from cex.exchanges.coinbase import Coinbase
from cex.feed import FeedHandler
from core.retry import RetryPolicy
from devnet.exchanges import coinbase as coinbase_server
from devnet.exchanges import recording
from devnet.exchanges.server import Fault
from records.cex import Trade
from tests.cex_harness import Run, run_feed, stale_after_for

pytestmark = pytest.mark.integration

SYMBOLS = {s: s for s in ("SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC")}
FAST = RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2)


async def _replay(faults: list[Fault] | None = None) -> Run:
    server = await coinbase_server.CoinbaseServer(coinbase_server.events(), faults).start()
    try:
        feed = FeedHandler(
            Coinbase(ws_url=server.url),
            list(SYMBOLS),
            ["book", "trades"],
            stale_after=stale_after_for(faults),
            retry=FAST,
        )
        return await run_feed(server, feed, SYMBOLS)
    finally:
        await server.stop()


async def test_clean_replay_applies_every_update_and_keeps_every_trade() -> None:
    run = await _replay()
    assert run.resyncs() == []
    frames = [json.loads(p) for p in recording.received(coinbase_server.RECORDING)]
    updates = [f for f in frames if f.get("type") == "l2update" and f["product_id"] in SYMBOLS]
    assert sum(c.applied for c in run.feed.counters()["books"].values()) == len(updates)
    matches = [f for f in frames if f.get("type") == "match" and f["product_id"] in SYMBOLS]
    got = run.of(Trade)
    assert len(got) == len(matches) > 0
    for t, m in zip(got, matches, strict=True):
        taker = "buy" if m["side"] == "sell" else "sell"
        assert (t.trade_id, str(t.price), str(t.size), t.taker_side, t.symbol) == (
            str(m["trade_id"]),
            m["price"],
            m["size"],
            taker,
            m["product_id"],
        )


@pytest.mark.parametrize(
    ("kind", "reason"), [("drop", "gap"), ("reorder", "gap"), ("close", "disconnected"), ("silent", "stale")]
)
async def test_fault_is_detected_resynced_and_the_book_ends_equal(kind: str, reason: str) -> None:
    run = await _replay([Fault(0, "SKL-USD", 30, kind)])
    assert reason in run.resyncs()
    assert run.feed.sync("SKL-USD").counters.snapshots >= 2
