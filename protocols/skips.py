"""Why a log produced no record: ``Skip`` and its reasons (stable counter keys), shared by every
protocol and by pool resolution."""

from __future__ import annotations

from typing import Final, NamedTuple

UNKNOWN: Final = "unknown"  # Pool.protocol / exchange of a Uniswap-shaped pool no configured factory made


class Skip(NamedTuple):
    """Why a log produced no record: ``reason`` is a stable key for counters, ``detail`` free text."""

    reason: str
    detail: str = ""


# Skip reasons (counter keys).
MALFORMED: Final = "malformed"  # topics/data do not fit the event's layout
UNKNOWN_POOL: Final = "unknown_pool"  # emitter is not in ctx.pools (unresolved, or not a pool at all)
VERSION_MISMATCH: Final = "version_mismatch"  # e.g. a v2 Swap from an address known as a v3 pool
NOT_A_TRADE: Final = "not_a_trade"  # a swap whose net flows are not one token in, the other out
UNCONFIGURED_FACTORY: Final = "unconfigured_factory"  # a creation event from a factory not configured
NO_POOL_STATE: Final = "no_pool_state"  # an event whose amounts need pool state nobody could read
NOT_A_POOL: Final = "not_a_pool"  # pool resolution: token0()/token1() failed or returned garbage
