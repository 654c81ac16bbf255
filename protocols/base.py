"""The plugin seam: what a protocol declares, what its handlers receive and what they return.

A protocol module declares, as data, the events it decodes and how to turn each decoded event into a
record; ``protocol_spec`` makes the handlers. A ``ProtocolSpec`` is a name, a version and a tuple of
``EventHandler`` s, one per topic0. A handler is a pure function ``handle(log, ctx) -> Outcome``:

- ``log`` is a ``records.Log`` whose topic0 is the handler's;
- ``ctx`` is a ``Context``: read-only mappings the pipeline fills before decoding (pools, tokens, block
  times, transaction senders). No I/O happens inside a handler;
- the outcome is one record (``DexTrade``, ``DexLiquidity``, ``Pool``), ``None`` when the event is valid
  but yields no record (v2 ``Sync``), or a ``Skip`` saying why the log gave nothing. Handlers never raise
  on bad input from the chain.

Two kinds of handler: ``POOL_EVENT`` handlers decode an event of a pool and need the pool in
``ctx.pools``; ``POOL_CREATED`` handlers decode a discovery event (a factory's or a singleton's) into a
``Pool``. Where a log names its pool is the protocol's ``pool_key``: ``BY_EMITTER`` (the log's address
is the pool, Uniswap v2/v3) or ``BY_TOPIC1`` (a singleton emits every pool's events and topic1 is the
pool's 32-byte id, Uniswap v4's PoolManager, Balancer's Vault: the pool's ``contract`` must be the
log's emitter, since anyone can emit an event with any id).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from core.errors import ConfigError
from decoders.events import EventAbi, Malformed
from protocols.pools import Call, CallResult, PoolResolver
from protocols.skips import MALFORMED, UNCONFIGURED_FACTORY, UNKNOWN, UNKNOWN_POOL, VERSION_MISMATCH, Skip
from records import DexLiquidity, DexTrade, Log, Pool, Token

POOL_EVENT: Final = "pool_event"
POOL_CREATED: Final = "pool_created"
BY_EMITTER: Final = "emitter"  # the log's address is the pool id
BY_TOPIC1: Final = "topic1"  # topic1 is the pool id; a configured singleton emits the log

Outcome = DexTrade | DexLiquidity | Pool | Skip | None


@dataclass(frozen=True, slots=True)
class Context:
    """What handlers may read. Keys are lower-case ``0x`` hex.

    ``pools``: pool id (address or 32-byte id) → Pool, for every pool the batch's pool events name.
    ``tokens``: token address → Token; a missing token means unknown symbol and decimals, so exact
    amounts and price are null.
    ``block_times``: block hash → Unix seconds, for every block of the batch.
    ``transactions``: transaction hash → (from, to), for every transaction of the batch.
    A missing block or transaction is a bug in the caller and raises ``KeyError``.
    ``state``: pool id → the pool state a protocol tracks through the batch in log order (Uniswap v4:
    price and tick, which its ModifyLiquidity amounts need), seeded by the pipeline with the state
    before the batch (``EventHandler.state``); the one thing handlers may write.
    """

    pools: Mapping[str, Pool]
    tokens: Mapping[str, Token]
    block_times: Mapping[str, int]
    transactions: Mapping[str, tuple[str, str | None]]
    state: dict[str, Any] = field(default_factory=dict)


Handle = Callable[[Log, Context], Outcome]


@dataclass(frozen=True, slots=True)
class StateQuery:
    """Pool state an event needs from before the batch: ``call(pool id, emitter)`` is the ``eth_call``
    the pipeline makes at the block before the batch, ``parse`` turns its answer into ``ctx.state``'s
    value (None: no state, e.g. a pool not initialised yet)."""

    call: Callable[[str, str], Call]
    parse: Callable[[CallResult], Any]


_UNKNOWN_POOL_SKIP: Final = Skip(UNKNOWN_POOL)


@dataclass(frozen=True, slots=True)
class EventHandler:
    """One event a protocol decodes: its topic0, what emits it (``kind``), and the pure handler."""

    topic0: str
    protocol: str  # the spec's name, e.g. "uniswap-v2"
    event: str  # "Swap", "Mint", ...
    kind: str  # POOL_EVENT or POOL_CREATED
    handle: Handle
    resolver: PoolResolver | None = None  # POOL_EVENT only: how to classify an unknown pool
    pool_key: str = BY_EMITTER  # POOL_EVENT only: where the log names its pool
    state: StateQuery | None = None  # POOL_EVENT only: pool state it needs from before the batch


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """A protocol plugin: a name, the version its pools carry, its handlers, and tokens it defines
    without a contract (v4's native ETH), which the pipeline never asks the chain about."""

    name: str
    version: str
    handlers: tuple[EventHandler, ...]
    tokens: tuple[Token, ...] = ()


def pool_id(log: Log, pool_key: str) -> str | None:
    """The id of the pool ``log`` is about: its emitter, or its topic1."""
    return log.address if pool_key == BY_EMITTER else log.topic1


# The declarative shape: a protocol lists its events with a decoder and a builder, nothing else.
Decode = Callable[[Log], Any]  # the decoded event (a NamedTuple), or Malformed
Emit = Callable[[Log, Context, Pool, Any], Outcome]  # (log, ctx, pool, decoded event) → record


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """An event of a pool: ``emit`` builds the record from the decoded event and the known pool;
    without ``emit`` the event is only validated and yields nothing, known pool or not (v2 ``Sync``)."""

    abi: EventAbi
    decode: Decode
    emit: Emit | None = None
    state: StateQuery | None = None


class Venue(Protocol):
    """A configured deployment of a protocol: the contract that creates its pools (a factory, or the
    singleton that holds them) and an exchange label."""

    @property
    def factory(self) -> str: ...

    @property
    def label(self) -> str: ...


V = TypeVar("V", bound=Venue)
Discover = Callable[[Log, Context, Any, Any], Outcome]  # (log, ctx, venue, decoded event) → Pool


@dataclass(frozen=True, slots=True)
class Discovery:
    """A pool-discovery event, trusted only from a configured venue's contract (anyone can emit it)."""

    abi: EventAbi
    decode: Decode
    emit: Discover


def _pool_event_handler(event: PoolEvent, version: str, pool_key: str) -> Handle:
    decode, emit = event.decode, event.emit
    mismatch = Skip(VERSION_MISMATCH, f"v{version} event from a pool of another version")
    if emit is None:

        def validate(log: Log, ctx: Context) -> Outcome:
            decoded = decode(log)
            return Skip(MALFORMED, decoded.reason) if type(decoded) is Malformed else None

        return validate
    if pool_key == BY_EMITTER:

        def handle(log: Log, ctx: Context) -> Outcome:
            decoded = decode(log)
            if type(decoded) is Malformed:
                return Skip(MALFORMED, decoded.reason)
            pool = ctx.pools.get(log.address)
            if pool is None:
                return _UNKNOWN_POOL_SKIP
            if pool.version != version:
                return mismatch
            return emit(log, ctx, pool, decoded)

        return handle

    def handle_by_id(log: Log, ctx: Context) -> Outcome:
        decoded = decode(log)
        if type(decoded) is Malformed:
            return Skip(MALFORMED, decoded.reason)
        pool = ctx.pools.get(log.topic1)  # type: ignore[arg-type]  # the decoder checked topic1
        if pool is None:
            return _UNKNOWN_POOL_SKIP
        if pool.contract != log.address:
            return Skip(UNKNOWN_POOL, f"pool {log.topic1} belongs to {pool.contract}, not {log.address}")
        if pool.version != version:
            return mismatch
        return emit(log, ctx, pool, decoded)

    return handle_by_id


def _discovery_handler(discovery: Discovery, by_factory: Mapping[str, Any]) -> Handle:
    decode, emit = discovery.decode, discovery.emit

    def handle(log: Log, ctx: Context) -> Outcome:
        venue = by_factory.get(log.address)
        if venue is None:
            return Skip(UNCONFIGURED_FACTORY, log.address)
        decoded = decode(log)
        if type(decoded) is Malformed:
            return Skip(MALFORMED, decoded.reason)
        return emit(log, ctx, venue, decoded)

    return handle


def protocol_spec(
    name: str,
    version: str,
    venues: Mapping[str, Any],
    *,
    events: Iterable[PoolEvent],
    discovery: Iterable[Discovery],
    pool_key: str = BY_EMITTER,
    resolver: PoolResolver | None = None,
    tokens: tuple[Token, ...] = (),
) -> ProtocolSpec:
    """The handlers for a declared protocol: ``venues`` maps each configured contract (lower-case) to
    its venue; every pool event goes through one generic handler (decode, find the pool, emit)."""
    handlers = []
    for e in events:
        handle = _pool_event_handler(e, version, pool_key)
        handlers.append(
            EventHandler(e.abi.topic0, name, e.abi.name, POOL_EVENT, handle, resolver, pool_key, e.state)
        )
    handlers += [
        EventHandler(d.abi.topic0, name, d.abi.name, POOL_CREATED, _discovery_handler(d, venues))
        for d in discovery
    ]
    return ProtocolSpec(name, version, tuple(handlers), tokens)


_ADDRESS = re.compile(r"^0x[0-9a-f]{40}$")


def check_venues(venues: Iterable[V]) -> dict[str, V]:
    """Lower-case factory address → venue (a checksummed address in the settings is fine).

    ``ConfigError`` for a factory that is not an address, a factory listed twice, or an empty or
    ``unknown`` label: venues come from settings, and a mistake there must stop the node at startup.
    """
    by_factory: dict[str, V] = {}
    for venue in venues:
        factory = venue.factory.lower()
        if not _ADDRESS.match(factory):
            raise ConfigError(f"venue {venue.label!r}: factory {venue.factory!r} is not an address")
        if not venue.label or venue.label == UNKNOWN:
            raise ConfigError(f"venue with factory {venue.factory}: label {venue.label!r} is not allowed")
        if factory in by_factory:
            raise ConfigError(f"factory {factory} configured twice")
        by_factory[factory] = venue
    return by_factory
