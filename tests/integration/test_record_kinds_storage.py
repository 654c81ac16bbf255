"""Every record kind through the writer and reader the registry derives (``records.kinds``), in real
Postgres: what is read back is the very record written, field for field; the revert keys are the
documented keys; a reorg deletes every revertible kind, the pools only the orphaned block named and the
tokens only those pools named, and keeps other tokens."""

from __future__ import annotations

import asyncpg
import pytest

from core.database import DatabaseInfo
from records import Block, DexLiquidity, DexTrade, Log, Pool, Token, TokenTransfer, Transaction
from records.batch import Batch
from sinks.postgres import PostgresSink
from sinks.postgres_read import StoredChain
from tests.every_kind import BLOCK_HASH, EXPECTED_REVERT_KEYS, NUMBER, PARENT_HASH, REORG, every_kind_batch

pytestmark = pytest.mark.integration

ALL = (Block, Transaction, Log, TokenTransfer, Token, Pool, DexTrade, DexLiquidity)


async def test_every_kind_is_read_back_as_written_field_for_field(clean_db: DatabaseInfo) -> None:
    written = every_kind_batch()
    sink = await PostgresSink.connect(clean_db.dsn)
    try:
        await sink.write(written)  # none of its blocks stored: COPY straight into the tables
        await sink.write(written)  # stored: through staging, nothing twice
        back = await StoredChain(sink.pool).batch_between(NUMBER, NUMBER)
        for cls in ALL:
            want = list(written.of(cls))
            if cls is Token:  # the block's records name all but the last one
                want = want[:-1]
            assert list(back.of(cls)) == want, cls.__name__  # dataclass ==: every field
        keys = await StoredChain(sink.pool).keys_above(NUMBER - 1)
        assert [(k.number, k.hash) for k in keys] == [(NUMBER, BLOCK_HASH)]
        assert keys[0].keys == EXPECTED_REVERT_KEYS
    finally:
        await sink.close()


async def test_a_reorg_deletes_every_revertible_kind_and_keeps_tokens(
    clean_db: DatabaseInfo,
) -> None:
    sink = await PostgresSink.connect(clean_db.dsn)
    try:
        await sink.write(every_kind_batch())
        await sink.write(Batch("test", [], reorg=REORG))
        conn: asyncpg.Connection = await asyncpg.connect(clean_db.dsn)
        try:
            counts = {
                t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                for t in ("blocks", "transactions", "logs", "token_transfers", "pools", "dex_trades",
                          "dex_liquidity", "tokens")
            }  # fmt: skip
            reorgs = await conn.fetch(
                "SELECT common_ancestor_number, common_ancestor_hash, depth, orphaned_hashes, new_hashes"
                " FROM reorgs"
            )
            cursor = await conn.fetchrow("SELECT block_number, block_hash FROM cursors WHERE stream = 'test'")
        finally:
            await conn.close()
        # The pool created at the orphaned block goes with it; so do the pools without a creation block
        # (created before the indexed chain, classified by eth_call) that only the orphaned block's
        # records named, in the reorg's transaction, and the tokens only those pools named. A token no
        # pool names stays (tokens are not chain data).
        batch = every_kind_batch()
        assert sorted(p.created_block_number is None for p in batch.of(Pool)) == [False, True, True]
        named = {a for p in batch.of(Pool) for a in (p.token0, p.token1, *p.tokens)}
        kept = {t.address for t in batch.of(Token)} - named
        assert 0 < len(kept) < len(list(batch.of(Token)))  # the batch exercises both sides of the rule
        assert counts == {t: 0 for t in counts} | {"tokens": len(kept)}
        assert [tuple(r.values()) for r in reorgs] == [(NUMBER - 1, PARENT_HASH, 1, [BLOCK_HASH], [])]
        assert tuple(cursor.values()) == (NUMBER - 1, PARENT_HASH)  # back to the ancestor
    finally:
        await sink.close()
