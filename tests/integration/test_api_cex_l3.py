"""An L3 book (Coinbase Exchange ``full``, exchange ``coinbase-l3``) rebuilt from storage by the API.

The local Coinbase L3 server (``devnet/exchanges/coinbase_l3.py``; constructed data: a generated order-by-
order market in Coinbase Exchange's documented shapes, no ``full`` frames exist in the recordings) drives the
real feed (``cex.feed.FeedHandler``), ``run_cex_pipeline`` into the real Postgres through ``CexStore``, with
periodic snapshots and one dropped message per product (a gap: resync, REST snapshot again). Truth: the
server's own resting orders recorded after every message it made (``HistoryMarket``), by sequence; never
what the feed or the API computed. ``GET /v1/cex/books/coinbase-l3/{symbol}?at=`` at moments spread over
the run (before and after the resync) must equal the server's order set at the sequence it names: by
order (``level=3``: id, side, price, size, and time priority within a level) and as levels (``level=2``).

The websocket ``cex_book`` clients of both delivery paths (in process, and a second API that learns of rows
only through NOTIFY and starts from storage) keep the book by order id and must end with the server's
orders too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from api.stream.cex import HubCexSink
from api.stream.hub import Hub
from api.stream.replay import PostgresStore
from cex.exchanges.coinbase_exchange import CoinbaseExchange
from cex.feed import FeedHandler
from cex.pipeline import FeedBooks, run_cex_pipeline
from cex.store import CexStore
from core.database import DatabaseInfo
from core.retry import RetryPolicy
from devnet.exchanges.coinbase_l3 import CoinbaseL3Server, L3Market
from devnet.exchanges.server import Fault
from tests.integration.test_api_cex import WsClient, eventually, serving

pytestmark = pytest.mark.integration

PRODUCTS = ("BTC-USD", "ETH-USD")
MESSAGES = 2400
Orders = dict[str, tuple[str, Decimal, Decimal]]  # order_id -> (bid|ask, price, size), arrival order
SIDE = {"buy": "bid", "sell": "ask"}


class HistoryMarket(L3Market):
    """The server's market, remembering its resting orders after each message it made, by sequence."""

    def __init__(self, product: str, seed: int, mid: int) -> None:
        super().__init__(product, seed, mid)
        self.history: dict[int, Orders] = {0: {}}

    def messages(self) -> Iterator[dict[str, object]]:
        for msg in super().messages():
            self.history[self.sequence] = {
                i: (SIDE[s], Decimal(p), Decimal(q)) for i, (s, p, q) in self.orders.items()
            }
            yield msg


def by_level(orders: Orders) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    sums: dict[str, dict[Decimal, Decimal]] = {"bid": {}, "ask": {}}
    for side, price, size in orders.values():
        sums[side][price] = sums[side].get(price, Decimal(0)) + size
    return sorted(sums["bid"].items(), reverse=True), sorted(sums["ask"].items())


def by_order(orders: Orders, side: str) -> list[tuple[Decimal, Decimal, str]]:
    """One side best price first, arrival order within a level (the server's dict keeps arrival order)."""
    chosen = [(p, q, i) for i, (s, p, q) in orders.items() if s == side]
    return sorted(chosen, key=lambda o: o[0], reverse=side == "bid")


class L3Client:
    """A cex_book client following the documented rule for a book whose deltas carry order ids."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, tuple[str, Decimal, Decimal]]] = {}
        self.snapshots: dict[str, int] = {}

    def apply(self, kind: str, data: dict[str, Any]) -> None:
        symbol = data["symbol"]
        if kind == "book_snapshot":
            self.orders[symbol] = {}
            self.snapshots[symbol] = self.snapshots.get(symbol, 0) + 1
        elif kind == "book_delta":
            book = self.orders[symbol]
            assert data["order_id"], data
            book.pop(data["order_id"], None)
            if Decimal(data["size"]):
                book[data["order_id"]] = (data["side"], Decimal(data["price"]), Decimal(data["size"]))
        elif kind == "resync":
            self.orders.pop(symbol, None)


def l3_books(client: WsClient) -> L3Client:
    out = L3Client()
    for m in list(client.messages):
        if m.get("channel") == "cex_book" and "type" in m:
            out.apply(m["type"], m["data"])
    return out


def check_first_book(client: WsClient, market: HistoryMarket) -> None:
    """A late subscriber's first messages for a book (per symbol: the books' messages interleave, and a
    snapshot's orders may come live after the other books' snapshots when the subscription fell between
    a batch with the snapshot and the batch with its orders): one snapshot whose levels are the market's
    at its sequence, then that sequence's orders, each once, exactly the market's. A client that joins while
    the server holds the book as invalid (a loaded machine can put the late join before the feed's recovery
    snapshot) gets a ``resync`` first, as docs/api-websocket.md says; the first book is the one after it."""
    own = [m for m in client.messages if "type" in m and m["data"]["symbol"] == market.product]
    while own and own[0]["type"] == "resync":
        own = own[1:]
    assert own and own[0]["type"] == "book_snapshot", own[:2]
    sequence = own[0]["data"]["sequence"]
    truth = market.history[sequence]
    bids, asks = by_level(truth)
    assert [(Decimal(p), Decimal(q)) for p, q in own[0]["data"]["bids"]] == bids
    assert [(Decimal(p), Decimal(q)) for p, q in own[0]["data"]["asks"]] == asks
    orders = []
    for m in own[1:]:
        if m["type"] != "book_delta" or m["data"]["sequence"] != sequence:
            break
        orders.append((m["data"]["order_id"], (m["data"]["side"], Decimal(m["data"]["price"]),
                                               Decimal(m["data"]["size"]))))  # fmt: skip
    assert len(orders) == len(dict(orders)) == len(truth) > 20 and dict(orders) == truth


def seconds(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


async def test_l3_book_rebuilt_from_storage_equals_the_servers_orders_at_each_moment(
    clean_db: DatabaseInfo,
) -> None:
    markets = {p: HistoryMarket(p, seed=11, mid=300_000 if p == "BTC-USD" else 30_000) for p in PRODUCTS}
    faults = [Fault(0, "BTC-USD", 900, "drop"), Fault(0, "ETH-USD", 700, "drop")]
    served: dict[str, L3Market] = dict(markets)
    server = await CoinbaseL3Server(served, MESSAGES, faults=faults, pace=0.001).start()
    exchange = CoinbaseExchange(ws_url=server.url, rest_url=server.rest_url)
    feed = FeedHandler(exchange, list(PRODUCTS), ["book", "trades"], stale_after=5, snapshot_every=0.5,
                       retry=RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2))  # fmt: skip
    store = await CexStore.connect(clean_db.dsn)
    pool = await asyncpg.create_pool(clean_db.dsn, min_size=1, max_size=2)
    hub = Hub(PostgresStore(pool), confirmations=3)
    task = None
    try:
        async with (
            serving(clean_db.dsn, hub=hub, books=FeedBooks([feed])) as base,
            serving(clean_db.dsn) as notified,
            contextlib.AsyncExitStack() as stack,
        ):
            in_process = await WsClient.open(base, {"channel": "cex_book", "exchange": "coinbase-l3"})
            through_notify = await WsClient.open(notified, {"channel": "cex_book", "exchange": "coinbase-l3"})
            task = asyncio.create_task(run_cex_pipeline(feed, [store, HubCexSink(hub)]))

            def settled() -> bool:
                for p in PRODUCTS:
                    book = feed.published_book(p).book
                    if not (book.valid and book.sequence == markets[p].sequence):
                        return False
                return server.done.is_set() and feed.queue.empty()

            # mid-stream, past the resyncs: a client of the in-process API (starts from the hub's copy) and
            # an API started now (its listener starts the books from storage), both with the orders
            await eventually(
                lambda: server.position >= MESSAGES * 3 // 4 or task.done(), "the market under way"
            )
            pace, server.pace = server.pace, 0.3  # the market slows while the replica starts
            late = await WsClient.open(base, {"channel": "cex_book", "exchange": "coinbase-l3"})
            replica = await stack.enter_async_context(serving(clean_db.dsn))
            from_storage = await WsClient.open(replica, {"channel": "cex_book", "exchange": "coinbase-l3"})
            server.pace = pace
            await eventually(lambda: settled() or task.done(), "the feed's books reach the market's end", 90)
            assert not task.done(), task.exception()
            clients = (in_process, through_notify, late, from_storage)
            for client in clients:

                def caught_up(c: WsClient = client) -> bool:
                    books = l3_books(c).orders
                    return all(books.get(p) == markets[p].history[markets[p].sequence] for p in PRODUCTS)

                await eventually(caught_up, "the websocket L3 books equal the server's orders")
            async with httpx.AsyncClient(base_url=base, timeout=20) as http:
                for product in PRODUCTS:
                    await check_moments(http, clean_db.dsn, markets[product])
                await check_live_and_errors(http, markets["BTC-USD"])
            for client in (late, from_storage):  # the hub's copy or storage: the levels, then the orders
                for product in PRODUCTS:
                    check_first_book(client, markets[product])
            for client in clients:
                await client.close()
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()
        await store.close()
        await pool.close()


async def check_moments(http: httpx.AsyncClient, dsn: str, market: HistoryMarket) -> None:
    product = market.product
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, kind, sequence, atom_timestamp FROM cex_book_events WHERE exchange = 'coinbase-l3'"
            " AND symbol = $1 ORDER BY id",
            product,
        )
    finally:
        await conn.close()
    kinds = [r["kind"] for r in rows]
    assert kinds.count("resync") == 1 and kinds.count("snapshot") >= 3, product  # first, the gap, periodic
    resync = kinds.index("resync")
    recovery = kinds.index("snapshot", resync)
    deltas = [r for r in rows if r["kind"] == "delta"]
    before = [r for r in deltas if r["id"] < rows[resync]["id"]]
    after = [r for r in deltas if r["id"] > rows[recovery]["id"]]
    assert len(before) > 100 and len(after) > 100
    moments = [before[len(before) * k // 6]["atom_timestamp"] for k in range(1, 6)]
    moments += [after[len(after) * k // 6]["atom_timestamp"] for k in range(1, 6)]
    moments += [rows[recovery]["atom_timestamp"], deltas[-1]["atom_timestamp"]]
    # updates buffered while the REST snapshot was fetched: received before it, stored after it
    buffered = [r for r in after if r["atom_timestamp"] < rows[recovery]["atom_timestamp"]]
    moments += [r["atom_timestamp"] for r in buffered[-1:]]
    for moment in moments:
        answer = (await rest(http, product, at=seconds(moment), level=3))["data"]
        assert answer["valid"] and answer["timestamp"] <= moment
        # documented: the stored rows up to the newest one received by the moment
        received = [r for r in rows if r["atom_timestamp"] <= moment]
        cut = max(received, key=lambda r: (r["atom_timestamp"], r["id"]))
        assert answer["sequence"] == [r for r in rows if r["id"] <= cut["id"]][-1]["sequence"]
        truth = market.history[answer["sequence"]]
        assert len(truth) > 20
        for side, key in (("bid", "bids"), ("ask", "asks")):
            got = [(Decimal(p), Decimal(q), i) for p, q, i in answer[key]]
            assert got == by_order(truth, side), (product, moment, side)
        levels = (await rest(http, product, at=seconds(moment)))["data"]
        assert levels["sequence"] == answer["sequence"]
        got_levels = ([(Decimal(p), Decimal(q)) for p, q in levels["bids"]],
                      [(Decimal(p), Decimal(q)) for p, q in levels["asks"]])  # fmt: skip
        assert got_levels == by_level(truth)
        top = (await rest(http, product, at=seconds(moment), level=3, depth=2))["data"]
        best = {Decimal(p) for p, _, _ in top["bids"]}
        assert best == {p for p, _ in by_level(truth)[0][:2]}
        assert [row[2] for row in top["bids"]] == [i for p, _, i in by_order(truth, "bid") if p in best]


async def rest(http: httpx.AsyncClient, product: str, **params: Any) -> Any:
    response = await http.get(f"/v1/cex/books/coinbase-l3/{product}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def check_live_and_errors(http: httpx.AsyncClient, market: HistoryMarket) -> None:
    truth = market.history[market.sequence]
    live = (await rest(http, "BTC-USD", level=3))["data"]  # the feed's own book (FeedBooks)
    assert live["valid"] and live["sequence"] == market.sequence
    for side, key in (("bid", "bids"), ("ask", "asks")):
        assert [(Decimal(p), Decimal(q), i) for p, q, i in live[key]] == by_order(truth, side)
    response = await http.get("/v1/cex/books/coinbase-l3/BTC-USD", params={"level": 4})
    assert response.status_code == 400 and "level" in response.text
