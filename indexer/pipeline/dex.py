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
ancestor, so the new branch is classified and written afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections import ChainMap, Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from core.errors import RetryableError
from core.retry import RetryPolicy
from core.settings import Settings
from decoders.token_metadata import TOKEN_CALLS, parse_token
from indexer.chain.extract import ExtractedBlock
from indexer.chain.rpc import RpcClient
from protocols.base import POOL_CREATED, Context, pool_id
from protocols.plugins import discover
from protocols.pools import Call, PoolQuery
from protocols.registry import Registry, registry_of, resolution_counts
from protocols.skips import Skip
from records import Log, Pool, Record, Reorg, Token, Transaction
from records.batch import Batch

log = logging.getLogger("dexnode.dex")

_POOL_COLUMNS = (
    "address, protocol, version, exchange, factory, token0, token1, fee, tick_spacing, created_block_number,"
    " created_block_hash, created_transaction_hash, created_log_index, contract, tokens, hooks"
)


# Rows this process made from eth_call answers at orphaned blocks, unless something canonical uses them.
_DELETE_POOLS = (
    "DELETE FROM pools p WHERE p.address = ANY($1) AND p.created_block_number IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM dex_trades t WHERE t.pool_address = p.address AND t.block_number <= $2)"
    " AND NOT EXISTS (SELECT 1 FROM dex_liquidity l"
    " WHERE l.pool_address = p.address AND l.block_number <= $2)"
)
_DELETE_TOKENS = (
    "DELETE FROM tokens t WHERE t.address = ANY($1) AND NOT EXISTS (SELECT 1 FROM pools p"
    " WHERE (p.token0 = t.address OR p.token1 = t.address OR t.address = ANY(p.tokens))"
    " AND NOT (p.address = ANY($2))"
    " AND (p.created_block_number IS NULL OR p.created_block_number <= $3))"
)


def registry_for(settings: Settings) -> Registry:
    """Every protocol plugin, each configured by its own setting (``Settings.plugin_setting``)."""
    return registry_of({p.setting: settings.plugin_setting(p.setting) for p in discover()})


def registry_from(*texts: str | None) -> Registry:
    """The older call shape: the venue texts of the plugins whose settings are ``Settings`` fields,
    in the fields' order (the Uniswap v2, then v3 factories); every other plugin on its defaults."""
    names = [name for name in Settings.model_fields if name in {p.setting for p in discover()}]
    return registry_of(dict(zip(names, texts, strict=False)))


def _pool_of_row(row: Mapping[str, object]) -> Pool:
    values = dict(row)
    tokens = values.get("tokens")
    values["tokens"] = tuple(tokens) if isinstance(tokens, list | tuple) else ()
    return Pool(**values)  # type: ignore[arg-type]


@dataclass
class _Learned:
    """What one batch's enrichment found out, kept apart until all of it is resolved."""

    pools: dict[str, Pool] = field(default_factory=dict)
    pool_blocks: dict[str, int] = field(default_factory=dict)  # address -> block it was learned at
    not_pools: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    new_pools: list[Pool] = field(default_factory=list)  # to write with the batch
    new_tokens: list[Token] = field(default_factory=list)
    classified: set[str] = field(default_factory=set)  # pools classified on chain (no creation event)
    counts: Counter[str] = field(default_factory=Counter)

    def add_pool(self, pool: Pool, block: int, *, new: bool) -> None:
        """Learn ``pool``; a later discovery event of the same pool in the batch (Balancer's
        TokensRegistered after PoolRegistered) replaces the pool written with the batch."""
        if new and pool.address in self.pools:
            self.new_pools = [p for p in self.new_pools if p.address != pool.address]
        self.pools[pool.address] = pool
        self.pool_blocks[pool.address] = block
        self.not_pools.pop(pool.address, None)
        if new:
            self.new_pools.append(pool)


WAIT_OUT_NODE = RetryPolicy(attempts=0, base_delay=0.5, max_delay=30.0)


class DexEnricher:
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
        self._read_on_chain: set[tuple[str, str]] = set()  # rows this process made from eth_call answers

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
        if batch.reorg is not None:
            await self.forget(batch.reorg)
        handlers = self.registry.handlers
        dex_logs = [lg for lg in batch.of(Log) if lg.topic0 in handlers]
        if not dex_logs or batch.tip is None:
            return batch
        at = batch.tip.number  # every eth_call of the batch is made at its last block
        learned = _Learned()
        creations = [lg for lg in dex_logs if handlers[lg.topic0 or ""].kind == POOL_CREATED]
        events = [lg for lg in dex_logs if handlers[lg.topic0 or ""].kind != POOL_CREATED]
        # pure: pools need no lookup; one at a time, so a discovery event sees the pools found before it
        state: dict[str, Any] = {}  # pool state protocols track through the batch (ctx.state)
        ctx = self._context(batch, ChainMap(learned.pools, self.pools), state)
        created = self.registry.decode([], ctx)
        for entry in creations:
            one = self.registry.decode([entry], ctx)
            created.counts.update(one.counts)
            created.skipped.extend(one.skipped)
            for pool in one.records:
                if isinstance(pool, Pool):
                    learned.add_pool(pool, pool.created_block_number or at, new=True)
        await self._resolve_pools(events, learned, at, batch.reorg)
        await self._resolve_tokens(self._tokens_of(events, learned), learned, at)
        await self._read_state(events, learned, state, batch.first_number)
        self._commit(learned, at)  # everything is resolved: from here on nothing can fail
        self.counts.update(created.counts)
        decoded = self.registry.decode(events, self._context(batch, None, state))
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

    async def forget(self, reorg: Reorg) -> None:
        """Drop what was learned at blocks the reorg orphaned (above its common ancestor).

        Pools created on those blocks leave the ``pools`` table with the reorg (the sink deletes them by
        ``created_block_number``). Pools this process classified by ``eth_call`` and tokens it read at
        those blocks have no creation block to be deleted by: their rows are deleted here, before the
        new branch is enriched, which classifies and reads again what it needs (a contract at an address
        made by CREATE can differ between branches) and writes it with the batch; a row only the orphaned
        branch needed is gone. A crash in between loses nothing: they are read again when next needed.
        A row that something canonical still refers to (a trade at or below the ancestor stored by
        another writer, a pool that stays) is kept.
        """
        ancestor = reorg.common_ancestor_number
        stale = [key for key, block in self._learned_at.items() if block > ancestor]
        if self.db is not None:
            pools = [a for kind, a in stale if kind == "pool" and (kind, a) in self._read_on_chain]
            tokens = [a for kind, a in stale if kind == "token" and (kind, a) in self._read_on_chain]
            if pools:
                await self.db.execute(_DELETE_POOLS, pools, ancestor)
            if tokens:
                await self.db.execute(_DELETE_TOKENS, tokens, pools, ancestor)
        for kind, address in stale:
            self._learned_at.pop((kind, address), None)
            self._read_on_chain.discard((kind, address))
            if kind == "pool":
                self.pools.pop(address, None)
            elif kind == "not_pool":
                self.not_pools.discard(address)
            else:
                self.tokens.pop(address, None)
        if stale:
            log.info("reorg above block %d: forgot %d cached pool(s)/token(s)", ancestor, len(stale))

    def _context(
        self, batch: Batch, pools: Mapping[str, Pool] | None = None, state: dict[str, Any] | None = None
    ) -> Context:
        return Context(
            state={} if state is None else state,
            pools=self.pools if pools is None else pools,
            tokens=self.tokens,
            block_times={b.hash: b.timestamp for b in batch.blocks},
            transactions={t.hash: (t.from_address, t.to_address) for t in batch.of(Transaction)},
        )

    def _commit(self, learned: _Learned, at: int) -> None:
        for address, pool in learned.pools.items():
            self.pools[address] = pool
            self.not_pools.discard(address)
            self._learned_at.pop(("not_pool", address), None)
            self._learned_at[("pool", address)] = learned.pool_blocks[address]
            self._read_on_chain.discard(("pool", address))
        for address, block in learned.not_pools.items():
            self.not_pools.add(address)
            self._learned_at[("not_pool", address)] = block
        for address, token in learned.tokens.items():
            self.tokens[address] = token
            self._learned_at[("token", address)] = at
        self._read_on_chain.update(("pool", a) for a in learned.classified)
        self._read_on_chain.update(("token", t.address) for t in learned.new_tokens)
        self.counts.update(learned.counts)

    def _tokens_of(self, events: Sequence[Log], learned: _Learned) -> set[str]:
        wanted: set[str] = set()
        for pool in learned.new_pools:
            wanted.update((pool.token0, pool.token1, *pool.tokens))
        pools: Mapping[str, Pool] = ChainMap(learned.pools, self.pools)
        handlers = self.registry.handlers
        for entry in events:
            handler = handlers.get(entry.topic0 or "")
            key = pool_id(entry, handler.pool_key) if handler is not None else None
            known = pools.get(key) if key is not None else None
            if known is not None:
                wanted.update((known.token0, known.token1, *known.tokens))
        return {t for t in wanted if t not in self.tokens and t not in learned.tokens}

    async def _resolve_pools(
        self, events: Sequence[Log], learned: _Learned, at: int, reorg: Reorg | None
    ) -> None:
        known: Mapping[str, Pool] = ChainMap(learned.pools, self.pools)
        unknown = self.registry.unknown_pools(events, known)
        queries = [q for q in unknown if q.address not in self.not_pools]
        wanted = [q.address for q in queries] + self._unknown_ids(events, known)
        if not wanted:
            return
        if self.db is not None:
            rows = await self.db.fetch(f"SELECT {_POOL_COLUMNS} FROM pools WHERE address = ANY($1)", wanted)
            for row in rows:
                pool = _pool_of_row(row)
                created = pool.created_block_number
                if reorg is not None and created is not None and created > reorg.common_ancestor_number:
                    continue  # created on the orphaned branch: this batch's write deletes that row
                learned.add_pool(pool, created if created is not None else at, new=False)
            queries = [q for q in queries if q.address not in learned.pools]
        if queries:
            await self._classify_on_chain(queries, learned, at)

    async def _read_state(
        self, events: Sequence[Log], learned: _Learned, state: dict[str, Any], first: int | None
    ) -> None:
        """Seed ``state`` with the state before the batch of each known pool whose events need it
        (``EventHandler.state``), read at the block before the batch's first; the batch's own events
        then update it in log order (a pool created in the batch has its state from its creation)."""
        if not first:
            return
        handlers, known = self.registry.handlers, ChainMap(learned.pools, self.pools)
        queries: dict[str, tuple[Call, Callable[[str | None], Any]]] = {}
        for entry in events:
            handler = handlers.get(entry.topic0 or "")
            if handler is None or handler.state is None:
                continue
            key = pool_id(entry, handler.pool_key)
            if key is not None and key in known and key not in state and key not in queries:
                queries[key] = (handler.state.call(key, entry.address), handler.state.parse)
        if not queries:
            return
        answers = await self.rpc.eth_calls([(c.to, c.data) for c, _ in queries.values()], first - 1)
        for (key, (_, parse)), answer in zip(queries.items(), answers, strict=True):
            value = parse(answer.data)
            if value is not None:
                state[key] = value
        self.counts["state.read"] += len(queries)

    def _unknown_ids(self, events: Sequence[Log], known: Mapping[str, Pool]) -> list[str]:
        """Pool ids of events whose protocol cannot classify a pool on chain (v4, Balancer: only their
        discovery events make pools) and that are not known here: the ``pools`` table may hold them."""
        handlers = self.registry.handlers
        ids: dict[str, None] = {}
        for entry in events:
            handler = handlers.get(entry.topic0 or "")
            if handler is None or handler.resolver is not None:
                continue
            key = pool_id(entry, handler.pool_key)
            if key is not None and key not in known:
                ids[key] = None
        return list(ids)

    async def _classify_on_chain(self, queries: list[PoolQuery], learned: _Learned, at: int) -> None:
        calls = [(q, c) for q in queries for c in q.calls]
        results = await self.rpc.eth_calls([(c.to, c.data) for _, c in calls], at)
        by_query: dict[str, dict[str, str | None]] = {q.address: {} for q in queries}
        for (q, c), res in zip(calls, results, strict=True):
            by_query[q.address][c.name] = res.data  # None: the call reverted
        outcomes: list[Pool | Skip] = []
        candidates: list[tuple[PoolQuery, Pool]] = []
        for q in queries:
            outcome = q.resolve(by_query[q.address])
            if isinstance(outcome, Skip):
                learned.not_pools[q.address] = at
                outcomes.append(outcome)
                log.info("not a pool at block %d: %s", at, outcome.detail)
            else:
                candidates.append((q, outcome))
        checks = [(q, pool, q.verification_call(pool)) for q, pool in candidates]
        to_call = [(q, pool, c) for q, pool, c in checks if c is not None]
        answers = await self.rpc.eth_calls([(c.to, c.data) for _, _, c in to_call], at) if to_call else []
        verified = {
            q.address: q.verified(pool, a.data) for (q, pool, _), a in zip(to_call, answers, strict=True)
        }
        for q, pool, _ in checks:
            final = verified.get(q.address, pool)
            learned.add_pool(final, at, new=True)
            learned.classified.add(final.address)
            outcomes.append(final)
            if final.protocol == "unknown":
                log.warning("pool %s: its events decode but no configured factory vouches for it", q.address)
        learned.counts.update(resolution_counts(outcomes))

    async def _resolve_tokens(self, addresses: set[str], learned: _Learned, at: int) -> None:
        if not addresses:
            return
        missing = sorted(addresses)
        if self.db is not None:
            rows = await self.db.fetch(
                "SELECT address, symbol, name, decimals, source, error FROM tokens WHERE address = ANY($1)",
                missing,
            )
            for row in rows:
                learned.tokens[row["address"]] = Token(**dict(row))
            missing = [a for a in missing if a not in learned.tokens]
        static = self.registry.static_tokens  # tokens a protocol defines (native ETH): never called
        for address in [a for a in missing if a in static]:
            learned.tokens[address] = static[address]
            learned.new_tokens.append(static[address])
        missing = [a for a in missing if a not in static]
        if not missing:
            return
        calls = [(a, name, data) for a in missing for name, data in TOKEN_CALLS]
        results = await self.rpc.eth_calls([(a, data) for a, _, data in calls], at)
        by_token: dict[str, dict[str, str | None]] = {a: {} for a in missing}
        for (a, name, _), res in zip(calls, results, strict=True):
            by_token[a][name] = res.data  # None: the call reverted
        for address in missing:
            token = parse_token(address, by_token[address])
            if token.error:
                log.info("token %s at block %d: %s", address, at, token.error)
            learned.tokens[address] = token
            learned.new_tokens.append(token)
        learned.counts["tokens.fetched"] += len(missing)
