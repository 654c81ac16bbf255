"""Funding and open interest on the websocket (``cex_funding``, ``cex_open_interest`` and the seed form
``{"exchange": .., "feed": "funding" | "open_interest"}``), and the ``resync`` message, on both delivery paths
at once: one API fed in process (``HubCexSink`` after the Postgres sink) and one that learns of rows only
through Postgres ``NOTIFY dexnode_cex`` (no hub of its own), both over the same pipeline run.

Data: the local OKX and Bybit servers replay their recordings (OKX 2022-05-13 v5; Bybit 2021-04-17 v2 put
into v5 envelopes); funding and open-interest frames are not in the recordings, so the servers send
constructed ones (below, in the exchanges' documented v5 shapes), interleaved with the recorded frames. One
OKX book frame is dropped (the feed resyncs with reason ``gap``). Truth: the frames' own text (every field
of every record, written out by hand from the frame here) and the injected fault, never what the code
under test computed; and the in-process messages equal the NOTIFY ones, byte for byte after JSON parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from api.stream.cex import HubCexSink
from api.stream.hub import Hub
from api.stream.replay import PostgresStore
from cex.exchanges.bybit import Bybit
from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.pipeline import run_cex_pipeline
from cex.store import CexStore
from core.database import DatabaseInfo
from core.retry import RetryPolicy
from devnet.exchanges import bybit as bybit_server
from devnet.exchanges import okx as okx_server
from devnet.exchanges.server import Event, Fault, ReplayServer
from tests.conftest import dexnode_bin
from tests.integration.test_api_cex import WsClient, all_pages, eventually, serving

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2)


def okx_frames() -> list[tuple[str, str, dict[str, Any]]]:
    """(channel, frame, expected record JSON) for UNI-USD-SWAP, OKX v5 ``funding-rate``/``open-interest``."""
    out = []
    for i, (rate, predicted) in enumerate(
        (("0.0001515", "0.00029"), ("-0.00003", ""), ("0.00075", "0.0001"))
    ):
        data = {
            "fundingRate": rate,
            "fundingTime": str(1652457600000 + i * 28_800_000),
            "instId": "UNI-USD-SWAP",
            "instType": "SWAP",
            "method": "next_period",
            "nextFundingRate": predicted,
            "nextFundingTime": str(1652486400000 + i * 28_800_000),
            "ts": str(1652459300000 + i),
        }
        frame = {"arg": {"channel": "funding-rate", "instId": "UNI-USD-SWAP"}, "data": [data]}
        want = {
            "exchange": "okx",
            "symbol": "UNI-USD-PERP",
            "rate": rate,
            "predicted_rate": predicted or None,
            "mark_price": None,
            "next_funding_time": int(data["fundingTime"]),
            "event_timestamp": int(data["ts"]),
        }
        out.append(("funding", json.dumps(frame), want))
    for i, oi in enumerate(("5000", "5123.5", "4999.25")):
        data = {
            "instId": "UNI-USD-SWAP",
            "instType": "SWAP",
            "oi": oi,
            "oiCcy": "555.55",
            "ts": str(1652459400000 + i),
        }
        frame = {"arg": {"channel": "open-interest", "instId": "UNI-USD-SWAP"}, "data": [data]}
        want = {
            "exchange": "okx",
            "symbol": "UNI-USD-PERP",
            "open_interest": oi,
            "event_timestamp": int(data["ts"]),
        }
        out.append(("open_interest", json.dumps(frame), want))
    return out


def _bybit(kind: str, ts: int, **data: str) -> str:
    return json.dumps(
        {"topic": "tickers.BTCUSD", "type": kind, "data": {"symbol": "BTCUSD", **data}, "cs": ts, "ts": ts}
    )


def bybit_frames() -> list[tuple[str, str, dict[str, Any]]]:
    """Bybit v5 inverse ``tickers``: a snapshot, then deltas carrying only what changed (the last value of
    every other field stands)."""
    key = {"exchange": "bybit", "symbol": "BTC-USD-PERP"}
    snapshot = _bybit(
        "snapshot",
        1618677900000,
        lastPrice="61000.5",
        markPrice="61001.25",
        fundingRate="0.0001",
        nextFundingTime="1618704000000",
        openInterest="1234567",
        bid1Price="61000.5",
        bid1Size="100",
        ask1Price="61001",
        ask1Size="200",
    )
    return [
        ("ticker", snapshot, {}),
        (
            "funding",
            "",
            {
                **key,
                "rate": "0.0001",
                "predicted_rate": None,
                "mark_price": "61001.25",
                "next_funding_time": 1618704000000,
                "event_timestamp": 1618677900000,
            },
        ),
        ("open_interest", "", {**key, "open_interest": "1234567", "event_timestamp": 1618677900000}),
        ("ticker", _bybit("delta", 1618677901000, openInterest="1234600"), {}),
        ("open_interest", "", {**key, "open_interest": "1234600", "event_timestamp": 1618677901000}),
        ("ticker", _bybit("delta", 1618677902000, fundingRate="-0.000025", markPrice="60990.5"), {}),
        (
            "funding",
            "",
            {
                **key,
                "rate": "-0.000025",
                "predicted_rate": None,
                "mark_price": "60990.5",
                "next_funding_time": 1618704000000,
                "event_timestamp": 1618677902000,
            },
        ),
        ("ticker", _bybit("delta", 1618677903000, nextFundingTime="1618732800000", lastPrice="60999"), {}),
        (
            "funding",
            "",
            {
                **key,
                "rate": "-0.000025",
                "predicted_rate": None,
                "mark_price": "60990.5",
                "next_funding_time": 1618732800000,
                "event_timestamp": 1618677903000,
            },
        ),
    ]


def interleave(recorded: list[Event], extra: list[Event]) -> list[Event]:
    """The constructed events spread evenly among the recorded ones, in their order."""
    step = len(recorded) // (len(extra) + 1)
    out: list[Event] = []
    for i, event in enumerate(recorded):
        out.append(event)
        if i % step == step - 1 and (i // step) < len(extra):
            out.append(extra[i // step])
    return out


Clients = dict[tuple[str, str], WsClient]  # (path, subscription name) -> client


@contextlib.asynccontextmanager
async def two_paths(
    dsn: str, feed: FeedHandler, server: ReplayServer, subscriptions: dict[str, dict[str, Any]]
) -> AsyncIterator[tuple[Clients, str]]:
    """Both APIs with the same clients, the pipeline running into Postgres and the in-process hub."""
    store = await CexStore.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    hub = Hub(PostgresStore(pool), confirmations=3)
    task = None
    try:
        async with serving(dsn, hub=hub) as in_process, serving(dsn) as notified:
            clients = {}
            for path, base in (("in_process", in_process), ("notify", notified)):
                for name, sub in subscriptions.items():
                    clients[(path, name)] = await WsClient.open(base, sub)
            task = asyncio.create_task(run_cex_pipeline(feed, [store, HubCexSink(hub)]))
            await eventually(lambda: server.done.is_set() or task.done(), "the market played", 60)
            assert not task.done(), task.exception()
            yield clients, in_process
            for client in clients.values():
                await client.close()
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()
        await store.close()
        await pool.close()


async def messages(client: WsClient, kind: str, count: int, what: str) -> list[dict[str, Any]]:
    """The client's ``kind`` data once it has at least ``count`` of them."""
    await eventually(lambda: len(client.data(kind)) >= count, what)
    return client.data(kind)


SUBSCRIPTIONS: dict[str, dict[str, Any]] = {
    "funding": {"channel": "cex_funding"},
    "open_interest": {"channel": "cex_open_interest", "symbol": ["btc-usd-perp", "UNI-USD-PERP"]},
    "seed_funding": {"feed": "funding"},  # with the exchange filled in per test
    "seed_open_interest": {"feed": "open_interest"},
    "book": {"channel": "cex_book"},
}


async def check_both_paths(
    exchange: str,
    clients: Clients,
    base: str,
    frames: list[tuple[str, str, dict[str, Any]]],
    paths: tuple[str, ...] = ("in_process", "notify"),
) -> None:
    channels = (("funding", "funding_rate", "funding"), ("open_interest", "open_interest", "open-interest"))
    for feed, kind, table in channels:
        want = [w for c, _, w in frames if c == feed]
        got = {
            path: await messages(clients[(path, feed)], kind, len(want), f"{feed} on {path}")
            for path in paths
        }
        assert all(got[path] == got["notify"] for path in paths)  # every field, the receipt time too
        assert [{k: g[k] for k in w} for g, w in zip(got["notify"], want, strict=True)] == want
        assert all(set(g) == set(want[0]) | {"atom_timestamp"} for g in got["notify"])
        for path in paths:
            seed = clients[(path, f"seed_{feed}")]
            assert await messages(seed, kind, len(want), f"seed {feed} on {path}") == got[path]
            assert {m["channel"] for m in seed.messages if "channel" in m} == {f"cex_{feed}"}
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            stored = await all_pages(http, f"/v1/cex/{table}", exchange=exchange)
        assert stored == got["notify"]  # the REST rows are what was sent


async def test_okx_funding_open_interest_and_resync_reason_on_both_paths(clean_db: DatabaseInfo) -> None:
    frames = okx_frames()
    extra = [Event("UNI-USD-SWAP", channel, raw=frame) for channel, frame, _ in frames]
    server = await okx_server.OkxServer(
        interleave(okx_server.events(), extra), [Fault(0, "BTC-USDT", 40, "drop")], pace=0.002
    ).start()
    symbols = ["BTC-USDT", "UNI-USD-PERP", "BTC-USD-220527"]
    feed = FeedHandler(
        Okx(ws_url=server.url),
        symbols,
        ["book", "trades", "funding", "open_interest"],
        stale_after=5,
        retry=FAST,
    )
    subs = {n: {**s, "exchange": "okx"} for n, s in SUBSCRIPTIONS.items()}
    async with two_paths(clean_db.dsn, feed, server, subs) as (clients, base):
        await check_both_paths("okx", clients, base, frames)
        resyncs = {}
        for path in ("in_process", "notify"):
            resyncs[path] = await messages(clients[(path, "book")], "resync", 1, f"the resync on {path}")
        assert resyncs["in_process"] == resyncs["notify"]
        assert resyncs["notify"] == [OKX_RESYNC]
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:  # an L2 book has no orders to show
            response = await http.get("/v1/cex/books/okx/BTC-USDT", params={"level": 3})
        assert response.status_code == 400 and "by price level (L2)" in response.json()["detail"]


# the dropped 41st BTC-USDT book frame: a gap; the book had applied 40 frames (OKX seqId = frames so far)
OKX_RESYNC = {"exchange": "okx", "symbol": "BTC-USDT", "reason": "gap", "sequence": 40, "valid": False}


async def test_a_separate_dexnode_cex_reaches_serve_through_notify(
    clean_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    """``dexnode cex`` in its own process (endpoints from ``DEXNODE_CEX_OKX_WS_URL``), ``serve`` beside it
    learning of rows only through NOTIFY: the same messages as in process (the expectations above)."""
    frames = okx_frames()
    extra = [Event("UNI-USD-SWAP", channel, raw=frame) for channel, frame, _ in frames]
    server = await okx_server.OkxServer(
        interleave(okx_server.events(), extra), [Fault(0, "BTC-USDT", 40, "drop")], pace=0.002
    ).start()
    env = {**cli_env, "DEXNODE_CEX_OKX_WS_URL": server.url, "DEXNODE_DATABASE_URL": clean_db.dsn}
    args = ["cex", "--exchange", "okx", "--symbols", "BTC-USDT,UNI-USD-PERP", "--feeds",
            "book,funding,open_interest", "--duration", "60"]  # fmt: skip
    proc = None
    try:
        async with serving(clean_db.dsn) as base:
            subs = {n: {**s, "exchange": "okx"} for n, s in SUBSCRIPTIONS.items()}
            clients = {("notify", n): await WsClient.open(base, sub) for n, sub in subs.items()}
            proc = await asyncio.create_subprocess_exec(
                dexnode_bin(),
                *args,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            await eventually(
                lambda: server.done.is_set() or proc.returncode is not None, "the market played", 60
            )
            await check_both_paths("okx", clients, base, frames, ("notify",))
            assert await messages(clients[("notify", "book")], "resync", 1, "the resync") == [OKX_RESYNC]
            for client in clients.values():
                await client.close()
    finally:
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 130, err.decode()[-2000:]  # interrupted, as after Ctrl-C
        await server.stop()


async def test_bybit_ticker_funding_and_open_interest_on_both_paths(clean_db: DatabaseInfo) -> None:
    frames = bybit_frames()
    extra = [Event("BTCUSD", "ticker", raw=frame) for channel, frame, _ in frames if channel == "ticker"]
    server = await bybit_server.BybitServer(interleave(bybit_server.events(), extra), pace=0.002).start()
    exchange = Bybit(ws_url=server.url, depth=bybit_server.DEPTH)
    feed = FeedHandler(
        exchange,
        ["BTC-USD-PERP", "EOS-USD-PERP"],
        ["book", "trades", "funding", "open_interest"],
        stale_after=5,
        retry=FAST,
    )
    subs = {n: {**s, "exchange": "bybit"} for n, s in SUBSCRIPTIONS.items()}
    async with two_paths(clean_db.dsn, feed, server, subs) as (clients, base):
        await check_both_paths("bybit", clients, base, [f for f in frames if f[0] != "ticker"])
        for path in ("in_process", "notify"):
            assert clients[(path, "book")].data("resync") == []
