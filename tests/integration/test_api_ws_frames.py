"""The websocket transport ``serve`` runs (``api.ws_transport``): data messages leave as frames built once
for every subscriber, and a real ``websockets`` client decodes every one of them — with permessage-deflate
negotiated (``server_no_context_takeover`` imposed, any LZ77 window the client asks for), without it,
and on a server that does not compress. Each client gets, in order, exactly the messages the text path
(``api.stream.frames.text_of``) would have sent: its subscription id, then the shared body."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from api import ws
from api.deps import ApiState
from api.metrics import ApiMetrics
from api.stream.hub import Hub, Limits
from api.ws_transport import uvicorn_options
from bench.api_ws import NoHistory
from core.settings import build_settings
from records import Block, to_dict
from tests.conftest import free_port

pytestmark = pytest.mark.integration
CONFIRMATIONS = 2
BLOCKS = 6


def block(number: int) -> Block:
    # distinct hashes per block (zlib's inflate does not check distances against the window a client
    # asked for, so the window-9 client shows negotiation and decoding, not the window's size)
    h = "0x" + bytes((number * 37 + i * 11) % 256 for i in range(32)).hex()
    parent = "0x" + bytes(((number - 1) * 37 + i * 11) % 256 for i in range(32)).hex()
    return Block(number, h, parent, None, None, "0x" + "00" * 256, None, None, h, "0x" + "11" * 20, 0,
                 None, "0x", 1000, 30_000_000, 12_000_000, 10**9, 1_700_000_000 + number, 150)  # fmt: skip


@contextlib.asynccontextmanager
async def served(hub: Hub, *, compression: bool) -> AsyncIterator[str]:
    settings = build_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.api = ApiState(settings=settings, pool=None, metrics=ApiMetrics(), hub=hub)  # type: ignore[arg-type]
        yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(ws.router)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options(compression=compression)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started or task.done():
            break
        await asyncio.sleep(0.025)
    assert server.started, "uvicorn did not start"
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        server.should_exit = True
        await task


async def until(ws_: ClientConnection, predicate: Any) -> list[dict[str, Any]]:
    out = []
    while True:
        doc = orjson.loads(await asyncio.wait_for(ws_.recv(), 10))
        out.append(doc)
        if predicate(doc):
            return out


CLIENTS: dict[str, dict[str, Any]] = {
    # name -> how the client connects (the websockets default offers deflate with its defaults)
    "default": {},
    "plain": {"compression": None},
    "window 9": {
        "compression": None,
        "extensions": [ClientPerMessageDeflateFactory(server_max_window_bits=9)],
    },
    "window 15, client asks no context takeover": {
        "compression": None,
        "extensions": [
            ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True)
        ],
    },
}


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "no-deflate"])
async def test_every_client_decodes_every_shared_frame_in_order(compression: bool) -> None:
    hub = Hub(NoHistory(), confirmations=CONFIRMATIONS, limits=Limits())
    async with served(hub, compression=compression) as url, contextlib.AsyncExitStack() as stack:
        conns: dict[str, ClientConnection] = {}
        for name, kwargs in CLIENTS.items():
            conns[name] = await stack.enter_async_context(connect(url, **kwargs))
        for name, conn in conns.items():
            negotiated = conn.response.headers.get("Sec-WebSocket-Extensions")
            if compression and name != "plain":
                assert negotiated is not None and "server_no_context_takeover" in negotiated, (
                    name,
                    negotiated,
                )
            else:
                assert negotiated is None, (name, negotiated)
            if compression and name == "window 9":
                assert negotiated is not None and "server_max_window_bits=9" in negotiated
            # two subscriptions per connection: the same bodies under two ids
            await conn.send('{"op":"subscribe","channel":"blocks","id":"a"}')
            await conn.send(
                orjson.dumps({"op": "subscribe", "channel": "blocks", "id": f"{name} \u00e9"}).decode()
            )
            for _ in range(2):
                await until(conn, lambda d: d.get("event") == "live")
        for n in range(BLOCKS):
            hub.publish_blocks([block(n)], {})
        last_final = BLOCKS - 1 - CONFIRMATIONS
        for name, conn in conns.items():
            docs = await until(
                conn, lambda d: d.get("type") == "finalized" and d["data"]["number"] == last_final
            )
            docs += await until(
                conn, lambda d: d.get("type") == "finalized" and d["data"]["number"] == last_final
            )
            ids = ("a", f"{name} \u00e9")
            for sid in ids:
                mine = [d for d in docs if d["id"] == sid]
                blocks = [d for d in mine if d["type"] == "block"]
                assert [d["data"]["number"] for d in blocks] == list(range(BLOCKS)), (name, sid)
                expected = [to_dict(block(n)) for n in range(BLOCKS)]
                assert [d["data"] for d in blocks] == [e["data"] for e in expected], (name, sid)
                assert [d["version"] for d in blocks] == [e["version"] for e in expected]
                assert all(d["channel"] == "blocks" for d in blocks)
                finals = [d["data"]["number"] for d in mine if d["type"] == "finalized"]
                assert finals == list(range(last_final + 1)), (name, sid)
                # the watermark of block n - confirmations follows block n, never precedes it
                order = [(d["type"], d["data"]["number"]) for d in mine]
                for f in finals:
                    assert order.index(("finalized", f)) > order.index(("block", f + CONFIRMATIONS))
            # a control event after the shared frames, through the same connection
            await conn.send('{"op":"ping"}')
            assert (await until(conn, lambda d: "event" in d))[-1] == {"event": "pong"}
