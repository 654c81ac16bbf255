"""An idle websocket gets heartbeats (``{"event":"heartbeat","head":..,"finalized":..}``) every
``DEXNODE_WS_HEARTBEAT_SECONDS``, again and again: the sender's one re-arming timer (``api.ws``) keeps
beating after each heartbeat it sends. The API runs as ``serve`` does without a follower: its hub fed
by Postgres ``LISTEN/NOTIFY``, its head read from the database."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson
import pytest
import uvicorn
from websockets.asyncio.client import connect

from api.app import create_app
from core.database import DatabaseInfo
from core.settings import build_settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration
CONFIRMATIONS = 3


async def test_an_idle_subscriber_gets_heartbeats_with_the_head(migrated_db: DatabaseInfo) -> None:
    settings = build_settings(
        database_url=migrated_db.dsn, confirmations=CONFIRMATIONS, ws_heartbeat_seconds=0.3
    )
    pool = await asyncpg.create_pool(migrated_db.dsn, min_size=1, max_size=4)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, pool=pool), host="127.0.0.1", port=free_port(), log_level="warning"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started:  # uvicorn offers no event for it
            assert not task.done() and time.monotonic() < deadline, "the API server did not start"
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        head = await pool.fetchval("SELECT max(number) FROM blocks")
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send('{"op":"subscribe","channel":"blocks","id":"b"}')
            events = []
            while len([e for e in events if e.get("event") == "heartbeat"]) < 3:
                events.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert [e.get("event") for e in events] == [
            "subscribed",
            "live",
            "heartbeat",
            "heartbeat",
            "heartbeat",
        ]
        finalized = None if head is None or head < CONFIRMATIONS else head - CONFIRMATIONS
        for beat in events[2:]:
            assert beat == {"event": "heartbeat", "head": head, "finalized": finalized}
    finally:
        server.should_exit = True
        await task
        await pool.close()
