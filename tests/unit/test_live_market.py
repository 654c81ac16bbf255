"""The generated live markets of ``devnet/exchanges/live.py``, as a client of each exchange sees them.

A consumer written here from each exchange's documentation (not ``cex/``) reads the frames the servers
render: the snapshot (Binance: the REST body; OKX and Kraken: the websocket snapshot), then every update.
At every step its book must equal the market's own book; sequence ids must chain (Binance ``U`` = last
``u`` + 1, OKX ``prevSeqId`` = last ``seqId``); every checksum must match the book the consumer holds,
computed by the exchange's rule; every trade must consume the best levels by exactly its size.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import zlib
from collections.abc import Iterator
from decimal import Decimal

import pytest

from devnet.exchanges.live import LiveKrakenServer, live_server
from devnet.exchanges.market import INSTRUMENTS, GeneratedTrade, LiveMarket
from devnet.exchanges.server import Event, MarketBook

pytestmark = pytest.mark.unit

STEPS = 1500


def play(server: object, steps: int) -> Iterator[tuple[Event, str | None]]:
    """The server's market, step by step, as its player runs it: (event, frame broadcast)."""
    for event in itertools.islice(server.events, steps):  # type: ignore[attr-defined]
        book = server.books.setdefault(event.symbol, MarketBook(server.depth))  # type: ignore[attr-defined]
        yield event, server.apply(event, book)  # type: ignore[attr-defined]


class Consumer:
    """A client's book: price text -> size text per side, levels as the frames give them."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def load(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        self.bids, self.asks = {}, {}
        self.apply(bids, asks)

    def apply(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        for side, rows in ((self.bids, bids), (self.asks, asks)):
            for price, size in rows:
                if Decimal(size) == 0:
                    assert Decimal(price) in side, f"removal of a level the client does not hold: {price}"
                    del side[Decimal(price)]
                else:
                    side[Decimal(price)] = (price, size)

    def sorted_bids(self) -> list[tuple[str, str]]:
        return [self.bids[p] for p in sorted(self.bids, reverse=True)]

    def sorted_asks(self) -> list[tuple[str, str]]:
        return [self.asks[p] for p in sorted(self.asks)]

    def size_at(self, price: str) -> Decimal:
        level = self.bids.get(Decimal(price)) or self.asks.get(Decimal(price))
        return Decimal(level[1]) if level else Decimal(0)


def assert_same_book(consumer: Consumer, market: LiveMarket) -> None:
    assert consumer.sorted_bids() == market.bids()
    assert consumer.sorted_asks() == market.asks()
    best_bid, best_ask = Decimal(market.bids()[0][0]), Decimal(market.asks()[0][0])
    assert best_bid < best_ask, "crossed book"


class TradeCheck:
    """Trades before a book event must be taken from the best levels, by exactly their sizes."""

    def __init__(self) -> None:
        self.pending: list[GeneratedTrade] = []
        self.trades = 0

    def trade(self, trade: GeneratedTrade, consumer: Consumer) -> None:
        if not self.pending:
            best = consumer.sorted_asks() if trade.taker_side == "buy" else consumer.sorted_bids()
            assert trade.price == best[0][0], "a trade starts at the best level"
        self.pending.append(trade)
        self.trades += 1

    def before(self, consumer: Consumer) -> dict[str, Decimal]:
        return {t.price: consumer.size_at(t.price) for t in self.pending}

    def after(self, sizes: dict[str, Decimal], consumer: Consumer) -> None:
        for trade in self.pending:
            sizes[trade.price] -= Decimal(trade.size)
        for price, left in sizes.items():
            assert left >= 0 and consumer.size_at(price) == left
        self.pending = []


def markets(server: object) -> dict[str, LiveMarket]:
    return {m.name: m for m in server.markets}  # type: ignore[attr-defined]


def test_binance_rest_snapshot_and_depth_updates_give_the_markets_book() -> None:
    server = live_server("binance", seed=7)
    own = markets(server)
    consumers: dict[str, Consumer] = {}
    last: dict[str, int] = {}
    check = TradeCheck()
    for event, frame in play(server, STEPS):
        symbol = event.symbol
        if event.channel == "snapshot":
            assert frame is None  # Binance snapshots over REST only
            status, body = asyncio.run(server.rest("/api/v3/depth", {"symbol": [symbol]}))
            snap = json.loads(body)
            assert status == 200
            consumers[symbol] = Consumer()
            consumers[symbol].load([tuple(r) for r in snap["bids"]], [tuple(r) for r in snap["asks"]])
            last[symbol] = snap["lastUpdateId"]
        else:
            assert frame is not None
            msg = json.loads(frame)
            data = msg["data"]
            assert data["s"] == symbol
            if event.channel == "trades":
                assert msg["stream"] == f"{symbol.lower()}@trade" and data["e"] == "trade"
                side = "sell" if data["m"] else "buy"  # m: the buyer was the maker
                check.trade(GeneratedTrade(data["t"], data["p"], data["q"], side, 0), consumers[symbol])
                continue
            assert msg["stream"] == f"{symbol.lower()}@depth@100ms" and data["e"] == "depthUpdate"
            assert data["U"] == last[symbol] + 1 <= data["u"], "update ids must chain"
            last[symbol] = data["u"]
            sizes = check.before(consumers[symbol])
            consumers[symbol].apply([tuple(r) for r in data["b"]], [tuple(r) for r in data["a"]])
            check.after(sizes, consumers[symbol])
        assert_same_book(consumers[symbol], own[symbol])
    assert set(consumers) == {"ETHUSDT", "BTCUSDT"}
    assert check.trades > 100


def okx_checksum(consumer: Consumer) -> int:
    """OKX's documented rule: top 25 of each side interleaved bid:size:ask:size, the longer side's rest
    appended; CRC32 as a signed 32-bit integer."""
    bids, asks = consumer.sorted_bids()[:25], consumer.sorted_asks()[:25]
    parts = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts += list(bids[i])
        if i < len(asks):
            parts += list(asks[i])
    crc = zlib.crc32(":".join(parts).encode())
    return crc - 2**32 if crc > 2**31 - 1 else crc


def test_okx_snapshot_and_updates_chain_by_seq_id_with_valid_checksums() -> None:
    server = live_server("okx", seed=7)
    own = markets(server)
    consumers: dict[str, Consumer] = {}
    seq: dict[str, int] = {}
    check = TradeCheck()
    checksums = 0
    for event, frame in play(server, STEPS):
        symbol = event.symbol
        assert frame is not None
        msg = json.loads(frame)
        if event.channel == "trades":
            (item,) = msg["data"]
            assert msg["arg"] == {"channel": "trades", "instId": symbol}
            check.trade(
                GeneratedTrade(int(item["tradeId"]), item["px"], item["sz"], item["side"], 0),
                consumers[symbol],
            )
            continue
        (data,) = msg["data"]
        bids = [(r[0], r[1]) for r in data["bids"]]
        asks = [(r[0], r[1]) for r in data["asks"]]
        if msg["action"] == "snapshot":
            consumers[symbol] = Consumer()
            consumers[symbol].load(bids, asks)
            assert data["prevSeqId"] == -1
        else:
            assert data["prevSeqId"] == seq[symbol] < data["seqId"], "seqId must chain"
            sizes = check.before(consumers[symbol])
            consumers[symbol].apply(bids, asks)
            check.after(sizes, consumers[symbol])
        seq[symbol] = data["seqId"]
        assert data["checksum"] != 0 and data["checksum"] == okx_checksum(consumers[symbol])
        checksums += 1
        assert_same_book(consumers[symbol], own[symbol])
    assert checksums > 500 and check.trades > 100
    # a client subscribing now gets the book as it stands, with its checksum
    snap = json.loads(server.snapshot_frame("ETH-USDT", server.books["ETH-USDT"]) or "")
    late = Consumer()
    late.load(
        [(r[0], r[1]) for r in snap["data"][0]["bids"]], [(r[0], r[1]) for r in snap["data"][0]["asks"]]
    )
    assert_same_book(late, own["ETH-USDT"])
    assert snap["data"][0]["checksum"] == okx_checksum(late)


def kraken_checksum(consumer: Consumer, price_decimals: int, qty_decimals: int) -> int:
    """Kraken v2's documented rule: top 10 asks ascending then top 10 bids descending, each price and
    quantity formatted to the pair's precision, '.' removed, leading zeros stripped; CRC32 unsigned."""

    def digits(value: str, decimals: int) -> str:
        return f"{Decimal(value):.{decimals}f}".replace(".", "").lstrip("0")

    top = consumer.sorted_asks()[:10] + consumer.sorted_bids()[:10]
    return zlib.crc32("".join(digits(p, price_decimals) + digits(q, qty_decimals) for p, q in top).encode())


def test_kraken_v2_book_checksums_verify_with_the_instrument_precisions() -> None:
    server = live_server("kraken", seed=7)
    assert isinstance(server, LiveKrakenServer)
    own = markets(server)
    instrument = json.loads(server.instrument_frame())
    precision = {p["symbol"]: (p["price_precision"], p["qty_precision"]) for p in instrument["data"]["pairs"]}
    assert precision == {"ETH/USDT": (2, 4), "BTC/USDT": (1, 5)}
    consumers: dict[str, Consumer] = {}
    check = TradeCheck()
    for event, frame in play(server, STEPS):
        symbol = event.symbol
        assert frame is not None
        msg = json.loads(frame, parse_float=Decimal)  # numbers as their text, never floats
        (data,) = msg["data"]
        assert data["symbol"] == symbol
        if msg["channel"] == "trade":
            check.trade(
                GeneratedTrade(data["trade_id"], str(data["price"]), str(data["qty"]), data["side"], 0),
                consumers[symbol],
            )
            continue
        bids = [(str(lv["price"]), str(lv["qty"])) for lv in data["bids"]]
        asks = [(str(lv["price"]), str(lv["qty"])) for lv in data["asks"]]
        if msg["type"] == "snapshot":
            consumers[symbol] = Consumer()
            consumers[symbol].load(bids, asks)
        else:
            sizes = check.before(consumers[symbol])
            consumers[symbol].apply(bids, asks)
            check.after(sizes, consumers[symbol])
        book = consumers[symbol]
        assert len(book.bids) <= 10 and len(book.asks) <= 10  # any subscribed depth holds the whole book
        assert data["checksum"] == kraken_checksum(book, *precision[symbol])
        assert_same_book(book, own[symbol])
    assert check.trades > 100


def test_a_seed_gives_the_same_market_and_another_seed_another() -> None:
    def steps(seed: int) -> list[tuple[object, ...]]:
        market = LiveMarket(INSTRUMENTS["ETH-USDT"], seed, clock=lambda: 0.0)
        out: list[tuple[object, ...]] = []
        for _ in range(300):
            for e in market.step():
                out.append((e.channel, tuple(e.bids), tuple(e.asks), e.raw))
        return out

    assert steps(5) == steps(5)
    assert steps(5) != steps(6)
    channels = {c for c, *_ in steps(5)}
    assert channels == {"snapshot", "book", "trades"}
