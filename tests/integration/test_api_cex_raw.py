"""The websocket's ``cex_raw`` channel (the seed's ``feed: raw``): the real feed (``cex.feed.FeedHandler``,
two connections) against the local OKX server in the API's process, its frames handed to the hub while a
client subscribes. Truth: what the server wrote to each socket (``Session.sent``), never our own output. A
separate ``serve`` (no feed in its process) refuses the subscription with its documented code."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from api.stream.cex import HubCexSink
from api.stream.hub import Hub
from api.stream.protocol import Code
from api.stream.replay import PostgresStore
from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.pipeline import run_cex_pipeline
from core.database import DatabaseInfo
from core.retry import RetryPolicy
from devnet.exchanges import okx as okx_server
from tests.integration.test_api_cex import SYMBOLS, WsClient, eventually, serving

pytestmark = pytest.mark.integration


async def test_seed_raw_feed_equals_what_the_server_sent_per_connection_in_order(
    clean_db: DatabaseInfo,
) -> None:
    server = await okx_server.OkxServer(okx_server.events(), wait_for_sessions=2).start()
    retry = RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2)
    feed = FeedHandler(
        Okx(ws_url=server.url),
        list(SYMBOLS),
        ["book", "trades", "ticker"],
        connections=2,
        stale_after=5,
        retry=retry,
    )
    pool = await asyncpg.create_pool(clean_db.dsn, min_size=1, max_size=2)
    hub = Hub(PostgresStore(pool), confirmations=3)
    feed.raw_listener = hub.cex.raw.attach()  # as cli/node.py wires it; no Kafka, no raw=True
    pipeline = None
    try:
        async with serving(clean_db.dsn, hub=hub) as base:
            raw_ws = await WsClient.open(base, {"exchange": "okx", "feed": "raw", "id": "raw"})
            other_ws = await WsClient.open(base, {"channel": "cex_raw", "exchange": "kraken"})
            pipeline = asyncio.create_task(run_cex_pipeline(feed, [HubCexSink(hub)]))
            await asyncio.wait_for(server.done.wait(), 30)
            await eventually(
                lambda: len(raw_ws.data("raw")) >= sum(len(s.sent) for s in server.sessions) > 600,
                "every frame the server wrote on cex_raw",
            )
            got = raw_ws.data("raw")
            assert len(got) == sum(len(s.sent) for s in server.sessions)
            assert {(m["id"], m["channel"], m["version"]) for m in raw_ws.messages if "type" in m} == {
                ("raw", "cex_raw", 1)
            }
            assert len(server.sessions) == 2
            frames: dict[int, list[str]] = {}
            for connection in (0, 1):  # which server session each connection was: matched by content
                mine = [d for d in got if d["connection"] == connection]
                assert {d["exchange"] for d in mine} == {"okx"} and all("encoding" not in d for d in mine)
                times = [d["atom_timestamp"] for d in mine]
                assert times == sorted(times)
                frames[connection] = [d["frame"] for d in mine]
            # verbatim, each once, in the order each socket received them
            assert sorted(frames.values()) == sorted(s.sent for s in server.sessions)
            assert other_ws.data("raw") == []  # the exchange filter
            for client in (raw_ws, other_ws):
                await client.close()
            await eventually(
                lambda: not hub.cex.raw.wanted, "no subscriber left: the feed stops handing frames"
            )
    finally:
        if pipeline is not None:
            pipeline.cancel()
            await asyncio.gather(pipeline, return_exceptions=True)
        await server.stop()
        await pool.close()


async def reply(ws: ClientConnection) -> dict[str, Any]:
    """The next message that is no heartbeat."""
    while True:
        msg: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg.get("event") != "heartbeat":
            return msg


async def test_a_separate_serve_refuses_raw_with_its_code(clean_db: DatabaseInfo) -> None:
    # no hub handed in: a serve fed through NOTIFY, no feed in its process
    async with serving(clean_db.dsn) as base, connect(base.replace("http://", "ws://") + "/ws") as ws:
        for doc in ({"exchange": "okx", "feed": "raw", "id": "a"}, {"channel": "cex_raw", "id": "b"}):
            await ws.send(orjson.dumps({"op": "subscribe", **doc}).decode())
            msg = await reply(ws)
            assert msg["event"] == "error" and msg["code"] == Code.RAW_UNAVAILABLE == 4041, msg
            assert msg["id"] == doc["id"] and "only available where the exchange feeds run" in msg["message"]
        await ws.send(orjson.dumps({"op": "subscribe", "exchange": "okx", "feed": "trades"}).decode())
        assert (await reply(ws))["event"] == "subscribed"  # the connection is still usable
