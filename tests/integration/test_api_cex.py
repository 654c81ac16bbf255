"""Exchange data through the API: the real feed (``cex.feed.FeedHandler``) against the local OKX server
replaying the recorded frames, ``cex.pipeline.run_cex_pipeline`` into the real Postgres, and the API in its
own uvicorn server; REST and websocket clients compared with the recording and the server's market.

Recorded (okx/OKX.ws.1.0, 2022-05-13): every level, trade and ticker. Constructed: seqId/prevSeqId, snapshots
on (re)subscribe, and one dropped BTC-USDT book frame (the feed detects the gap and resyncs). Truth: the
recorded trades parsed here with ``json``, the server's own market book (plain dicts) at the end, and, for
the book at a past moment, the recorded book frames replayed into a fresh market book (an uninterrupted
replay) up to the sequence the answer names; never the API's own SQL.

Two ways in: in process (``HubCexSink`` in the pipeline's sinks, ``FeedBooks`` for live books) and through
Postgres ``NOTIFY`` (the API has no hub of its own; a second replica starts mid-stream and must rebuild the
book it never saw from storage).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from api.app import create_app
from api.cursor import Cursor
from api.stream.cex import HubCexSink
from api.stream.hub import Hub
from api.stream.replay import PostgresStore
from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.pipeline import CexSink, FeedBooks, run_cex_pipeline
from cex.store import CexStore
from core.database import DatabaseInfo
from core.retry import RetryPolicy
from core.settings import build_settings
from devnet.exchanges import okx as okx_server
from devnet.exchanges.server import Fault, MarketBook, ReplayServer
from tests.conftest import free_port

pytestmark = pytest.mark.integration

SYMBOLS = {"BTC-USDT": "BTC-USDT", "UNI-USD-PERP": "UNI-USD-SWAP", "BTC-USD-220527": "BTC-USD-220527"}
OURS = {native: ours for ours, native in SYMBOLS.items()}
FAULTS = [Fault(0, "BTC-USDT", 40, "drop")]
Levels = list[tuple[Decimal, Decimal]]


# -- truth from the recording ------------------------------------------------------------------------


def recorded_trades() -> dict[tuple[str, str], dict[str, Any]]:
    """(symbol, trade id) -> the trade as recorded (OKX's own field names mapped by hand)."""
    out = {}
    for event in okx_server.events():
        if event.channel != "trades":
            continue
        for d in json.loads(event.raw)["data"]:
            symbol = OURS[d["instId"]]
            out[(symbol, d["tradeId"])] = {
                "exchange": "okx",
                "symbol": symbol,
                "price": d["px"],
                "size": d["sz"],
                "taker_side": d["side"],
                "trade_id": d["tradeId"],
                "event_timestamp": int(d["ts"]),
            }
    return out


def replayed_book(native: str, frames: int) -> tuple[Levels, Levels]:
    """The market's book after its first ``frames`` book frames of ``native`` (OKX seqId == frames)."""
    book = MarketBook()
    seen = 0
    for event in okx_server.events():
        if event.symbol != native or event.channel not in ("book", "snapshot"):
            continue
        if seen == frames:
            break
        if event.channel == "snapshot":
            book.load(event.bids, event.asks)
        else:
            book.apply(event.bids, event.asks)
        seen += 1
    assert seen == frames, f"the recording has fewer than {frames} book frames of {native}"
    return book.as_decimals()


def levels(rows: list[list[str]]) -> Levels:
    return [(Decimal(p), Decimal(s)) for p, s in rows]


# -- the API and its clients -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(dsn: str, **kwargs: Any) -> AsyncIterator[str]:
    """The API in its own uvicorn server; yields its base URL (http://host:port)."""
    settings = build_settings(database_url=dsn, rpc_http="http://127.0.0.1:9", ws_heartbeat_seconds=1.0)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, pool=pool, **kwargs),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert not task.done() and time.monotonic() < deadline, "the API server did not start"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        await pool.close()


@dataclass
class WsClient:
    """A websocket subscriber that keeps every message it receives."""

    ws: ClientConnection
    messages: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, base: str, subscribe: dict[str, Any]) -> WsClient:
        ws = await connect(base.replace("http://", "ws://") + "/ws", max_size=None)
        client = cls(ws)
        await ws.send(orjson.dumps({"op": "subscribe", **subscribe}).decode())
        while True:  # subscribed, (book snapshots,) live
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert msg.get("event") != "error", msg
            if msg.get("event") == "live":
                break
            client.messages.append(msg)
        client.task = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                msg = orjson.loads(frame)
                if msg.get("event") != "heartbeat":
                    self.messages.append(msg)

    def data(self, kind: str) -> list[dict[str, Any]]:
        return [m["data"] for m in self.messages if m.get("type") == kind]

    def books(self) -> dict[str, ConsumerBook]:
        out: dict[str, ConsumerBook] = {}
        for m in self.messages:
            if m.get("channel") == "cex_book" and "type" in m:
                out.setdefault(m["data"]["symbol"], ConsumerBook()).apply(m["type"], m["data"])
        return out

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.ws.close()


@dataclass
class ConsumerBook:
    """What a client following the documented cex_book rule holds."""

    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    valid: bool = False
    resyncs: int = 0
    snapshots: int = 0

    def apply(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "book_snapshot":
            assert data["valid"] is True
            self.bids, self.asks = dict(levels(data["bids"])), dict(levels(data["asks"]))
            self.valid, self.snapshots = True, self.snapshots + 1
        elif kind == "book_delta":
            assert self.valid, "a delta sent for a book the client was told is invalid"
            side = self.bids if data["side"] == "bid" else self.asks
            if Decimal(data["size"]):
                side[Decimal(data["price"])] = Decimal(data["size"])
            else:
                side.pop(Decimal(data["price"]), None)
        elif kind == "resync":
            assert data["valid"] is False
            self.bids, self.asks, self.valid, self.resyncs = {}, {}, False, self.resyncs + 1

    def levels(self) -> tuple[Levels, Levels]:
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items())


async def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


# -- running the feed --------------------------------------------------------------------------------


def okx_feed(server: ReplayServer, snapshot_every: float | None = 0.3) -> FeedHandler:
    exchange = Okx(ws_url=server.url)
    retry = RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2)
    return FeedHandler(exchange, list(SYMBOLS), ["book", "trades", "ticker"], stale_after=5, retry=retry,
                       snapshot_every=snapshot_every)  # fmt: skip


def settled(feed: FeedHandler, server: ReplayServer) -> bool:
    if not server.done.is_set() or not feed.queue.empty():
        return False
    for ours, native in SYMBOLS.items():
        book = feed.published_book(ours).book
        if not book.valid or (book.bid_levels(), book.ask_levels()) != server.books[native].as_decimals():
            return False
    return True


async def run_to_the_end(
    feed: FeedHandler,
    server: ReplayServer,
    sinks: list[CexSink],
    during: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The pipeline until the market has played everything and the feed's books equal it; cancelling it
    writes what it drained to every sink."""
    task = asyncio.create_task(run_cex_pipeline(feed, sinks))
    try:
        if during is not None:
            await during()
        await eventually(lambda: settled(feed, server) or task.done(), "the feed's books equal the market")
        assert not task.done(), task.exception()
        await asyncio.sleep(0.3)  # one more flush interval: the last batch reaches the sinks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def rest(http: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def all_pages(http: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    rows, cursor = [], None
    while True:
        page = await rest(http, path, **params, **({"cursor": cursor} if cursor else {}))
        rows.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def check_trades(got: list[dict[str, Any]], truth: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Every recorded trade exactly once, every field as recorded."""
    assert len(got) == len(truth) == 74
    for row in got:
        want = truth[(row["symbol"], row["trade_id"])]
        assert {k: row[k] for k in want} == want
        assert row["maker_order_id"] is None and row["taker_order_id"] is None
    assert {(r["symbol"], r["trade_id"]) for r in got} == set(truth)


def check_merged(got: list[dict[str, Any]], truth: dict[tuple[str, str], dict[str, Any]]) -> None:
    expected = sorted(
        (t["symbol"], t["trade_id"], t["price"], t["size"], t["taker_side"], t["event_timestamp"])
        for t in truth.values()
    )
    assert (
        sorted((m["symbol"], m["trade_id"], m["price"], m["size"], m["side"], m["time"]) for m in got)
        == expected
    )
    assert {(m["venue"], m["pool"], m["block_number"]) for m in got} == {("okx", None, None)}


# -- the tests ---------------------------------------------------------------------------------------


async def test_in_process_rest_and_websocket_equal_the_recording_and_the_market(
    clean_db: DatabaseInfo,
) -> None:
    truth = recorded_trades()
    server = await okx_server.OkxServer(okx_server.events(), FAULTS).start()
    feed = okx_feed(server)
    store = await CexStore.connect(clean_db.dsn)
    pool = await asyncpg.create_pool(clean_db.dsn, min_size=1, max_size=2)
    hub = Hub(PostgresStore(pool), confirmations=3)
    try:
        async with serving(clean_db.dsn, hub=hub, books=FeedBooks([feed])) as base:
            trades_ws = await WsClient.open(base, {"channel": "cex_trades", "exchange": "okx"})
            book_ws = await WsClient.open(
                base, {"channel": "cex_book", "exchange": "okx", "symbol": "btc-usdt"}
            )
            seed_ws = await WsClient.open(base, {"exchange": "okx", "feed": "lob", "symbol": "BTC-USDT"})
            merged_ws = await WsClient.open(base, {"channel": "trades", "venue": "okx"})
            ticker_ws = await WsClient.open(
                base, {"feed": "ticker", "exchange": "okx", "symbol": "UNI-USD-PERP"}
            )
            await run_to_the_end(feed, server, [store, HubCexSink(hub)])
            await eventually(lambda: len(trades_ws.data("trade")) >= 74, "every trade on cex_trades")
            await eventually(lambda: len(merged_ws.data("merged_trade")) >= 74, "every trade on trades")
            market = {ours: server.books[native].as_decimals() for ours, native in SYMBOLS.items()}

            check_trades(trades_ws.data("trade"), truth)
            check_merged(merged_ws.data("merged_trade"), truth)
            books = book_ws.books()
            assert set(books) == {"BTC-USDT"}  # the symbol filter, given in lower case
            assert books["BTC-USDT"].resyncs >= 1 and books["BTC-USDT"].snapshots >= 2  # through the fault
            assert books["BTC-USDT"].valid and books["BTC-USDT"].levels() == market["BTC-USDT"]
            assert [m["data"] for m in seed_ws.messages if "type" in m] == [
                m["data"] for m in book_ws.messages if "type" in m
            ]  # the seed's form is the cex_book channel
            assert all(m["channel"] == "cex_book" for m in seed_ws.messages if "channel" in m)
            tickers = ticker_ws.data("ticker")
            assert len(tickers) == 1 and tickers[0]["symbol"] == "UNI-USD-PERP"

            # a client arriving now starts from the hub's books: one snapshot per book, equal to the market
            late = await WsClient.open(base, {"channel": "cex_book", "exchange": "okx"})
            assert {s: b.levels() for s, b in late.books().items()} == market
            assert [m["type"] for m in late.messages if "type" in m] == ["book_snapshot"] * 3

            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                check_trades(await all_pages(http, "/v1/cex/trades", exchange="okx", limit=20), truth)
                newest = await rest(http, "/v1/cex/trades", order="desc", limit=1, symbol="btc-usd-220527")
                assert (
                    newest["data"][0]["trade_id"]
                    == max(
                        (t for t in truth.values() if t["symbol"] == "BTC-USD-220527"),
                        key=lambda t: int(t["trade_id"]),
                    )["trade_id"]
                )
                for ours in SYMBOLS:
                    live = (await rest(http, f"/v1/cex/books/okx/{ours}"))["data"]
                    stored = (await rest(http, f"/v1/cex/books/okx/{ours}", at=f"{time.time() + 1:.6f}"))[
                        "data"
                    ]
                    for what, answer in (("live", live), ("stored", stored)):
                        assert answer["valid"], (what, ours, answer["sequence"])
                        assert (levels(answer["bids"]), levels(answer["asks"])) == market[ours], (what, ours)
                        assert answer["exchange"] == "okx" and answer["symbol"] == ours
                    assert live["sequence"] == stored["sequence"] == server.books[SYMBOLS[ours]].sequence
                top = (await rest(http, "/v1/cex/books/okx/BTC-USDT", depth=3))["data"]
                assert levels(top["bids"]) == market["BTC-USDT"][0][:3]
                assert levels(top["asks"]) == market["BTC-USDT"][1][:3]
                await check_past_book(http, book_ws)
                await check_candles(http, truth)
                tickers_rest = await all_pages(http, "/v1/cex/tickers", exchange="okx", symbol="UNI-USD-PERP")
                assert [t["symbol"] for t in tickers_rest] == ["UNI-USD-PERP"]
            for client in (trades_ws, book_ws, seed_ws, merged_ws, ticker_ws, late):
                await client.close()
    finally:
        await server.stop()
        await store.close()
        await pool.close()


async def check_past_book(http: httpx.AsyncClient, book_ws: WsClient) -> None:
    """The stored book at a past moment equals the uninterrupted replay's book at that point."""
    messages = [m for m in book_ws.messages if m.get("channel") == "cex_book" and "type" in m]
    last_resync = max(i for i, m in enumerate(messages) if m["type"] == "resync")
    deltas = [m["data"] for m in messages[last_resync:] if m["type"] == "book_delta"]
    moment = deltas[len(deltas) // 2]["atom_timestamp"]
    at = f"{moment // 1_000_000}.{moment % 1_000_000:06d}"
    past = (await rest(http, "/v1/cex/books/okx/BTC-USDT", at=at))["data"]
    assert past["valid"] and past["timestamp"] <= moment
    sequence = past["sequence"]
    assert sequence == max(d["sequence"] for d in deltas if d["atom_timestamp"] <= moment)
    assert (levels(past["bids"]), levels(past["asks"])) == replayed_book("BTC-USDT", sequence)
    response = await http.get("/v1/cex/books/okx/BTC-USDT", params={"at": "2001-09-09T01:46:40Z"})
    assert response.status_code == 404 and "no stored book" in response.json()["detail"]


async def check_candles(http: httpx.AsyncClient, truth: dict[tuple[str, str], dict[str, Any]]) -> None:
    """1-minute and 5-minute candles equal the recorded trades bucketed here."""
    trades = sorted(
        (t for t in truth.values() if t["symbol"] == "BTC-USDT"), key=lambda t: int(t["trade_id"])
    )
    for interval, width in (("1m", 60_000), ("5m", 300_000)):
        buckets: dict[int, list[dict[str, Any]]] = {}
        for t in trades:
            buckets.setdefault(t["event_timestamp"] // width * width, []).append(t)
        got = await all_pages(
            http, "/v1/cex/candles", exchange="okx", symbol="BTC-USDT", interval=interval, limit=1
        )
        assert [c["start"] for c in got] == sorted(buckets)
        for candle in got:
            ts = buckets[candle["start"]]
            prices = [Decimal(t["price"]) for t in ts]
            assert Decimal(candle["open"]) == prices[0] and Decimal(candle["close"]) == prices[-1]
            assert (Decimal(candle["high"]), Decimal(candle["low"])) == (max(prices), min(prices))
            assert Decimal(candle["volume"]) == sum(Decimal(t["size"]) for t in ts)
            assert candle["trades"] == len(ts)


async def test_notify_path_and_a_replica_started_mid_stream(clean_db: DatabaseInfo) -> None:
    """``dexnode cex`` beside ``dexnode serve``: the API learns of rows only through NOTIFY."""
    truth = recorded_trades()
    server = await okx_server.OkxServer(okx_server.events(), FAULTS, pace=0.002).start()
    feed = okx_feed(server, snapshot_every=None)  # no periodic snapshots: the replica must use storage
    store = await CexStore.connect(clean_db.dsn)
    replica: dict[str, WsClient] = {}
    try:
        async with serving(clean_db.dsn) as base, contextlib.AsyncExitStack() as stack:
            trades_ws = await WsClient.open(base, {"channel": "cex_trades", "exchange": "okx"})
            book_ws = await WsClient.open(base, {"channel": "cex_book", "symbol": "BTC-USDT"})

            async def second_replica() -> None:
                # started when the market is well under way and the dropped frame's resync is over (its
                # snapshot reached the first client): the replica's hub never saw a BTC-USDT snapshot
                def past_the_resync() -> bool:
                    book = book_ws.books().get("BTC-USDT")
                    return server.position >= 250 and book is not None and book.snapshots >= 2

                await eventually(past_the_resync, "the market under way, past the resync")
                pace, server.pace = server.pace, 0.5  # the market slows while the replica starts
                other = await stack.enter_async_context(serving(clean_db.dsn))
                replica["book"] = await WsClient.open(other, {"channel": "cex_book", "symbol": "BTC-USDT"})
                server.pace = pace

            await run_to_the_end(feed, server, [store], during=second_replica)
            market = server.books["BTC-USDT"].as_decimals()
            await eventually(lambda: len(trades_ws.data("trade")) >= 74, "every trade through NOTIFY")
            for client in (book_ws, replica["book"]):

                def level(c: WsClient = client) -> bool:
                    return "BTC-USDT" in c.books() and c.books()["BTC-USDT"].levels() == market

                await eventually(level, "the book through NOTIFY equals the market")
            check_trades(trades_ws.data("trade"), truth)
            book = book_ws.books()["BTC-USDT"]
            assert book.valid and book.resyncs >= 1 and book.snapshots >= 2
            assert {r["reason"] for r in book_ws.data("resync")} == {"gap"}  # stored with the resync row
            # its first book message: the snapshot rebuilt from storage (the feed sent none after it started)
            first = next(m for m in replica["book"].messages if "type" in m)
            assert first["type"] == "book_snapshot" and replica["book"].books()["BTC-USDT"].snapshots == 1
            for client in (trades_ws, book_ws, replica["book"]):
                await client.close()
    finally:
        await server.stop()
        await store.close()


async def test_bad_input_is_a_clear_4xx(clean_db: DatabaseInfo) -> None:
    async with serving(clean_db.dsn) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        bad = {
            "/v1/cex/trades?exchange=OK%20X": "exchange",
            "/v1/cex/trades?from_time=tomorrow": "from_time",
            "/v1/cex/trades?from_time=200&to_time=100": "the range is empty",
            "/v1/cex/trades?limit=0": "limit",
            "/v1/cex/trades?cursor=garbage": "bad cursor",
            "/v1/cex/trades?exchnage=okx": "unknown query parameter",
            "/v1/cex/tickers?symbol=BTC%20USDT": "symbol",
            "/v1/cex/candles?exchange=okx": "symbol",
            "/v1/cex/candles?exchange=okx&symbol=BTC-USDT&interval=7m": "interval",
            "/v1/cex/books/okx/BTC-USDT?depth=0": "depth",
            "/v1/cex/books/okx/BTC-USDT?at=99999999999999999": "out of range",
            "/v1/cex/funding?to_time=2026-13-01": "to_time",
        }
        for path, words in bad.items():
            response = await http.get(path)
            assert response.status_code == 400, (path, response.text)
            assert words in response.json()["detail"], (path, response.text)
        other = await http.get("/v1/cex/trades", params={"exchange": "okx", "limit": 1})
        cursor_of_other_query = Cursor(1, "", (5,), "0000").encode()
        assert other.json() == {"data": [], "next_cursor": None}
        response = await http.get("/v1/cex/trades", params={"cursor": cursor_of_other_query})
        assert response.status_code == 400 and "another query" in response.json()["detail"]
        response = await http.get("/v1/cex/books/okx/BTC-USDT")
        assert response.status_code == 404
