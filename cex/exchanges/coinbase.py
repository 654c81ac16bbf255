"""Coinbase Advanced Trade public websocket: ``level2`` (arrives as ``l2_data``), ``market_trades``,
``ticker``, ``heartbeats``.

An ``l2_data`` frame (absolute quantities; "offer" is the ask side)::

    {"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z","sequence_num":7,
     "events":[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid",
     "event_time":"2023-02-09T20:32:50.2Z","price_level":"21921.73","new_quantity":"0.06317902"}]}]}

Invariant: ``sequence_num`` counts every message of the connection, all channels together, so a gap means a
lost message of any product: every book of that connection is rebuilt (``Parsed.sequence``; the feed checks
it). Books have no per-product ids and no checksum; ``heartbeats`` keep quiet channels open. Trades:
``side`` is taken as the maker's side, as on Coinbase's Exchange feed (``match``), so the taker is the
other side (an assumption the recordings cannot settle: they are from the retired Pro feed). The
``market_trades`` snapshot sent on subscribing repeats recent trades and is not republished.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import orjson

from cex.exchange import Exchange, Feed, Parsed, dec, taker_side, trade
from cex.sync import BookMessage, SequenceRule
from records.cex import Ticker

_CHANNELS: dict[Feed, str] = {"book": "level2", "trades": "market_trades", "ticker": "ticker"}
_OTHER = {"buy": "sell", "sell": "buy"}


def iso_ms(text: str | None) -> int | None:
    """RFC 3339 with up to nanoseconds -> ms (no float on the way)."""
    if not text:
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(head).replace(tzinfo=UTC)
    return int(whole.timestamp()) * 1000 + int((frac + "000")[:3])


class Coinbase(Exchange):
    name = "coinbase"
    ws_url = "wss://advanced-trade-ws.coinbase.com"
    rest_url = "https://api.coinbase.com"
    rule: ClassVar[SequenceRule] = "none"

    def to_exchange_symbol(self, symbol: str) -> str:
        return symbol

    def subscribe(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        frames = [orjson.dumps({"type": "subscribe", "channel": "heartbeats"}).decode()]
        for feed in feeds:
            if feed in _CHANNELS:
                msg = {"type": "subscribe", "product_ids": list(symbols), "channel": _CHANNELS[feed]}
                frames.append(orjson.dumps(msg).decode())
        return frames

    def resubscribe_book(self, symbol: str) -> list[str]:
        return [
            orjson.dumps({"type": op, "product_ids": [symbol], "channel": "level2"}).decode()
            for op in ("unsubscribe", "subscribe")
        ]

    def parse(self, frame: str | bytes, atom_timestamp: int) -> Parsed:
        msg = orjson.loads(frame)
        out = Parsed(sequence=msg.get("sequence_num"))
        channel = msg.get("channel")
        if channel == "l2_data":
            for event in msg["events"]:
                out.books.append(self._book(event, atom_timestamp))
        elif channel == "market_trades":
            for event in msg["events"]:
                if event["type"] != "update":
                    continue
                for item in event["trades"]:
                    side = _OTHER[taker_side(item["side"].lower())]
                    out.records.append(
                        trade(
                            self.name,
                            item["product_id"],
                            item["price"],
                            item["size"],
                            side,
                            item["trade_id"],
                            iso_ms(item.get("time")),
                            atom_timestamp,
                        )
                    )
        elif channel == "ticker":
            ts = iso_ms(msg.get("timestamp"))
            for event in msg["events"]:
                for item in event["tickers"]:
                    out.records.append(_ticker(self.name, item, ts, atom_timestamp))
        else:
            out.control = True  # heartbeats, subscriptions
        return out

    def _book(self, event: dict[str, Any], atom_timestamp: int) -> BookMessage:
        bids: list[tuple[Decimal, Decimal]] = []
        asks: list[tuple[Decimal, Decimal]] = []
        last_time = None
        for update in event["updates"]:
            level = (Decimal(update["price_level"]), Decimal(update["new_quantity"]))
            (bids if update["side"] == "bid" else asks).append(level)
            last_time = update.get("event_time") or last_time
        return BookMessage(
            event["product_id"],
            event["type"] == "snapshot",
            bids,
            asks,
            event_timestamp=iso_ms(last_time),
            atom_timestamp=atom_timestamp,
        )


def _ticker(exchange: str, item: dict[str, Any], ts: int | None, atom: int) -> Ticker:
    def opt(key: str) -> Decimal | None:
        return dec(item[key]) if item.get(key) else None

    return Ticker(
        exchange,
        item["product_id"],
        opt("best_bid"),
        opt("best_bid_quantity"),
        opt("best_ask"),
        opt("best_ask_quantity"),
        ts,
        atom,
    )
