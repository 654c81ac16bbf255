"""The Postgres sink on a real database: every field survives the round trip, replays are idempotent,
a reorg batch rolls back the orphaned blocks and writes the new branch in one transaction."""

from __future__ import annotations

import dataclasses
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args, get_type_hints

import asyncpg
import orjson
import pytest

from indexer.chain.extract import ExtractedBlock, extract_block, extract_receipts_only
from indexer.pipeline.pipeline import batch_of
from records import Block, Log, Record, Reorg, TokenTransfer, Transaction, Withdrawal
from sinks.postgres import PostgresSink

pytestmark = pytest.mark.integration


def _unwrap(hint: Any) -> Any:
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint


def record_from_row(cls: type[Record], row: asyncpg.Record) -> Record:
    """Rebuild a record from a stored row, independently of the sink's own conversion code."""
    hints = get_type_hints(cls, include_extras=True)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = row[f.name]
        base = _unwrap(hints[f.name])
        if isinstance(value, Decimal) and (typing.get_origin(base) is typing.Annotated or base is int):
            value = int(value)
        elif isinstance(value, list):
            value = tuple(value)
        elif f.name == "withdrawals" and value is not None:
            value = tuple(Withdrawal(**{**w, "amount": int(w["amount"])}) for w in orjson.loads(value))
        values[f.name] = value
    return cls(**values)


async def _fetch(conn: asyncpg.Connection, table: str, cls: type[Record], order: str) -> list[Record]:
    rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")
    return [record_from_row(cls, r) for r in rows]


def _real_blocks(fixtures: Path) -> list[ExtractedBlock]:
    helios = fixtures / "mainnet-block-21925176-helios"
    header = orjson.loads((helios / "block.json").read_bytes())
    receipts = orjson.loads((helios / "receipts.json").read_bytes())
    out = [extract_receipts_only(header, receipts)]
    stream = fixtures / "ethereum-etl" / "test_stream" / "blocks_1755634_1755635"
    for number in ("0x1ac9f2", "0x1ac9f3"):
        block = orjson.loads((stream / f"web3_response.eth_getBlockByNumber_{number}_true.json").read_bytes())
        block = block["result"]
        rcpts = [
            orjson.loads(
                (stream / f"web3_response.eth_getTransactionReceipt_{tx['hash']}.json").read_bytes()
            )["result"]
            for tx in block["transactions"]
        ]
        out.append(extract_block(block, rcpts))
    return out


async def test_real_blocks_round_trip_field_for_field(sink: PostgresSink, fixtures_dir: Path) -> None:
    blocks = _real_blocks(fixtures_dir)
    assert sum(len(b.logs) for b in blocks) >= 463 and sum(len(b.token_transfers) for b in blocks) > 50
    for b in blocks:
        await sink.write(batch_of("test", [b]))
    await sink.write(batch_of("test", blocks))  # a replay of everything writes nothing twice
    async with sink.pool.acquire() as conn:
        assert await _fetch(conn, "blocks", Block, "number") == sorted(
            (b.block for b in blocks), key=lambda b: b.number
        )
        want_txs = sorted((t for b in blocks for t in b.transactions), key=lambda t: (t.block_number, t.hash))
        assert await _fetch(conn, "transactions", Transaction, "block_number, hash") == want_txs
        want_logs = sorted((lg for b in blocks for lg in b.logs), key=lambda x: (x.block_number, x.log_index))
        assert await _fetch(conn, "logs", Log, "block_number, log_index") == want_logs
        want_tt = sorted(
            (t for b in blocks for t in b.token_transfers),
            key=lambda t: (t.block_number, t.log_index, t.batch_index),
        )
        got_tt = await _fetch(conn, "token_transfers", TokenTransfer, "block_number, log_index, batch_index")
        assert got_tt == want_tt
        cursor = await conn.fetchrow("SELECT block_number, block_hash FROM cursors WHERE stream = 'test'")
        assert (cursor["block_number"], cursor["block_hash"]) == (
            blocks[-1].block.number,
            blocks[-1].block.hash,
        )


def _fake_block(number: int, branch: str, parent: str) -> ExtractedBlock:
    h = f"0x{branch * 2}{number:062x}"
    block = Block(
        number=number, hash=h, parent_hash=parent, nonce=None, sha3_uncles=None, logs_bloom=None,
        transactions_root=None, state_root=None, receipts_root=None, miner=None, difficulty=0,
        total_difficulty=None, extra_data=None, size=None, gas_limit=30_000_000, gas_used=21000,
        base_fee_per_gas=7, timestamp=1_700_000_000 + number, transaction_count=1,
    )  # fmt: skip
    tx = Transaction(
        hash=f"0x{branch * 4}{number:060x}", block_number=number, block_hash=h,
        block_timestamp=block.timestamp, transaction_index=0, nonce=number, from_address="0x" + "11" * 20,
        to_address="0x" + "22" * 20,
        value=2**255, gas=21000, gas_price=7, input="0x", max_fee_per_gas=None, max_priority_fee_per_gas=None,
        max_fee_per_blob_gas=None, blob_versioned_hashes=None, type=0, status=1, root=None, gas_used=21000,
        cumulative_gas_used=21000, effective_gas_price=7, contract_address=None,
    )  # fmt: skip
    lg = Log(
        block_number=number, block_hash=h, transaction_hash=tx.hash, transaction_index=0, log_index=0,
        address="0x" + "33" * 20, data="0x", topic0="0x" + "44" * 32, topic1=None, topic2=None, topic3=None,
    )  # fmt: skip
    return ExtractedBlock(block, (tx,), (lg,), (), 0)


def _chain(branch: str, start: int, end: int, parent: str) -> list[ExtractedBlock]:
    out = []
    for n in range(start, end + 1):
        b = _fake_block(n, branch, parent)
        out.append(b)
        parent = b.block.hash
    return out


async def test_reorg_batch_replaces_the_orphaned_blocks_atomically(sink: PostgresSink) -> None:
    main = _chain("a", 1, 5, "0x" + "00" * 32)
    for b in main:
        await sink.write(batch_of("follow", [b]))
    new = _chain("b", 4, 6, main[2].block.hash)  # blocks 4.. replaced, chain grows to 6
    reorg = Reorg(
        common_ancestor_number=3, common_ancestor_hash=main[2].block.hash, depth=2,
        orphaned_hashes=(main[3].block.hash, main[4].block.hash), new_hashes=tuple(b.block.hash for b in new),
        detected_at=1,
    )  # fmt: skip
    await sink.write(batch_of("follow", new, reorg))
    async with sink.pool.acquire() as conn:
        hashes = [r["hash"] for r in await conn.fetch("SELECT hash FROM blocks ORDER BY number")]
        assert hashes == [b.block.hash for b in main[:3] + new]
        for table in ("transactions", "logs"):
            got = {r["block_hash"] for r in await conn.fetch(f"SELECT DISTINCT block_hash FROM {table}")}
            assert got == set(hashes), table
        row = await conn.fetchrow("SELECT * FROM reorgs")
        assert row["depth"] == 2 and row["common_ancestor_number"] == 3
        assert row["orphaned_hashes"] == list(reorg.orphaned_hashes)
        assert row["new_hashes"] == list(reorg.new_hashes)
        assert (await sink.cursor("follow")).hash == new[-1].block.hash  # type: ignore[union-attr]


async def test_a_failing_batch_leaves_nothing_behind(sink: PostgresSink) -> None:
    good = _chain("a", 1, 2, "0x" + "00" * 32)
    await sink.write(batch_of("follow", good))
    # a second block at height 2 without a reorg is refused (unique number): nothing of it stays
    bad = _chain("c", 2, 3, good[0].block.hash)
    with pytest.raises(asyncpg.UniqueViolationError):
        await sink.write(batch_of("follow", bad))
    async with sink.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM blocks") == 2
        assert await conn.fetchval("SELECT count(*) FROM transactions") == 2
        assert (await sink.cursor("follow")).number == 2  # type: ignore[union-attr]


async def test_staging_tables_stay_small(sink: PostgresSink, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows move out of staging with DELETE ... RETURNING; the dead tuples are truncated away now and then."""
    import sinks.postgres

    monkeypatch.setattr(sinks.postgres, "STAGING_TRUNCATE_ROWS", 10)
    chain = _chain("a", 1, 12, "0x" + "00" * 32)
    for b in chain:
        await sink.write(batch_of("follow", [b]))
    async with sink.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM blocks") == 12
        assert await conn.fetchval("SELECT count(*) FROM _stage_logs") == 0  # moved, not left behind
        pages = await conn.fetchval(
            "SELECT pg_relation_size('_stage_logs') / current_setting('block_size')::int"
        )
        assert pages <= 1  # truncated every ~10 rows: dead tuples do not pile up
