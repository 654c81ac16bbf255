"""The raw topic ``cex.<exchange>.raw`` on Kafka (librdkafka's mock cluster): every frame each connection
received, verbatim and in order, with its connection index and receipt time, through ``run_cex_pipeline``
as ``dexnode cex --raw`` runs it; the other sinks never see a raw frame.

Data: recorded OKX v5 frames (2022-05-13) through the local OKX server (constructed: seqIds, envelopes).
Truth: the frames the server wrote to each socket (``Session.sent``), not what the feed parsed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.kafka import CexKafka
from cex.pipeline import run_cex_pipeline
from cex.sync import Resync
from cli.main import main
from core.retry import RetryPolicy
from devnet.exchanges import okx as okx_server
from records.codec import Record
from sinks.kafka import KafkaOptions
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.kafka_producer import KafkaProducer
from sinks.kafka_read import read_topic

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC-USDT", "UNI-USD-PERP", "BTC-USD-220527"]


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


class Collect:
    """A plain sink beside Kafka: what a Postgres or websocket sink would be handed."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    async def write(self, items: list[Record | Resync]) -> None:
        self.items.extend(items)

    async def close(self) -> None:
        return None


async def test_every_received_frame_is_on_the_raw_topic_per_connection_in_order(kafka: KafkaDev) -> None:
    server = await okx_server.OkxServer(okx_server.events(), wait_for_sessions=2).start()
    options = KafkaOptions(kafka.bootstrap, "", 0)
    prefix = f"t{uuid.uuid4().hex[:8]}."
    publisher = CexKafka(KafkaProducer(options.producer_config()), prefix)
    other = Collect()
    started = time.time_ns() // 1000
    try:
        feed = FeedHandler(Okx(ws_url=server.url), SYMBOLS, ["book", "trades", "ticker"], connections=2,
                           stale_after=5, retry=RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2),
                           raw=True)  # fmt: skip
        pipeline = asyncio.ensure_future(run_cex_pipeline(feed, [publisher, other]))
        await asyncio.wait_for(server.done.wait(), 30)
        # every frame written to both sockets has been read by the feed (a bounded wait: a frame never read
        # fails here with the counts instead of hanging the suite)
        deadline = time.monotonic() + 30
        while True:  # counters, no event to await
            read = sum(c.counters.messages for c in feed.conns)
            sent = sum(len(s.sent) for s in server.sessions)
            if read >= sent:
                break
            assert time.monotonic() < deadline, f"the feed read {read} of the {sent} frames the server wrote"
            await asyncio.sleep(0.02)
        pipeline.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pipeline
    finally:
        await publisher.close()
        await server.stop()
    ended = time.time_ns() // 1000

    docs = await asyncio.to_thread(
        lambda: [(m.key, m.doc) for m in read_topic(options.consumer_config(), prefix + "cex.okx.raw")]
    )
    assert {doc["type"] for _, doc in docs} == {"raw"}
    assert len(server.sessions) == 2
    frames: dict[int, list[str]] = {}
    for connection in (0, 1):  # which server session each connection was is not known: match by content
        mine = [doc["data"] for key, doc in docs if key == f"okx:{connection}"]
        assert {(d["exchange"], d["connection"]) for d in mine} == {("okx", connection)}
        times = [d["atom_timestamp"] for d in mine]
        assert times == sorted(times) and started <= times[0] and times[-1] <= ended
        frames[connection] = [d["frame"] for d in mine]
    # verbatim, each once, in arrival order
    assert sorted(frames.values()) == sorted(s.sent for s in server.sessions)
    assert len(docs) == sum(len(s.sent) for s in server.sessions) > 600
    # the records still flowed, and no raw frame reached a sink that does not take them
    assert any(type(i).__name__ == "BookDelta" for i in other.items)
    assert all(isinstance(i, Record | Resync) for i in other.items)
    # nothing raw without raw=True
    assert FeedHandler(Okx(), SYMBOLS, ["book"]).raw_frames is None


def test_raw_without_kafka_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DEXNODE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(["cex", "--exchange", "okx", "--symbols", "BTC-USDT", "--no-store", "--raw"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "publishes raw exchange frames on the Kafka topics cex.<exchange>.raw" in err
    assert "needs DEXNODE_KAFKA_BOOTSTRAP_SERVERS" in err and "the cex_raw channel of dexnode run" in err
