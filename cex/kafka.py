"""CEX records on Kafka: ``<prefix>cex.<exchange>.trades|book|ticker|funding|open_interest|candles`` and the
merged ``<prefix>trades`` topic that DEX and CEX trades share.

Values are the records' JSON (``records.to_json``: ``{"type", "version", "data"}``); a resync goes on the
book topic as ``{"type": "resync", "data": {exchange, symbol, reason, sequence}}``. Every message of an
instrument, trades included, is keyed ``exchange:symbol``, so one symbol's trades and book events each stay
in the order received on one partition. The merged ``trades`` topic carries the common shape of
``sinks.merged_trades`` (``venue, symbol, pool, price, size, side, time, trade_id, block_number``; time in
ms, side the taker's), keyed like the trade (a DEX trade there by its pool: one instrument, one partition
on both venues). The key does not name a trade: a re-sent trade is a second message with the same key and
value, and consumers dedupe by ``venue`` + ``trade_id`` in the value (``exchange`` + ``trade_id`` on
``cex.<exchange>.trades``).

``cex.<exchange>.raw`` (when the feed keeps raw frames: ``dexnode cex --raw``, ``DEXNODE_CEX_RAW``) carries
every frame as received: ``{"type": "raw", "data": {exchange, connection, atom_timestamp, frame}}``, the
frame verbatim as text (a binary frame as base64, with ``"encoding": "base64"``), keyed by
``exchange:connection`` so each connection's frames stay in arrival order on one partition.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from cex.dispatch import RawFrame
from cex.sync import Resync
from records import Record, to_json
from records.cex import (
    BookDelta,
    BookSnapshot,
    Candle,
    FundingRate,
    OpenInterest,
    Ticker,
    Trade,
    raw_frame_data,
)
from sinks import merged_trades
from sinks.kafka_keys import OutMessage, out_message
from sinks.kafka_producer import KafkaProducer

TOPICS: dict[type[Record], str] = {
    Trade: "trades",
    BookDelta: "book",
    BookSnapshot: "book",
    Ticker: "ticker",
    FundingRate: "funding",
    OpenInterest: "open_interest",
    Candle: "candles",
}


def merged_trade(trade: Trade) -> bytes:
    """A CEX trade in the shape the merged ``trades`` topic shares with DEX trades
    (``sinks.merged_trades``, the websocket ``trades`` channel's too)."""
    return orjson.dumps(merged_trades.cex_trade(trade))


def messages(items: Iterable[Record | Resync], prefix: str = "") -> list[OutMessage]:
    out: list[OutMessage] = []
    for item in items:
        if isinstance(item, Resync):
            doc = {
                "type": "resync",
                "data": {
                    "exchange": item.exchange,
                    "symbol": item.symbol,
                    "reason": item.reason,
                    "sequence": item.sequence,
                },
            }
            key = f"{item.exchange}:{item.symbol}".encode()
            out.append(out_message(f"{prefix}cex.{item.exchange}.book", key, orjson.dumps(doc), []))
            continue
        topic = TOPICS.get(type(item))
        if topic is None:
            raise TypeError(f"not a CEX record: {type(item).__name__}")
        exchange, symbol = item.exchange, item.symbol  # type: ignore[attr-defined]
        key = f"{exchange}:{symbol}".encode()
        if isinstance(item, Trade):
            out.append(out_message(f"{prefix}trades", key, merged_trade(item), []))
        out.append(out_message(f"{prefix}cex.{exchange}.{topic}", key, to_json(item), []))
    return out


def raw_messages(frames: Iterable[RawFrame], prefix: str = "") -> list[OutMessage]:
    out: list[OutMessage] = []
    for raw in frames:
        data = raw_frame_data(raw.exchange, raw.connection, raw.atom_timestamp, raw.frame)
        key = f"{raw.exchange}:{raw.connection}".encode()
        value = orjson.dumps({"type": "raw", "data": data})
        out.append(out_message(f"{prefix}cex.{raw.exchange}.raw", key, value, []))
    return out


class CexKafka:
    """Publishes a batch of CEX records; returns once the broker acknowledged every message."""

    def __init__(self, producer: KafkaProducer, prefix: str = "") -> None:
        self.producer = producer
        self.prefix = prefix

    async def publish(self, items: Iterable[Record | Resync]) -> None:
        batch = messages(items, self.prefix)
        if batch:
            await self.producer.send(batch)

    async def write(self, items: Iterable[Record | Resync]) -> None:
        """``publish`` under the sink name (a ``cex.pipeline.CexSink``)."""
        await self.publish(items)

    async def write_raw(self, frames: Iterable[RawFrame]) -> None:
        """Raw frames onto ``cex.<exchange>.raw`` (a ``cex.pipeline.RawSink``)."""
        batch = raw_messages(frames, self.prefix)
        if batch:
            await self.producer.send(batch)

    async def close(self) -> None:
        await self.producer.close()
