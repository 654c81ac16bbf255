"""Test helpers for Kafka: a log-emitting contract on a bare anvil, and Kafka compared with Postgres.

``assert_kafka_is_postgres`` is the check a user would make: every ``head.*`` topic, read from the
beginning with the reverts applied, holds exactly the records Postgres holds (record for record,
every field); every ``confirmed.*`` topic holds exactly Postgres's blocks up to ``tip - confirmations``,
and not one message from a block that is not canonical.
"""

from __future__ import annotations

import logging

import asyncpg

from indexer.chain.rpc import RpcClient
from records import Reorg, from_dict
from records.kinds import BATCH_KINDS
from sinks.kafka_keys import CONFIRMED, HEAD, REORGS, Topics, message_key
from sinks.kafka_read import NetState, Received, read_topic
from sinks.postgres_read import StoredChain
from tests.chain_check import DEV0

TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
# runtime: mem[0] = calldata[0:32]; LOG3(0, 32, Transfer, caller, calldata[32:64]); STOP
_RUNTIME = "600035600052602035337f" + TRANSFER_TOPIC + "60206000a300"


def _init_code(runtime: str) -> str:
    size = len(runtime) // 2
    # PUSH1 size DUP1 PUSH1 11 PUSH1 0 CODECOPY PUSH1 0 RETURN  (11 bytes), then the runtime
    return f"60{size:02x}80600b6000396000f3" + runtime


async def deploy_transfer_emitter(rpc: RpcClient) -> str:
    """A contract that emits an ERC-20 ``Transfer(caller, to, value)`` for calldata ``value ‖ to``."""
    tx = await rpc.call("eth_sendTransaction", [{"from": DEV0, "data": "0x" + _init_code(_RUNTIME)}])
    await rpc.call("anvil_mine", ["0x1"])
    receipt = await rpc.call("eth_getTransactionReceipt", [tx])
    return str(receipt["contractAddress"]).lower()


async def send_token_transfers(rpc: RpcClient, emitter: str, count: int, *, salt: int = 0) -> None:
    calls = []
    for i in range(count):
        value = 10**18 + salt * 1000 + i
        to = f"{(salt * 7919 + i + 1):040x}"
        data = "0x" + f"{value:064x}" + to.rjust(64, "0")
        calls.append(("eth_sendTransaction", [{"from": DEV0, "to": emitter, "data": data, "gas": "0x10000"}]))
    await rpc.batch(calls)


def read_all(bootstrap: str, topic: str) -> list[Received]:
    """Every message of ``topic`` from the beginning to its current end ([] when it does not exist)."""
    from core.errors import FatalError

    try:
        config = {"bootstrap.servers": bootstrap, "logger": logging.getLogger("tests.kafka")}
        return list(read_topic(config, topic, idle_timeout=20))
    except FatalError as exc:
        if "no topic" in str(exc):
            return []
        raise


def net_records(messages: list[Received]) -> dict[str, object]:
    state = NetState()
    for m in messages:
        state.apply(m)
    return {m.key: from_dict(m.doc) for m in state.ordered()}


async def assert_kafka_is_postgres(
    bootstrap: str, prefix: str, dsn: str, *, confirmations: int
) -> dict[str, int]:
    """Compare every topic with Postgres; returns counts of what was compared (records, reverts)."""
    topics = Topics(prefix)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        stored = StoredChain(pool)
        span = await stored.block_range()
        assert span is not None, "nothing in Postgres"
        everything = await stored.batch_between(span[0], span[1])
        confirmed = await stored.batch_between(span[0], span[1] - confirmations)
        canonical = {r["hash"] for r in await pool.fetch("SELECT hash FROM blocks")}
        reorg_rows = await pool.fetch(
            "SELECT common_ancestor_hash, orphaned_hashes, new_hashes FROM reorgs ORDER BY id"
        )
    finally:
        await pool.close()
    counts = {"records": 0, "reverts": 0, "confirmed": 0}
    for record_kind in BATCH_KINDS:
        kind = record_kind.name
        head_messages = read_all(bootstrap, topics.of(HEAD, kind))
        counts["reverts"] += sum(m.is_revert for m in head_messages)
        want = {message_key(r): r for r in everything.of(record_kind.record)}
        got = net_records(head_messages)
        if kind == "tokens":  # never deleted by Postgres, so never reverted: Kafka may not hold old ones
            want = {k: v for k, v in want.items() if k in got}
        assert got == want, f"{topics.of(HEAD, kind)} after reverts differs from Postgres"
        counts["records"] += len(want)

        confirmed_messages = read_all(bootstrap, topics.of(CONFIRMED, kind))
        assert not any(m.is_revert for m in confirmed_messages)
        assert all(
            m.block_hash in canonical for m in confirmed_messages if kind not in ("pools", "tokens")
        ), f"{topics.of(CONFIRMED, kind)} holds a record of an orphaned block"
        want_confirmed = {message_key(r): r for r in confirmed.of(record_kind.record)}
        assert net_records(confirmed_messages) == want_confirmed, f"{topics.of(CONFIRMED, kind)} differs"
        counts["confirmed"] += len(want_confirmed)
    reorgs = [from_dict(m.doc) for m in read_all(bootstrap, topics.of(HEAD, REORGS)) if not m.is_revert]
    seen = {(r.common_ancestor_hash, r.orphaned_hashes, r.new_hashes) for r in reorgs if isinstance(r, Reorg)}
    for row in reorg_rows:
        key = (row["common_ancestor_hash"], tuple(row["orphaned_hashes"]), tuple(row["new_hashes"]))
        assert key in seen, f"reorg {key} in Postgres but not on {topics.of(HEAD, REORGS)}"
    return counts
