"""Bybit ``seq``/``cts`` stored: the feed over the local Bybit server, its book events written by ``CexStore``
(migration 0007's ``engine_sequence``/``engine_timestamp`` columns) and read back by ``sinks.cex_read``.

Data: recorded v2 ``orderBookL2_25`` frames (2021-04-17) in v5 envelopes (constructed: ``u``; ``seq`` is the
recorded ``cross_seq``, ``cts`` the recorded ``timestamp_e6`` in ms). Truth: those recorded values, keyed by
the book id ``u`` the server gave each frame (the market's own counter: the nth book event of a symbol).
"""

from __future__ import annotations

import json

import asyncpg
import pytest

from cex.exchanges.bybit import Bybit
from cex.feed import FeedHandler
from cex.store import CexStore
from core.database import DatabaseInfo
from core.retry import RetryPolicy
from devnet.exchanges import bybit as bybit_server
from devnet.exchanges import recording
from sinks import cex_read
from tests.cex_harness import run_feed

pytestmark = pytest.mark.integration

SYMBOLS = {"BTC-USD-PERP": "BTCUSD", "EOS-USD-PERP": "EOSUSD"}


def recorded() -> dict[tuple[str, int], tuple[int, int]]:
    """(symbol, u) -> (cross_seq, timestamp_e6 // 1000), u counting each symbol's book frames from 1."""
    out, count = {}, dict.fromkeys(SYMBOLS.values(), 0)
    for payload in recording.received(recording.FIXTURES / "bybit" / "BYBIT.ws.26.0"):
        msg = json.loads(payload)
        topic = str(msg.get("topic", ""))
        if topic.startswith("orderBookL2"):
            native = topic.split(".", 1)[1]
            count[native] += 1
            out[(native, count[native])] = (msg["cross_seq"], int(msg["timestamp_e6"]) // 1000)
    return out


async def test_bybit_seq_and_cts_are_stored_on_every_book_event(migrated_db: DatabaseInfo) -> None:
    server = await bybit_server.BybitServer(bybit_server.events()).start()
    try:
        exchange = Bybit(ws_url=server.url, depth=bybit_server.DEPTH)
        feed = FeedHandler(exchange, list(SYMBOLS), ["book"], stale_after=5,
                           retry=RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2))  # fmt: skip
        run = await run_feed(server, feed, SYMBOLS)
    finally:
        await server.stop()
    conn = await asyncpg.connect(migrated_db.dsn)
    try:
        await conn.execute("TRUNCATE cex_book_events")
        store = await CexStore.connect(migrated_db.dsn)
        try:
            await store.write(run.published)
        finally:
            await store.close()
        rows = await conn.fetch(
            "SELECT id, symbol, kind, sequence, engine_sequence, engine_timestamp FROM cex_book_events"
            " WHERE kind IN ('delta', 'snapshot') ORDER BY id"
        )
        back = await cex_read.records_between(conn, "cex_book_events", rows[0]["id"], rows[-1]["id"])
    finally:
        await conn.close()
    truth = recorded()
    native = {ours: theirs for ours, theirs in SYMBOLS.items()}
    deltas = [r for r in rows if r["kind"] == "delta"]
    assert len(deltas) > 1000
    for row in deltas:
        assert (row["engine_sequence"], row["engine_timestamp"]) == truth[
            (native[row["symbol"]], row["sequence"])
        ]
    # read back as records (the API's and the listener's path): the same values
    stored = {i: r for i, r in back}
    for row in rows:
        record = stored[row["id"]]
        assert (record.engine_sequence, record.engine_timestamp) == (
            row["engine_sequence"],
            row["engine_timestamp"],
        )  # type: ignore[union-attr]
