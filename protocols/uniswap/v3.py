"""Uniswap v3 (and forks that deploy its pool unchanged): Swap → DexTrade, Mint/Burn/Collect →
DexLiquidity, PoolCreated → Pool.

A fork is one ``V3Venue(factory, label)`` in the configuration. Forks that changed the Swap event
(PancakeSwap v3 adds protocol fees to it) have another topic0 and need their own plugin.

Rules:
- Swap: Dune's ``dex.trades`` formula (spellbook ``uniswap_compatible_v3_trades``): taker =
  ``recipient``, maker = null (Dune's Uniswap v3 models set no maker; ``pool_address`` is the pool).
  ``amount0``/``amount1`` are the pool's balance changes (positive = paid in): if ``amount0 < 0`` the
  trade bought ``|amount0|`` token0 and sold ``|amount1|`` token1, else it bought ``|amount1|`` token1
  and sold ``|amount0|`` token0. Every Swap is a trade (a dust swap with a zero side included).
- Mint: event ``mint``, ``add``, owner = the position owner, sender = the caller (usually the position
  manager), liquidity = the liquidity added, tick range.
- Burn: ``burn``, ``remove``, owner, liquidity removed, tick range. The amounts are credited to the
  position, not paid: the tokens leave the pool with the following ``Collect``.
- Collect: ``collect``, ``remove``, owner, tick range, amounts paid (fees + burned principal). Burn and
  Collect of the same position count the principal twice when summed blindly: filter on ``event``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from decoders.uniswap import decode_v3_burn, decode_v3_collect, decode_v3_mint, decode_v3_swap
from decoders.uniswap_abi import (
    V3_BURN,
    V3_COLLECT,
    V3_MINT,
    V3_POOL_CREATED,
    V3_SWAP,
    PoolCreated,
    V3Burn,
    V3Collect,
    V3Mint,
    V3Swap,
    decode_pool_created,
)
from protocols.base import Context, Discovery, Outcome, PoolEvent, ProtocolSpec, check_venues, protocol_spec
from protocols.plugins import Plugin
from protocols.pools import (
    FACTORY,
    FEE,
    TICK_SPACING,
    TOKEN0,
    TOKEN1,
    Call,
    CallResult,
    PoolResolver,
    encode_call,
    int_result,
    make_pool,
    read_pool_tokens,
    uint_result,
)
from protocols.skips import UNKNOWN, Skip
from protocols.trades import liquidity, trade
from records import Log, Pool

NAME: Final = "uniswap-v3"
VERSION: Final = "3"
PROTOCOL: Final = "uniswap"


@dataclass(frozen=True, slots=True)
class V3Venue:
    """A deployment of the v3 pool contract: its factory and the exchange label."""

    factory: str
    label: str


DEFAULT_V3_VENUES: tuple[V3Venue, ...] = (
    V3Venue("0x1f98431c8ad98523631ae4a59f267346ea31f984", "uniswap-v3"),
    V3Venue("0xbaceb8ec6b9355dfc0269c18bac9d6e2bdc29c4f", "sushiswap-v3"),
)  # Ethereum mainnet


def swap(log: Log, ctx: Context, pool: Pool, event: V3Swap) -> Outcome:
    """Swap → DexTrade (taker = ``recipient``, no maker; a negative ``amount0`` is token0 bought)."""
    amount0, amount1 = event.amount0, event.amount1
    if amount0 < 0:
        return trade(log, ctx, pool, event.recipient, None, pool.token0, -amount0, pool.token1, abs(amount1))
    return trade(log, ctx, pool, event.recipient, None, pool.token1, abs(amount1), pool.token0, amount0)


def mint(log: Log, ctx: Context, pool: Pool, event: V3Mint) -> Outcome:
    """Mint → DexLiquidity (mint, add; owner, sender, liquidity, tick range)."""
    return liquidity(
        log, ctx, pool, "mint", "add", event.amount0, event.amount1,
        owner=event.owner, sender=event.sender, liquidity=event.amount,
        tick_lower=event.tick_lower, tick_upper=event.tick_upper,
    )  # fmt: skip


def burn(log: Log, ctx: Context, pool: Pool, event: V3Burn) -> Outcome:
    """Burn → DexLiquidity (burn, remove; amounts credited to the position, paid by a later Collect)."""
    return liquidity(
        log, ctx, pool, "burn", "remove", event.amount0, event.amount1,
        owner=event.owner, sender=None, liquidity=event.amount,
        tick_lower=event.tick_lower, tick_upper=event.tick_upper,
    )  # fmt: skip


def collect(log: Log, ctx: Context, pool: Pool, event: V3Collect) -> Outcome:
    """Collect → DexLiquidity (collect, remove; the amounts the pool paid out)."""
    return liquidity(
        log, ctx, pool, "collect", "remove", event.amount0, event.amount1,
        owner=event.owner, sender=None, tick_lower=event.tick_lower, tick_upper=event.tick_upper,
    )  # fmt: skip


def _venue_pool(
    venue: V3Venue | None,
    address: str,
    factory: str | None,
    token0: str,
    token1: str,
    fee: int | None,
    tick_spacing: int | None,
    created_by: Log | None = None,
) -> Pool:
    return make_pool(
        address, protocol=PROTOCOL, version=VERSION, label=venue.label if venue is not None else None,
        factory=factory, token0=token0, token1=token1, fee=fee, tick_spacing=tick_spacing,
        created_by=created_by,
    )  # fmt: skip


def pool_created(log: Log, ctx: Context, venue: V3Venue, event: PoolCreated) -> Outcome:
    """PoolCreated from a configured factory → Pool."""
    return _venue_pool(
        venue, event.pool, log.address, event.token0, event.token1, event.fee, event.tick_spacing,
        created_by=log,
    )  # fmt: skip


EVENTS: Final = (
    PoolEvent(V3_SWAP, decode_v3_swap, swap),
    PoolEvent(V3_MINT, decode_v3_mint, mint),
    PoolEvent(V3_BURN, decode_v3_burn, burn),
    PoolEvent(V3_COLLECT, decode_v3_collect, collect),
)
DISCOVERY: Final = (Discovery(V3_POOL_CREATED, decode_pool_created, pool_created),)


def protocol(venues: Sequence[V3Venue] = DEFAULT_V3_VENUES) -> ProtocolSpec:
    """The v3 plugin for these venues (factories must be distinct lower-case addresses)."""
    by_factory: Mapping[str, V3Venue] = check_venues(venues)

    def resolve(address: str, results: Mapping[str, CallResult], contract: str) -> Pool | Skip:
        read = read_pool_tokens(address, results)
        if isinstance(read, Skip):
            return read
        token0, token1, factory = read
        fee = uint_result(results.get(FEE), 24)
        tick_spacing = int_result(results.get(TICK_SPACING), 24)
        return _venue_pool(None, address, factory, token0, token1, fee, tick_spacing)

    def verification(pool: Pool) -> Call | None:
        if pool.factory is None or pool.factory not in by_factory or pool.fee is None:
            return None
        data = encode_call("getPool(address,address,uint24)", pool.token0, pool.token1, pool.fee)
        return Call("getPool", pool.factory, data)

    def confirm(pool: Pool) -> Pool:
        venue = by_factory.get(pool.factory or "")
        return replace(
            pool,
            protocol=PROTOCOL if venue is not None else UNKNOWN,
            exchange=venue.label if venue is not None else UNKNOWN,
        )

    resolver = PoolResolver(
        VERSION, (FACTORY, TOKEN0, TOKEN1, FEE, TICK_SPACING), resolve, verification, confirm
    )
    return protocol_spec(NAME, VERSION, by_factory, events=EVENTS, discovery=DISCOVERY, resolver=resolver)


def _parse_venue(factory: str, label: str, extra: str) -> V3Venue:
    return V3Venue(factory, label)  # the pool carries its own fee


PLUGIN: Final = Plugin(NAME, "uniswap_v3_factories", DEFAULT_V3_VENUES, _parse_venue, protocol)
