"""Replay from Postgres: what a subscription missed, read back as the same events the live hub sends.

Reads go through ``sinks.postgres_read.StoredChain`` (one repeatable-read snapshot per chunk), so a
replayed message is built from the same records, by the same code, as a live one.
"""

from __future__ import annotations

import asyncpg

from api.stream.events import CHANNEL_RECORDS, BlockEvent, Ref, ReorgEvent, block_events, reorg_event
from api.stream.protocol import Cursor
from sinks.postgres_read import StoredChain

MAX_REORG_HOPS = 64  # a cursor orphaned by a reorg whose ancestor was itself orphaned later, and so on


class PostgresStore:
    """``api.stream.subscription.Store`` over the database the follower writes."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.chain = StoredChain(pool)

    async def tip(self) -> Ref | None:
        row = await self.pool.fetchrow("SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1")
        return None if row is None else Ref(row["number"], row["hash"])

    async def read(self, first: int, last: int, channel: str) -> list[BlockEvent]:
        cls = CHANNEL_RECORDS.get(channel)
        blocks, parts = await self.chain.blocks_with(first, last, [cls] if cls is not None else [])
        return block_events(blocks, dict(parts))

    async def canonical(self, numbers: list[int]) -> dict[int, str]:
        rows = await self.pool.fetch(
            "SELECT number, hash FROM blocks WHERE number = ANY($1::bigint[])", numbers
        )
        return {r["number"]: r["hash"] for r in rows}

    async def rejoin(self, cursor: Cursor) -> ReorgEvent | None:
        """Where a cursor from an orphaned block meets the canonical chain: the reorg that orphaned its
        block (the orphaned blocks up to the cursor's, which the client may hold), with the common
        ancestor moved down through any later reorg that orphaned that ancestor too. None: no reorg
        recorded that block (a cursor from another node or chain)."""
        row = await self.pool.fetchrow(
            "SELECT common_ancestor_number, common_ancestor_hash, orphaned_hashes FROM reorgs"
            " WHERE $1 = ANY(orphaned_hashes) ORDER BY id DESC LIMIT 1",
            cursor.hash,
        )
        if row is None:
            return None
        number, block_hash = row["common_ancestor_number"], row["common_ancestor_hash"]
        orphaned = [h for i, h in enumerate(row["orphaned_hashes"]) if number + 1 + i <= cursor.number]
        for _ in range(MAX_REORG_HOPS):
            if (await self.canonical([number])).get(number) == block_hash:
                break
            deeper = await self.pool.fetchrow(
                "SELECT common_ancestor_number, common_ancestor_hash, orphaned_hashes FROM reorgs"
                " WHERE $1 = ANY(orphaned_hashes) ORDER BY id DESC LIMIT 1",
                block_hash,
            )
            if deeper is None:
                return None
            below = [
                h
                for i, h in enumerate(deeper["orphaned_hashes"])
                if deeper["common_ancestor_number"] + 1 + i <= number
            ]
            number, block_hash = deeper["common_ancestor_number"], deeper["common_ancestor_hash"]
            orphaned = [*below, *orphaned]
        else:
            return None
        tip = await self.tip()
        ancestor = Ref(number, block_hash)
        return reorg_event(ancestor, orphaned, tip if tip is not None else ancestor)
