"""OKX v5 public websocket: ``books`` (400 levels), ``trades``, ``tickers``, ``funding-rate``,
``open-interest``.

A ``books`` frame (recorded 2022-05-13; ``seqId``/``prevSeqId`` are in today's frames, absent then)::

    {"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[["30243.5",
     "1.2112","0","4"]],"bids":[],"ts":"1652459225464","checksum":-914047754,"prevSeqId":123,"seqId":124}]}

Invariant: an update's ``prevSeqId`` is the ``seqId`` of the update before it (a heartbeat update has
``prevSeqId == seqId`` and no levels; ``seqId < prevSeqId`` is a reset during maintenance). The CRC32 of
the top 25 levels (``cex.checksum.okx_checksum``) is checked when non-zero: OKX sends 0 since 2026-06-23.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from cex.book import L2Book, row_levels
from cex.checksum import okx_checksum
from cex.exchange import Exchange, Feed, MalformedMessage, Parsed, dec, taker_side, trade
from cex.sync import BookMessage, SequenceRule
from records.cex import FundingRate, OpenInterest, Ticker

_CHANNELS: dict[Feed, str] = {
    "book": "books",
    "trades": "trades",
    "ticker": "tickers",
    "funding": "funding-rate",
    "open_interest": "open-interest",
}
_PERP_ONLY = {"funding", "open_interest"}


class Okx(Exchange):
    name = "okx"
    ws_url = "wss://ws.okx.com:8443/ws/v5/public"
    rest_url = "https://www.okx.com"
    rule: ClassVar[SequenceRule] = "prev"
    ping_frame = "ping"

    def to_exchange_symbol(self, symbol: str) -> str:
        return symbol[: -len("-PERP")] + "-SWAP" if symbol.endswith("-PERP") else symbol

    @staticmethod
    def from_exchange_symbol(inst_id: str) -> str:
        return inst_id[: -len("-SWAP")] + "-PERP" if inst_id.endswith("-SWAP") else inst_id

    def _args(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[dict[str, str]]:
        return [
            {"channel": _CHANNELS[feed], "instId": self.to_exchange_symbol(symbol)}
            for feed in feeds
            for symbol in symbols
            if feed not in _PERP_ONLY or symbol.endswith("-PERP")
        ]

    def subscribe(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        return [orjson.dumps({"op": "subscribe", "args": self._args(symbols, feeds)}).decode()]

    def resubscribe_book(self, symbol: str) -> list[str]:
        args = self._args([symbol], ["book"])
        return [orjson.dumps({"op": op, "args": args}).decode() for op in ("unsubscribe", "subscribe")]

    def verify(self, book: L2Book, msg: BookMessage) -> bool:
        return okx_checksum(book) == msg.checksum

    def parse(self, frame: str | bytes, atom_timestamp: int) -> Parsed:
        if frame in ("pong", b"pong"):
            return Parsed(control=True)
        msg = orjson.loads(frame)
        out = Parsed()
        if not isinstance(msg, dict) or "data" not in msg:
            if isinstance(msg, dict) and msg.get("event") == "error":
                raise MalformedMessage(f"okx error event: {msg.get('code')} {msg.get('msg')}")
            out.control = True
            return out
        channel = msg["arg"]["channel"]
        if channel == "books":
            self._books(msg, atom_timestamp, out)
            return out
        for item in msg["data"]:
            symbol = self.from_exchange_symbol(item["instId"])
            ts = int(item["ts"]) if item.get("ts") else None
            if channel == "trades":
                side = taker_side(item["side"])
                out.records.append(
                    trade(
                        self.name, symbol, item["px"], item["sz"], side, item["tradeId"], ts, atom_timestamp
                    )
                )
            elif channel == "tickers":
                out.records.append(_ticker(self.name, symbol, item, ts, atom_timestamp))
            elif channel == "funding-rate":
                out.records.append(
                    FundingRate(
                        self.name,
                        symbol,
                        dec(item["fundingRate"]),
                        dec(item["nextFundingRate"]) if item.get("nextFundingRate") else None,
                        None,
                        int(item["fundingTime"]) if item.get("fundingTime") else None,
                        ts,
                        atom_timestamp,
                    )
                )
            elif channel == "open-interest":
                out.records.append(OpenInterest(self.name, symbol, dec(item["oi"]), ts, atom_timestamp))
        return out

    def _books(self, msg: dict[str, Any], atom_timestamp: int, out: Parsed) -> None:
        symbol = self.from_exchange_symbol(msg["arg"]["instId"])
        snapshot = msg["action"] == "snapshot"
        for item in msg["data"]:
            seq = item.get("seqId")
            prev = item.get("prevSeqId")
            out.books.append(
                BookMessage(
                    symbol,
                    snapshot,
                    row_levels(item["bids"], self.decimals),
                    row_levels(item["asks"], self.decimals),
                    last=seq,
                    prev=None if snapshot or prev is None or prev < 0 else prev,
                    checksum=item.get("checksum") or None,
                    event_timestamp=int(item["ts"]),
                    atom_timestamp=atom_timestamp,
                )
            )


def _ticker(exchange: str, symbol: str, item: dict[str, Any], ts: int | None, atom: int) -> Ticker:
    def opt(key: str) -> Any:
        return dec(item[key]) if item.get(key) else None

    return Ticker(exchange, symbol, opt("bidPx"), opt("bidSz"), opt("askPx"), opt("askSz"), ts, atom)
