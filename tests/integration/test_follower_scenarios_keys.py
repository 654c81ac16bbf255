"""Keys in node URLs (Infura-style, in the path) never reach the logs, the RPC errors nor what
``dexnode follow`` prints, while the follower keeps indexing the scripted node's chain.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from core.database import DatabaseInfo
from core.errors import RetryableError
from indexer.chain.rpc import RetryPolicy, RpcClient
from sinks.postgres import PostgresSink
from tests.integration.follower_scenarios import (
    KEY,
    assert_db_is_chain,
    following,
    scripted,
    wait_for_head,
)

pytestmark = pytest.mark.integration


async def test_a_websocket_url_key_never_reaches_the_logs(
    sink: PostgresSink, clean_db: DatabaseInfo, caplog: pytest.LogCaptureFixture
) -> None:
    """The websocket (Infura-style URL with the key in its path) refuses the connection: the follower
    logs its reconnect warnings and keeps indexing by polling; no log line carries the key."""
    caplog.set_level(logging.DEBUG)
    async with scripted(3, block_time=1, websocket=False) as node:
        async with following(node, sink, ws_url=f"{node.ws_url}/ws/v3/{KEY}") as run:
            await wait_for_head(run, node, clean_db.dsn)
            for _ in range(200):
                if run.heads.reconnects >= 2:
                    break
                await asyncio.sleep(0.05)
            assert run.heads.reconnects >= 2
        await assert_db_is_chain(clean_db.dsn, node.chain, [3])
    reconnects = [
        r for r in caplog.records if "websocket" in r.getMessage() and "reconnecting" in r.getMessage()
    ]
    assert reconnects and "/ws/v3/***" in reconnects[0].getMessage()
    # every dexnode line, and any library's from INFO up (dexnode keeps websockets/httpx at WARNING)
    shown = [r for r in caplog.records if r.name.startswith("dexnode") or r.levelno >= logging.INFO]
    assert shown
    for record in shown:
        assert KEY not in record.getMessage() and KEY not in (record.exc_text or ""), record.getMessage()


async def test_an_http_url_key_never_reaches_rpc_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A rate-limiting proxy that echoes the requested URL (key included) in its error body."""
    caplog.set_level(logging.WARNING, logger="dexnode")
    async with scripted(2) as node:
        url = f"{node.http_url}/v3/{KEY}"
        node.fail("eth_blockNumber", "429", times=3, body=f"rate limit exceeded for {url}")
        async with RpcClient(url, retry=RetryPolicy(attempts=2, base_delay=0.01)) as rpc:
            with pytest.raises(RetryableError) as failure:
                await rpc.block_number()
            assert await rpc.block_number() == 2  # the key in the path works
    assert "/v3/***" in str(failure.value) and KEY not in str(failure.value)
    assert caplog.records
    for record in caplog.records:
        assert KEY not in record.getMessage(), record.getMessage()


async def test_dexnode_follow_never_prints_the_keys(clean_db: DatabaseInfo, cli_env: dict[str, str]) -> None:
    """The real ``dexnode follow`` with keyed URLs (HTTP key in the path, websocket refusing): it indexes
    the chain, and nothing it prints (start-up lines, reconnect warnings, per-block lines) has a key."""
    from tests.conftest import dexnode_bin

    async with scripted(4, block_time=1, websocket=False) as node:
        args = ["follow", "--rpc-http", f"{node.http_url}/v3/{KEY}", "--rpc-ws", f"{node.ws_url}/ws/v3/{KEY}",
                "--database-url", clean_db.dsn, "--silence-timeout", "1"]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            dexnode_bin(), *args, env=cli_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            conn = await asyncpg.connect(clean_db.dsn)
            try:
                for _ in range(600):
                    if await conn.fetchval("SELECT block_hash FROM cursors") == node.chain.head["hash"]:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await conn.close()
        finally:
            proc.terminate()
            _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        stderr = err.decode()
        await assert_db_is_chain(clean_db.dsn, node.chain, [4])
    assert "/v3/***" in stderr and "/ws/v3/***" in stderr and "reconnecting" in stderr, stderr
    assert KEY not in stderr
