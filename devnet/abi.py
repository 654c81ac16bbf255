"""Calldata for the devnet's transactions, from plain Solidity signatures, e.g.
``calldata("transfer(address,uint256)", to, amount)``; selectors and event topics come from the product's
ABI code (``decoders``), the Uniswap and ERC-20 topics from its declarations."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from eth_abi import decode, encode
from eth_utils import keccak

from decoders import uniswap_abi
from decoders.events import event_topic0, selector
from decoders.transfers import TRANSFER_TOPIC


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
def _parse(signature: str) -> tuple[str, tuple[str, ...]]:
    name_end = signature.index("(")
    return selector(signature), tuple(split_types(signature[name_end + 1 : -1]))


def calldata(signature: str, *args: Any) -> str:
    function, types = _parse(signature)
    return function + encode(list(types), list(args)).hex()


def constructor_args(types: list[str], *args: Any) -> bytes:
    return encode(types, list(args))


def decode_result(types: list[str], data: str) -> tuple[Any, ...]:
    return tuple(decode(types, bytes.fromhex(data.removeprefix("0x"))))


def create_address(sender: str, nonce: int) -> str:
    """Address of the contract created by ``sender``'s transaction with ``nonce``."""

    def item(raw: bytes) -> bytes:  # RLP of a short byte string
        return raw if len(raw) == 1 and raw[0] < 0x80 else bytes([0x80 + len(raw)]) + raw

    payload = item(bytes.fromhex(sender.removeprefix("0x"))) + item(
        nonce.to_bytes((nonce.bit_length() + 7) // 8)
    )
    return "0x" + keccak(bytes([0xC0 + len(payload)]) + payload)[12:].hex()


# Event topics the devnet counts (and the tests read back).
TRANSFER = TRANSFER_TOPIC
V2_SWAP = uniswap_abi.V2_SWAP.topic0
V2_MINT = uniswap_abi.V2_MINT.topic0
V2_BURN = uniswap_abi.V2_BURN.topic0
V2_PAIR_CREATED = uniswap_abi.V2_PAIR_CREATED.topic0
V3_SWAP = uniswap_abi.V3_SWAP.topic0
V3_MINT = uniswap_abi.V3_MINT.topic0
V3_BURN = uniswap_abi.V3_BURN.topic0
V3_COLLECT = uniswap_abi.V3_COLLECT.topic0
V3_POOL_CREATED = uniswap_abi.V3_POOL_CREATED.topic0
NPM_INCREASE = event_topic0("IncreaseLiquidity(uint256,uint128,uint256,uint256)")
NPM_DECREASE = event_topic0("DecreaseLiquidity(uint256,uint128,uint256,uint256)")
NPM_COLLECT = event_topic0("Collect(uint256,address,uint256,uint256)")
WETH_DEPOSIT = event_topic0("Deposit(address,uint256)")
WETH_WITHDRAWAL = event_topic0("Withdrawal(address,uint256)")
