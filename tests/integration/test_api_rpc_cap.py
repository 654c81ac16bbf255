"""The API's node client (``/health``'s and ``/status``'s node head) takes the response size limit from
``DEXNODE_RPC_MAX_RESPONSE_MB`` like follow, run and backfill, not ``RpcClient``'s 1 GiB default: a node on
loopback whose answer is 2 MiB, under a limit of 1 MiB."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from api.app import create_app
from core.database import DatabaseInfo
from core.settings import build_settings
from tests.loopback_http import read_request

pytestmark = pytest.mark.integration


async def _padded_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Each request answered by the result ``0x10`` followed by 2 MiB of JSON whitespace."""
    try:
        while True:
            call = orjson.loads((await read_request(reader))[1])
            body = orjson.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x10"}) + b" " * (2 << 20)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def test_the_api_node_client_refuses_an_answer_over_the_configured_limit(
    migrated_db: DatabaseInfo,
) -> None:
    server = await asyncio.start_server(_padded_answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    settings = build_settings(database_url=migrated_db.dsn, rpc_http=url, rpc_max_response_mb=1)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            rpc = app.state.rpc
            call = asyncio.create_task(rpc.block_number())
            for _ in range(500):  # the first try's outcome; its retries are not waited for
                if call.done() or rpc.stats.errors:
                    break
                await asyncio.sleep(0.01)
            call.cancel()
            assert rpc.stats.errors == {"response_too_large": 1}, "the 2 MiB answer was read"
    finally:
        server.close()
