"""The Postgres writer as a state machine, on real Postgres with synthetic batches of every chain kind.

Transitions: a batch of new blocks is COPied straight in, a batch overlapping stored blocks goes through
staging, and a block another writer stores while the direct COPY runs makes the batch go again through
staging — in each case every row exactly once; a replayed batch changes nothing; a reorg batch deletes
every revertible row above the common ancestor (pools created there too, tokens kept), records the
reorg once however often it is written, and a later reorg back to the first branch is applied; a reorg
to a shorter branch moves the cursor back; a failure before COMMIT leaves the previous state. The
expectations are the synthetic records' own fields against plain SQL, not the writer's code."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from core.database import DatabaseInfo
from records import Block, DexLiquidity, DexTrade, Log, Pool, Record, Reorg, Token, TokenTransfer, Transaction
from records.batch import Batch
from sinks.postgres import PostgresSink
from tests.every_kind import BLOCK as TEMPLATE_BLOCK
from tests.every_kind import LIQUIDITY, LOG, POOL_RECORD, TOKENS, TRADE, TRANSACTION, TRANSFER

pytestmark = pytest.mark.integration

GENESIS = "0x" + "00" * 32
# table -> (record class, order); the columns compared are the table's own (information_schema)
TABLES: dict[str, tuple[type[Record], str]] = {
    "blocks": (Block, "number"),
    "transactions": (Transaction, "block_number, transaction_index"),
    "logs": (Log, "block_number, log_index"),
    "token_transfers": (TokenTransfer, "block_number, log_index, batch_index"),
    "tokens": (Token, "address"),
    "pools": (Pool, "address"),
    "dex_trades": (DexTrade, "block_number, log_index"),
    "dex_liquidity": (DexLiquidity, "block_number, log_index"),
}
SERVER_SET = {"updated_at"}  # columns the database fills, not the record


def block_hash(branch: str, number: int) -> str:
    return f"0x{branch * 2}{number:062x}"


def chain_block(number: int, branch: str) -> dict[type[Record], list[Record]]:
    """Block ``number`` of ``branch`` with one record of every block kind, a pool created in it included."""
    bh, parent = block_hash(branch, number), block_hash(branch, number - 1) if number > 1 else GENESIS
    tx_hash = f"0x{branch * 4}{number:060x}"
    pool = f"0x{branch * 2}{number:038x}"
    ts = 1_700_000_000 + number
    keys: dict[str, Any] = {"block_number": number, "block_hash": bh, "transaction_hash": tx_hash}
    return {
        Block: [
            dataclasses.replace(
                TEMPLATE_BLOCK, number=number, hash=bh, parent_hash=parent, timestamp=ts, withdrawals=None
            )
        ],
        Transaction: [
            dataclasses.replace(
                TRANSACTION,
                hash=tx_hash,
                block_number=number,
                block_hash=bh,
                block_timestamp=ts,
                authorization_list=None,
                value=number * 10**20,
            )
        ],
        Log: [dataclasses.replace(LOG, **keys, address=pool)],
        TokenTransfer: [dataclasses.replace(TRANSFER, **keys, value=number)],
        Pool: [
            dataclasses.replace(
                POOL_RECORD,
                address=pool,
                created_block_number=number,
                created_block_hash=bh,
                created_transaction_hash=tx_hash,
            )
        ],
        DexTrade: [
            dataclasses.replace(TRADE, **keys, block_time=ts, pool_address=pool, amount_sold_raw=number)
        ],
        DexLiquidity: [
            dataclasses.replace(LIQUIDITY, **keys, block_time=ts, pool_address=pool, amount0=Decimal(number))
        ],
    }


def batch(stream: str, numbers: Sequence[int], branch: str = "a", *, reorg: Reorg | None = None) -> Batch:
    parts: dict[type[Record], list[Record]] = {Token: list(TOKENS)}
    blocks: list[Block] = []
    for n in numbers:
        for cls, records in chain_block(n, branch).items():
            if cls is Block:
                blocks.extend(records)  # type: ignore[arg-type]
            else:
                parts.setdefault(cls, []).extend(records)
    return Batch(stream, blocks, parts, reorg=reorg)


def expected(chain: Sequence[tuple[int, str]]) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows for the blocks ``chain`` ((number, branch), ascending), as the records say."""
    tokens = sorted(TOKENS, key=lambda t: t.address)
    parts: dict[type[Record], list[Record]] = {Token: list(tokens)}
    for number, branch in chain:
        for cls, records in chain_block(number, branch).items():
            parts.setdefault(cls, []).extend(records)
    parts[Pool].sort(key=lambda p: p.address if isinstance(p, Pool) else "")
    return {
        table: [_as_stored(dataclasses.asdict(r)) for r in parts.get(cls, [])]
        for table, (cls, _) in TABLES.items()
    }


def _as_stored(value: Any) -> Any:
    """A record's fields as Postgres hands them back: arrays and JSONB lists come back as lists."""
    if isinstance(value, dict):
        return {k: _as_stored(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_as_stored(v) for v in value]
    return value


async def stored(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for table, (_, order) in TABLES.items():
        rows = await conn.fetch(f'SELECT * FROM "{table}" ORDER BY {order}')
        out[table] = [{k: v for k, v in r.items() if k not in SERVER_SET} for r in rows]
    return out


async def cursor(conn: asyncpg.Connection, stream: str) -> tuple[int, str] | None:
    row = await conn.fetchrow("SELECT block_number, block_hash FROM cursors WHERE stream = $1", stream)
    return None if row is None else (row["block_number"], row["block_hash"])


async def reorg_rows(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in await conn.fetch(
            "SELECT common_ancestor_number, common_ancestor_hash, depth, orphaned_hashes, new_hashes"
            " FROM reorgs ORDER BY id"
        )
    ]


@pytest.fixture
async def conn(clean_db: DatabaseInfo) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(clean_db.dsn)
    await c.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        yield c
    finally:
        await c.close()


def stored_meanwhile(caplog: pytest.LogCaptureFixture) -> int:
    return sum("stored meanwhile" in r.getMessage() for r in caplog.records)


async def test_new_blocks_then_an_overlapping_range_then_a_replay_store_every_row_once(
    sink: PostgresSink, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dexnode.sink.postgres")
    for n in (1, 2, 3):
        await sink.write(batch("follow", [n]))
    assert await stored(conn) == expected([(1, "a"), (2, "a"), (3, "a")])
    assert await cursor(conn, "follow") == (3, block_hash("a", 3))

    overlapping = batch("backfill", [2, 3, 4, 5])  # 2..3 stored: staging chosen up front, no conflict
    await sink.write(overlapping)
    want = expected([(n, "a") for n in range(1, 6)])
    assert await stored(conn) == want
    assert stored_meanwhile(caplog) == 0
    assert await cursor(conn, "backfill") == (5, block_hash("a", 5))
    assert await cursor(conn, "follow") == (3, block_hash("a", 3))  # each stream its own cursor

    await sink.write(overlapping)  # a replay
    await sink.write(batch("follow", [1]))
    assert await stored(conn) == want
    assert await cursor(conn, "follow") == (1, block_hash("a", 1))  # the cursor is the batch's tip
    assert await reorg_rows(conn) == []


async def test_a_block_another_writer_stores_during_the_direct_copy_is_written_again_through_staging(
    sink: PostgresSink, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dexnode.sink.postgres")
    other = batch("other", [1])
    block = other.blocks[0]
    columns = [f.name for f in dataclasses.fields(Block) if f.name != "withdrawals"]
    async with conn.transaction():  # the other writer, not committed yet: the sink's check sees nothing
        await conn.execute(
            f"INSERT INTO blocks ({', '.join(columns)})"
            f" VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
            *(getattr(block, c) for c in columns),
        )
        write = asyncio.create_task(sink.write(batch("follow", [1, 2])))
        for _ in range(200):  # until the sink's COPY waits on the other writer's row
            waiting = await sink.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if waiting or write.done():
                break
            await asyncio.sleep(0.05)
        assert waiting == 1, "the sink's direct COPY never waited on the other writer's block"
    await write
    assert stored_meanwhile(caplog) == 1
    assert await stored(conn) == expected([(1, "a"), (2, "a")])
    assert await cursor(conn, "follow") == (2, block_hash("a", 2))


async def test_a_reorg_is_applied_once_however_often_written_and_a_reorg_back_is_applied_again(
    sink: PostgresSink, conn: asyncpg.Connection
) -> None:
    await sink.write(batch("follow", [1, 2, 3, 4]))
    to_b = Reorg(
        2, block_hash("a", 2), 2, (block_hash("a", 3), block_hash("a", 4)),
        tuple(block_hash("b", n) for n in (3, 4, 5)), 1,
    )  # fmt: skip
    b_branch = batch("follow", [3, 4, 5], "b", reorg=to_b)
    # block 3 of branch b names a's block 2 as its parent
    blocks = [dataclasses.replace(b_branch.blocks[0], parent_hash=block_hash("a", 2)), *b_branch.blocks[1:]]
    b_branch = Batch("follow", blocks, b_branch.records, reorg=to_b)
    await sink.write(b_branch)
    want_b = expected([(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "b")])
    want_b["blocks"][2]["parent_hash"] = block_hash("a", 2)
    assert await stored(conn) == want_b  # a's pools created at 3 and 4 went with their blocks; tokens stay
    record_b = (2, block_hash("a", 2), 2, list(to_b.orphaned_hashes), list(to_b.new_hashes))
    assert await reorg_rows(conn) == [record_b]
    assert await cursor(conn, "follow") == (5, block_hash("b", 5))

    await sink.write(b_branch)  # the same batch again (its COMMIT's answer was lost): nothing changes
    assert await stored(conn) == want_b and await reorg_rows(conn) == [record_b]

    back = Reorg(2, block_hash("a", 2), 3, to_b.new_hashes, tuple(block_hash("a", n) for n in (3, 4)), 2)
    await sink.write(batch("follow", [3, 4], "a", reorg=back))  # back to branch a: not a replay
    assert await stored(conn) == expected([(n, "a") for n in range(1, 5)])
    record_a = (2, block_hash("a", 2), 3, list(back.orphaned_hashes), list(back.new_hashes))
    assert await reorg_rows(conn) == [record_b, record_a]
    assert await cursor(conn, "follow") == (4, block_hash("a", 4))


async def test_a_reorg_to_a_shorter_branch_moves_the_cursor_back_to_the_ancestor(
    sink: PostgresSink, conn: asyncpg.Connection
) -> None:
    await sink.write(batch("follow", [1, 2, 3]))
    shorter = Reorg(1, block_hash("a", 1), 2, (block_hash("a", 2), block_hash("a", 3)), (), 1)
    await sink.write(Batch("follow", [], reorg=shorter))
    assert await stored(conn) == expected([(1, "a")])
    assert await cursor(conn, "follow") == (1, block_hash("a", 1))
    assert await reorg_rows(conn) == [(1, block_hash("a", 1), 2, list(shorter.orphaned_hashes), [])]


async def test_a_failure_before_commit_leaves_the_previous_state_whole(
    sink: PostgresSink, conn: asyncpg.Connection
) -> None:
    await sink.write(batch("follow", [1, 2, 3]))
    before = await stored(conn)
    reorg = Reorg(
        1, block_hash("a", 1), 2, (block_hash("a", 2), block_hash("a", 3)), (block_hash("b", 2),), 1
    )
    blocks = batch("follow", [2], "b", reorg=reorg)
    blocks = Batch(
        "follow",
        [dataclasses.replace(blocks.blocks[0], parent_hash=block_hash("a", 1))],
        blocks.records,
        reorg=reorg,
    )

    async def fail() -> None:
        raise RuntimeError("a later sink failed")

    with pytest.raises(RuntimeError):
        await sink.write(blocks, before_commit=fail)
    assert await stored(conn) == before
    assert await cursor(conn, "follow") == (3, block_hash("a", 3))
    assert await reorg_rows(conn) == []
