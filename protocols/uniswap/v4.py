"""Uniswap v4: one singleton PoolManager holds every pool. Initialize → Pool, Swap → DexTrade,
ModifyLiquidity → DexLiquidity.

A pool is its 32-byte ``PoolId`` (topic1 of every event), not a contract: ``Pool.address`` and a
trade's ``pool_address`` hold that id, ``Pool.contract`` the PoolManager. Currency ``0x0…0`` is native
ETH, a token this plugin defines (18 decimals, symbol ETH) so the pipeline never calls it. A
deployment is ``V4Venue(pool_manager, label)``; setting ``DEXNODE_UNISWAP_V4_POOL_MANAGERS``.

Rules:
- Swap: ``amount0``/``amount1`` are the swapper's balance changes (negative = paid into the pool),
  the opposite of v3. Dune's ``dex.trades`` (spellbook ``uniswap_compatible_v4_trades``): if
  ``amount0 < 0`` the trade sold ``|amount0|`` token0 and bought ``|amount1|`` token1, else it sold
  ``|amount1|`` token1 and bought ``amount0`` token0. Taker = ``sender`` (the router that called the
  PoolManager), maker null.
- Hooks: the event is the pool's own swap (what the AMM curve moved). A hook that returns deltas
  (``beforeSwap``/``afterSwap`` with return-delta permissions: custom curves, hook fees) changes what
  the swapper settles without changing the event: dexnode reports the event's amounts, the pool's
  side of the trade, and the hook on the pool row says which pools may differ.
- ModifyLiquidity: the event holds ``liquidityDelta`` and the tick range, no token amounts. They are
  computed exactly as the PoolManager does (``Pool.modifyLiquidity``: SqrtPriceMath with TickMath,
  rounded up when adding, down when removing) from the pool's price and tick at that log: the state
  at the block before the batch (``extsload`` of the pool's slot0), then each Initialize and Swap of
  the batch in log order. Event ``modify_liquidity``, ``add`` for a positive delta, else ``remove``;
  the amounts are the principal (fees collected with it are not in the event); owner and sender =
  the event's sender (the position manager or router), liquidity = ``|liquidityDelta|``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from eth_utils import keccak

from decoders.events import selector
from decoders.uniswap_v4 import (
    V4_INITIALIZE,
    V4_MODIFY_LIQUIDITY,
    V4_SWAP,
    V4Initialize,
    V4ModifyLiquidity,
    V4Swap,
    decode_v4_initialize,
    decode_v4_modify_liquidity,
    decode_v4_swap,
)
from protocols.base import (
    BY_TOPIC1,
    Context,
    Discovery,
    Outcome,
    PoolEvent,
    ProtocolSpec,
    StateQuery,
    check_venues,
    protocol_spec,
)
from protocols.plugins import Plugin
from protocols.pools import Call, CallResult, make_pool
from protocols.skips import NO_POOL_STATE, Skip
from protocols.trades import liquidity, trade
from records import Log, Pool, Token

NAME: Final = "uniswap-v4"
VERSION: Final = "4"
PROTOCOL: Final = "uniswap"
NATIVE: Final = "0x0000000000000000000000000000000000000000"
ETH: Final = Token(NATIVE, "ETH", "Ether", 18, "native")
DYNAMIC_FEE: Final = 0x800000  # LPFeeLibrary.DYNAMIC_FEE_FLAG: the fee is set per swap


@dataclass(frozen=True, slots=True)
class V4Venue:
    """A deployment of the v4 PoolManager and the exchange label of its pools."""

    pool_manager: str
    label: str

    @property
    def factory(self) -> str:  # the seam's name for the contract that makes a venue's pools
        return self.pool_manager


DEFAULT_V4_VENUES: tuple[V4Venue, ...] = (
    V4Venue("0x000000000004444c5dc75cb358380d2e3de08a90", "uniswap-v4"),
)  # Ethereum mainnet


def initialize(log: Log, ctx: Context, venue: V4Venue, event: V4Initialize) -> Outcome:
    """Initialize from a configured PoolManager → Pool (keyed by its id; the price starts the state)."""
    ctx.state[event.id] = event  # its sqrt_price_x96 and tick start the pool's state
    return make_pool(
        event.id, protocol=PROTOCOL, version=VERSION, label=venue.label, factory=log.address,
        token0=event.currency0, token1=event.currency1, fee=event.fee, tick_spacing=event.tick_spacing,
        created_by=log, contract=log.address, hooks=event.hooks,
    )  # fmt: skip


def swap(log: Log, ctx: Context, pool: Pool, event: V4Swap) -> Outcome:
    """Swap → DexTrade (a negative amount is what the swapper paid in; taker = sender, no maker)."""
    ctx.state[pool.address] = event  # the price and tick it moved to (no new tuple per swap)
    amount0, amount1 = event.amount0, event.amount1
    if amount0 < 0:
        return trade(log, ctx, pool, event.sender, None, pool.token1, abs(amount1), pool.token0, -amount0)
    return trade(log, ctx, pool, event.sender, None, pool.token0, amount0, pool.token1, abs(amount1))


def modify_liquidity(log: Log, ctx: Context, pool: Pool, event: V4ModifyLiquidity) -> Outcome:
    """ModifyLiquidity → DexLiquidity with the token amounts the PoolManager moved (principal)."""
    state = ctx.state.get(pool.address)
    if state is None:
        return Skip(NO_POOL_STATE, f"pool {pool.address}: price unknown before this log")
    amount0, amount1 = principal(
        state.sqrt_price_x96, state.tick, event.tick_lower, event.tick_upper, event.liquidity_delta
    )
    return liquidity(
        log, ctx, pool, "modify_liquidity", "add" if event.liquidity_delta > 0 else "remove",
        amount0, amount1, owner=event.sender, sender=event.sender, liquidity=abs(event.liquidity_delta),
        tick_lower=event.tick_lower, tick_upper=event.tick_upper,
    )  # fmt: skip


# --- the PoolManager's math (v4-core TickMath, SqrtPriceMath, Pool.modifyLiquidity), in integers ---

_Q96 = 1 << 96
_MAX_U256 = (1 << 256) - 1
_TICK_FACTORS: Final = (
    0xFFF97272373D413259A46990580E213A,
    0xFFF2E50F5F656932EF12357CF3C7FDCC,
    0xFFE5CACA7E10E4E61C3624EAA0941CD0,
    0xFFCB9843D60F6159C9DB58835C926644,
    0xFF973B41FA98C081472E6896DFB254C0,
    0xFF2EA16466C96A3843EC78B326B52861,
    0xFE5DEE046A99A2A811C461F1969C3053,
    0xFCBE86C7900A88AEDCFFC83B479AA3A4,
    0xF987A7253AC413176F2B074CF7815E54,
    0xF3392B0822B70005940C7A398E4B70F3,
    0xE7159475A2C29B7443B29C7FA6E889D9,
    0xD097F3BDFD2022B8845AD8F792AA5825,
    0xA9F746462D870FDF8A65DC1F90E061E5,
    0x70D869A156D2A1B890BB3DF62BAF32F7,
    0x31BE135F97D08FD981231505542FCFA6,
    0x9AA508B5B7A84E1C677DE54F3E99BC9,
    0x5D6AF8DEDB81196699C329225EE604,
    0x2216E584F5FA1EA926041BEDFE98,
    0x48A170391F7DC42444E8FA2,
)  # ratios for bits 0x2 … 0x80000 of |tick| (v3-core and v4-core TickMath)


def sqrt_price_at_tick(tick: int) -> int:
    """TickMath.getSqrtPriceAtTick: sqrt(1.0001^tick) · 2^96, rounded up, bit for bit."""
    absolute = abs(tick)
    ratio = 0xFFFCB933BD6FAD37AA2D162D1A594001 if absolute & 1 else 1 << 128
    for bit, factor in enumerate(_TICK_FACTORS, start=1):
        if absolute & (1 << bit):
            ratio = (ratio * factor) >> 128
    if tick > 0:
        ratio = _MAX_U256 // ratio
    return (ratio >> 32) + (1 if ratio & 0xFFFFFFFF else 0)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def amount0_delta(price_a: int, price_b: int, liquidity: int, round_up: bool) -> int:
    """SqrtPriceMath.getAmount0Delta (unsigned)."""
    low, high = min(price_a, price_b), max(price_a, price_b)
    numerator = (liquidity << 96) * (high - low)
    if round_up:
        return _ceil_div(_ceil_div(numerator, high), low)
    return numerator // high // low


def amount1_delta(price_a: int, price_b: int, liquidity: int, round_up: bool) -> int:
    """SqrtPriceMath.getAmount1Delta (unsigned)."""
    product = liquidity * abs(price_b - price_a)
    return _ceil_div(product, _Q96) if round_up else product // _Q96


def principal(sqrt_price: int, tick: int, lower: int, upper: int, delta: int) -> tuple[int, int]:
    """(token0, token1) moved by ``delta`` liquidity over [lower, upper) at this price and tick, as
    Pool.modifyLiquidity computes it (which side of the range: the pool's tick, not its price)."""
    up, amount = delta > 0, abs(delta)
    price_lower, price_upper = sqrt_price_at_tick(lower), sqrt_price_at_tick(upper)
    if tick < lower:
        return amount0_delta(price_lower, price_upper, amount, up), 0
    if tick < upper:
        return amount0_delta(sqrt_price, price_upper, amount, up), amount1_delta(
            price_lower, sqrt_price, amount, up
        )
    return 0, amount1_delta(price_lower, price_upper, amount, up)


_EXTSLOAD: Final = selector("extsload(bytes32)")
_POOLS_SLOT: Final = (6).to_bytes(32, "big")  # StateLibrary.POOLS_SLOT


def _slot0_call(pool_id: str, pool_manager: str) -> Call:
    slot = keccak(bytes.fromhex(pool_id[2:]) + _POOLS_SLOT).hex()
    return Call("slot0", pool_manager, _EXTSLOAD + slot)


class Slot0(NamedTuple):
    """A pool's price and tick, as ``ctx.state`` holds them (an Initialize or Swap event also has both)."""

    sqrt_price_x96: int
    tick: int


def _parse_slot0(result: CallResult) -> Slot0 | None:
    """The packed slot0 word's price and tick; None when the pool is not initialised."""
    if result is None:
        return None
    raw = bytes.fromhex(result[2:]) if isinstance(result, str) else result
    if len(raw) < 32:
        return None
    word = int.from_bytes(raw[:32], "big")
    sqrt_price, tick = word & ((1 << 160) - 1), (word >> 160) & 0xFFFFFF
    return Slot0(sqrt_price, tick - (1 << 24) if tick >> 23 else tick) if sqrt_price else None


EVENTS: Final = (
    PoolEvent(V4_SWAP, decode_v4_swap, swap),
    PoolEvent(V4_MODIFY_LIQUIDITY, decode_v4_modify_liquidity, modify_liquidity,
              StateQuery(_slot0_call, _parse_slot0)),
)  # fmt: skip
DISCOVERY: Final = (Discovery(V4_INITIALIZE, decode_v4_initialize, initialize),)


def protocol(venues: Sequence[V4Venue] = DEFAULT_V4_VENUES) -> ProtocolSpec:
    """The v4 plugin for these PoolManagers (distinct lower-case addresses)."""
    by_manager: Mapping[str, V4Venue] = check_venues(venues)
    return protocol_spec(
        NAME, VERSION, by_manager, events=EVENTS, discovery=DISCOVERY, pool_key=BY_TOPIC1, tokens=(ETH,)
    )


def _parse_venue(pool_manager: str, label: str, extra: str) -> V4Venue:
    if extra:
        raise ValueError("a PoolManager entry takes no ':' option")
    return V4Venue(pool_manager, label)


PLUGIN: Final = Plugin(NAME, "uniswap_v4_pool_managers", DEFAULT_V4_VENUES, _parse_venue, protocol)
