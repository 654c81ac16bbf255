"""The DEX step of the pipeline: the I/O around the pure protocol plugins (``protocols``).

For each batch (a live block or a backfill chunk):

1. discovery events of configured factories or singletons become ``Pool`` records, in log order (a
   later one sees the pools found before it), known at once: a pool created and traded in the same
   batch decodes;
2. every other pool a pool event names (its emitter, or its id in topic1) that is not known yet is
   looked up in memory, then in the ``pools`` table, then, for protocols that can, classified on chain
   (batched ``eth_call`` to the pool, then the named factory's ``getPair``/``getPool`` to prove it; or
   to the emitting singleton, Balancer's Vault; see ``protocols.pools``). A contract no configured
   factory vouches for is a pool of protocol ``unknown`` (counted), never attributed to a venue;
3. the tokens of those pools: memory, the ``tokens`` table, tokens a protocol defines (native ETH),
   else batched ``symbol()``/``name()``/``decimals()`` calls (``decoders.token_metadata``);
4. pool state an event needs from before the batch (``EventHandler.state``: Uniswap v4's price for
   ModifyLiquidity amounts), read at the block before the batch's first;
5. the registry's pure handlers turn the logs into ``DexTrade``/``DexLiquidity`` records.

New pools and tokens ride in the same batch, so the sink writes them in the block's transaction.

Every other ``eth_call`` is made at the batch's last block, never at ``latest``: what the batch created
exists there, and a backend that has not reached that block errors (retryable) instead of answering
``0x``. Only answers are kept: a revert is one (not a pool, no ``symbol()``); a timeout or a 429 is
not. A retryable failure that outlives the RPC client's retries fails the whole batch's enrichment,
which is waited out and run again from the start (``DexEnricher.__call__``); the caches only take what
a batch learned once all of it was resolved, so a batch is never half enriched, nor from a guess.

Reorgs: the caches remember the block each entry was learned at (a pool's creation block, or the block
it was classified at). A batch carrying a reorg first forgets everything learned above the common
ancestor, so the new branch is classified and written afresh. Stored pools and tokens that only the
orphaned branch needs are deleted by the Postgres sink in the reorg's own transaction
(``sinks.postgres.orphaned_pools_and_tokens``); the enricher asks the same question first and treats
those rows as gone, so it classifies and reads them again for the new branch and writes them with it.

The module is split by job: ``dex_settings`` builds the registry from the settings, ``dex_resolve``
resolves pools and tokens (memory, ``pools``/``tokens`` tables, ``eth_call``), and this module holds
the enricher that runs a batch through them and the protocols' pure handlers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import ChainMap, Counter
from collections.abc import Sequence
from typing import Any

import asyncpg

from core.errors import RetryableError
from core.retry import RetryPolicy
from indexer.chain.extract import ExtractedBlock
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex_resolve import Gone, Learned, PoolTokenResolver
from indexer.pipeline.dex_settings import registry_for, registry_from
from protocols.base import POOL_CREATED, Context
from protocols.registry import Registry
from records import Log, Pool, Record, Reorg, Token, Transaction
from records.batch import Batch
from sinks.postgres import orphaned_pools_and_tokens

__all__ = ["WAIT_OUT_NODE", "DexEnricher", "registry_for", "registry_from"]

log = logging.getLogger("dexnode.dex")

WAIT_OUT_NODE = RetryPolicy(attempts=0, base_delay=0.5, max_delay=30.0)


class DexEnricher(PoolTokenResolver):
    """An ``indexer.pipeline.pipeline.Enricher``: adds pools, tokens, trades and liquidity events to a batch.

    ``retry``: how a batch whose enrichment failed is tried again; bounded, the last ``RetryableError``
    is raised to the caller; unbounded (the default) waits out a failing node for as long as it
    takes, like the sinks' writes.
    """

    def __init__(
        self,
        rpc: RpcClient,
        db: asyncpg.Pool | None,
        registry: Registry,
        *,
        retry: RetryPolicy = WAIT_OUT_NODE,
    ) -> None:
        self.rpc = rpc
        self.db = db
        self.registry = registry
        self.retry = retry
        self.pools: dict[str, Pool] = {}
        self.not_pools: set[str] = set()
        self.tokens: dict[str, Token] = {}
        self.counts: Counter[str] = Counter()
        self._learned_at: dict[tuple[str, str], int] = {}  # ("pool"|"not_pool"|"token", address) -> block

    async def __call__(self, blocks: Sequence[ExtractedBlock], batch: Batch) -> Batch:
        """The enriched batch; a node failure is waited out and the whole batch enriched again."""
        failures = 0
        while True:
            try:
                return await self.enrich(batch)
            except (RetryableError, OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                failures += 1
                self.counts["enrich.retries"] += 1
                if self.retry.exhausted(failures):
                    raise
                delay = self.retry.delay(failures, None)  # the client honoured Retry-After in its tries
                log.warning(
                    "DEX enrichment of blocks %s..%s failed (%s); trying the batch again in %.1fs",
                    batch.first_number,
                    batch.tip.number if batch.tip is not None else None,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def enrich(self, batch: Batch) -> Batch:
        """One try: raises ``RetryableError`` (caches untouched) when the node did not answer."""
        gone = Gone()
        if batch.reorg is not None:
            gone = await self.forget(batch.reorg)
        handlers = self.registry.handlers
        dex_logs = [lg for lg in batch.of(Log) if lg.topic0 in handlers]
        if not dex_logs or batch.tip is None:
            return batch
        at = batch.tip.number  # every eth_call of the batch is made at its last block
        learned = Learned()
        creations = [lg for lg in dex_logs if handlers[lg.topic0 or ""].kind == POOL_CREATED]
        events = [lg for lg in dex_logs if handlers[lg.topic0 or ""].kind != POOL_CREATED]
        # pure: pools need no lookup; one at a time, so a discovery event sees the pools found before it
        state: dict[str, Any] = {}  # pool state protocols track through the batch (ctx.state)
        block_times = {b.hash: b.timestamp for b in batch.blocks}
        senders = {t.hash: (t.from_address, t.to_address) for t in batch.of(Transaction)}
        ctx = Context(ChainMap(learned.pools, self.pools), self.tokens, block_times, senders, state)
        created = self.registry.decode([], ctx)
        for entry in creations:
            one = self.registry.decode([entry], ctx)
            created.counts.update(one.counts)
            created.skipped.extend(one.skipped)
            for pool in one.records:
                if isinstance(pool, Pool):
                    learned.add_pool(pool, pool.created_block_number or at, new=True)
        naming = self._first_naming(events)  # the lookups ask about pools: one event per pool is enough
        await self._resolve_pools(naming, learned, at, gone)
        await self._resolve_tokens(self._tokens_of(naming, learned), learned, at, gone)
        await self._read_state(naming, learned, state, batch.first_number)
        self._commit(learned, at)  # everything is resolved: from here on nothing can fail
        self.counts.update(created.counts)
        decoded = self.registry.decode(events, Context(self.pools, self.tokens, block_times, senders, state))
        self.counts.update(decoded.counts)
        skips = created.counts + decoded.counts  # counted skips of creation events too
        found: dict[type[Record], list[Record]] = {}  # per kind, whatever kinds the protocols emit
        for record in decoded.records:
            if not isinstance(record, Pool):  # pools come in through ``learned``, deduplicated
                found.setdefault(type(record), []).append(record)
        skipped = dict(batch.skipped)
        for key, count in skips.items():
            if key != "records" and count:
                skipped[f"dex.{key}"] = skipped.get(f"dex.{key}", 0) + count
        return batch.replacing(
            {
                **found,
                Pool: [*batch.of(Pool), *learned.new_pools],
                Token: [*batch.of(Token), *learned.new_tokens],
            },
            skipped=skipped,
        )

    async def forget(self, reorg: Reorg) -> Gone:
        """Drop what was learned at blocks the reorg orphaned (above its common ancestor); → the stored
        rows the reorg's write deletes, which the new branch must not be enriched from.

        Pools created on those blocks leave the ``pools`` table with the reorg (the sink deletes them by
        ``created_block_number``). Pools classified by ``eth_call`` and tokens read that only the
        orphaned branch needs have no creation block to be deleted by: the sink deletes them in the
        same transaction (``sinks.postgres.orphaned_pools_and_tokens``, asked here too, read-only,
        before the sink changes anything). The new branch classifies and reads again what it needs (a
        contract at an address made by CREATE can differ between branches) and writes it with the
        batch. A crash before the sink commits leaves both branches' rows as they were; a row that
        something canonical still refers to is kept.
        """
        ancestor = reorg.common_ancestor_number
        pools: list[str] = []
        tokens: list[str] = []
        if self.db is not None:
            pools, tokens = await orphaned_pools_and_tokens(self.db, ancestor)
        stale = [key for key, block in self._learned_at.items() if block > ancestor]
        stale += [("pool", a) for a in pools] + [("token", a) for a in tokens]
        for kind, address in stale:
            self._learned_at.pop((kind, address), None)
            if kind == "pool":
                self.pools.pop(address, None)
            elif kind == "not_pool":
                self.not_pools.discard(address)
            else:
                self.tokens.pop(address, None)
        if stale:
            log.info("reorg above block %d: forgot %d cached pool(s)/token(s)", ancestor, len(set(stale)))
        return Gone(ancestor, frozenset(pools), frozenset(tokens))

    def _commit(self, learned: Learned, at: int) -> None:
        for address, pool in learned.pools.items():
            self.pools[address] = pool
            self.not_pools.discard(address)
            self._learned_at.pop(("not_pool", address), None)
            self._learned_at[("pool", address)] = learned.pool_blocks[address]
        for address, block in learned.not_pools.items():
            self.not_pools.add(address)
            self._learned_at[("not_pool", address)] = block
        for address, token in learned.tokens.items():
            self.tokens[address] = token
            self._learned_at[("token", address)] = at
        self.counts.update(learned.counts)
