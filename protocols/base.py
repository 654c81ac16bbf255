"""The plugin seam: what a protocol declares, what its handlers receive and what they return.

A protocol is a ``ProtocolSpec``: a name and a tuple of ``EventHandler`` s, one per topic0 it decodes.
A handler is a pure function ``handle(log, ctx) -> Outcome``:

- ``log`` is a ``records.Log`` whose topic0 is the handler's;
- ``ctx`` is a ``Context``: read-only mappings the pipeline fills before decoding (pools, tokens, block
  times, transaction senders). No I/O happens inside a handler;
- the outcome is one record (``DexTrade``, ``DexLiquidity``, ``Pool``), ``None`` when the event is valid
  but yields no record (v2 ``Sync``), or a ``Skip`` saying why the log gave nothing. Handlers never raise
  on bad input from the chain.

Two kinds of handler: ``POOL_EVENT`` handlers decode logs emitted by a pool and need
``ctx.pools[log.address]``; they carry a ``PoolResolver`` telling the pipeline how to classify an
emitter it does not know yet (see ``protocols.pools``). ``POOL_CREATED`` handlers decode a factory's
creation event into a ``Pool``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from core.errors import ConfigError
from protocols.pools import PoolResolver
from protocols.skips import (
    UNKNOWN,
    UNKNOWN_POOL,
    VERSION_MISMATCH,
    Skip,
)
from records import DexLiquidity, DexTrade, Log, Pool, Token

POOL_EVENT: Final = "pool_event"
POOL_CREATED: Final = "pool_created"

Outcome = DexTrade | DexLiquidity | Pool | Skip | None


@dataclass(frozen=True, slots=True)
class Context:
    """What handlers may read. Keys are lower-case ``0x`` hex.

    ``pools``: pool address → Pool (every pool the batch's pool events come from, once resolved).
    ``tokens``: token address → Token; a missing token means unknown symbol and decimals, so exact
    amounts and price are null.
    ``block_times``: block hash → Unix seconds, for every block of the batch.
    ``transactions``: transaction hash → (from, to), for every transaction of the batch.
    A missing block or transaction is a bug in the caller and raises ``KeyError``.
    """

    pools: Mapping[str, Pool]
    tokens: Mapping[str, Token]
    block_times: Mapping[str, int]
    transactions: Mapping[str, tuple[str, str | None]]


Handle = Callable[[Log, Context], Outcome]

_UNKNOWN_POOL_SKIP: Final = Skip(UNKNOWN_POOL)


def pool_of(log: Log, ctx: Context, version: str) -> Pool | Skip:
    """The pool that emitted ``log``, if it is known and of ``version``; else why not."""
    pool = ctx.pools.get(log.address)
    if pool is None:
        return _UNKNOWN_POOL_SKIP
    if pool.version != version:
        return Skip(VERSION_MISMATCH, f"v{version} event from a pool of another version")
    return pool


@dataclass(frozen=True, slots=True)
class EventHandler:
    """One event a protocol decodes: its topic0, what emits it (``kind``), and the pure handler."""

    topic0: str
    protocol: str  # the spec's name, e.g. "uniswap-v2"
    event: str  # "Swap", "Mint", ...
    kind: str  # POOL_EVENT or POOL_CREATED
    handle: Handle
    resolver: PoolResolver | None = None  # POOL_EVENT only: how to classify an unknown emitter


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """A protocol plugin: a name, the version its pools carry, and its handlers."""

    name: str
    version: str
    handlers: tuple[EventHandler, ...]


class Venue(Protocol):
    """A configured deployment of a protocol: the factory that creates its pools and an exchange label."""

    @property
    def factory(self) -> str: ...

    @property
    def label(self) -> str: ...


V = TypeVar("V", bound=Venue)
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
