"""Uniswap v2/v3 event declarations (Solidity ABI) and the decoded event types.

``EVENTS`` are the declarations the fast decoders in ``decoders.uniswap`` implement by hand; the unit
tests decode the same logs independently with eth-abi. The rare pool-creation events are decoded here
through the eth-abi fallback (``EventAbi.decode``).
"""

from __future__ import annotations

from typing import NamedTuple

from decoders.events import EventAbi, Malformed
from records import Log

V2_SWAP = EventAbi.parse(
    "Swap(address indexed sender, uint256 amount0In, uint256 amount1In, uint256 amount0Out,"
    " uint256 amount1Out, address indexed to)"
)
V2_MINT = EventAbi.parse("Mint(address indexed sender, uint256 amount0, uint256 amount1)")
V2_BURN = EventAbi.parse("Burn(address indexed sender, uint256 amount0, uint256 amount1, address indexed to)")
V2_SYNC = EventAbi.parse("Sync(uint112 reserve0, uint112 reserve1)")
V2_PAIR_CREATED = EventAbi.parse(
    "PairCreated(address indexed token0, address indexed token1, address pair, uint256 allPairsLength)"
)
V3_SWAP = EventAbi.parse(
    "Swap(address indexed sender, address indexed recipient, int256 amount0, int256 amount1,"
    " uint160 sqrtPriceX96, uint128 liquidity, int24 tick)"
)
V3_MINT = EventAbi.parse(
    "Mint(address sender, address indexed owner, int24 indexed tickLower, int24 indexed tickUpper,"
    " uint128 amount, uint256 amount0, uint256 amount1)"
)
V3_BURN = EventAbi.parse(
    "Burn(address indexed owner, int24 indexed tickLower, int24 indexed tickUpper, uint128 amount,"
    " uint256 amount0, uint256 amount1)"
)
V3_COLLECT = EventAbi.parse(
    "Collect(address indexed owner, address recipient, int24 indexed tickLower, int24 indexed tickUpper,"
    " uint128 amount0, uint128 amount1)"
)
V3_POOL_CREATED = EventAbi.parse(
    "PoolCreated(address indexed token0, address indexed token1, uint24 indexed fee, int24 tickSpacing,"
    " address pool)"
)
EVENTS: tuple[EventAbi, ...] = (
    V2_SWAP, V2_MINT, V2_BURN, V2_SYNC, V2_PAIR_CREATED,
    V3_SWAP, V3_MINT, V3_BURN, V3_COLLECT, V3_POOL_CREATED,
)  # fmt: skip


class V2Swap(NamedTuple):
    sender: str
    to: str
    amount0_in: int
    amount1_in: int
    amount0_out: int
    amount1_out: int


class V2Mint(NamedTuple):
    sender: str
    amount0: int
    amount1: int


class V2Burn(NamedTuple):
    sender: str
    amount0: int
    amount1: int
    to: str


class V2Sync(NamedTuple):
    reserve0: int
    reserve1: int


class V3Swap(NamedTuple):
    sender: str
    recipient: str
    amount0: int  # pool's view: positive = paid into the pool, negative = paid out to the recipient
    amount1: int
    sqrt_price_x96: int
    liquidity: int
    tick: int


class V3Mint(NamedTuple):
    sender: str
    owner: str
    tick_lower: int
    tick_upper: int
    amount: int  # liquidity added
    amount0: int
    amount1: int


class V3Burn(NamedTuple):
    owner: str
    tick_lower: int
    tick_upper: int
    amount: int  # liquidity removed
    amount0: int
    amount1: int


class V3Collect(NamedTuple):
    owner: str
    recipient: str
    tick_lower: int
    tick_upper: int
    amount0: int
    amount1: int


class PairCreated(NamedTuple):
    token0: str
    token1: str
    pair: str
    all_pairs_length: int


class PoolCreated(NamedTuple):
    token0: str
    token1: str
    fee: int
    tick_spacing: int
    pool: str


def decode_pair_created(log: Log) -> PairCreated | Malformed:
    """Uniswap v2 factory ``PairCreated`` (eth-abi fallback: rare, one per pair ever created).

    Sample: none in ``../shared/fixtures`` (see ``uniswap/PROVENANCE.md``, Gaps).

    Invariant: emitted by the factory (``log.address``); token0 < token1 by address.
    """
    out = V2_PAIR_CREATED.decode(log)
    if type(out) is Malformed:
        return out
    assert isinstance(out, dict)
    return PairCreated(out["token0"], out["token1"], out["pair"], out["allPairsLength"])


def decode_pool_created(log: Log) -> PoolCreated | Malformed:
    """Uniswap v3 factory ``PoolCreated`` (eth-abi fallback: rare).

    Sample: none in ``../shared/fixtures`` (see ``uniswap/PROVENANCE.md``, Gaps).

    Invariant: emitted by the factory (``log.address``); fee is a uint24 in hundredths of a bip.
    """
    out = V3_POOL_CREATED.decode(log)
    if type(out) is Malformed:
        return out
    assert isinstance(out, dict)
    return PoolCreated(out["token0"], out["token1"], out["fee"], out["tickSpacing"], out["pool"])
