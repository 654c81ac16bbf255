"""``dexnode serve --workers 2`` as a user runs it: one port, two worker processes that both answer
the stored data (mainnet block 21925176, written by the real writer), with the access flags given on
the command line applied in each worker; SIGTERM stops them all; a port already taken is a clear
error. Also: the RPC errors an in-process client met are exported by ``/metrics``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from api.app import create_app
from core.retry import RetryPolicy
from core.settings import build_settings
from indexer.chain.extract import ExtractedBlock, extract_receipts_only
from indexer.chain.rpc import RpcClient
from indexer.pipeline.pipeline import batch_of
from sinks.postgres import PostgresSink
from tests.api_check import own_database, served
from tests.conftest import dexnode_bin, free_port
from tests.scripted_node import ScriptedChain, ScriptedNode

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fixtures_dir")]

HELIOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mainnet-block-21925176-helios"
KEY = "worker-test-key-1"


@pytest.fixture(scope="module")
async def stored(pg_server: tuple[str, bool]) -> AsyncIterator[tuple[str, dict[str, object]]]:
    header = json.loads((HELIOS / "block.json").read_text())
    receipts = json.loads((HELIOS / "receipts.json").read_text())
    async with own_database(pg_server, "dexnode_serve_workers") as db:
        sink = await PostgresSink.connect(db.dsn)
        try:
            await sink.write(batch_of("backfill", [extract_receipts_only(header, receipts)]))
        finally:
            await sink.pool.close()
        yield db.dsn, header


async def _started(proc: asyncio.subprocess.Process, client: httpx.AsyncClient) -> None:
    for _ in range(1200):  # worker processes import the whole API: seconds on a loaded machine
        try:
            if (await client.get("/health", headers={"X-API-Key": KEY})).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.returncode is None, "dexnode serve exited"
        await asyncio.sleep(0.1)
    raise AssertionError("dexnode serve --workers 2 did not answer")


async def test_two_workers_both_answer_with_the_flags_applied(
    stored: tuple[str, dict[str, object]], cli_env: dict[str, str]
) -> None:
    dsn, header = stored
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(dexnode_bin(), "serve", "--workers", "2", "--port", str(port), "--database-url", dsn),
        *("--api-keys", KEY, "--api-anon-rate-limit", "0", "--api-access", "on"),
        env=cli_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    # no keep-alive: every request is a new connection, spread over the workers by the kernel
    fresh = httpx.Limits(max_keepalive_connections=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, limits=fresh) as client:
            await _started(proc, client)
            seen: dict[str, dict[str, object]] = {}
            for _ in range(400):
                answer = await client.get("/v1/blocks/latest", headers={"X-API-Key": KEY})
                if answer.status_code == 200:
                    seen[answer.headers["x-dexnode-worker"]] = answer.json()["data"]
                if len(seen) == 2:
                    break
            assert sorted(seen) == ["0", "1"], f"answered by workers {sorted(seen)} only"
            for block in seen.values():
                assert (block["number"], block["hash"]) == (int(str(header["number"]), 16), header["hash"])
                assert block["gas_used"] == int(str(header["gasUsed"]), 16)

            # --api-anon-rate-limit 0 with --api-keys (given as flags, not variables) holds in each worker
            refused = set()
            for _ in range(400):
                answer = await client.get("/v1/blocks/latest")
                assert answer.status_code == 401, answer.text
                assert "an API key is required" in answer.json()["error"]["message"]
                refused.add(answer.headers["x-dexnode-worker"])
                if len(refused) == 2:
                    break
            assert refused == {"0", "1"}

            # each worker's own LISTEN/NOTIFY listener: a block written now reaches a live websocket
            # subscriber on each worker
            await _live_block_reaches_both_workers(port, dsn, header)
    finally:
        if proc.returncode is None:
            proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 143  # both workers stopped, then the parent


async def _live_block_reaches_both_workers(port: int, dsn: str, header: dict[str, object]) -> None:
    by_worker: dict[str, ClientConnection] = {}
    extra: list[ClientConnection] = []
    try:
        for _ in range(200):
            ws = await connect(f"ws://127.0.0.1:{port}/ws", additional_headers={"X-API-Key": KEY})
            assert ws.response is not None
            worker = ws.response.headers["x-dexnode-worker"]
            if worker in by_worker:
                extra.append(ws)  # closed at the end: one connection per worker is enough
            else:
                by_worker[worker] = ws
            if len(by_worker) == 2:
                break
        assert sorted(by_worker) == ["0", "1"]
        for ws in by_worker.values():
            await ws.send(json.dumps({"op": "subscribe", "channel": "blocks", "id": "b"}))
            events = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(2)]
            assert [e.get("event") for e in events] == ["subscribed", "live"], events

        stored = extract_receipts_only(
            json.loads((HELIOS / "block.json").read_text()),
            json.loads((HELIOS / "receipts.json").read_text()),
        ).block
        new_hash = "0x" + "ab" * 32
        block = dataclasses.replace(stored, number=stored.number + 1, hash=new_hash, parent_hash=stored.hash)
        sink = await PostgresSink.connect(dsn)
        try:
            await sink.write(batch_of("follow", [ExtractedBlock(block, (), (), (), 0)]))
        finally:
            await sink.pool.close()
        for worker, ws in by_worker.items():
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert (message["type"], message["data"]["number"], message["data"]["hash"]) == (
                "block",
                int(str(header["number"]), 16) + 1,
                new_hash,
            ), worker
    finally:
        for ws in [*by_worker.values(), *extra]:
            await ws.close()


async def test_a_port_in_use_is_a_clear_error(
    stored: tuple[str, dict[str, object]], cli_env: dict[str, str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            *(dexnode_bin(), "serve", "--workers", "2", "--port", str(port)),
            env={**cli_env, "DEXNODE_DATABASE_URL": stored[0]},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, err  # bad input: the port
    assert f"dexnode: cannot listen on 127.0.0.1:{port}: Address already in use".encode() in err
    assert b"Traceback" not in err


async def test_metrics_export_the_rpc_errors_of_an_in_process_client(
    stored: tuple[str, dict[str, object]],
) -> None:
    """As ``dexnode run`` does: the follower's ``RpcClient.stats`` registered with the API's metrics."""
    dsn, _ = stored
    node = ScriptedNode(chain=ScriptedChain())
    node.chain.mine(3)
    node.fail("eth_blockNumber", "429", times=2)
    fast = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.02)
    async with node.serving(), RpcClient(node.http_url, timeout=2.0, retry=fast) as rpc:
        assert await rpc.block_number() == 2  # answered after two 429s
        assert rpc.stats.errors == {"http_429": 2}
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            app = create_app(build_settings(database_url=dsn), pool=pool)
            app.state.metrics.watch_rpc("follow", rpc.stats)
            async with served(app) as url, httpx.AsyncClient(base_url=url) as client:
                text = (await client.get("/metrics")).text
                assert 'dexnode_rpc_errors_total{kind="http_429",source="follow"} 2.0' in text
                assert f'dexnode_rpc_calls_total{{source="follow"}} {float(rpc.stats.calls)}' in text
                node.fail("eth_blockNumber", "500", times=1)
                await rpc.block_number()
                text = (await client.get("/metrics")).text  # read at each scrape
                assert 'dexnode_rpc_errors_total{kind="http_500",source="follow"} 1.0' in text
                assert 'dexnode_rpc_errors_total{kind="http_429",source="follow"} 2.0' in text
        finally:
            await pool.close()
