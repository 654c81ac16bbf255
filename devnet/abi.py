"""Calldata and event topics from plain Solidity signatures, e.g.
``calldata("transfer(address,uint256)", to, amount)``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from eth_abi import decode, encode
from eth_utils import keccak


def split_types(inner: str) -> list[str]:
    """Top-level comma split that keeps tuple types like ``(address,uint24)`` whole."""
    types: list[str] = []
    depth = 0
    current = ""
    for char in inner:
        if char == "," and depth == 0:
            types.append(current)
            current = ""
            continue
        depth += (char == "(") - (char == ")")
        current += char
    if current:
        types.append(current)
    return types


@lru_cache(maxsize=512)
def _parse(signature: str) -> tuple[bytes, tuple[str, ...]]:
    name_end = signature.index("(")
    return keccak(text=signature)[:4], tuple(split_types(signature[name_end + 1 : -1]))


def calldata(signature: str, *args: Any) -> str:
    selector, types = _parse(signature)
    return "0x" + (selector + encode(list(types), list(args))).hex()


def constructor_args(types: list[str], *args: Any) -> bytes:
    return encode(types, list(args))


def decode_result(types: list[str], data: str) -> tuple[Any, ...]:
    return tuple(decode(types, bytes.fromhex(data.removeprefix("0x"))))


@lru_cache(maxsize=128)
def topic(event_signature: str) -> str:
    return "0x" + keccak(text=event_signature).hex()


def create_address(sender: str, nonce: int) -> str:
    """Address of the contract created by ``sender``'s transaction with ``nonce``."""

    def item(raw: bytes) -> bytes:  # RLP of a short byte string
        return raw if len(raw) == 1 and raw[0] < 0x80 else bytes([0x80 + len(raw)]) + raw

    payload = item(bytes.fromhex(sender.removeprefix("0x"))) + item(
        nonce.to_bytes((nonce.bit_length() + 7) // 8)
    )
    return "0x" + keccak(bytes([0xC0 + len(payload)]) + payload)[12:].hex()


def address_word(address: str) -> str:
    """An address as a 32-byte log topic."""
    return "0x" + address.removeprefix("0x").lower().rjust(64, "0")


def word_address(word: str) -> str:
    return "0x" + word[-40:].lower()


# Event topics the devnet counts (and the tests read back).
TRANSFER = topic("Transfer(address,address,uint256)")
V2_SWAP = topic("Swap(address,uint256,uint256,uint256,uint256,address)")
V2_MINT = topic("Mint(address,uint256,uint256)")
V2_BURN = topic("Burn(address,uint256,uint256,address)")
V2_PAIR_CREATED = topic("PairCreated(address,address,address,uint256)")
V3_SWAP = topic("Swap(address,address,int256,int256,uint160,uint128,int24)")
V3_MINT = topic("Mint(address,address,int24,int24,uint128,uint256,uint256)")
V3_BURN = topic("Burn(address,int24,int24,uint128,uint256,uint256)")
V3_COLLECT = topic("Collect(address,address,int24,int24,uint128,uint128)")
V3_POOL_CREATED = topic("PoolCreated(address,address,uint24,int24,address)")
NPM_INCREASE = topic("IncreaseLiquidity(uint256,uint128,uint256,uint256)")
NPM_DECREASE = topic("DecreaseLiquidity(uint256,uint128,uint256,uint256)")
NPM_COLLECT = topic("Collect(uint256,address,uint256,uint256)")
WETH_DEPOSIT = topic("Deposit(address,uint256)")
WETH_WITHDRAWAL = topic("Withdrawal(address,uint256)")
