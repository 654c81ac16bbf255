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
from sinks.kafka_read import read_topic
from tests.cex_harness import run_feed

pytestmark = pytest.mark.integration

SYMBOLS = {"BTC-USDT": "BTC-USDT", "UNI-USD-PERP": "UNI-USD-SWAP", "BTC-USD-220527": "BTC-USD-220527"}


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


async def test_okx_records_round_trip_through_kafka(kafka: KafkaDev) -> None:
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

    def read(topic: str) -> list[dict[str, object]]:
        return [
            m.doc | {"_key": m.key}
            for m in read_topic(options.consumer_config(), prefix + topic, idle_timeout=20)
        ]

    trades = await asyncio.to_thread(read, "cex.okx.trades")
    merged = await asyncio.to_thread(read, "trades")
    book = await asyncio.to_thread(read, "cex.okx.book")
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
        assert doc["venue"] == "okx" and doc["_key"].endswith(f":{r['tradeId']}")  # type: ignore[union-attr]
    # every book event, in the order published, per symbol (one key per symbol: one partition)
    for symbol in SYMBOLS:
        sent = [p for p in run.published if isinstance(p, BookDelta | BookSnapshot) and p.symbol == symbol]
        got = [from_dict(d) for d in book if d["_key"] == f"okx:{symbol}"]  # type: ignore[arg-type]
        assert got == sent, symbol
