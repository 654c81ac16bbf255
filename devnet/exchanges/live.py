"""Local exchange servers serving generated live markets (``market.LiveMarket``) instead of recordings, with
each exchange's protocol from the replay servers: Binance spot (combined streams in the URL, REST depth
snapshots, ``U``/``u`` update ids), OKX v5 (``books`` with ``seqId``/``prevSeqId`` and the CRC32 checksum of
the top 25 levels) and Kraken v2 (``book`` with the CRC32 of the top 10, the ``instrument`` precisions).

After every book change that moves the best bid or ask, a ticker follows (Binance ``bookTicker``, OKX
``tickers``, Kraken v2 ``ticker``) to the sessions subscribed to it, so the demo shows tickers.

The market never stops: a step every ``interval`` seconds, round robin over the symbols, for as long as
the server runs (the demo's CEX side). Checksums here are computed from the market's own book text by each
exchange's documented rule: plain code, nothing of ``cex/``.

``LIVE_SERVERS`` names them by exchange; ``start_live(exchange, symbols, seed)`` starts one.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime

from devnet.exchanges import kraken, kraken_v2
from devnet.exchanges.binance import BinanceServer
from devnet.exchanges.kraken import KrakenServer
from devnet.exchanges.market import INSTRUMENTS, GeneratedTrade, Instrument, LiveMarket, interleave
from devnet.exchanges.okx import OkxServer
from devnet.exchanges.server import Event, MarketBook, ReplayServer

DEFAULT_SYMBOLS = ("ETH-USDT", "BTC-USDT")
KRAKEN_DEPTHS = (10, 25, 100, 500, 1000)


def _ms_now(trade: GeneratedTrade | None = None) -> int:
    return trade.timestamp_ms if trade is not None else int(datetime.now(UTC).timestamp() * 1000)


def okx_checksum(book: MarketBook) -> int:
    """OKX: CRC32 (signed 32-bit) of the top 25 levels interleaved ``bid:size:ask:size:...``; where one
    side is shorter, the other's remaining levels follow alone."""
    bids = [f"{p}:{s}" for p, s in book.sorted_bids()[:25]]
    asks = [f"{p}:{s}" for p, s in book.sorted_asks()[:25]]
    common = min(len(bids), len(asks))
    parts = [f"{b}:{a}" for b, a in zip(bids[:common], asks[:common], strict=True)]
    parts += bids[common:] or asks[common:]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class LiveServer(ReplayServer):
    """A replay server whose events never end: the markets' interleaved steps."""

    markets: list[LiveMarket]

    def setup(self, markets: list[LiveMarket]) -> None:
        self.markets = markets
        self.tops: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {}  # the last ticker's, per symbol

    async def start(self) -> ReplayServer:
        self.started.set()  # the market runs from the start, subscribed or not
        return await super().start()

    def follow_ups(self, event: Event, book: MarketBook) -> list[tuple[str, str]]:
        """A ticker when the book's best bid or ask moved (and both sides exist)."""
        if event.channel not in ("book", "snapshot") or not book.bids or not book.asks:
            return []
        top = (book.sorted_bids()[0], book.sorted_asks()[0])
        if self.tops.get(event.symbol) == top:
            return []
        self.tops[event.symbol] = top
        return [("ticker", self.ticker_frame(event.symbol, book, *top))]

    def ticker_frame(self, symbol: str, book: MarketBook, bid: tuple[str, str], ask: tuple[str, str]) -> str:
        raise NotImplementedError


class LiveBinanceServer(BinanceServer, LiveServer):
    """Binance spot: ``U`` is the previous event's ``u`` + 1 and ``u`` grows by one per level changed, so
    the REST snapshot's ``lastUpdateId`` and the stream follow Binance's documented local-book rule."""

    first_update_id = 1_000_000

    def apply(self, event: Event, book: MarketBook) -> str | None:
        stream = f"{event.symbol.lower()}@"
        if event.channel == "snapshot":
            book.load(event.bids, event.asks)
            book.sequence = self.first_update_id
            return None
        if event.channel == "book":
            first = book.sequence + 1
            book.apply(event.bids, event.asks)
            book.sequence = first + max(1, len(event.bids) + len(event.asks)) - 1
            data = {
                "e": "depthUpdate",
                "E": _ms_now(),
                "s": event.symbol,
                "U": first,
                "u": book.sequence,
                "b": [list(level) for level in event.bids],
                "a": [list(level) for level in event.asks],
            }
            return json.dumps({"stream": stream + "depth@100ms", "data": data})
        trade: GeneratedTrade = event.raw
        data = {
            "e": "trade",
            "E": trade.timestamp_ms,
            "s": event.symbol,
            "t": trade.trade_id,
            "p": trade.price,
            "q": trade.size,
            "T": trade.timestamp_ms,
            "m": trade.taker_side == "sell",
            "M": True,
        }
        return json.dumps({"stream": stream + "trade", "data": data})

    def ticker_frame(self, symbol: str, book: MarketBook, bid: tuple[str, str], ask: tuple[str, str]) -> str:
        data = {"u": book.sequence, "s": symbol, "b": bid[0], "B": bid[1], "a": ask[0], "A": ask[1]}
        return json.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data})


class LiveOkxServer(OkxServer, LiveServer):
    """OKX v5 ``books``: each update carries ``prevSeqId``/``seqId`` and the checksum of the book after it."""

    def render(self, event: Event, book: MarketBook) -> str:
        if event.channel == "trades":
            trade: GeneratedTrade = event.raw
            item = {
                "instId": event.symbol,
                "tradeId": str(trade.trade_id),
                "px": trade.price,
                "sz": trade.size,
                "side": trade.taker_side,
                "ts": str(trade.timestamp_ms),
            }
            return json.dumps({"arg": {"channel": "trades", "instId": event.symbol}, "data": [item]})
        if event.channel == "snapshot":
            return self.snapshot_frame(event.symbol, book) or ""
        data = {
            "asks": [[p, s, "0", "1"] for p, s in event.asks],
            "bids": [[p, s, "0", "1"] for p, s in event.bids],
            "ts": str(_ms_now()),
            "checksum": okx_checksum(book),
            "prevSeqId": book.prev,
            "seqId": book.sequence,
        }
        return json.dumps(
            {"arg": {"channel": "books", "instId": event.symbol}, "action": "update", "data": [data]}
        )

    def snapshot_frame(self, symbol: str, book: MarketBook) -> str | None:
        data = {
            "asks": [[p, s, "0", "1"] for p, s in book.sorted_asks()],
            "bids": [[p, s, "0", "1"] for p, s in book.sorted_bids()],
            "ts": str(_ms_now()),
            "checksum": okx_checksum(book),
            "prevSeqId": -1,
            "seqId": book.sequence,
        }
        return json.dumps(
            {"arg": {"channel": "books", "instId": symbol}, "action": "snapshot", "data": [data]}
        )

    def ticker_frame(self, symbol: str, book: MarketBook, bid: tuple[str, str], ask: tuple[str, str]) -> str:
        item = {"instType": "SPOT", "instId": symbol, "bidPx": bid[0], "bidSz": bid[1], "askPx": ask[0],
                "askSz": ask[1], "ts": str(_ms_now())}  # fmt: skip
        return json.dumps({"arg": {"channel": "tickers", "instId": symbol}, "data": [item]})


class LiveKrakenServer(KrakenServer, LiveServer):
    """Kraken v2: the market keeps at most 10 levels a side, so any subscribed depth holds all of it and
    the checksum (top 10 asks ascending, bids descending, digits without '.' and leading zeros) is over
    the same levels on both ends. Numbers go out as JSON numbers with the instrument's precision."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        ReplayServer.__init__(self, *args, **kwargs)  # type: ignore[arg-type]  # not the recording

    def instrument_frame(self) -> str:
        pairs = [
            {
                "symbol": m.name,
                "price_precision": m.instrument.price_decimals,
                "qty_precision": m.instrument.size_decimals,
                "status": "online",
            }
            for m in self.markets
        ]
        return json.dumps(
            {"channel": "instrument", "type": "snapshot", "data": {"assets": [], "pairs": pairs}}
        )

    def render(self, event: Event, book: MarketBook) -> str:
        if event.channel == "trades":
            trade: GeneratedTrade = event.raw
            # price and qty are the market's text, written as JSON numbers (trailing zeros kept)
            return (
                f'{{"channel":"trade","type":"update","data":[{{"symbol":"{event.symbol}",'
                f'"side":"{trade.taker_side}","price":{trade.price},"qty":{trade.size},"ord_type":"limit",'
                f'"trade_id":{trade.trade_id},"timestamp":"{_iso(trade.timestamp_ms)}"}}]}}'
            )
        if event.channel == "snapshot":
            return self.snapshot_frame(event.symbol, book) or ""
        return kraken_v2.book_frame(
            "update", event.symbol, event.bids, event.asks, kraken.checksum(book), _iso(_ms_now())
        )

    def snapshot_frame(self, symbol: str, book: MarketBook) -> str | None:
        return kraken_v2.book_frame(
            "snapshot",
            symbol,
            book.sorted_bids(),
            book.sorted_asks(),
            kraken.checksum(book),
            _iso(_ms_now()),
        )

    def ticker_frame(self, symbol: str, book: MarketBook, bid: tuple[str, str], ask: tuple[str, str]) -> str:
        # the market's text as JSON numbers (trailing zeros kept), as the book and trades go out
        return (
            f'{{"channel":"ticker","type":"update","data":[{{"symbol":"{symbol}","bid":{bid[0]},'
            f'"bid_qty":{bid[1]},"ask":{ask[0]},"ask_qty":{ask[1]},"timestamp":"{_iso(_ms_now())}"}}]}}'
        )

    def depth_refused(self, depth: object) -> str | None:
        return None if depth in KRAKEN_DEPTHS else "EGeneral:Invalid depth"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}000Z"


# exchange -> (server class, the exchange's spelling of ETH-USDT, levels a side)
LIVE_SERVERS: dict[str, tuple[type[LiveServer], str, int]] = {
    "binance": (LiveBinanceServer, "{base}{quote}", 20),
    "okx": (LiveOkxServer, "{base}-{quote}", 20),
    "kraken": (LiveKrakenServer, "{base}/{quote}", 10),
}


def markets_for(exchange: str, symbols: Iterable[str], seed: int) -> list[LiveMarket]:
    """One market per symbol (ours: ``ETH-USDT``), named as ``exchange`` writes it."""
    _, spelling, levels = LIVE_SERVERS[exchange]
    out = []
    for symbol in symbols:
        instrument: Instrument = INSTRUMENTS[symbol]
        base, quote = symbol.split("-")
        name = spelling.format(base=base, quote=quote)
        out.append(LiveMarket(instrument, seed, name=name, levels=levels))
    return out


def live_server(
    exchange: str, symbols: Iterable[str] = DEFAULT_SYMBOLS, *, seed: int = 1, interval: float = 0.1
) -> LiveServer:
    """A live server for ``exchange`` (not started): ``await server.start()``, then ``server.url``."""
    cls = LIVE_SERVERS[exchange][0]
    markets = markets_for(exchange, symbols, seed)
    server = cls(interleave(markets), pace=interval, wait_for_sessions=1)
    server.setup(markets)
    return server
