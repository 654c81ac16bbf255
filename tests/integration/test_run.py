"""``dexnode run`` as a user starts it: a subprocess against a devnet (anvil with real Uniswap contracts)
and a real Postgres. What it serves is compared with the node's own JSON-RPC answers; SIGTERM must end it
cleanly (exit 0, websockets closed with 1001, the cursor on the last stored block)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cex.exchanges import EXCHANGES
from core.database import DatabaseInfo
from devnet import Devnet
from indexer.chain.rpc import RpcClient
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from tests.api_check import assert_same_rows, own_database, same
from tests.chain_check import expected_block, wait_for_tip
from tests.conftest import dexnode_bin, free_port
from tests.integration.test_api_ws import Msg, apply, has_block, read_until, send
from tests.integration.test_dex_devnet import venues
from tests.kafka_check import consumer_rule, raw_messages

pytestmark = pytest.mark.integration

CONFIRMATIONS = 3
KNOWN = ", ".join(sorted(EXCHANGES))
BANNER_END = "  Kafka "  # the banner's last line


@dataclass
class RunningNode:
    proc: asyncio.subprocess.Process
    port: int
    stderr: Path
    banner: list[str] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.stderr.read_text()


async def start_node(args: list[str], env: dict[str, str], tmp_path: Path) -> RunningNode:
    """``dexnode run ARGS`` until its banner is printed (the API listens then)."""
    port = free_port()
    stderr = tmp_path / "run.stderr"
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            dexnode_bin(),
            "run",
            "--port",
            str(port),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    node = RunningNode(proc, port, stderr)
    assert proc.stdout is not None
    while not any(line.startswith(BANNER_END) for line in node.banner):
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert line, f"dexnode run exited ({await proc.wait()}) before its banner:\n{node.log()}"
        node.banner.append(line.decode().rstrip("\n"))
    return node


@contextlib.asynccontextmanager
async def running(args: list[str], env: dict[str, str], tmp_path: Path) -> AsyncIterator[RunningNode]:
    node = await start_node(args, env, tmp_path)
    try:
        yield node
    finally:
        if node.proc.returncode is None:
            node.proc.kill()
            await node.proc.wait()


@contextlib.asynccontextmanager
async def held_write(dsn: str, node: RunningNode) -> AsyncIterator[None]:
    """Hold the follower's next block transaction: its cursor update waits on this lock until exit."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE cursors IN EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def until_blocked(dsn: str, timeout: float = 60.0) -> None:
    """Until another session of this database waits on a lock (the follower's write, held)."""
    conn = await asyncpg.connect(dsn)
    try:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        deadline = asyncio.get_running_loop().time() + timeout
        while not await conn.fetchval(query):
            assert asyncio.get_running_loop().time() < deadline, "the follower never started writing"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def until_logged(node: RunningNode, text: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in node.log():
        assert asyncio.get_running_loop().time() < deadline, f"never logged {text!r}:\n{node.log()}"
        assert node.proc.returncode is None, f"exited before logging {text!r}:\n{node.log()}"
        await asyncio.sleep(0.05)


def devnet_args(devnet: Devnet, db: DatabaseInfo, *, backfill: bool = True) -> list[str]:
    v2, v3 = venues(devnet.manifest)
    return [
        "--rpc-http", devnet.rpc_http, "--rpc-ws", devnet.rpc_ws, "--database-url", db.dsn,
        *(["--from-block", "0"] if backfill else []), "--confirmations", str(CONFIRMATIONS),
        "--max-reorg-depth", "16", "--uniswap-v2-factories", v2, "--uniswap-v3-factories", v3, "--quiet",
    ]  # fmt: skip


async def node_block(rpc: RpcClient, number: int | str) -> dict[str, Any]:
    return await rpc.get_block_by_number(number, full_txs=False)


async def test_run_backfills_follows_serves_streams_a_reorg_and_stops_cleanly(
    fresh_devnet: Devnet, pg_server: tuple[str, bool], cli_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    kafka_args = ["--kafka-bootstrap-servers", "", "--kafka-topic-prefix", prefix]
    async with (
        own_database(pg_server, "dexnode_run") as db,
        RpcClient(fresh_devnet.rpc_http) as rpc,
        kafka_broker() as broker,
    ):
        kafka_args[1] = broker.bootstrap
        async with running([*devnet_args(fresh_devnet, db), *kafka_args], cli_env, tmp_path) as node:
            await _serve_follow_and_stop(node, fresh_devnet, db, rpc)
        # SIGTERM flushed Kafka: head.blocks (reverts applied) is Postgres's chain, confirmed.blocks its
        # blocks up to tip - confirmations, never reverted (the other kinds share the path: test_kafka*.py)
        conn = await asyncpg.connect(db.dsn)
        try:
            stored = {r["number"]: r["hash"] for r in await conn.fetch("SELECT number, hash FROM blocks")}
        finally:
            await conn.close()
        head, reverted = consumer_rule(
            await asyncio.to_thread(raw_messages, broker.bootstrap, f"{prefix}head.blocks")
        )
        assert {b["number"]: b["hash"] for b in head.values()} == stored
        assert reverted == 2  # the devnet's reorg of depth 2
        confirmed = await asyncio.to_thread(raw_messages, broker.bootstrap, f"{prefix}confirmed.blocks")
        assert {m.doc["type"] for m in confirmed} == {"block"}
        tip = max(stored)
        assert {m.doc["data"]["number"]: m.doc["data"]["hash"] for m in confirmed} == {
            n: h for n, h in stored.items() if n <= tip - CONFIRMATIONS
        }


@contextlib.asynccontextmanager
async def kafka_broker() -> AsyncIterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


async def _serve_follow_and_stop(
    node: RunningNode, fresh_devnet: Devnet, db: DatabaseInfo, rpc: RpcClient
) -> None:
    """What a user checks on a running node, then SIGTERM (the caller checks Kafka afterwards)."""
    banner = "\n".join(node.banner)
    for line in (
        f"dashboard  {node.http}/",
        f"REST docs  {node.http}/docs",
        f"GraphQL    {node.http}/graphql",
        f"websocket  {node.ws}",
        f"metrics    {node.http}/metrics",
        f"node       {fresh_devnet.rpc_http}, heads {fresh_devnet.rpc_ws}",
        f"backfill   from block 0 to head - {CONFIRMATIONS}",
        "CEX        off",
        "Kafka      127.0.0.1:",
    ):
        assert line in banner, banner
    await wait_for_tip(db.dsn, rpc, timeout=120)

    # REST answers the blocks the node has: backfilled ones and the followed head, every field
    head = await node_block(rpc, "latest")
    top = int(head["number"], 16)
    async with httpx.AsyncClient(base_url=node.http, timeout=30) as http:
        for number in (0, 1, top // 2, top - CONFIRMATIONS, top):
            answer = await http.get(f"/v1/blocks/{number}")
            assert answer.status_code == 200, answer.text
            expected = expected_block(await node_block(rpc, number))
            assert_same_rows(f"block {number}", [expected], [answer.json()["data"]])
        # the follower runs in this process: its JSON-RPC calls are on the API's /metrics and /v1/status
        metrics = (await http.get("/metrics")).text
        calls = re.search(r'^dexnode_rpc_calls_total\{source="follow"\} (\S+)$', metrics, re.MULTILINE)
        assert calls is not None and float(calls.group(1)) > 0, metrics
        status = (await http.get("/v1/status")).json()
        assert (status["head"]["number"], status["rpc_errors"]) == (top, 0), status

    # the websocket gets new blocks in process, then a reorg made on the devnet, then stops with 1001
    async with connect(node.ws) as ws:
        await send(ws, {"op": "subscribe", "channel": "blocks", "id": "live"})
        msgs: list[Msg] = []
        await read_until(ws, lambda ms: any(m.get("event") == "live" for m in ms), msgs)
        await asyncio.to_thread(fresh_devnet.activity, 3, 6.0)
        await wait_for_tip(db.dsn, rpc)
        head = await node_block(rpc, "latest")
        await read_until(ws, has_block(int(head["number"], 16), head["hash"].lower()), msgs)
        blocks = [m for m in msgs if m.get("type") == "block"]
        assert [m["data"]["number"] for m in blocks] == list(range(top + 1, int(head["number"], 16) + 1))
        for m in blocks:
            expected = expected_block(await node_block(rpc, m["data"]["number"]))
            assert same(expected, m["data"]), m["data"]["number"]

        result = await asyncio.to_thread(fresh_devnet.reorg, 2)
        await asyncio.to_thread(fresh_devnet.activity, 1, 6.0)
        await wait_for_tip(db.dsn, rpc)
        head = await node_block(rpc, "latest")
        new_top = int(head["number"], 16)
        await read_until(ws, has_block(new_top, head["hash"].lower()), msgs)
        reorgs = [m for m in msgs if m.get("type") == "reorg"]
        assert len(reorgs) == 1
        ancestor = result.common_ancestor
        assert reorgs[0]["data"]["common_ancestor"] == {
            "number": ancestor,
            "hash": (await node_block(rpc, ancestor))["hash"].lower(),
        }
        assert reorgs[0]["data"]["orphaned"] == [
            {"number": ancestor + 1 + i, "hash": h.lower()} for i, h in enumerate(result.old_hashes)
        ]
        view = apply(msgs)
        canonical = {n: (await node_block(rpc, n))["hash"].lower() for n in view}
        assert view == canonical

        # SIGTERM while a block is being written: it is finished, not dropped. The test holds the
        # block's transaction on a lock, and lets it go only once the node has taken the signal.
        async with held_write(db.dsn, node):
            await asyncio.to_thread(fresh_devnet.activity, 1, 6.0)
            await until_blocked(db.dsn)
            node.proc.send_signal(signal.SIGTERM)
            await until_logged(node, "SIGTERM: stopping")
        in_flight = await node_block(rpc, "latest")
        await read_until(ws, has_block(int(in_flight["number"], 16), in_flight["hash"].lower()), msgs)
        with pytest.raises(ConnectionClosed) as closed:
            await read_until(ws, lambda ms: False, msgs, timeout=60)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "server shutting down")
    code = await asyncio.wait_for(node.proc.wait(), 60)
    log = node.log()
    assert code == 0, log
    assert "Traceback" not in log, log

    # the cursor is the last stored block, and that block is the node's
    conn = await asyncpg.connect(db.dsn)
    try:
        cursor = await conn.fetchrow("SELECT block_number, block_hash FROM cursors WHERE stream = 'follow'")
        stored = await conn.fetchrow("SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1")
    finally:
        await conn.close()
    assert (cursor["block_number"], cursor["block_hash"]) == (stored["number"], stored["hash"])
    assert (stored["number"], stored["hash"]) == (int(in_flight["number"], 16), in_flight["hash"].lower())


async def test_a_second_signal_forces_the_stop_and_the_block_in_flight_is_rolled_back(
    fresh_devnet: Devnet, pg_server: tuple[str, bool], cli_env: dict[str, str], tmp_path: Path
) -> None:
    """While the block being written is held here on a lock, a second SIGTERM does not wait for it: exit
    130, the block's transaction is rolled back whole, the cursor stays on the last stored block. (That
    the first SIGTERM waits for the block: the test above.)"""
    async with (
        own_database(pg_server, "dexnode_run_force") as db,
        RpcClient(fresh_devnet.rpc_http) as rpc,
        running(devnet_args(fresh_devnet, db, backfill=False), cli_env, tmp_path) as node,
    ):
        await wait_for_tip(db.dsn, rpc)
        before = await node_block(rpc, "latest")
        async with held_write(db.dsn, node):
            await asyncio.to_thread(fresh_devnet.activity, 1, 6.0)
            await until_blocked(db.dsn)
            node.proc.send_signal(signal.SIGTERM)
            await until_logged(node, "SIGTERM: stopping")
            node.proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(node.proc.wait(), 60)
        assert code == 130, node.log()
        assert "dexnode: forced to stop" in node.log()
        conn = await asyncpg.connect(db.dsn)
        try:
            cursor = await conn.fetchrow(
                "SELECT block_number, block_hash FROM cursors WHERE stream = 'follow'"
            )
            stored = await conn.fetchrow("SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1")
        finally:
            await conn.close()
        assert (cursor["block_number"], cursor["block_hash"]) == (stored["number"], stored["hash"])
        assert (stored["number"], stored["hash"]) == (int(before["number"], 16), before["hash"].lower())


async def test_an_unreachable_node_stops_run_with_an_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The node refuses connections past the RPC retry policy: the indexer fails, the node stops in
    order (the embedded PostgreSQL it started included), exit 1 with one ``dexnode:`` line. The node's
    URLs carry an API key, as Infura's do: neither the banner nor any log line shows it."""
    dead = free_port()  # nothing listens there
    key = "0123456789abcdef0123456789abcdef"
    # outside pytest's 0700 basetemp: as root, pgserver runs PostgreSQL as a user that cannot enter it
    data = Path(tempfile.mkdtemp(prefix="dexnode-test-run-"))
    cli_env = {**cli_env, "DEXNODE_DATA_DIR": str(data)}
    try:
        await _fails_and_stops(cli_env, tmp_path, dead, key)
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def _fails_and_stops(cli_env: dict[str, str], tmp_path: Path, dead: int, key: str) -> None:
    args = [
        "--rpc-http",
        f"http://127.0.0.1:{dead}/v3/{key}",
        "--rpc-ws",
        f"ws://127.0.0.1:{dead}/ws/v3/{key}",
    ]
    async with running(args, cli_env, tmp_path) as node:
        banner = "\n".join(node.banner)
        assert "database   embedded PostgreSQL in " in banner
        assert f"node       http://127.0.0.1:{dead}/v3/***, heads ws://127.0.0.1:{dead}/ws/v3/***" in banner
        code = await asyncio.wait_for(node.proc.wait(), 120)
    log = node.log()
    assert code == 1, log
    assert "the indexer failed" in log and "stopping the node" in log, log
    assert log.rstrip().splitlines()[-1].startswith("dexnode: "), log
    assert key not in log and key not in banner
    pgdata = Path(cli_env["DEXNODE_DATA_DIR"]) / "postgres"
    assert (pgdata / "PG_VERSION").exists() and not (pgdata / "postmaster.pid").exists()


def run_fails(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    import subprocess

    done = subprocess.run([dexnode_bin(), *args], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr


def test_config_file_mistakes_exit_2_naming_file_and_key(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Each way to name the file; the loader's other messages: tests/unit/test_config_file.py."""
    path = tmp_path / "dexnode.toml"
    path.write_text("confirmatons = 3\n")
    for args, env in (
        (["run", "--config", str(path)], cli_env),
        (["--config", str(path), "run"], cli_env),
        (["run"], {**cli_env, "DEXNODE_CONFIG": str(path)}),
    ):
        code, stderr = run_fails(args, env)
        assert (code, stderr.strip()) == (
            2,
            f"dexnode: {path}: unknown key 'confirmatons' (did you mean 'confirmations'?)",
        ), args


def test_flag_mistakes_exit_2_before_anything_starts(cli_env: dict[str, str], tmp_path: Path) -> None:
    code, stderr = run_fails(["run", "--exchanges", "binance,krakn", "--symbols", "BTC-USDT"], cli_env)
    assert (code, stderr.strip()) == (
        2,
        f"dexnode: DEXNODE_CEX_EXCHANGES / --exchanges: unknown exchange 'krakn'; known: {KNOWN}",
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, stderr = run_fails(["run", "--port", str(port)], cli_env)
    assert code == 2 and f"the API cannot listen on 127.0.0.1:{port}" in stderr, stderr
    assert not (Path(cli_env["DEXNODE_DATA_DIR"]) / "postgres").exists()  # nothing was started
    raw_env = {**cli_env, "DEXNODE_CEX_RAW": "true"}
    raw_env.pop("DEXNODE_KAFKA_BOOTSTRAP_SERVERS", None)
    code, stderr = run_fails(["run", "--exchanges", "okx", "--symbols", "BTC-USDT"], raw_env)
    assert (code, stderr.strip()) == (
        2,
        "dexnode: DEXNODE_CEX_RAW (dexnode cex --raw) publishes raw exchange frames on the Kafka"
        " topics cex.<exchange>.raw and needs DEXNODE_KAFKA_BOOTSTRAP_SERVERS: set it, or unset"
        " DEXNODE_CEX_RAW / drop --raw. Raw frames on the websocket need no setting: subscribe to the"
        " cex_raw channel of dexnode run",
    )
    assert not (Path(cli_env["DEXNODE_DATA_DIR"]) / "postgres").exists()
