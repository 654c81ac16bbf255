"""Backfill beside the follower on the real devnet: blocks with swaps that the follower stored before a
reorg orphaned them are replaced by the backfill's confirmed chain in every table, DEX ones included.
The expectation is an independent backfill of the same range into an empty database, every column of
every table compared, and the node's canonical chain itself."""

from __future__ import annotations

import asyncpg
import pytest

from core.database import DatabaseInfo
from devnet import Devnet
from indexer.backfill.load import AdaptiveLoad
from indexer.backfill.plan import BlockRange, plan
from indexer.backfill.run import Backfill
from indexer.backfill.store import BackfillSink
from indexer.chain.extract import extract_block
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import FOLLOW_STREAM, batch_of
from migrations import runner
from sinks import schema
from sinks.postgres import PostgresSink
from tests.chain_check import assert_db_is_canonical
from tests.integration.test_backfill import all_rows
from tests.integration.test_dex_devnet import venues

pytestmark = pytest.mark.integration


async def backfill_with_dex(rpc: RpcClient, devnet: Devnet, dsn: str, wanted: BlockRange) -> int:
    sink = await BackfillSink.connect(dsn, max_size=6)
    try:
        enrich = DexEnricher(rpc, sink.pool, registry_from(*venues(devnet.manifest)))
        job = Backfill(rpc, sink, load=AdaptiveLoad(max_workers=3, max_batch=50), enrich=enrich)
        return (await job.run(plan(wanted, [], 6))).dex_trades
    finally:
        await sink.close()


async def test_orphaned_blocks_with_swaps_stored_by_the_follower_are_replaced_in_every_table(
    fresh_devnet: Devnet, clean_db: DatabaseInfo, scratch_db: DatabaseInfo
) -> None:
    devnet = fresh_devnet
    devnet.activity(10, rate=8)
    head = devnet.head()[0]
    await runner.upgrade(scratch_db.sqlalchemy_url)
    async with RpcClient(devnet.rpc_http) as rpc:
        # the follower's path: each block extracted, DEX-enriched and written by the live sink
        follow_sink = await PostgresSink.connect(scratch_db.dsn)
        try:
            enrich = DexEnricher(rpc, follow_sink.pool, registry_from(*venues(devnet.manifest)))
            for number in range(head - 9, head + 1):
                block = await rpc.get_block_by_number(number)
                extracted = extract_block(block, await rpc.get_receipts_for_block(block))
                batch = await enrich([extracted], batch_of(FOLLOW_STREAM, [extracted]))
                await follow_sink.write(batch)
        finally:
            await follow_sink.close()
        conn = await asyncpg.connect(scratch_db.dsn)
        try:
            orphaned = [
                r["hash"] for r in await conn.fetch("SELECT hash FROM blocks WHERE number > $1", head - 6)
            ]
            trades_before = await conn.fetchval(
                "SELECT count(*) FROM dex_trades WHERE block_hash = ANY($1::text[])", orphaned
            )
        finally:
            await conn.close()
        assert trades_before > 0, "the blocks to be orphaned carry no swaps: the test would prove nothing"
        devnet.reorg(6)

        wanted = BlockRange(head - 20, head)
        trades = await backfill_with_dex(rpc, devnet, scratch_db.dsn, wanted)  # over the follower's rows
        assert trades == await backfill_with_dex(rpc, devnet, clean_db.dsn, wanted)  # the expectation
        want, got = await all_rows(clean_db.dsn), await all_rows(scratch_db.dsn)
        for table in want:
            assert got[table] == want[table], f"{table} differs from a backfill into an empty database"
        await assert_db_is_canonical(scratch_db.dsn, rpc, head - 20)
    conn = await asyncpg.connect(scratch_db.dsn)
    try:
        for table in (*schema.BLOCK_TABLES, schema.pools):
            col = {"blocks": "hash", "pools": "created_block_hash"}.get(table.name, "block_hash")
            left = await conn.fetchval(
                f'SELECT count(*) FROM "{table.name}" WHERE "{col}" = ANY($1::text[])', orphaned
            )
            assert left == 0, f"{table.name} keeps rows of orphaned blocks"
    finally:
        await conn.close()
