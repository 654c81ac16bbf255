"""The registry: topic0 → handler across every protocol plugin, and the batch helpers the pipeline uses.

One topic0 has one handler. Uniswap v2 forks share the v2 topics and are told apart by the pool's
factory (configuration), not by another handler; two different protocols declaring the same topic0 is
a configuration error, raised when the registry is built. The registry names no protocol: it takes
whatever ``protocols.plugins.discover`` finds.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from core.errors import ConfigError
from protocols.base import POOL_EVENT, Context, EventHandler, ProtocolSpec, pool_id
from protocols.plugins import discover
from protocols.pools import PoolQuery
from protocols.skips import MALFORMED, Skip
from records import DexLiquidity, DexTrade, Log, Pool, Token

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Decoded:
    """What a batch of logs decoded to. ``counts`` keys: ``records``, ``skip.<reason>``."""

    records: list[DexTrade | DexLiquidity | Pool] = field(default_factory=list)
    skipped: list[tuple[Log, Skip]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class Registry:
    """Handlers of every registered protocol, by topic0."""

    def __init__(self, protocols: Iterable[ProtocolSpec]) -> None:
        self.protocols: tuple[ProtocolSpec, ...] = tuple(protocols)
        self.handlers: dict[str, EventHandler] = {}
        for spec in self.protocols:
            for handler in spec.handlers:
                other = self.handlers.get(handler.topic0)
                if other is not None:
                    raise ConfigError(
                        f"topic0 {handler.topic0} declared by {other.protocol} ({other.event}) and "
                        f"{handler.protocol} ({handler.event})"
                    )
                self.handlers[handler.topic0] = handler
        # tokens without a contract (native ETH), by address: the pipeline never asks the chain about them
        self.static_tokens: dict[str, Token] = {t.address: t for spec in self.protocols for t in spec.tokens}
        self._handles = {topic0: handler.handle for topic0, handler in self.handlers.items()}

    def lookup(self, topic0: str | None) -> EventHandler | None:
        return self.handlers.get(topic0) if topic0 is not None else None

    def unknown_pools(self, logs: Iterable[Log], pools: Mapping[str, Pool]) -> list[PoolQuery]:
        """One query per distinct pool id of a pool event that is not in ``pools`` (first-seen order),
        for protocols that can classify a pool nobody saw created."""
        queries: dict[str, PoolQuery] = {}
        handlers = self.handlers
        for entry in logs:
            handler = handlers.get(entry.topic0) if entry.topic0 is not None else None
            if handler is None or handler.kind != POOL_EVENT or handler.resolver is None:
                continue
            key = pool_id(entry, handler.pool_key)
            if key is not None and key not in pools and key not in queries:
                queries[key] = PoolQuery(key, handler.resolver, entry.address)
        return list(queries.values())

    def decode(self, logs: Iterable[Log], ctx: Context) -> Decoded:
        """Run every log through its handler; records in log order, skips counted and logged."""
        out = Decoded()
        records, skipped = out.records, out.skipped
        handles = self._handles
        for entry in logs:
            handle = handles.get(entry.topic0)  # type: ignore[arg-type]  # None is simply not a key
            if handle is None:
                continue
            outcome = handle(entry, ctx)
            if outcome is None:
                continue
            if type(outcome) is Skip:
                skipped.append((entry, outcome))
            else:
                records.append(outcome)  # type: ignore[arg-type]  # not None, not Skip
        counts = out.counts
        counts["records"] = len(records)
        for entry, skip in skipped:
            counts[f"skip.{skip.reason}"] += 1
            level = logging.WARNING if skip.reason == MALFORMED else logging.DEBUG
            log.log(
                level,
                "skipped log %s/%s (block %s, tx %s, address %s): %s %s",
                entry.block_hash,
                entry.log_index,
                entry.block_number,
                entry.transaction_hash,
                entry.address,
                skip.reason,
                skip.detail,
            )
        return out


def resolution_counts(outcomes: Iterable[Pool | Skip]) -> Counter[str]:
    """Counters for resolved pools (``PoolQuery.resolve``/``verified`` results): ``pool.<exchange>``
    (``pool.unknown`` for a pool no configured factory confirmed) and ``skip.<reason>``."""
    counts: Counter[str] = Counter()
    for outcome in outcomes:
        counts[f"skip.{outcome.reason}" if isinstance(outcome, Skip) else f"pool.{outcome.exchange}"] += 1
    return counts


def default_registry(venues: Mapping[str, Sequence[object]] | None = None) -> Registry:
    """Every discovered plugin, with ``venues[plugin.name]`` where given, else its mainnet venues."""
    given = venues or {}
    return Registry(
        plugin.build(tuple(given[plugin.name])) if plugin.name in given else plugin.spec(None)
        for plugin in discover()
    )


def registry_of(settings: Mapping[str, str | None]) -> Registry:
    """Every discovered plugin configured from its setting's text (``settings[plugin.setting]``;
    absent, None or blank = mainnet defaults)."""
    return Registry(plugin.spec(settings.get(plugin.setting)) for plugin in discover())
