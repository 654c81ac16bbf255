"""Test helpers for Kafka: a log-emitting contract on a bare anvil, and Kafka compared with Postgres.

``assert_kafka_is_postgres`` is the check a user would make: every ``head.*`` topic, read from the
beginning with the reverts applied, holds exactly the records Postgres holds (record for record,
every field); every ``confirmed.*`` topic holds exactly Postgres's blocks up to ``tip - confirmations``,
and not one message from a block that is not canonical. It shares no code with the Kafka sinks: a bare
consumer, the documented consumer rule and keys written here, Postgres rows read with plain SQL.
(``read_all`` and ``net_records`` read through dexnode's own reader, for tests of that reader.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from indexer.chain.rpc import RpcClient
from records import DexTrade, from_dict
from sinks.kafka_confirmed import CONFIRMED_CURSOR
from sinks.kafka_read import Received, read_topic
from sinks.merged_trades import dex_trade
from tests.chain_check import DEV0


async def wait_for_confirmed(dsn: str, number: int, timeout: float = 60) -> None:
    """Until the confirmed publisher's cursor reached ``number``: its Finalize event is handled after
    the block's write, so a test that stops the follower as soon as the tip is stored can stop it before
    ``confirmed.*`` caught up."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(dsn)
    try:
        query = "SELECT block_number FROM cursors WHERE stream = $1"
        while (await conn.fetchval(query, CONFIRMED_CURSOR) or -1) < number:
            assert time.monotonic() < deadline, f"confirmed.* never reached block {number}"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


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


def assert_merged_trades_are(bootstrap: str, topic: str, want: Iterable[DexTrade]) -> int:
    """The merged ``trades`` topic holds ``sinks.merged_trades.dex_trade`` of exactly ``want`` (the
    canonical confirmed trades, from the caller's own source), each once, keyed by pool address with its
    block's hash in the header: no other trade (none orphaned), no repeat. Returns how many."""

    def canonical(doc: Any) -> bytes:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    got = Counter((m.key, m.block_hash, canonical(m.doc)) for m in read_all(bootstrap, topic))
    expected = Counter((t.pool_address, t.block_hash, canonical(dex_trade(t))) for t in want)
    assert got == expected, (
        f"{topic}: {sum((got - expected).values())} unexpected, {sum((expected - got).values())} missing"
    )
    return sum(got.values())


async def assert_blocks_and_transactions_on_both_flavours(
    config: dict[str, Any], prefix: str, want_blocks: dict[str, str], want_txs: dict[str, str]
) -> None:
    """``confirmed.*`` and ``head.*`` hold exactly the node's blocks (key = number, header = its hash) and
    transactions (key = hash, header = their block's hash), each value naming the same block."""

    def read(topic: str) -> list[Received]:
        return list(read_topic(config, prefix + topic, idle_timeout=20))

    for flavour in ("confirmed", "head"):
        got_blocks = await asyncio.to_thread(read, f"{flavour}.blocks")
        assert {m.key: m.block_hash for m in got_blocks} == want_blocks
        assert all(m.doc["data"]["hash"] == m.block_hash for m in got_blocks)
        got_txs = await asyncio.to_thread(read, f"{flavour}.transactions")
        assert {m.key: m.block_hash for m in got_txs} == want_txs
        assert all(m.doc["data"]["block_hash"] == m.block_hash for m in got_txs)


def net_records(messages: list[Received]) -> dict[str, object]:
    """Key -> record held after docs/kafka.md's consumer rule (written here, not dexnode's ``NetState``)."""
    held, _ = _held([RawMessage(m.key, m.doc, m.block_hash) for m in messages])
    return {key: from_dict(m.doc) for key, m in held.items()}


# -- the oracle: Kafka against Postgres, sharing no code with the Kafka sinks ----------------------------
#
# Messages are read with a bare confluent-kafka consumer; the consumer rule (docs/kafka.md: the latest
# record per key, a revert drops the key when the held record has the revert's block hash) is applied
# here; expected records are Postgres rows read with plain SQL and keyed by the documented keys.

# kind -> (table, SQL expression of the documented message key, the block column or None)
_KINDS: dict[str, tuple[str, str, str | None]] = {
    "blocks": ("blocks", "number::text", "number"),
    "transactions": ("transactions", "hash", "block_number"),
    "logs": ("logs", "block_hash || ':' || log_index", "block_number"),
    "token_transfers": (
        "token_transfers", "block_hash || ':' || log_index || ':' || batch_index", "block_number",
    ),
    "tokens": ("tokens", "address", None),
    "pools": ("pools", "address", "created_block_number"),
    "dex_trades": ("dex_trades", "block_hash || ':' || log_index", "block_number"),
    "dex_liquidity": ("dex_liquidity", "block_hash || ':' || log_index", "block_number"),
}  # fmt: skip
_SERVER_SET = {"updated_at", "id", "detected_at"}  # columns the database fills, not the record
# records of a confirmed block name pools and tokens: (kind, field) -> the kind named
_NAMES = {
    ("token_transfers", "token_address"): "tokens",
    ("pools", "token0"): "tokens",
    ("pools", "token1"): "tokens",
    ("dex_trades", "pool_address"): "pools",
    ("dex_trades", "token_bought_address"): "tokens",
    ("dex_trades", "token_sold_address"): "tokens",
    ("dex_liquidity", "pool_address"): "pools",
    ("dex_liquidity", "token0"): "tokens",
    ("dex_liquidity", "token1"): "tokens",
}


@dataclass(frozen=True)
class RawMessage:
    key: str
    doc: dict[str, Any]
    block_hash: str | None  # the header


def raw_messages(bootstrap: str, topic: str) -> list[RawMessage]:
    """Every message of ``topic``, partition by partition from the first offset to the high watermark."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"oracle-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=20).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        out: list[RawMessage] = []
        for partition in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=20)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            offset = low
            deadline = time.monotonic() + 60
            while offset < high:
                assert time.monotonic() < deadline, (
                    f"{topic}[{partition}]: stuck at offset {offset} of {high}"
                )
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                headers = dict(msg.headers() or [])
                block_hash = headers.get("block_hash")
                out.append(
                    RawMessage(
                        (msg.key() or b"").decode(),
                        orjson.loads(msg.value() or b"null"),
                        block_hash.decode() if isinstance(block_hash, bytes) else block_hash,
                    )
                )
                offset = (msg.offset() or 0) + 1
        return out
    finally:
        consumer.close()


def _held(messages: list[RawMessage]) -> tuple[dict[str, RawMessage], int]:
    """docs/kafka.md's consumer rule: the latest record per key; a revert drops the key when the record
    held has the revert's block hash. → the messages held at the end, and how many reverts applied."""
    held: dict[str, RawMessage] = {}
    reverted = 0
    for m in messages:
        if m.doc["type"] == "revert":
            current = held.get(m.key)
            if current is not None and current.block_hash == m.doc["data"]["block_hash"]:
                del held[m.key]
                reverted += 1
        else:
            held[m.key] = m
    return held, reverted


def consumer_rule(messages: list[RawMessage]) -> tuple[dict[str, dict[str, Any]], int]:
    """Key -> the ``data`` of the record held after the consumer rule, and how many reverts applied."""
    held, reverted = _held(messages)
    return {k: m.doc["data"] for k, m in held.items()}, reverted


def _same(stored: Any, sent: Any) -> bool:
    """A Postgres value and its JSON form: big integers and exact decimals travel as decimal strings."""
    if isinstance(stored, Decimal):
        return isinstance(sent, (str, int)) and not isinstance(sent, bool) and Decimal(str(sent)) == stored
    if isinstance(stored, str) and isinstance(sent, (list, dict)):  # a JSONB column
        return bool(json.loads(stored) == sent)
    return type(stored) is type(sent) and bool(stored == sent)


def assert_record_is_row(where: str, row: dict[str, Any], sent: dict[str, Any]) -> None:
    columns = {c for c in row if c not in _SERVER_SET}
    assert set(sent) == columns, f"{where}: fields {sorted(set(sent) ^ columns)} differ from the table's"
    wrong = {c: (row[c], sent[c]) for c in columns if not _same(row[c], sent[c])}
    assert not wrong, f"{where}: (Postgres, Kafka) differ: {wrong}"


async def _rows(
    conn: asyncpg.Connection, kind: str, *, up_to: int | None = None
) -> dict[str, dict[str, Any]]:
    table, key, block = _KINDS[kind]
    where = "" if up_to is None or block is None else f' WHERE "{block}" <= {int(up_to)}'
    rows = await conn.fetch(f'SELECT {key} AS _key, * FROM "{table}"{where}')
    return {r["_key"]: {c: v for c, v in r.items() if c != "_key"} for r in rows}


async def assert_kafka_is_postgres(
    bootstrap: str, prefix: str, dsn: str, *, confirmations: int
) -> dict[str, int]:
    """Every ``head.*`` topic, with the consumer rule applied, holds exactly Postgres's rows (tokens: a
    subset, since Postgres never deletes one); every ``confirmed.*`` topic holds exactly the records of
    Postgres's blocks up to ``tip - confirmations`` (pools and tokens: the ones those records name, and
    none created above), no revert and no record of a block that is not canonical; every reorg Postgres
    recorded is on ``head.reorgs``. Returns counts of what was compared."""
    conn = await asyncpg.connect(dsn)
    try:
        tip = await conn.fetchval("SELECT max(number) FROM blocks")
        assert tip is not None, "nothing in Postgres"
        confirmed_tip = tip - confirmations
        canonical = {r["hash"] for r in await conn.fetch("SELECT hash FROM blocks")}
        stored = {kind: await _rows(conn, kind) for kind in _KINDS}
        stored_confirmed = {kind: await _rows(conn, kind, up_to=confirmed_tip) for kind in _KINDS}
        reorg_rows = await conn.fetch(
            "SELECT common_ancestor_number, common_ancestor_hash, depth, orphaned_hashes, new_hashes"
            " FROM reorgs ORDER BY id"
        )
    finally:
        await conn.close()

    counts = {"records": 0, "reverts": 0, "confirmed": 0}
    for kind in _KINDS:
        topic = f"{prefix}head.{kind}"
        got, reverted = consumer_rule(raw_messages(bootstrap, topic))
        counts["reverts"] += reverted
        want = stored[kind]
        if kind == "tokens":
            assert set(got) <= set(want), (
                f"{topic}: tokens Postgres does not hold: {sorted(set(got) - set(want))}"
            )
        else:
            assert set(got) == set(want), (
                f"{topic}: keys only on Kafka {sorted(set(got) - set(want))[:5]},"
                f" only in Postgres {sorted(set(want) - set(got))[:5]}"
            )
        for key, data in got.items():
            assert_record_is_row(f"{topic} {key}", want[key], data)
        counts["records"] += len(got)

    named: dict[str, set[str]] = {"pools": set(), "tokens": set()}
    for kind in ("token_transfers", "pools", "dex_trades", "dex_liquidity"):
        for row in stored_confirmed[kind].values():
            if kind == "pools" and row["created_block_number"] is None:
                continue  # a pool no block created is confirmed with the records that name it
            for (source, field), target in _NAMES.items():
                if source == kind:
                    named[target].add(row[field])
    for kind in _KINDS:
        topic = f"{prefix}confirmed.{kind}"
        messages = raw_messages(bootstrap, topic)
        assert not any(m.doc["type"] == "revert" for m in messages), f"{topic} carries a revert"
        if kind not in ("pools", "tokens"):
            assert all(m.block_hash in canonical for m in messages), f"{topic}: a record of an orphaned block"
        got, _ = consumer_rule(messages)
        if kind in ("pools", "tokens"):
            wanted = named[kind] & set(stored[kind])  # a transfer's token is read only if a pool trades it
            assert wanted <= set(got), f"{topic}: misses {sorted(wanted - set(got))[:5]}"
            assert set(got) <= set(stored[kind]), (
                f"{topic}: not in Postgres: {sorted(set(got) - set(stored[kind]))}"
            )
            created_above = [
                k for k in got if (stored[kind][k].get("created_block_number") or -1) > confirmed_tip
            ]
            assert not created_above, f"{topic}: pools created above the confirmed tip: {created_above}"
            want = {k: stored[kind][k] for k in got}
        else:
            want = stored_confirmed[kind]
            assert set(got) == set(want), (
                f"{topic}: keys only on Kafka {sorted(set(got) - set(want))[:5]},"
                f" only in Postgres {sorted(set(want) - set(got))[:5]}"
            )
        for key, data in got.items():
            assert_record_is_row(f"{topic} {key}", want[key], data)
        counts["confirmed"] += len(got)

    sent = [
        m.doc["data"] for m in raw_messages(bootstrap, f"{prefix}head.reorgs") if m.doc["type"] == "reorg"
    ]
    seen = {(d["common_ancestor_hash"], tuple(d["orphaned_hashes"]), tuple(d["new_hashes"])) for d in sent}
    for row in reorg_rows:
        reorg = (row["common_ancestor_hash"], tuple(row["orphaned_hashes"]), tuple(row["new_hashes"]))
        assert reorg in seen, f"reorg {reorg} in Postgres but not on {prefix}head.reorgs"
    return counts
