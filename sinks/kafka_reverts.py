"""``head.*`` reverts beyond a reorg's orphaned block-keyed records (``sinks.kafka``'s head sink sends them):

- ``replaced_keys``: the records a backfill chunk replaces, stored at its heights under another block
  hash (blocks the follower stored that a reorg since orphaned; the chunk's transaction deletes them,
  ``indexer.backfill.store.replace_orphans``);
- ``blockless_reverts``: the pools without a creation block and the tokens that a reorg deletes from
  Postgres because only the orphaned blocks needed them (``sinks.postgres.orphaned_pools_and_tokens``).

Both are read before the Postgres transaction that deletes the rows, like ``StoredChain.keys_above``.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from records import Reorg, Revert, kinds
from records.batch import Batch
from records.kinds import Kind
from sinks.kafka_keys import HEAD, RECORD_TYPE, BlockKeys, OutMessage, Topics, encode_record, out_message
from sinks.postgres import orphaned_pools_and_tokens

log = logging.getLogger("dexnode.sink.kafka")


def _replaced_sql(kind: Kind[Any]) -> str:
    key = " || ':' || ".join(f'"{c}"::text' for c in kind.key)
    return (
        f'SELECT "{kind.block}", "{kind.block_hash}", {key} FROM "{kind.table}"'
        f' WHERE "{kind.block}" BETWEEN $1 AND $2 AND "{kind.block_hash}" <> ALL($3::text[])'
    )


# per revertible kind: (block_number, block_hash, key) of the rows stored at heights $1..$2 for a block
# that is not one of $3
_REPLACED_SQL: dict[str, str] = {k.name: _replaced_sql(k) for k in kinds.BATCH_KINDS if k.revertible}
_ANY_REPLACED_SQL = (
    "SELECT EXISTS (SELECT 1 FROM blocks WHERE number BETWEEN $1 AND $2 AND hash <> ALL($3::text[]))"
)


async def replaced_keys(pool: asyncpg.Pool, batch: Batch) -> list[BlockKeys]:
    """The keys of every revertible record stored at the batch's heights for a block that is not the
    batch's (a block the follower stored, which a reorg then orphaned), per block, ascending."""
    if not batch.blocks:
        return []
    args = (batch.blocks[0].number, batch.blocks[-1].number, [b.hash for b in batch.blocks])
    if not await pool.fetchval(_ANY_REPLACED_SQL, *args):  # the usual case: one indexed query
        return []
    by_hash: dict[str, BlockKeys] = {}
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for kind, sql in _REPLACED_SQL.items():
            for number, block_hash, key in await conn.fetch(sql, *args):
                entry = by_hash.get(block_hash)
                if entry is None:
                    entry = by_hash[block_hash] = BlockKeys(number, block_hash)
                entry.add(kind, key)
    return sorted(by_hash.values(), key=lambda b: b.number)


async def blockless_reverts(
    topics: Topics, pool: asyncpg.Pool, reorg: Reorg, orphaned: list[BlockKeys]
) -> list[OutMessage]:
    """Reverts of the pools without a creation block and the tokens the reorg deletes from Postgres.

    Such a record went out with the ``block_hash`` header of the batch that first carried it, one of
    the orphaned blocks (``orphaned``: the stored blocks above the ancestor): a revert per orphaned
    block, so the consumer rule drops the one it holds and ignores the others. Not journaled: after a
    crash before the commit the follower finds the reorg again; only if the chain went back to the old
    branch meanwhile do those records stay reverted on Kafka while Postgres keeps them."""
    pools, tokens = await orphaned_pools_and_tokens(pool, reorg.common_ancestor_number)
    out: list[OutMessage] = []
    for kind, keys in ((kinds.POOLS.name, pools), (kinds.TOKENS.name, tokens)):
        topic = topics.of(HEAD, kind)
        for key in keys:
            for block in orphaned:
                revert = Revert(block.number, block.hash, RECORD_TYPE[kind], key)
                _, k, value, headers = encode_record(kind, revert, (block.number, block.hash))
                out.append(out_message(topic, k, value, headers))
    if out:
        log.info(
            "reverting %d pool(s) and %d token(s) only the orphaned blocks needed", len(pools), len(tokens)
        )
    return out
