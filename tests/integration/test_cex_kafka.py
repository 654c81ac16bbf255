"""CEX records on Kafka (librdkafka's mock cluster): what the feed published over the recorded OKX frames
is on ``cex.okx.*`` and the merged ``trades`` topic, each record once, book events in order per symbol.

Recorded OKX v5 frames (2022-05-13) through the local OKX server (constructed: seqIds, the envelopes). Truth:
the records the feed published (compared field for field after the round trip) and the recorded trades.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.kafka import CexKafka
from core.retry import RetryPolicy
from devnet.exchanges import okx as okx_server
from devnet.exchanges import recording
from records import from_dict
from records.cex import BookDelta, BookSnapshot, Trade
from sinks.kafka import KafkaOptions
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.kafka_producer import KafkaProducer
from sinks.kafka_read import Received, read_topic
from tests.cex_harness import Run, run_feed

pytestmark = pytest.mark.integration

SYMBOLS = {"BTC-USDT": "BTC-USDT", "UNI-USD-PERP": "UNI-USD-SWAP", "BTC-USD-220527": "BTC-USD-220527"}
OURS = {venue: ours for ours, venue in SYMBOLS.items()}


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


@dataclass(frozen=True)
class Published:
    run: Run
    options: KafkaOptions
    prefix: str

    async def read(self, topic: str) -> list[Received]:
        config = self.options.consumer_config()
        got = await asyncio.to_thread(read_topic, config, self.prefix + topic, idle_timeout=20)
        return sorted(got, key=lambda m: (m.partition, m.offset))


@pytest.fixture(scope="module")
async def published(kafka: KafkaDev) -> Published:
    """The records of one OKX replay, published once on the mock cluster under a fresh prefix."""
    server = await okx_server.OkxServer(okx_server.events()).start()
    try:
        exchange = Okx(ws_url=server.url)
        feed = FeedHandler(exchange, list(SYMBOLS), ["book", "trades", "ticker"], stale_after=5,
                           retry=RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2))  # fmt: skip
        run = await run_feed(server, feed, SYMBOLS)
    finally:
        await server.stop()
    options = KafkaOptions(kafka.bootstrap, "", 0)
    prefix = f"t{uuid.uuid4().hex[:8]}."
    publisher = CexKafka(KafkaProducer(options.producer_config()), prefix)
    try:
        await publisher.publish(run.published)
    finally:
        await publisher.close()
    return Published(run, options, prefix)


async def test_okx_records_round_trip_through_kafka(published: Published) -> None:
    run = published.run

    async def read(topic: str) -> list[dict[str, object]]:
        return [m.doc | {"_key": m.key} for m in await published.read(topic)]

    trades = await read("cex.okx.trades")
    merged = await read("trades")
    book = await read("cex.okx.book")
    published_trades = run.of(Trade)
    assert sorted((from_dict(d) for d in trades), key=lambda t: t.trade_id) == sorted(  # type: ignore[arg-type,return-value]
        published_trades, key=lambda t: t.trade_id
    )
    recorded = {
        r["tradeId"]: r
        for p in recording.received(recording.FIXTURES / "okx" / "OKX.ws.1.0")
        if '"channel":"trades"' in p and '"data"' in p
        for r in json.loads(p)["data"]
    }
    assert len(merged) == len(recorded) == 74
    for doc in merged:
        r = recorded[doc["trade_id"]]  # type: ignore[index]
        assert (doc["price"], doc["size"], doc["side"], doc["time"]) == (
            r["px"],
            r["sz"],
            r["side"],
            int(r["ts"]),
        )
        assert doc["venue"] == "okx" and doc["_key"] == f"okx:{OURS[r['instId']]}"
    # every book event, in the order published, per symbol (one key per symbol: one partition)
    for symbol in SYMBOLS:
        sent = [p for p in run.published if isinstance(p, BookDelta | BookSnapshot) and p.symbol == symbol]
        got = [from_dict(d) for d in book if d["_key"] == f"okx:{symbol}"]  # type: ignore[arg-type]
        assert got == sent, symbol


async def test_one_symbols_trades_land_on_one_partition_in_the_order_received(published: Published) -> None:
    """Keyed by instrument (``okx:<symbol>``), each symbol's trades are on one partition of both trade
    topics (4 partitions on the mock cluster), in the order the feed received them; truth for the order:
    the recorded frames' trade ids in file order."""
    recorded: dict[str, list[str]] = {}
    for p in recording.received(recording.FIXTURES / "okx" / "OKX.ws.1.0"):
        if '"channel":"trades"' in p and '"data"' in p:
            for r in json.loads(p)["data"]:
                recorded.setdefault(r["instId"], []).append(r["tradeId"])
    by_symbol = {OURS[venue_symbol]: ids for venue_symbol, ids in recorded.items()}
    assert sum(len(ids) for ids in by_symbol.values()) == 74 and len(by_symbol) >= 2
    for topic in ("trades", "cex.okx.trades"):
        got = await published.read(topic)
        for symbol, ids in by_symbol.items():
            mine = [(m, m.doc.get("data", m.doc)) for m in got]  # the merged shape is flat
            mine = [(m, d) for m, d in mine if d["symbol"] == symbol]
            assert len({m.partition for m, _ in mine}) == 1, (topic, symbol)
            assert [d["trade_id"] for _, d in mine] == ids, (topic, symbol)
            assert {m.key for m, _ in mine} == {f"okx:{symbol}"}
