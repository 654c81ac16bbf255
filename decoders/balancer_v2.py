"""Balancer v2 Vault events: declarations, decoded types, a fast decoder for Swap and eth-abi for the
rest.

The Vault is a singleton that holds every pool's tokens and emits every pool's events, each with the
pool's 32-byte ``poolId`` (the pool's address, its specialization, a nonce) as topic1. Swap is hot and
decoded at fixed offsets (exact topic count and data length, zero-padded address topics); the others
carry dynamic arrays and are rare, so eth-abi decodes them (``EventAbi.decode``). A log that fails a
check decodes to ``Malformed``. ``BALANCER_EVENTS`` are the declarations (balancer-v2-monorepo
``IVault``) the unit tests decode independently with eth-abi.
"""

from __future__ import annotations

import binascii
from typing import NamedTuple

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError

from decoders.events import EventAbi, Malformed
from records import Log

BALANCER_SWAP = EventAbi.parse(
    "Swap(bytes32 indexed poolId, address indexed tokenIn, address indexed tokenOut, uint256 amountIn,"
    " uint256 amountOut)"
)
POOL_REGISTERED = EventAbi.parse(
    "PoolRegistered(bytes32 indexed poolId, address indexed poolAddress, uint8 specialization)"
)
TOKENS_REGISTERED = EventAbi.parse(
    "TokensRegistered(bytes32 indexed poolId, address[] tokens, address[] assetManagers)"
)
POOL_BALANCE_CHANGED = EventAbi.parse(
    "PoolBalanceChanged(bytes32 indexed poolId, address indexed liquidityProvider, address[] tokens,"
    " int256[] deltas, uint256[] protocolFeeAmounts)"
)
BALANCER_EVENTS: tuple[EventAbi, ...] = (
    BALANCER_SWAP,
    POOL_REGISTERED,
    TOKENS_REGISTERED,
    POOL_BALANCE_CHANGED,
)

_PAD = "0x" + "0" * 24
# binascii.a2b_hex: the same bytes as bytes.fromhex, ~50 ns less a log, and it refuses whitespace
# (fromhex skips it) with a ValueError, as it refuses any non-hex character
_fromhex = binascii.a2b_hex
_int = int.from_bytes
_tuple_new = tuple.__new__


class BalancerSwap(NamedTuple):
    pool_id: str
    token_in: str
    token_out: str
    amount_in: int  # paid into the pool by the swapper
    amount_out: int  # paid out to the swapper


class PoolRegistered(NamedTuple):
    pool_id: str
    pool_address: str
    specialization: int  # 0 general, 1 minimal swap info, 2 two-token


class TokensRegistered(NamedTuple):
    pool_id: str
    tokens: tuple[str, ...]
    asset_managers: tuple[str, ...]


class PoolBalanceChanged(NamedTuple):
    pool_id: str
    liquidity_provider: str
    tokens: tuple[str, ...]
    deltas: tuple[int, ...]  # > 0 paid in (join), < 0 paid out (exit)
    protocol_fee_amounts: tuple[int, ...]


def decode_balancer_swap(log: Log) -> BalancerSwap | Malformed:
    """Vault ``Swap``: topics [sig, poolId, tokenIn, tokenOut], data [uint256 amountIn, uint256 amountOut].

    Sample (mainnet tx 0xac495e8c…dee0; ``tests/data/balancer-v2``)::

        topics: 0x2170c741…0b207b, 0x0b09dea16768f0799065c475be02919503cb2a3500020000000000000000001a,
                0x…c02aaa39b223fe8d0a0e5c4f27ead9083c756cc2 (WETH in),
                0x…6b175474e89094c44da98b954eedeac495271d0f (DAI out)
        data:   00000000000000000000000000000000000000000000000018a2233424cbbd00  amountIn
                00000000000000000000000000000000000000000000006dabdced1164e08e16  amountOut

    Invariant: one Swap per swap or batchSwap hop, amounts as the Vault moved them (fees included in
    amountIn); any 64 hex characters are a valid uint256.
    """
    t1, t2, t3, data = log.topic1, log.topic2, log.topic3, log.data
    if t1 is None or t2 is None or t3 is None:
        count = sum(t is not None for t in (log.topic0, t1, t2, t3))
        return Malformed(f"Swap: expected 4 topics, got {count}")
    if len(data) != 130:
        return Malformed(f"Swap: expected 64 data bytes, got {(len(data) - 2) / 2:g}")
    if len(t1) != 66 or len(t2) != 66 or len(t3) != 66 or not t2.startswith(_PAD) or not t3.startswith(_PAD):
        return Malformed("Swap: poolId is not a 32-byte word or a token topic is not a zero-padded address")
    try:
        raw = _fromhex(data[2:])
    except ValueError:
        return Malformed("Swap: data is not hex")
    if len(raw) != 64:
        return Malformed("Swap: data is not hex")
    return _tuple_new(BalancerSwap, (t1, "0x" + t2[26:], "0x" + t3[26:], _int(raw[:32]), _int(raw[32:])))


def _addresses(values: object) -> tuple[str, ...]:
    return tuple(str(v).lower() for v in values)  # type: ignore[attr-defined]


def decode_pool_registered(log: Log) -> PoolRegistered | Malformed:
    """Vault ``PoolRegistered`` (eth-abi: once per pool). Invariant: the poolId's first 20 bytes are
    the pool's address, and the pool contract itself called ``registerPool``."""
    out = POOL_REGISTERED.decode(log)
    if isinstance(out, Malformed):
        return out
    return PoolRegistered(out["poolId"], out["poolAddress"], out["specialization"])


def decode_tokens_registered(log: Log) -> TokensRegistered | Malformed:
    """Vault ``TokensRegistered`` (eth-abi). Invariant: in the pool's token order, which every later
    PoolBalanceChanged and ``getPoolTokens`` keep; the same length as ``assetManagers``."""
    out = TOKENS_REGISTERED.decode(log)
    if isinstance(out, Malformed):
        return out
    tokens, managers = _addresses(out["tokens"]), _addresses(out["assetManagers"])
    if not tokens or len(tokens) != len(managers):
        return Malformed("TokensRegistered: tokens and assetManagers differ in length or are empty")
    return TokensRegistered(out["poolId"], tokens, managers)


def decode_pool_balance_changed(log: Log) -> PoolBalanceChanged | Malformed:
    """Vault ``PoolBalanceChanged`` (eth-abi: a join or an exit). Invariant: ``tokens``, ``deltas`` and
    ``protocolFeeAmounts`` have one entry per pool token; a join has no negative delta, an exit no
    positive one."""
    out = POOL_BALANCE_CHANGED.decode(log)
    if isinstance(out, Malformed):
        return out
    tokens, deltas, fees = _addresses(out["tokens"]), tuple(out["deltas"]), tuple(out["protocolFeeAmounts"])
    if not tokens or not len(tokens) == len(deltas) == len(fees):
        return Malformed("PoolBalanceChanged: tokens, deltas and protocolFeeAmounts differ in length")
    if any(d > 0 for d in deltas) and any(d < 0 for d in deltas):
        return Malformed("PoolBalanceChanged: both positive and negative deltas")
    return PoolBalanceChanged(out["poolId"], out["liquidityProvider"], tokens, deltas, fees)


def decode_pool_tokens(result: str | bytes | None) -> tuple[str, ...] | None:
    """The tokens of a Vault ``getPoolTokens(bytes32)`` answer ``(address[] tokens, uint256[] balances,
    uint256 lastChangeBlock)``; None for a revert (an unregistered poolId) or an answer of another
    shape."""
    if result is None:
        return None
    try:
        raw = bytes.fromhex(result[2:]) if isinstance(result, str) else result
        tokens, balances, _ = abi_decode(["address[]", "uint256[]", "uint256"], raw, strict=True)
    except (DecodingError, ValueError, OverflowError):
        return None
    return _addresses(tokens) if len(tokens) == len(balances) else None
