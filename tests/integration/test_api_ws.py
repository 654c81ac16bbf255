"""The websocket ``/ws`` against the real path: a devnet (anvil with real Uniswap contracts), the real
follower writing Postgres, and the API in its own uvicorn server reading live events through Postgres
``LISTEN/NOTIFY`` (never handed the follower's batches). What clients receive is compared with the
node's own JSON-RPC answers and an eth-abi decode of its logs, never with the API's queries."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from api.app import create_app
from api.stream.protocol import Cursor
from core.database import DatabaseInfo
from core.settings import build_settings
from devnet import Devnet
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from sinks.postgres import PostgresSink
from tests.api_check import start_server
from tests.chain_check import wait_for_tip
from tests.conftest import empty_tables
from tests.devnet_fixture import load_devnet
from tests.integration.test_dex_devnet import V2_SWAP, V3_SWAP, expected_trade, venues

pytestmark = pytest.mark.integration

CONFIRMATIONS = 3
Msg = dict[str, Any]


@dataclass
class Stack:
    devnet: Devnet
    dsn: str
    rpc: RpcClient
    url: str  # ws://.../ws of the API
    serve: Callable[..., Any]  # another API replica: serve(**settings) -> (url, stop)


async def _serve_app(dsn: str, rpc_http: str, **overrides: Any) -> tuple[str, Any, asyncpg.Pool]:
    settings = build_settings(
        database_url=dsn,
        rpc_http=rpc_http,
        confirmations=CONFIRMATIONS,
        ws_heartbeat_seconds=1.0,
        **overrides,
    )
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    port, stop_server = await start_server(create_app(settings, pool=pool))

    async def stop() -> None:
        await stop_server()
        await pool.close()

    return f"ws://127.0.0.1:{port}/ws", stop, pool


@pytest.fixture(scope="module")
async def stack(
    migrated_db: DatabaseInfo, pytestconfig: pytest.Config, devnet_logs: Any
) -> AsyncIterator[Stack]:
    await empty_tables(migrated_db.dsn)
    devnet = await asyncio.to_thread(load_devnet, pytestconfig, devnet_logs)
    sink = await PostgresSink.connect(migrated_db.dsn)
    stops: list[Any] = []
    async with RpcClient(devnet.rpc_http) as rpc:
        v2, v3 = venues(devnet.manifest)
        follower = Follower(
            rpc, HeadStream(devnet.rpc_ws, rpc), start=[], from_block=0, confirmations=CONFIRMATIONS
        )
        enrich = DexEnricher(rpc, sink.pool, registry_from(v2, v3))
        following = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
        try:
            await wait_for_tip(migrated_db.dsn, rpc, timeout=240)
            url, stop, _ = await _serve_app(migrated_db.dsn, devnet.rpc_http)
            stops.append(stop)

            async def serve(**overrides: Any) -> tuple[str, Any]:
                other_url, other_stop, _ = await _serve_app(migrated_db.dsn, devnet.rpc_http, **overrides)
                stops.append(other_stop)
                return other_url, other_stop

            yield Stack(devnet, migrated_db.dsn, rpc, url, serve)
        finally:
            for stop in reversed(stops):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stop(), 30)
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            await sink.close()
            devnet.stop()


# -- helpers -----------------------------------------------------------------------------------------


async def send(ws: ClientConnection, doc: Msg | str) -> None:
    await ws.send(doc if isinstance(doc, str) else orjson.dumps(doc).decode())


async def read_until(
    ws: ClientConnection, done: Callable[[list[Msg]], bool], into: list[Msg], timeout: float = 60.0
) -> list[Msg]:
    deadline = time.monotonic() + timeout
    while not done(into):
        left = deadline - time.monotonic()
        if left <= 0:
            tail = [m.get("event") or m.get("type") for m in into[-5:]]
            raise AssertionError(f"timed out after {len(into)} messages (last: {tail})")
        into.append(orjson.loads(await asyncio.wait_for(ws.recv(), left)))
    return into


def data(msgs: list[Msg], channel: str) -> list[Msg]:
    return [
        m for m in msgs if m.get("channel") == channel and m.get("type") not in ("reorg", "finalized", None)
    ]


def apply(msgs: list[Msg]) -> dict[int, str]:
    """The documented client rule: keep each block; a reorg drops everything above the ancestor."""
    view: dict[int, str] = {}
    for m in msgs:
        if m.get("type") == "reorg":
            ancestor = m["data"]["common_ancestor"]["number"]
            view = {n: h for n, h in view.items() if n <= ancestor}
        elif m.get("type") == "block":
            view[m["data"]["number"]] = m["data"]["hash"]
    return view


def has_block(number: int, block_hash: str) -> Callable[[list[Msg]], bool]:
    return lambda msgs: any(
        m.get("type") == "block" and m["data"]["number"] == number and m["data"]["hash"] == block_hash
        for m in msgs
    )


async def node_chain(rpc: RpcClient, upto: int) -> dict[int, dict[str, Any]]:
    blocks = await rpc.get_blocks(list(range(upto + 1)), full_txs=False)
    return {int(b["number"], 16): b for b in blocks}


async def node_head(rpc: RpcClient) -> dict[str, Any]:
    return await rpc.get_block_by_number("latest", full_txs=False)


# -- tests -------------------------------------------------------------------------------------------


async def test_replay_from_block_then_live_has_no_gap_and_no_duplicate(stack: Stack) -> None:
    """Subscribed while the devnet mines: the replay from Postgres and the live stream meet with every
    block exactly once, in order, each equal to the node's block."""
    activity = asyncio.create_task(asyncio.to_thread(stack.devnet.activity, 6, 6.0))
    async with connect(stack.url) as ws:
        await send(ws, {"op": "subscribe", "channel": "blocks", "from_block": 0, "id": "b"})
        msgs: list[Msg] = []
        await read_until(ws, lambda ms: any(m.get("event") == "live" for m in ms), msgs)
        await activity
        await wait_for_tip(stack.dsn, stack.rpc)
        await asyncio.to_thread(stack.devnet.activity, 3, 6.0)  # blocks that can only come live
        head = await node_head(stack.rpc)
        await read_until(ws, has_block(int(head["number"], 16), head["hash"]), msgs)
    assert msgs[0] == {"event": "subscribed", "id": "b", "channel": "blocks", "finality": "head"}
    blocks = data(msgs, "blocks")
    assert not [m for m in msgs if m.get("type") == "reorg"]
    numbers = [m["data"]["number"] for m in blocks]
    assert numbers == list(range(int(head["number"], 16) + 1)), "a gap or a duplicate"
    live_at = next(i for i, m in enumerate(msgs) if m.get("event") == "live")
    assert any(m.get("type") == "block" for m in msgs[live_at:]), "nothing arrived live"
    chain = await node_chain(stack.rpc, int(head["number"], 16))
    for m in blocks:
        node = chain[m["data"]["number"]]
        got = m["data"]
        assert (got["hash"], got["parent_hash"], got["miner"]) == (
            node["hash"].lower(),
            node["parentHash"].lower(),
            node["miner"].lower(),
        )
        assert (got["timestamp"], got["gas_used"], got["gas_limit"], got["transaction_count"]) == (
            int(node["timestamp"], 16),
            int(node["gasUsed"], 16),
            int(node["gasLimit"], 16),
            len(node["transactions"]),
        )
        assert (m["id"], m["type"], m["version"]) == ("b", "block", 1)
    assert len({m["cursor"] for m in blocks}) == len(blocks)


async def test_filtered_logs_and_dex_trades_equal_the_nodes_logs(stack: Stack) -> None:
    """A pool's logs and trades, replayed then live: every log field as eth_getLogs returns it, every
    trade's sides and raw amounts as eth-abi decodes the Swap event."""
    await wait_for_tip(stack.dsn, stack.rpc)
    manifest = stack.devnet.manifest
    pool = next(p for p in manifest["pools"] if p["version"] == 2)
    async with connect(stack.url) as ws:
        mixed_case = "0x" + pool["address"][2:].upper()
        await send(
            ws, {"op": "subscribe", "channel": "logs", "address": mixed_case, "from_block": 0, "id": "l"}
        )
        await send(ws, {"op": "subscribe", "channel": "dex_trades", "pool": pool["address"], "from_block": 0})
        msgs: list[Msg] = []
        await read_until(ws, lambda ms: sum(m.get("event") == "live" for m in ms) == 2, msgs)
    head = int((await node_head(stack.rpc))["number"], 16)
    logs = await stack.rpc.call(
        "eth_getLogs", [{"address": pool["address"], "fromBlock": "0x0", "toBlock": hex(head)}]
    )
    got_logs = [m["data"] for m in data(msgs, "logs")]
    assert len(got_logs) == len(logs) > 10
    for got, log in zip(got_logs, logs, strict=True):
        topics = [*log["topics"], None, None, None, None][:4]
        assert got == {
            "block_number": int(log["blockNumber"], 16),
            "block_hash": log["blockHash"].lower(),
            "transaction_hash": log["transactionHash"].lower(),
            "transaction_index": int(log["transactionIndex"], 16),
            "log_index": int(log["logIndex"], 16),
            "address": log["address"].lower(),
            "data": log["data"].lower(),
            "topic0": topics[0],
            "topic1": topics[1],
            "topic2": topics[2],
            "topic3": topics[3],
        }
    swaps = [lg for lg in logs if lg["topics"][0] in (V2_SWAP, V3_SWAP)]
    trades = [m["data"] for m in data(msgs, "dex_trades")]
    assert len(trades) == len(swaps) > 0
    for got, log in zip(trades, swaps, strict=True):
        assert (got["block_hash"], got["log_index"], got["exchange"], got["pool_address"], got["taker"],
                got["token_sold_address"], got["token_bought_address"], int(got["amount_sold_raw"]),
                int(got["amount_bought_raw"])) == expected_trade(log, pool)  # fmt: skip


async def test_reorg_reaches_clients_before_the_new_branch_and_a_resumed_client_ends_canonical(
    stack: Stack,
) -> None:
    """A real devnet reorg: a live client gets the reorg (ancestor and orphaned blocks as the devnet
    reports them) before the new branch; a client that disconnected holding an orphaned block resumes
    from its last cursor, gets the reorg, and ends with exactly the node's chain; a confirmed client
    never sees a reorg or an orphaned block."""
    await wait_for_tip(stack.dsn, stack.rpc)
    async with (
        connect(stack.url) as live,
        connect(stack.url) as confirmed,
    ):
        await send(live, {"op": "subscribe", "channel": "blocks", "id": "live"})
        await send(
            confirmed, {"op": "subscribe", "channel": "blocks", "finality": "confirmed", "from_block": 0}
        )
        live_msgs: list[Msg] = []
        conf_msgs: list[Msg] = []
        await read_until(live, lambda ms: any(m.get("event") == "live" for m in ms), live_msgs)
        # the client that will hold orphaned blocks when it disconnects
        gone: list[Msg] = []
        async with connect(stack.url) as leaving:
            await send(leaving, {"op": "subscribe", "channel": "blocks", "from_block": 0})
            await read_until(leaving, lambda ms: any(m.get("event") == "live" for m in ms), gone)
            await asyncio.to_thread(stack.devnet.activity, 3, 6.0)
            await wait_for_tip(stack.dsn, stack.rpc)
            head = await node_head(stack.rpc)
            await read_until(leaving, has_block(int(head["number"], 16), head["hash"].lower()), gone)
        result = await asyncio.to_thread(stack.devnet.reorg, 3)
        await asyncio.to_thread(stack.devnet.activity, 4, 6.0)
        await wait_for_tip(stack.dsn, stack.rpc)
        head = await node_head(stack.rpc)
        top = int(head["number"], 16)
        await read_until(live, has_block(top, head["hash"].lower()), live_msgs)

        reorgs = [m for m in live_msgs if m.get("type") == "reorg"]
        assert len(reorgs) == 1
        ancestor = result.common_ancestor
        chain = await node_chain(stack.rpc, top)
        assert reorgs[0]["data"]["common_ancestor"] == {
            "number": ancestor,
            "hash": chain[ancestor]["hash"].lower(),
        }
        assert reorgs[0]["data"]["orphaned"] == [
            {"number": ancestor + 1 + i, "hash": h.lower()} for i, h in enumerate(result.old_hashes)
        ]
        at = live_msgs.index(reorgs[0])
        new_branch = [m["data"]["hash"] for m in live_msgs[at:] if m.get("type") == "block"]
        assert new_branch[: len(result.new_hashes)] == [h.lower() for h in result.new_hashes]
        before = {m["data"]["hash"] for m in live_msgs[:at] if m.get("type") == "block"}
        assert not before & {h.lower() for h in result.new_hashes}, "new branch sent before the reorg"
        canonical = {n: b["hash"].lower() for n, b in chain.items()}
        view = apply(live_msgs)
        assert view == {n: h for n, h in canonical.items() if n >= min(view)}

        # the client that left resumes from its last cursor
        last_cursor = [m for m in gone if "cursor" in m][-1]
        assert last_cursor["data"]["hash"] in {h.lower() for h in result.old_hashes}
        async with connect(stack.url) as back:
            await send(back, {"op": "subscribe", "channel": "blocks", "from": last_cursor["cursor"]})
            resumed: list[Msg] = []
            await read_until(back, has_block(top, head["hash"].lower()), resumed)
        first_data = next(m for m in resumed if "type" in m)
        assert first_data["type"] == "reorg"
        assert first_data["data"]["common_ancestor"]["number"] == ancestor
        assert apply(gone + resumed) == canonical

        # confirmed: up to tip - confirmations, canonical, never a reorg
        final = top - CONFIRMATIONS

        def finalized(ms: list[Msg]) -> bool:
            return any(m.get("type") == "finalized" and m["data"]["number"] >= final for m in ms)

        await read_until(confirmed, finalized, conf_msgs)
    assert not [m for m in conf_msgs if m.get("type") == "reorg" or m.get("event") == "error"]
    got = [(m["data"]["number"], m["data"]["hash"]) for m in data(conf_msgs, "blocks")]
    assert got == [(n, canonical[n]) for n in range(final + 1)]
    marks = [m["data"]["number"] for m in conf_msgs if m.get("type") == "finalized"]
    assert marks == sorted(set(marks))


async def test_bad_messages_get_error_events_and_the_connection_stays_usable(stack: Stack) -> None:
    bad_cursor_of_unknown_block = "MTIzOjB4" + "MDAw" * 21  # well-formed base64 of a malformed cursor
    cases: list[tuple[str, int]] = [
        ("{not json", 4000),
        ("[1, 2]", 4001),
        ('{"op": "dance"}', 4002),
        ('{"channel": "blocks"}', 4001),
        ('{"op": "subscribe", "channel": "mempool"}', 4003),
        ('{"op": "subscribe", "channel": "logs", "address": "0x12"}', 4004),
        ('{"op": "subscribe", "channel": "logs", "pool": "0x' + "ab" * 20 + '"}', 4004),
        ('{"op": "subscribe", "channel": "logs", "topic0": "0x' + "zz" * 32 + '"}', 4004),
        ('{"op": "subscribe", "channel": "blocks", "from": "garbage!"}', 4005),
        (f'{{"op": "subscribe", "channel": "blocks", "from": "{bad_cursor_of_unknown_block}"}}', 4005),
        ('{"op": "subscribe", "channel": "blocks", "from_block": -1}', 4005),
        ('{"op": "subscribe", "channel": "blocks", "from_block": 1e99}', 4005),
        ('{"op": "subscribe", "channel": "blocks", "finality": "soon"}', 4001),
        ('{"op": "unsubscribe", "id": "nope"}', 4006),
        ("x" * 20_000, 4013),
    ]
    async with connect(stack.url) as ws:
        for text, code in cases:
            await send(ws, text)
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["event"] == "error" and reply["code"] == code, (text[:60], reply)
            assert reply["message"]
        # a cursor of a block this node never had: well-formed, unknown
        unknown = Cursor(5, -1, 0, "0x" + "ab" * 32).encode()
        await send(ws, {"op": "subscribe", "channel": "blocks", "from": unknown, "id": "u"})
        msgs: list[Msg] = []
        await read_until(ws, lambda ms: any(m.get("event") == "error" for m in ms), msgs, timeout=10)
        assert msgs[-1]["code"] == 4040 and msgs[-1]["id"] == "u"
        await send(ws, {"op": "ping"})
        await read_until(ws, lambda ms: ms[-1].get("event") == "pong", msgs, timeout=10)
        # the subscription cap, then the connection still serves
        for i in range(20):
            await send(ws, {"op": "subscribe", "channel": "blocks", "id": f"s{i}"})
        await send(ws, {"op": "subscribe", "channel": "blocks", "id": "one-too-many"})
        await read_until(ws, lambda ms: any(m.get("id") == "one-too-many" for m in ms), msgs, timeout=10)
        assert [m["code"] for m in msgs if m.get("id") == "one-too-many"] == [4029]
        await send(ws, {"op": "unsubscribe", "id": "s0"})
        await read_until(ws, lambda ms: ms[-1] == {"event": "unsubscribed", "id": "s0"}, msgs, timeout=10)


async def raw_websocket(url: str, rcvbuf: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare websocket client (handshake by hand, no extensions) whose socket reads only when told:
    a client that stops reading, with a small receive window so the server's sends back up."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=raw, limit=1 << 24)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def client_frame(text: str) -> bytes:
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


async def test_a_slow_client_is_disconnected_with_a_reason_and_others_keep_up(stack: Stack) -> None:
    """A second API replica with a 2,000-message queue (more than one block's burst): a client that
    stops reading is closed with code 1008 and a reason once its socket and then its queue back up,
    after what was sent before it; a reading client on the same replica gets every block."""
    url, _ = await stack.serve(ws_queue_messages=2000)
    await wait_for_tip(stack.dsn, stack.rpc)
    reader, writer = await raw_websocket(url, 4096)
    for i in range(20):  # each log 19 times over: more than the kernel's socket buffers hold
        channel = "logs" if i < 19 else "blocks"
        writer.write(client_frame(f'{{"op":"subscribe","channel":"{channel}","id":{i}}}'))
    await writer.drain()
    async with connect(url) as fast:
        await send(fast, {"op": "subscribe", "channel": "blocks"})
        fast_msgs: list[Msg] = []
        await read_until(fast, lambda ms: any(m.get("event") == "live" for m in ms), fast_msgs)
        start = int((await node_head(stack.rpc))["number"], 16)
        await asyncio.to_thread(stack.devnet.activity, 20, 40.0)
        head = await node_head(stack.rpc)
        await read_until(fast, has_block(int(head["number"], 16), head["hash"].lower()), fast_msgs)
    numbers = [m["data"]["number"] for m in data(fast_msgs, "blocks")]
    assert numbers == list(range(start + 1, int(head["number"], 16) + 1))
    frames = 0
    while True:  # the slow client reads at last: what was sent, then the close frame
        opcode, payload = await asyncio.wait_for(read_frame(reader), 60)
        if opcode == 0x8:
            break
        if opcode == 0x9:  # uvicorn's keepalive ping
            continue
        assert opcode == 0x1
        frames += 1
    writer.close()
    code, reason = int.from_bytes(payload[:2], "big"), payload[2:].decode()
    assert code == 1008 and reason.startswith("slow consumer: more than 2000 messages unsent"), (
        code,
        reason,
        frames,
    )
    assert frames > 2000  # the socket took that much before the queue filled: slow, not one burst
