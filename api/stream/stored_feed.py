"""The hub fed from Postgres: what a live source (``NOTIFY`` or Kafka) missed, read back from storage.

Both live sources use it after a reconnect, when a batch starts above the hub's tip, and when idle.
Before reading forward it checks that the hub's tip is still the stored block at its height: if a reorg
replaced it while the source was away, the hub first gets that reorg (its ancestor is the highest block
the hub holds that Postgres still has), so clients are told before the new branch. A tip Postgres does
not hold yet (Kafka runs ahead of the Postgres commit) is not a reorg.
"""

from __future__ import annotations

import logging

import asyncpg

from api.stream.events import CHANNEL_RECORDS, Ref
from api.stream.hub import Hub
from records import Block, Record
from sinks.postgres_read import StoredChain

log = logging.getLogger("dexnode.api.listener")

CATCH_UP_BLOCKS = 100  # blocks read per step
_CLASSES: list[type[Record]] = list(CHANNEL_RECORDS.values())


class StoredFeed:
    def __init__(self, pool: asyncpg.Pool, hub: Hub) -> None:
        self.pool = pool
        self.hub = hub
        self.chain = StoredChain(pool)
        self.blocks = 0  # blocks published from here

    async def read(self, first: int, last: int) -> tuple[list[Block], dict[type[Record], list[Record]]]:
        return await self.chain.blocks_with(first, last, _CLASSES)

    async def publish(self, first: int, last: int) -> None:
        blocks, parts = await self.read(first, last)
        self.hub.publish_blocks(blocks, parts)
        self.blocks += len(blocks)

    async def catch_up(self, upto: int | None = None) -> None:
        """Publish stored blocks above the hub's tip (after the reorg that replaced it, if one did)."""
        tip = self.hub.tip
        if tip is None:
            return
        await self._rejoin(tip)
        tip = self.hub.tip
        assert tip is not None
        if upto is None:
            stored = await self.pool.fetchval("SELECT max(number) FROM blocks")
            if stored is None:
                return
            upto = int(stored)
        first = tip.number + 1
        while first <= upto:
            last = min(first + CATCH_UP_BLOCKS - 1, upto)
            await self.publish(first, last)
            first = last + 1

    async def _rejoin(self, tip: Ref) -> None:
        stored = await self.pool.fetchval("SELECT hash FROM blocks WHERE number = $1", tip.number)
        if stored is None or stored == tip.hash:
            return  # the same block, or one Postgres has not committed yet
        window = self.hub.window
        numbers = sorted((n for n in window if n < tip.number), reverse=True)
        canonical = dict(
            await self.pool.fetch("SELECT number, hash FROM blocks WHERE number = ANY($1::bigint[])", numbers)
        )
        ancestor = next((n for n in numbers if canonical.get(n) == window[n].hash), None)
        if ancestor is None:
            log.warning(
                "the hub's blocks %s..%s are all orphaned: no reorg to send", numbers[-1:], tip.number
            )
            return
        orphaned = [window[n].hash for n in sorted(window) if n > ancestor]
        head = await self.pool.fetchrow("SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1")
        log.info("live events: block %d was replaced while away; reorg from %d", tip.number, ancestor)
        self.hub.publish_reorg(
            Ref(ancestor, window[ancestor].hash), orphaned, Ref(head["number"], head["hash"])
        )
