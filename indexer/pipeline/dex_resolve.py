"""Pool and token resolution for the DEX enricher (``indexer.pipeline.dex``): the lookups in memory, in
Postgres and on chain that steps 2–4 of a batch's enrichment make, collected in a ``Learned`` that
the enricher commits to its caches only once all of it is resolved.

``eth_call`` s are made at the block the caller gives (the batch's last; pool state before the batch at
the block before its first), never at ``latest``; a revert is an answer (not a pool, no ``symbol()``),
a timeout or a 429 is not and propagates as ``RetryableError``.
"""

from __future__ import annotations

import logging
from collections import ChainMap, Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from decoders.token_metadata import TOKEN_CALLS, parse_token
from indexer.chain.rpc import RpcClient
from protocols.base import pool_id
from protocols.pools import Call, PoolQuery
from protocols.registry import Registry, resolution_counts
from protocols.skips import Skip
from records import Log, Pool, Token

log = logging.getLogger("dexnode.dex")

_POOL_COLUMNS = (
    "address, protocol, version, exchange, factory, token0, token1, fee, tick_spacing, created_block_number,"
    " created_block_hash, created_transaction_hash, created_log_index, contract, tokens, hooks"
)


def _pool_of_row(row: Mapping[str, object]) -> Pool:
    values = dict(row)
    tokens = values.get("tokens")
    values["tokens"] = tuple(tokens) if isinstance(tokens, list | tuple) else ()
    return Pool(**values)  # type: ignore[arg-type]


@dataclass
class Learned:
    """What one batch's enrichment found out, kept apart until all of it is resolved."""

    pools: dict[str, Pool] = field(default_factory=dict)
    pool_blocks: dict[str, int] = field(default_factory=dict)  # address -> block it was learned at
    not_pools: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    new_pools: list[Pool] = field(default_factory=list)  # to write with the batch
    new_tokens: list[Token] = field(default_factory=list)
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

    def over(self, pools: dict[str, Pool]) -> Mapping[str, Pool]:
        """The pools learned so far over ``pools``, for lookups once nothing more is learned: a
        ``ChainMap`` looks up in Python (~1 µs, a few per DEX event), so with nothing learned (most
        batches) it is ``pools`` itself."""
        return ChainMap(self.pools, pools) if self.pools else pools


@dataclass(frozen=True)
class Gone:
    """What the batch's reorg deletes (``sinks.postgres.orphaned_pools_and_tokens``) and the rows of
    pools created above ``ancestor``: stored rows to treat as absent while enriching the new branch."""

    ancestor: int | None = None
    pools: Collection[str] = ()
    tokens: Collection[str] = ()

    def keeps(self, pool: Pool) -> bool:
        created = pool.created_block_number
        if self.ancestor is not None and created is not None and created > self.ancestor:
            return False  # created on the orphaned branch: the batch's write deletes that row
        return pool.address not in self.pools


class PoolTokenResolver:
    """The enricher's lookups (a base class of ``DexEnricher``, which holds the caches)."""

    rpc: RpcClient
    db: asyncpg.Pool | None
    registry: Registry
    pools: dict[str, Pool]
    not_pools: set[str]
    tokens: dict[str, Token]
    counts: Counter[str]

    def _first_naming(self, events: Sequence[Log]) -> list[Log]:
        """The first of ``events`` (in log order) of each handler and pool id: what the pool, token and
        state lookups below need to see, each of them asking about pools, first-seen first, and taking
        the first event that names a pool. A batch has many events per pool (the devnet's 50-block
        chunks: ~700 events, ~30 pools), and each pass over all of them looked up the handler and the
        pool id again for every event."""
        handlers = self.registry.handlers
        first: dict[tuple[str, str | None], Log] = {}
        for entry in events:
            topic0 = entry.topic0 or ""
            key = (topic0, pool_id(entry, handlers[topic0].pool_key))
            if key not in first:
                first[key] = entry
        return list(first.values())

    def _tokens_of(self, events: Sequence[Log], learned: Learned) -> set[str]:
        wanted: set[str] = set()
        for pool in learned.new_pools:
            wanted.update((pool.token0, pool.token1, *pool.tokens))
        pools = learned.over(self.pools)
        handlers = self.registry.handlers
        for entry in events:
            handler = handlers.get(entry.topic0 or "")
            key = pool_id(entry, handler.pool_key) if handler is not None else None
            known = pools.get(key) if key is not None else None
            if known is not None:
                wanted.update((known.token0, known.token1, *known.tokens))
        return {t for t in wanted if t not in self.tokens and t not in learned.tokens}

    async def _resolve_pools(self, events: Sequence[Log], learned: Learned, at: int, gone: Gone) -> None:
        known = learned.over(self.pools)  # read before anything is learned
        unknown = self.registry.unknown_pools(events, known)
        queries = [q for q in unknown if q.address not in self.not_pools]
        wanted = [q.address for q in queries] + self._unknown_ids(events, known)
        if not wanted:
            return
        if self.db is not None:
            rows = await self.db.fetch(f"SELECT {_POOL_COLUMNS} FROM pools WHERE address = ANY($1)", wanted)
            for row in rows:
                pool = _pool_of_row(row)
                if not gone.keeps(pool):
                    continue
                created = pool.created_block_number
                learned.add_pool(pool, created if created is not None else at, new=False)
            queries = [q for q in queries if q.address not in learned.pools]
        if queries:
            await self._classify_on_chain(queries, learned, at)

    async def _read_state(
        self, events: Sequence[Log], learned: Learned, state: dict[str, Any], first: int | None
    ) -> None:
        """Seed ``state`` with the state before the batch of each known pool whose events need it
        (``EventHandler.state``), read at the block before the batch's first; the batch's own events
        then update it in log order (a pool created in the batch has its state from its creation)."""
        if not first:
            return
        handlers, known = self.registry.handlers, learned.over(self.pools)
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

    async def _classify_on_chain(self, queries: list[PoolQuery], learned: Learned, at: int) -> None:
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
            outcomes.append(final)
            if final.protocol == "unknown":
                log.warning("pool %s: its events decode but no configured factory vouches for it", q.address)
        learned.counts.update(resolution_counts(outcomes))

    async def _resolve_tokens(self, addresses: set[str], learned: Learned, at: int, gone: Gone) -> None:
        if not addresses:
            return
        missing = sorted(addresses)
        if self.db is not None:
            rows = await self.db.fetch(
                "SELECT address, symbol, name, decimals, source, error FROM tokens WHERE address = ANY($1)",
                missing,
            )
            for row in rows:
                if row["address"] not in gone.tokens:  # else: the reorg deletes it; read it again
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
