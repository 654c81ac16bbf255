"""Coinbase Exchange L3 (``full`` channel + REST ``book?level=3``) through ``cex.feed`` against the local
server (``devnet/exchanges/coinbase_l3.py``).

Data: constructed. The recordings in ``../shared/fixtures/cex/coinbase`` hold no ``full`` frames (only the
Pro feed's level2/ticker/matches, see its PROVENANCE.md), so the server generates an order-by-order market
in Coinbase Exchange's documented message shapes. Truth: the server market's resting orders (id, side,
price, size) and its own trade list, never what the feed computed.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from cex.exchanges.coinbase_exchange import CoinbaseExchange
from cex.feed import FeedHandler
from cex.sync import Resync
from core.retry import RetryPolicy
from devnet.exchanges.coinbase_l3 import CoinbaseL3Server, L3Market
from devnet.exchanges.server import Fault
from records.cex import BookDelta, BookSnapshot, Trade

pytestmark = pytest.mark.integration

PRODUCTS = ("BTC-USD", "ETH-USD")
MESSAGES = 3000


def truth(market: L3Market) -> dict[str, tuple[str, Decimal, Decimal]]:
    side = {"buy": "bid", "sell": "ask"}
    return {i: (side[s], Decimal(p), Decimal(q)) for i, (s, p, q) in market.orders.items()}


class Consumer:
    """What a consumer of the published records keeps: orders by id (snapshot levels are only the L2 view)."""

    def __init__(self) -> None:
        self.orders: dict[str, tuple[str, Decimal, Decimal]] = {}
        self.valid = False

    def apply(self, item: Any) -> None:
        if isinstance(item, BookSnapshot):
            self.orders, self.valid = {}, True
        elif isinstance(item, BookDelta):
            assert self.valid, "a delta published for a book known to be invalid"
            assert item.order_id is not None
            if item.size:
                self.orders[item.order_id] = (item.side, item.price, item.size)
            else:
                self.orders.pop(item.order_id, None)
        elif isinstance(item, Resync):
            self.valid = False


async def replay(
    faults: list[Fault], connections: int = 1
) -> tuple[CoinbaseL3Server, FeedHandler, list[Any]]:
    markets = {p: L3Market(p, seed=7, mid=300_000 if p == "BTC-USD" else 30_000) for p in PRODUCTS}
    server = await CoinbaseL3Server(markets, MESSAGES, faults=faults, wait_for_sessions=connections).start()
    exchange = CoinbaseExchange(ws_url=server.url, rest_url=server.rest_url)
    feed = FeedHandler(exchange, list(PRODUCTS), ["book", "trades"], connections=connections, stale_after=5,
                       retry=RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2))  # fmt: skip
    consumers = {p: Consumer() for p in PRODUCTS}
    published: list[Any] = []
    task = asyncio.ensure_future(feed.run())

    def settled() -> bool:
        return all(
            feed.published_book(p).book.valid
            and feed.published_book(p).book.sequence == markets[p].sequence
            and consumers[p].valid
            for p in PRODUCTS
        )

    try:
        async with asyncio.timeout(40):
            while not (server.done.is_set() and settled() and feed.queue.empty()):
                try:
                    item = await asyncio.wait_for(feed.queue.get(), 0.1)
                except TimeoutError:
                    if task.done():
                        task.result()
                    continue
                published.append(item)
                symbol = getattr(item, "symbol", None)
                if symbol in consumers:
                    consumers[symbol].apply(item)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
    for product in PRODUCTS:
        expected = truth(markets[product])
        assert len(expected) > 20
        assert {i: (s, p, q) for i, (s, p, q) in feed.published_book(product).book.orders.items()} == expected
        assert consumers[product].orders == expected
    return server, feed, published


async def test_l3_book_after_replay_equals_the_servers_orders_and_trades_carry_order_ids() -> None:
    _, feed, published = await replay([])
    assert [p for p in published if isinstance(p, Resync)] == []
    trades = [p for p in published if isinstance(p, Trade)]
    assert trades and {t.exchange for t in trades} == {"coinbase-l3"}
    # every trade once, with both order ids and the taker's side (the match's side is the maker's)
    assert len({(t.symbol, t.trade_id) for t in trades}) == len(trades)
    assert all(t.maker_order_id and t.taker_order_id and t.taker_side in ("buy", "sell") for t in trades)
    deltas = [p for p in published if isinstance(p, BookDelta)]
    assert deltas and all(d.order_id for d in deltas)
    assert feed.counters()["connections"][0].gaps == 0


@pytest.mark.parametrize("kind", ["drop", "reorder", "duplicate"])
async def test_a_lost_or_reordered_message_is_detected_and_the_book_recovers(kind: str) -> None:
    faults = [Fault(0, "BTC-USD", 400, kind), Fault(0, "ETH-USD", 900, kind)]
    _, feed, published = await replay(faults)
    resyncs = [p for p in published if isinstance(p, Resync)]
    if kind == "duplicate":
        assert resyncs == []  # a copy is ignored, not a gap
        assert feed.syncs[(0, "BTC-USD")].counters.ignored >= 1
    else:
        assert sorted(r.symbol for r in resyncs) == ["BTC-USD", "ETH-USD"]
        assert {r.reason for r in resyncs} == {"gap"}
        # rebuilt from a second REST snapshot each
        assert all(feed.syncs[(0, p)].counters.snapshots == 2 for p in PRODUCTS)
