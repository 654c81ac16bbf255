"""``dexnode serve --live-source kafka`` as a user runs it, beside a ``serve`` on ``NOTIFY``: the real
follower writes a devnet (anvil, real Uniswap contracts) to Postgres and to librdkafka's mock cluster
(its own process); each ``serve`` is its own ``dexnode`` process. A client of each, subscribed alike,
gets the same messages (blocks, DEX trades, the reorg, finalized watermarks) through a real reorg, and
those messages are checked against the node (its blocks, an eth-abi decode of its Swap logs). The Kafka
``serve`` is killed mid-run and started again: a client resuming from its cursors ends with exactly
the node's chain and trades."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from core.database import DatabaseInfo
from devnet import Devnet
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from sinks.kafka import KafkaOptions, kafka_composite
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.postgres import PostgresSink
from tests.chain_check import wait_for_tip
from tests.conftest import dexnode_bin, empty_tables, free_port
from tests.devnet_fixture import load_devnet
from tests.integration.test_api_ws import Msg, apply, has_block, node_chain, node_head, read_until, send
from tests.integration.test_dex_devnet import V2_SWAP, V3_SWAP, expected_trade, venues

pytestmark = pytest.mark.integration

CONFIRMATIONS = 3


@dataclass
class Run:
    devnet: Devnet
    dsn: str
    rpc: RpcClient
    kafka: KafkaDev
    prefix: str
    logs: Path


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


@pytest.fixture(scope="module")
async def run(
    migrated_db: DatabaseInfo,
    pytestconfig: pytest.Config,
    devnet_logs: Path,
    kafka: KafkaDev,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Run]:
    await empty_tables(migrated_db.dsn)
    devnet = await asyncio.to_thread(load_devnet, pytestconfig, devnet_logs)
    prefix = f"t{uuid.uuid4().hex[:8]}."
    postgres = await PostgresSink.connect(migrated_db.dsn)
    writer = kafka_composite(KafkaOptions(kafka.bootstrap, prefix, CONFIRMATIONS, {}), postgres)
    async with RpcClient(devnet.rpc_http) as rpc:
        v2, v3 = venues(devnet.manifest)
        follower = Follower(
            rpc, HeadStream(devnet.rpc_ws, rpc), start=[], from_block=0, confirmations=CONFIRMATIONS
        )
        enrich = DexEnricher(rpc, postgres.pool, registry_from(v2, v3))
        following = asyncio.create_task(consume(follower, writer, quiet=True, enrich=enrich))
        try:
            await wait_for_tip(migrated_db.dsn, rpc, timeout=300)
            yield Run(devnet, migrated_db.dsn, rpc, kafka, prefix, tmp_path_factory.mktemp("serve-logs"))
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            await writer.close()
            devnet.stop()


@contextlib.asynccontextmanager
async def serving(run: Run, live_source: str, *, bootstrap: str | None = None) -> AsyncIterator[Served]:
    served = Served(run, live_source, free_port(), bootstrap or run.kafka.bootstrap)
    await served.start()
    try:
        yield served
    finally:
        await served.stop(signal.SIGTERM)


class Served:
    """A ``dexnode serve`` process (stderr kept in the run's log folder)."""

    def __init__(self, run: Run, live_source: str, port: int, bootstrap: str) -> None:
        self.run, self.live_source, self.port, self.bootstrap = run, live_source, port, bootstrap
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.log = run.logs / "unstarted.log"

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEXNODE_")}
        env |= {"DEXNODE_CONFIRMATIONS": str(CONFIRMATIONS), "DEXNODE_WS_HEARTBEAT_SECONDS": "1"}
        self.starts += 1
        log = self.log = self.run.logs / f"{self.live_source}-{self.port}-{self.starts}.log"
        args = ["serve", "--port", str(self.port), "--live-source", self.live_source]
        args += ["--database-url", self.run.dsn, "--rpc-http", self.run.devnet.rpc_http]
        args += ["--kafka-bootstrap-servers", self.bootstrap]
        args += ["--kafka-topic-prefix", self.run.prefix]
        with log.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                dexnode_bin(), *args, env=env, stdout=err, stderr=err
            )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=5) as client:
            for _ in range(1200):
                assert self.proc.returncode is None, f"dexnode serve exited: {log.read_text()[-2000:]}"
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError("dexnode serve did not answer")

    async def stop(self, how: signal.Signals) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(how)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def live_blocks(self) -> dict[str, float]:
        """``dexnode_ws_live_blocks`` by ``via`` (kafka, postgres) from ``/metrics``."""
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as client:
            text = (await client.get("/metrics")).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("dexnode_ws_live_blocks{"):
                labels, value = line.rsplit(" ", 1)
                out[labels.split('via="')[1].split('"')[0]] = float(value)
        return out


SUBSCRIPTIONS = ("blocks", "dex_trades")


async def subscribe_all(ws: ClientConnection, start: dict[str, Any], into: list[Msg]) -> None:
    """Both channels from ``start`` (``from_block`` or ``from`` per channel), until both are live."""
    for channel in SUBSCRIPTIONS:
        await send(ws, {"op": "subscribe", "channel": channel, "id": channel, **start[channel]})
    await read_until(ws, lambda ms: sum(m.get("event") == "live" for m in ms) == len(SUBSCRIPTIONS), into)


def payloads(msgs: list[Msg], sid: str | None = None) -> list[Msg]:
    """The data messages (blocks, trades, reorgs, finalized) of one subscription, or of all."""
    return [m for m in msgs if "type" in m and sid in (None, m["id"])]


def brief(m: Msg) -> tuple[Any, ...]:
    """A message in a line (for a readable difference)."""
    data = m["data"]
    where = data.get("common_ancestor", {}).get("number", data.get("number", data.get("block_number")))
    return (m["id"], m["type"], where, data.get("hash", data.get("log_index")))


def finalized_at(number: int) -> Callable[[list[Msg]], bool]:
    """Until every subscription has had a finalized watermark at ``number`` or above."""
    return lambda ms: all(
        any(m.get("type") == "finalized" and m["id"] == sid and m["data"]["number"] >= number for m in ms)
        for sid in SUBSCRIPTIONS
    )


def canonical_trades(msgs: list[Msg]) -> list[tuple[Any, ...]]:
    """The client rule on the trades channel: a reorg drops every trade above its ancestor."""
    kept: list[Msg] = []
    for m in msgs:
        if m.get("id") != "dex_trades":
            continue
        if m.get("type") == "reorg":
            ancestor = m["data"]["common_ancestor"]["number"]
            kept = [t for t in kept if t["data"]["block_number"] <= ancestor]
        elif m.get("type") == "dex_trade":
            kept.append(m)
    return [_trade(m["data"]) for m in kept]


def _trade(got: Msg) -> tuple[Any, ...]:
    return (got["block_hash"], got["log_index"], got["exchange"], got["pool_address"], got["taker"],
            got["token_sold_address"], got["token_bought_address"], int(got["amount_sold_raw"]),
            int(got["amount_bought_raw"]))  # fmt: skip


async def node_trades(run: Run, first: int, last: int) -> list[tuple[Any, ...]]:
    """Every Swap of the devnet's v2/v3 pools in blocks ``first..last`` of the node's chain, decoded."""
    pools = {p["address"].lower(): p for p in run.devnet.manifest["pools"] if p["version"] in (2, 3)}
    logs = await run.rpc.call(
        "eth_getLogs", [{"fromBlock": hex(first), "toBlock": hex(last), "topics": [[V2_SWAP, V3_SWAP]]}]
    )
    return [expected_trade(lg, pools[lg["address"].lower()]) for lg in logs if lg["address"].lower() in pools]


async def follow_new_blocks(run: Run, ws: ClientConnection, got: list[Msg], blocks: int) -> tuple[int, int]:
    """Both channels from the next block; ``blocks`` mined; read until both have the head. Returns the
    first and the last block number."""
    start = int((await node_head(run.rpc))["number"], 16) + 1
    await subscribe_all(ws, {c: {"from_block": start} for c in SUBSCRIPTIONS}, got)
    return start, (await follow_more(run, ws, got, blocks))[1]


async def follow_more(run: Run, ws: ClientConnection, got: list[Msg], blocks: int) -> tuple[int, int]:
    """``blocks`` more mined; read until both subscriptions have the head (and its finality mark)."""
    await asyncio.to_thread(run.devnet.activity, blocks, 6.0)
    await wait_for_tip(run.dsn, run.rpc)
    head = await node_head(run.rpc)
    top = int(head["number"], 16)
    await read_until(ws, has_block(top, head["hash"].lower()), got)
    await read_until(ws, finalized_at(top - CONFIRMATIONS), got)
    return top - blocks + 1, top


async def mine_with_a_reorg(run: Run, before: int, depth: int, after: int) -> Any:
    await asyncio.to_thread(run.devnet.activity, before, 6.0)
    await wait_for_tip(run.dsn, run.rpc)
    result = await asyncio.to_thread(run.devnet.reorg, depth)
    await asyncio.to_thread(run.devnet.activity, after, 6.0)
    await wait_for_tip(run.dsn, run.rpc)
    return result


async def test_a_kafka_serve_sends_what_a_notify_serve_sends_through_a_reorg(run: Run) -> None:
    async with serving(run, "notify") as by_notify, serving(run, "kafka") as by_kafka:
        start = int((await node_head(run.rpc))["number"], 16) - 5
        from_block = {c: {"from_block": start} for c in SUBSCRIPTIONS}
        async with connect(by_notify.url) as a, connect(by_kafka.url) as b:
            got_a: list[Msg] = []
            got_b: list[Msg] = []
            await subscribe_all(a, from_block, got_a)
            await subscribe_all(b, from_block, got_b)
            before = await by_kafka.live_blocks()
            result = await mine_with_a_reorg(run, 4, 3, 4)
            head = await node_head(run.rpc)
            top = int(head["number"], 16)
            for ws, got in ((a, got_a), (b, got_b)):
                await read_until(ws, has_block(top, head["hash"].lower()), got)
                await read_until(ws, finalized_at(top - CONFIRMATIONS), got)
            after = await by_kafka.live_blocks()
    # per subscription (the hub's fan-out order across subscriptions is not an order either serve keeps)
    for sid in SUBSCRIPTIONS:
        mine, theirs = payloads(got_b, sid), payloads(got_a, sid)
        assert [brief(m) for m in mine] == [brief(m) for m in theirs]
        assert mine == theirs
    # and what they agree on is the node's chain
    reorgs = [m for m in got_b if m.get("type") == "reorg"]
    assert sorted(m["id"] for m in reorgs) == sorted(SUBSCRIPTIONS)
    reorgs.sort(key=lambda m: m["id"] != "blocks")
    chain = await node_chain(run.rpc, top)
    ancestor = result.common_ancestor
    assert reorgs[0]["data"] == {
        "common_ancestor": {"number": ancestor, "hash": chain[ancestor]["hash"].lower()},
        "orphaned": [
            {"number": ancestor + 1 + i, "hash": h.lower()} for i, h in enumerate(result.old_hashes)
        ],
        "new_head": reorgs[0]["data"]["new_head"],
    }
    assert (
        chain[reorgs[0]["data"]["new_head"]["number"]]["hash"].lower()
        == reorgs[0]["data"]["new_head"]["hash"]
    )
    at = got_b.index(reorgs[0])
    assert not {m["data"]["hash"] for m in got_b[:at] if m.get("type") == "block"} & {
        h.lower() for h in result.new_hashes
    }, "new branch sent before the reorg"
    blocks = [m for m in got_b if m.get("id") == "blocks"]
    assert apply(blocks) == {n: chain[n]["hash"].lower() for n in range(start, top + 1)}
    assert canonical_trades(got_b) == await node_trades(run, start, top)
    marks = [m["data"]["number"] for m in got_b if m.get("type") == "finalized" and m["id"] == "blocks"]
    assert marks == sorted(set(marks)) and marks[-1] == top - CONFIRMATIONS
    # the Kafka serve's live blocks came from Kafka, not from Postgres
    from_kafka = after["kafka"] - before.get("kafka", 0)
    from_postgres = after["postgres"] - before.get("postgres", 0)
    mined = 4 + len(result.new_hashes) + 4
    assert from_kafka >= mined - 1 and from_postgres <= 1, (after, before, mined)


async def test_a_kafka_serve_killed_and_started_again_a_client_resumes_to_the_canonical_chain(
    run: Run,
) -> None:
    async with serving(run, "kafka") as served:
        got: list[Msg] = []
        async with connect(served.url) as ws:
            start, _ = await follow_new_blocks(run, ws, got, 4)
        await served.stop(signal.SIGKILL)
        # while it is down: a reorg of what the client holds, and more blocks
        result = await asyncio.to_thread(run.devnet.reorg, 2)
        await asyncio.to_thread(run.devnet.activity, 2, 6.0)
        await served.start()
        cursors = {c: {"from": [m for m in got if m.get("id") == c and "cursor" in m][-1]["cursor"]}
                   for c in SUBSCRIPTIONS}  # fmt: skip
        async with connect(served.url) as ws:
            resumed: list[Msg] = []
            await subscribe_all(ws, cursors, resumed)
            # and live on the restarted serve: blocks, then a reorg it hears of from Kafka
            before = await served.live_blocks()
            later = await mine_with_a_reorg(run, 3, 2, 3)
            head = await node_head(run.rpc)
            top = int(head["number"], 16)
            await read_until(ws, has_block(top, head["hash"].lower()), resumed)
            await read_until(ws, finalized_at(top - CONFIRMATIONS), resumed)  # the trades of ``top`` too
            after = await served.live_blocks()
    resumed_blocks = [m for m in payloads(resumed) if m["id"] == "blocks"]
    assert resumed_blocks[0]["type"] == "reorg", "the orphaned blocks the client held were not undone"
    assert resumed_blocks[0]["data"]["common_ancestor"]["number"] == result.common_ancestor
    assert [m["data"]["common_ancestor"]["number"] for m in resumed_blocks if m["type"] == "reorg"] == [
        result.common_ancestor,
        later.common_ancestor,
    ]
    chain = await node_chain(run.rpc, top)
    every = got + resumed
    assert apply([m for m in every if m.get("id") == "blocks"]) == {
        n: chain[n]["hash"].lower() for n in range(start, top + 1)
    }
    assert canonical_trades(every) == await node_trades(run, start, top)
    # after the restart, live blocks came from Kafka (the ones mined while it was down: from Postgres)
    mined = 3 + len(later.new_hashes) + 3
    assert after["kafka"] - before["kafka"] >= mined - 1, (before, after)


async def assert_got_the_chain(run: Run, got: list[Msg], start: int, top: int) -> None:
    """The client got every block from ``start`` to ``top`` of the node's chain once, in order, and
    exactly the node's trades in them."""
    chain = await node_chain(run.rpc, top)
    blocks = [
        (m["data"]["number"], m["data"]["hash"]) for m in payloads(got, "blocks") if m["type"] == "block"
    ]
    assert blocks == [(n, chain[n]["hash"].lower()) for n in range(start, top + 1)]
    assert canonical_trades(got) == await node_trades(run, start, top)


async def test_a_kafka_serve_that_cannot_reach_its_broker_keeps_its_clients_live_from_postgres(
    run: Run,
) -> None:
    """The broker address answers nothing (a closed port): ``serve`` starts, logs and retries, and its
    clients still get every block and trade, once each, read from Postgres."""
    async with serving(run, "kafka", bootstrap=f"127.0.0.1:{free_port()}") as served:
        got: list[Msg] = []
        async with connect(served.url) as ws:
            start, top = await follow_new_blocks(run, ws, got, 3)
            live = await served.live_blocks()
        assert served.proc is not None and served.proc.returncode is None, "serve died"
    await assert_got_the_chain(run, got, start, top)
    assert live == {"kafka": 0.0, "postgres": float(top - start + 1)}
    assert "live events from Kafka:" in served.log.read_text()


async def test_a_kafka_serve_goes_on_from_its_offsets_after_the_broker_stopped_answering(run: Run) -> None:
    """The broker frozen (SIGSTOP) for longer than the consumer's metadata timeout while blocks are mined:
    ``serve`` survives, rebuilds its consumer at the offsets it had read to, and its client gets every
    block and trade once; what came after the thaw came from Kafka."""
    async with serving(run, "kafka") as served:
        got: list[Msg] = []
        async with connect(served.url) as ws:
            start, _ = await follow_new_blocks(run, ws, got, 1)
            run.kafka.pause()
            try:
                await asyncio.to_thread(run.devnet.activity, 2, 6.0)
                await asyncio.sleep(15)
            finally:
                run.kafka.resume()
            before = await served.live_blocks()
            # the rebuilt consumer may take a while to reconnect (Postgres fills in meanwhile): blocks
            # are mined until 3 came from Kafka, 5 rounds at most
            for _ in range(5):
                _, top = await follow_more(run, ws, got, 3)
                after = await served.live_blocks()
                if after["kafka"] - before["kafka"] >= 3:
                    break
        assert served.proc is not None and served.proc.returncode is None, "serve died"
    await assert_got_the_chain(run, got, start, top)
    assert after["kafka"] - before["kafka"] >= 3, (before, after)
    assert "live events from Kafka:" in served.log.read_text()
