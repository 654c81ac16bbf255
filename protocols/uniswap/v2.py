"""Uniswap v2 and its forks: Swap → DexTrade, Mint/Burn → DexLiquidity, PairCreated → Pool.

Forks (SushiSwap, PancakeSwap, …) deploy the same pair contract, so they emit the same events with
the same topic0; only the factory tells them apart. A fork is therefore one ``V2Venue(factory, label)``
in the configuration, no code. A pair whose factory is not configured (or does not confirm the pair)
still decodes, with protocol and exchange ``unknown``.

Rules:
- Swap: Dune's ``dex.trades`` formula (spellbook ``uniswap_compatible_v2_trades``), not net flows, so
  each row matches Dune's row for the same event: taker = ``to``, maker = the pair,
  bought = ``amount0Out`` of token0 if it is non-zero, else ``amount1Out`` of token1;
  sold = ``amount1In`` of token1 if ``amount0In == 0 or amount1Out == 0``, else ``amount0In`` of token0.
  Every Swap is a trade, flash swaps included: ``amount0In=1003, amount0Out=1000`` (a flash loan repaid
  in the borrowed token) is 1000 token0 bought and 0 token1 sold, as on Dune.
- Mint: event ``mint``, ``add``; Burn: ``burn``, ``remove``. ``sender`` is the event's sender (usually
  the router); the LP owner is not in the event (see the LP token's Transfer).
- Sync is decoded and validated but yields no record (reserves, for later).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from decoders.uniswap import decode_v2_burn, decode_v2_mint, decode_v2_swap, decode_v2_sync
from decoders.uniswap_abi import (
    V2_BURN,
    V2_MINT,
    V2_PAIR_CREATED,
    V2_SWAP,
    V2_SYNC,
    PairCreated,
    V2Burn,
    V2Mint,
    V2Swap,
    decode_pair_created,
)
from protocols.base import Context, Discovery, Outcome, PoolEvent, ProtocolSpec, check_venues, protocol_spec
from protocols.plugins import Plugin
from protocols.pools import (
    FACTORY,
    TOKEN0,
    TOKEN1,
    Call,
    CallResult,
    PoolResolver,
    encode_call,
    make_pool,
    read_pool_tokens,
)
from protocols.skips import Skip
from protocols.trades import liquidity, trade
from records import Log, Pool

NAME: Final = "uniswap-v2"
VERSION: Final = "2"
PROTOCOL: Final = "uniswap"


@dataclass(frozen=True, slots=True)
class V2Venue:
    """A deployment of the v2 pair contract: its factory, the exchange label, and the swap fee.

    ``fee`` is in hundredths of a basis point, as v3 counts it (3000 = 0.30 %).
    """

    factory: str
    label: str
    fee: int | None = 3000


DEFAULT_V2_VENUES: tuple[V2Venue, ...] = (
    V2Venue("0x5c69bee701ef814a2b6a3edd4b1652cb9cc5aa6f", "uniswap-v2"),
    V2Venue("0xc0aee478e3658e2610c5f7a4a2e1777ce9e4f2ac", "sushiswap"),
    V2Venue("0x1097053fd2ea711dad45caccc45eff7548fcb362", "pancakeswap", fee=2500),
)  # Ethereum mainnet


def swap(log: Log, ctx: Context, pool: Pool, event: V2Swap) -> Outcome:
    """Swap → DexTrade (taker = ``to``, maker = the pair; sides by Dune's formula)."""
    _, to, amount0_in, amount1_in, amount0_out, amount1_out = event
    if amount0_out:
        bought, bought_raw = pool.token0, amount0_out
    else:
        bought, bought_raw = pool.token1, amount1_out
    if amount0_in == 0 or amount1_out == 0:
        sold, sold_raw = pool.token1, amount1_in
    else:
        sold, sold_raw = pool.token0, amount0_in
    return trade(log, ctx, pool, to, pool.address, bought, bought_raw, sold, sold_raw)


def mint(log: Log, ctx: Context, pool: Pool, event: V2Mint) -> Outcome:
    """Mint → DexLiquidity (mint, add; sender = the caller, usually the router)."""
    return liquidity(
        log, ctx, pool, "mint", "add", event.amount0, event.amount1, owner=None, sender=event.sender
    )


def burn(log: Log, ctx: Context, pool: Pool, event: V2Burn) -> Outcome:
    """Burn → DexLiquidity (burn, remove; the event's ``to`` received the tokens)."""
    return liquidity(
        log, ctx, pool, "burn", "remove", event.amount0, event.amount1, owner=None, sender=event.sender
    )


def _venue_pool(
    venue: V2Venue | None,
    address: str,
    factory: str | None,
    token0: str,
    token1: str,
    created_by: Log | None = None,
) -> Pool:
    return make_pool(
        address, protocol=PROTOCOL, version=VERSION, label=venue.label if venue is not None else None,
        factory=factory, token0=token0, token1=token1, fee=venue.fee if venue is not None else None,
        tick_spacing=None, created_by=created_by,
    )  # fmt: skip


def pair_created(log: Log, ctx: Context, venue: V2Venue, event: PairCreated) -> Outcome:
    """PairCreated from a configured factory → Pool."""
    return _venue_pool(venue, event.pair, log.address, event.token0, event.token1, created_by=log)


EVENTS: Final = (
    PoolEvent(V2_SWAP, decode_v2_swap, swap),
    PoolEvent(V2_MINT, decode_v2_mint, mint),
    PoolEvent(V2_BURN, decode_v2_burn, burn),
    PoolEvent(V2_SYNC, decode_v2_sync),  # validated; reserves are for later
)
DISCOVERY: Final = (Discovery(V2_PAIR_CREATED, decode_pair_created, pair_created),)


def protocol(venues: Sequence[V2Venue] = DEFAULT_V2_VENUES) -> ProtocolSpec:
    """The v2 plugin for these venues (factories must be distinct lower-case addresses)."""
    by_factory: Mapping[str, V2Venue] = check_venues(venues)

    def resolve(address: str, results: Mapping[str, CallResult], contract: str) -> Pool | Skip:
        read = read_pool_tokens(address, results)
        if isinstance(read, Skip):
            return read
        token0, token1, factory = read
        return _venue_pool(None, address, factory, token0, token1)

    def verification(pool: Pool) -> Call | None:
        if pool.factory is None or pool.factory not in by_factory:
            return None
        data = encode_call("getPair(address,address)", pool.token0, pool.token1)
        return Call("getPair", pool.factory, data)

    def confirm(pool: Pool) -> Pool:
        venue = by_factory.get(pool.factory or "")
        return _venue_pool(venue, pool.address, pool.factory, pool.token0, pool.token1)

    resolver = PoolResolver(VERSION, (FACTORY, TOKEN0, TOKEN1), resolve, verification, confirm)
    return protocol_spec(NAME, VERSION, by_factory, events=EVENTS, discovery=DISCOVERY, resolver=resolver)


def _parse_venue(factory: str, label: str, fee: str) -> V2Venue:
    if fee and not fee.isdigit():
        raise ValueError("fee must be an integer (3000 = 0.30%)")
    return V2Venue(factory, label, int(fee) if fee else 3000)


PLUGIN: Final = Plugin(NAME, "uniswap_v2_factories", DEFAULT_V2_VENUES, _parse_venue, protocol)
