"""Uniswap v4 PoolManager events: declarations, decoded types and fast fixed-layout decoders.

Every v4 pool lives in one singleton, the PoolManager, which emits its events with the pool's 32-byte
``PoolId`` (keccak256 of the abi-encoded PoolKey) as topic1. Swap and ModifyLiquidity are hot and
decoded at fixed offsets (same checks as ``decoders.uniswap``: topic count, exact data length, zero
padding of address topics, sign extension and ranges of the narrow integer types); Initialize is rare
and goes through eth-abi (``EventAbi.decode``). A log that fails a check decodes to ``Malformed``.

``V4_EVENTS`` are the Solidity declarations (v4-core ``IPoolManager``); the unit tests decode the
same logs independently with eth-abi.
"""

from __future__ import annotations

import binascii
from typing import NamedTuple

from decoders.events import INT24_MAX, INT24_MIN, EventAbi, Malformed
from records import Log

V4_INITIALIZE = EventAbi.parse(
    "Initialize(bytes32 indexed id, address indexed currency0, address indexed currency1, uint24 fee,"
    " int24 tickSpacing, address hooks, uint160 sqrtPriceX96, int24 tick)"
)
V4_SWAP = EventAbi.parse(
    "Swap(bytes32 indexed id, address indexed sender, int128 amount0, int128 amount1, uint160 sqrtPriceX96,"
    " uint128 liquidity, int24 tick, uint24 fee)"
)
V4_MODIFY_LIQUIDITY = EventAbi.parse(
    "ModifyLiquidity(bytes32 indexed id, address indexed sender, int24 tickLower, int24 tickUpper,"
    " int256 liquidityDelta, bytes32 salt)"
)
V4_EVENTS: tuple[EventAbi, ...] = (V4_INITIALIZE, V4_SWAP, V4_MODIFY_LIQUIDITY)

_PAD = "0x" + "0" * 24
# binascii.a2b_hex: the same bytes as bytes.fromhex, ~50 ns less a log, and it refuses whitespace
# (fromhex skips it) with a ValueError, as it refuses any non-hex character
_fromhex = binascii.a2b_hex
_int = int.from_bytes
_tuple_new = tuple.__new__
_I128 = 1 << 127
_U128 = 1 << 128
_U160 = 1 << 160
_U24 = 1 << 24
_WORD = (1 << 256) - 1
_SIGN = 1 << 255  # a word at or above this is negative as an intN, and its value is the word less _WRAP
_WRAP = 1 << 256
_INT128_GAP = (_I128 - 1, _WRAP - _I128)  # an int128's word is <= the first or >= the second
_INT24_GAP = (INT24_MAX, _WRAP + INT24_MIN)


class V4Initialize(NamedTuple):
    id: str
    currency0: str  # 0x0…0 is native ETH
    currency1: str
    fee: int  # hundredths of a bip; 0x800000 marks a dynamic-fee pool
    tick_spacing: int
    hooks: str
    sqrt_price_x96: int
    tick: int


class V4Swap(NamedTuple):
    id: str
    sender: str
    amount0: int  # the swapper's balance change: negative = paid into the pool (the opposite of v3)
    amount1: int
    sqrt_price_x96: int
    liquidity: int
    tick: int
    fee: int  # the LP fee this swap paid (dynamic-fee pools: set per swap)


class V4ModifyLiquidity(NamedTuple):
    id: str
    sender: str
    tick_lower: int
    tick_upper: int
    liquidity_delta: int  # > 0 added, < 0 removed
    salt: str


def _bad(event: EventAbi, what: str) -> Malformed:
    return Malformed(f"{event.name}: {what}")


def _id_and_sender(event: EventAbi, log: Log) -> tuple[str, str] | Malformed:
    t1, t2 = log.topic1, log.topic2
    if t1 is None or t2 is None or log.topic3 is not None:
        count = sum(t is not None for t in (log.topic0, t1, t2, log.topic3))
        return _bad(event, f"expected 3 topics, got {count}")
    if len(t1) != 66 or len(t2) != 66 or not t2.startswith(_PAD):
        return _bad(event, "id or sender topic is not a 32-byte word / zero-padded address")
    return t1, "0x" + t2[26:]


def _data(data: str, words: int) -> bytes | None:
    if len(data) != 2 + 64 * words:
        return None
    try:
        return _fromhex(data[2:])
    except ValueError:
        return None


def decode_v4_swap(log: Log) -> V4Swap | Malformed:
    """PoolManager ``Swap``: topics [sig, id, sender], data [int128 amount0, int128 amount1,
    uint160 sqrtPriceX96, uint128 liquidity, int24 tick, uint24 fee].

    Sample (mainnet block 24885035, tx 0x28136faa…3306, log 1; ``tests/data/uniswap-v4``)::

        topics: 0x40e9cecb…d7112f, 0xe500210c…e3a657 (id),
                0x…0aa232009084bd71a5797d089aa4edfad4000000 (sender)
        data:   000000000000000000000000000000000000000000000000000000011f42e68d  amount0 (> 0: received)
                ffffffffffffffffffffffffffffffffffffffffffffffffe35a2e482528c200  amount1 (< 0: paid in)
                00000000000000000000000000000050daa24d325fa50ce651a78d0caa000000  sqrtPriceX96 …

    Invariant: amounts are int128 sign-extended to 32 bytes (a word outside [-2^127, 2^127) is
    malformed), sqrtPriceX96 < 2^160, liquidity < 2^128, tick an int24, fee a uint24.
    """
    t1, t2, data = log.topic1, log.topic2, log.data  # checks inlined: this is the hot path
    if t1 is None or t2 is None or log.topic3 is not None:
        count = sum(t is not None for t in (log.topic0, t1, t2, log.topic3))
        return _bad(V4_SWAP, f"expected 3 topics, got {count}")
    if len(t1) != 66 or len(t2) != 66 or not t2.startswith(_PAD):
        return _bad(V4_SWAP, "id or sender topic is not a 32-byte word / zero-padded address")
    if len(data) != 386:
        return _bad(V4_SWAP, f"expected 192 data bytes, got {(len(data) - 2) / 2:g}")
    try:
        raw = _fromhex(data[2:])
    except ValueError:
        raw = b""
    if len(raw) != 192:
        return _bad(V4_SWAP, "data is not hex")
    # the six words as one integer, each taken by a shift and a mask (unsigned; ranges checked on the
    # unsigned word, a negative one is the word less 2^256: as decoders.uniswap's Swaps)
    n = _int(raw)
    amount0, amount1 = n >> 1280, (n >> 1024) & _WORD
    sqrt_price, liquidity = (n >> 768) & _WORD, (n >> 512) & _WORD
    tick, fee = (n >> 256) & _WORD, n & _WORD
    low, high = _INT128_GAP
    if low < amount0 < high or low < amount1 < high:
        return _bad(V4_SWAP, "amount is not an int128")
    if sqrt_price >= _U160 or liquidity >= _U128 or _INT24_GAP[0] < tick < _INT24_GAP[1] or fee >= _U24:
        return _bad(V4_SWAP, "sqrtPriceX96, liquidity, tick or fee out of range")
    return _tuple_new(
        V4Swap,
        (
            t1,
            "0x" + t2[26:],
            amount0 - _WRAP if amount0 >= _SIGN else amount0,
            amount1 - _WRAP if amount1 >= _SIGN else amount1,
            sqrt_price,
            liquidity,
            tick - _WRAP if tick >= _SIGN else tick,
            fee,
        ),
    )


def decode_v4_modify_liquidity(log: Log) -> V4ModifyLiquidity | Malformed:
    """PoolManager ``ModifyLiquidity``: topics [sig, id, sender], data [int24 tickLower, int24
    tickUpper, int256 liquidityDelta, bytes32 salt].

    Invariant: the event carries no token amounts: they follow from ``liquidityDelta``, the tick range
    and the pool's price at that moment (``protocols.uniswap.v4``). Ticks are sign-extended int24s and
    ``tickLower < tickUpper``.
    """
    head = _id_and_sender(V4_MODIFY_LIQUIDITY, log)
    if isinstance(head, Malformed):
        return head
    raw = _data(log.data, 4)
    if raw is None:
        return _bad(V4_MODIFY_LIQUIDITY, f"expected 128 data bytes of hex, got {(len(log.data) - 2) / 2:g}")
    lower, upper = _int(raw[:32], signed=True), _int(raw[32:64], signed=True)
    if not (INT24_MIN <= lower < upper <= INT24_MAX):
        return _bad(V4_MODIFY_LIQUIDITY, "tick range is not two ordered int24s")
    delta = _int(raw[64:96], signed=True)
    pool_id, sender = head
    return V4ModifyLiquidity(pool_id, sender, lower, upper, delta, "0x" + raw[96:].hex())


def decode_v4_initialize(log: Log) -> V4Initialize | Malformed:
    """PoolManager ``Initialize`` (eth-abi fallback: once per pool).

    Invariant: emitted by the PoolManager for a new PoolKey; ``id`` = keccak256(abi.encode(currency0,
    currency1, fee, tickSpacing, hooks)), currency0 < currency1, currency 0x0…0 is native ETH.
    """
    out = V4_INITIALIZE.decode(log)
    if type(out) is Malformed:
        return out
    assert isinstance(out, dict)
    return V4Initialize(
        out["id"], out["currency0"], out["currency1"], out["fee"], out["tickSpacing"], out["hooks"],
        out["sqrtPriceX96"], out["tick"],
    )  # fmt: skip
