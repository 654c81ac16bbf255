"""The DEX step of the pipeline: the I/O around the pure protocol plugins.

For each batch (a live block or a backfill chunk):

1. pool-creation events from configured factories become ``Pool`` records (and are known at once,
   so a pool created and traded in the same batch decodes);
2. every other emitter of a Uniswap-shaped event that is not known yet is looked up in memory, then
   in the ``pools`` table, then classified on chain (batched ``eth_call``: ``factory()``,
   ``token0()``, ``token1()``, ``fee()``, then the named factory's ``getPair``/``getPool`` to prove
   it; see ``protocols.pools``). A contract no configured factory vouches for is a pool of protocol
   ``unknown`` (counted), never attributed to Uniswap;
3. the tokens of those pools: memory, ``tokens`` table, else batched ``symbol()``/``name()``/
   ``decimals()`` calls (``decoders.token_metadata``: strings, bytes32, reverts, garbage);
4. the registry's pure handlers turn the logs into ``DexTrade``/``DexLiquidity`` records.

New pools and tokens ride in the same batch, so the sink writes them in the block's transaction.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import asyncpg

from decoders.token_metadata import TOKEN_CALLS, parse_token
from indexer.errors import ConfigError
from indexer.extract import ExtractedBlock
from indexer.rpc import RpcClient
from protocols.base import POOL_CREATED, Context, Skip
from protocols.pools import PoolQuery
from protocols.registry import Registry, default_registry, resolution_counts
from protocols.uniswap.v2 import DEFAULT_V2_VENUES, V2Venue
from protocols.uniswap.v3 import DEFAULT_V3_VENUES, V3Venue
from records import DexLiquidity, DexTrade, Log, Pool, Token
from sinks.base import Batch

log = logging.getLogger("dexnode.dex")

_POOL_COLUMNS = (
    "address, protocol, version, exchange, factory, token0, token1, fee, tick_spacing, created_block_number,"
    " created_block_hash, created_transaction_hash, created_log_index"
)


def parse_venues(text: str | None, kind: str) -> list[V2Venue] | list[V3Venue] | None:
    """``"0xfactory=label[:fee],..."`` from settings; None when unset (mainnet defaults apply)."""
    if text is None or not text.strip():
        return None
    v2: list[V2Venue] = []
    v3: list[V3Venue] = []
    for item in text.split(","):
        factory, sep, rest = item.strip().partition("=")
        if not sep or not rest:
            raise ConfigError(f"{kind} venue {item.strip()!r}: expected 0xFACTORY=label")
        label, _, fee = rest.partition(":")
        if kind == "v2":
            if fee and not fee.isdigit():
                raise ConfigError(f"v2 venue {item.strip()!r}: fee must be an integer (3000 = 0.30%)")
            v2.append(V2Venue(factory.strip().lower(), label.strip(), int(fee) if fee else 3000))
        else:
            v3.append(V3Venue(factory.strip().lower(), label.strip()))
    return v2 if kind == "v2" else v3


def registry_from(v2_text: str | None, v3_text: str | None) -> Registry:
    v2 = parse_venues(v2_text, "v2")
    v3 = parse_venues(v3_text, "v3")
    return default_registry(
        tuple(v2) if v2 is not None else DEFAULT_V2_VENUES,  # type: ignore[arg-type]
        tuple(v3) if v3 is not None else DEFAULT_V3_VENUES,  # type: ignore[arg-type]
    )


class DexEnricher:
    """An ``indexer.pipeline.Enricher``: adds pools, tokens, trades and liquidity events to a batch."""

    def __init__(self, rpc: RpcClient, db: asyncpg.Pool | None, registry: Registry) -> None:
        self.rpc = rpc
        self.db = db
        self.registry = registry
        self.pools: dict[str, Pool] = {}
        self.not_pools: set[str] = set()
        self.tokens: dict[str, Token] = {}
        self.counts: Counter[str] = Counter()

    async def __call__(self, blocks: Sequence[ExtractedBlock], batch: Batch) -> Batch:
        handlers = self.registry.handlers
        dex_logs = [lg for lg in batch.logs if lg.topic0 in handlers]
        if not dex_logs:
            return batch
        ctx = Context(
            pools=self.pools,
            tokens=self.tokens,
            block_times={b.hash: b.timestamp for b in batch.blocks},
            transactions={t.hash: (t.from_address, t.to_address) for t in batch.transactions},
        )
        creations = [lg for lg in dex_logs if handlers[lg.topic0 or ""].kind == POOL_CREATED]
        events = [lg for lg in dex_logs if handlers[lg.topic0 or ""].kind != POOL_CREATED]
        new_pools: list[Pool] = []
        created = self.registry.decode(creations, ctx)
        self.counts.update(created.counts)
        for pool in created.records:
            if isinstance(pool, Pool):
                self.pools[pool.address] = pool
                self.not_pools.discard(pool.address)
                new_pools.append(pool)
        new_pools += await self._resolve_pools(events)
        new_tokens = await self._resolve_tokens(self._tokens_of(events, new_pools))
        decoded = self.registry.decode(events, ctx)
        self.counts.update(decoded.counts)
        trades = [r for r in decoded.records if isinstance(r, DexTrade)]
        liquidity = [r for r in decoded.records if isinstance(r, DexLiquidity)]
        return replace(
            batch,
            dex_trades=trades,
            dex_liquidity=liquidity,
            pools=[*batch.pools, *new_pools],
            tokens=[*batch.tokens, *new_tokens],
            skipped={**batch.skipped, **{f"dex.{k}": v for k, v in decoded.counts.items() if k != "records"}},
        )

    def _tokens_of(self, events: Sequence[Log], new_pools: Sequence[Pool]) -> set[str]:
        wanted: set[str] = set()
        for pool in new_pools:
            wanted.update((pool.token0, pool.token1))
        for entry in events:
            known = self.pools.get(entry.address)
            if known is not None:
                wanted.update((known.token0, known.token1))
        return {t for t in wanted if t not in self.tokens}

    async def _resolve_pools(self, events: Sequence[Log]) -> list[Pool]:
        queries = [
            q for q in self.registry.unknown_pools(events, self.pools) if q.address not in self.not_pools
        ]
        if not queries:
            return []
        if self.db is not None:
            rows = await self.db.fetch(
                f"SELECT {_POOL_COLUMNS} FROM pools WHERE address = ANY($1)", [q.address for q in queries]
            )
            for row in rows:
                self.pools[row["address"]] = Pool(**dict(row))
            queries = [q for q in queries if q.address not in self.pools]
        if not queries:
            return []
        return await self._classify_on_chain(queries)

    async def _classify_on_chain(self, queries: list[PoolQuery]) -> list[Pool]:
        calls = [(q, c) for q in queries for c in q.calls]
        results = await self.rpc.eth_calls([(c.to, c.data) for _, c in calls])
        by_query: dict[str, dict[str, str | None]] = {q.address: {} for q in queries}
        for (q, c), res in zip(calls, results, strict=True):
            by_query[q.address][c.name] = res.data if res.ok else None
        outcomes: list[Pool | Skip] = []
        candidates: list[tuple[PoolQuery, Pool]] = []
        for q in queries:
            outcome = q.resolve(by_query[q.address])
            if isinstance(outcome, Skip):
                self.not_pools.add(q.address)
                outcomes.append(outcome)
                log.info("not a pool: %s", outcome.detail)
            else:
                candidates.append((q, outcome))
        checks = [(q, pool, q.verification_call(pool)) for q, pool in candidates]
        to_call = [(q, pool, c) for q, pool, c in checks if c is not None]
        answers = await self.rpc.eth_calls([(c.to, c.data) for _, _, c in to_call]) if to_call else []
        verified = {
            q.address: q.verified(pool, a.data if a.ok else None)
            for (q, pool, _), a in zip(to_call, answers, strict=True)
        }
        resolved: list[Pool] = []
        for q, pool, _ in checks:
            final = verified.get(q.address, pool)
            self.pools[final.address] = final
            resolved.append(final)
            outcomes.append(final)
            if final.protocol == "unknown":
                log.warning(
                    "pool %s: Uniswap-shaped events but no configured factory vouches for it", q.address
                )
        self.counts.update(resolution_counts(outcomes))
        return resolved

    async def _resolve_tokens(self, addresses: set[str]) -> list[Token]:
        if not addresses:
            return []
        missing = sorted(addresses)
        if self.db is not None:
            rows = await self.db.fetch(
                "SELECT address, symbol, name, decimals, source, error FROM tokens WHERE address = ANY($1)",
                missing,
            )
            for row in rows:
                self.tokens[row["address"]] = Token(**dict(row))
            missing = [a for a in missing if a not in self.tokens]
        if not missing:
            return []
        calls = [(a, name, data) for a in missing for name, data in TOKEN_CALLS]
        results = await self.rpc.eth_calls([(a, data) for a, _, data in calls])
        by_token: dict[str, dict[str, str | None]] = {a: {} for a in missing}
        for (a, name, _), res in zip(calls, results, strict=True):
            by_token[a][name] = res.data if res.ok else None
        fetched = []
        for address in missing:
            token = parse_token(address, by_token[address])
            if token.error:
                log.info("token %s: %s", address, token.error)
            self.tokens[address] = token
            fetched.append(token)
        self.counts["tokens.fetched"] += len(fetched)
        return fetched
