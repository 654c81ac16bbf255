"""Token metadata from eth_call results: ABI string, bytes32 (MKR-style), revert, garbage, absurd decimals."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak

from decoders.token_metadata import TOKEN_CALLS, parse_decimals, parse_text, parse_token
from records import Token

pytestmark = pytest.mark.unit

ADDRESS = "0x9f8f72aa9304c8b593d555f12ef6589cc3a579a2"  # MKR


def abi_string(text: str) -> str:
    return "0x" + encode(["string"], [text]).hex()


def uint(value: int) -> str:
    return "0x" + encode(["uint256"], [value]).hex()


def bytes32(text: str) -> str:
    return "0x" + text.encode().ljust(32, b"\0").hex()


def test_calls_are_the_erc20_selectors() -> None:
    assert dict(TOKEN_CALLS) == {
        name: "0x" + keccak(text=f"{name}()")[:4].hex() for name in ("symbol", "name", "decimals")
    }


def test_abi_string_token() -> None:
    token = parse_token(
        "0xA0b86991c6218b36c1d19d4a2e9eB0cE3606eB48",
        {"symbol": abi_string("USDC"), "name": abi_string("USD Coin"), "decimals": uint(6)},
    )
    assert token == Token("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", "USDC", "USD Coin", 6, "call", None)


def test_bytes32_token_like_mkr() -> None:
    # MKR's symbol() and name() return bytes32: "MKR" and "Maker", NUL-padded.
    token = parse_token(ADDRESS, {"symbol": bytes32("MKR"), "name": bytes32("Maker"), "decimals": uint(18)})
    assert token == Token(ADDRESS, "MKR", "Maker", 18, "bytes32", None)
    raw = bytes.fromhex(bytes32("MKR")[2:])
    assert parse_text(raw).value == "MKR"  # bytes results work as well as hex


def test_unicode_and_empty_strings() -> None:
    assert parse_text(abi_string("Ünï 🦄")).value == "Ünï 🦄"
    assert parse_text(abi_string("")) == ("", "string", None)


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (None, "reverted"),
        ("0x", "empty result"),
        ("0xzz", "not hex"),
        ("0x" + "00" * 32, "bytes32 is empty"),
        ("0x" + "4d00" + "4b" * 30, "bytes32 is not text"),  # a NUL inside
        ("0x" + "ff" * 32, "bytes32 is not text"),  # not UTF-8
        ("0x" + "00" * 33, "garbage"),
        ("0x" + "00" * 31 + "40" + "00" * 32, "garbage (bad string offset)"),
        ("0x" + "00" * 31 + "20" + "00" * 31 + "40" + "41" * 32, "runs past the data"),
        (abi_string("a").replace("61", "ff", 1), "not UTF-8"),
        (abi_string("x" * 2000), "too long"),
        (abi_string("a\0b"), "not UTF-8 text"),  # NUL cannot go into Postgres text
    ],
)
def test_unreadable_text_is_null_with_a_reason(result: str | None, reason: str) -> None:
    parsed = parse_text(result)
    assert parsed.value is None and parsed.error is not None and reason in parsed.error, parsed


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (uint(18), (18, None)),
        (uint(0), (0, None)),
        (uint(77), (77, None)),
        (uint(78), (None, "78 is absurd (> 77)")),
        (uint(255), (None, "255 is absurd (> 77)")),
        (uint(2**256 - 1), (None, "huge is absurd (> 77)")),
        (uint(6) + "00" * 32, (6, None)),  # trailing data is ignored, as ABI decoders do
        ("0x12", (None, "garbage (1 bytes)")),
        (None, (None, "reverted")),
        ("0x", (None, "empty result")),
    ],
)
def test_decimals(result: str | None, expected: tuple[int | None, str | None]) -> None:
    assert parse_decimals(result) == expected


def test_a_token_that_reverts_everything_is_unknown_with_reasons() -> None:
    token = parse_token(ADDRESS, {"symbol": None, "name": "0x", "decimals": uint(1000)})
    assert (token.symbol, token.name, token.decimals, token.source) == (None, None, None, "unknown")
    assert token.error == "symbol: reverted; name: empty result; decimals: 1000 is absurd (> 77)"
    assert parse_token(ADDRESS, {}).error == "symbol: reverted; name: reverted; decimals: reverted"


def test_partial_metadata_keeps_what_was_readable() -> None:
    token = parse_token(ADDRESS, {"symbol": abi_string("ABC"), "name": "0x" + "ff" * 33, "decimals": uint(9)})
    assert (token.symbol, token.name, token.decimals, token.source) == ("ABC", None, 9, "call")
    assert token.error == "name: garbage (33 bytes)"
