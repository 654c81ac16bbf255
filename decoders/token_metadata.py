"""Token metadata from ``eth_call`` results: symbol and name (ABI string or bytes32), decimals.

Pure: the pipeline sends ``TOKEN_CALLS`` (``eth_call`` to the token, no arguments) and passes what came
back to ``parse_token``. A result is the call's return data as ``0x`` hex or bytes, or ``None`` when
the call reverted or failed. Nothing here raises on bad data: a field that cannot be read is ``None``
and ``Token.error`` says why, per field (``"symbol: reverted; decimals: 255 is absurd"``).

What the chain really returns:
- ``string`` (ERC-20 optional metadata): offset word, length word, UTF-8 bytes padded to 32;
- ``bytes32`` (MKR, SAI and other early tokens): the text left-aligned, NUL-padded, exactly 32 bytes;
- ``0x`` (no such function on a contract without fallback, or an EOA), a revert, or garbage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from decoders.events import selector
from records import Token

SYMBOL = "symbol"
NAME = "name"
DECIMALS = "decimals"
TOKEN_CALLS: tuple[tuple[str, str], ...] = (
    (SYMBOL, selector("symbol()")),  # 0x95d89b41
    (NAME, selector("name()")),  # 0x06fdde03
    (DECIMALS, selector("decimals()")),  # 0x313ce567
)

# 10**77 < 2**256 <= 10**78: with more decimals, not even the largest uint256 amount reaches 1 unit.
MAX_DECIMALS = 77
# A symbol or name longer than this is not metadata (spam tokens put whole messages there).
MAX_TEXT_BYTES = 1024

CallResult = str | bytes | None


class Text(NamedTuple):
    """A parsed symbol/name: the value, how it was encoded ("string", "bytes32"), or why it is null."""

    value: str | None
    encoding: str | None
    error: str | None


def _raw(result: CallResult) -> bytes | str:
    """Bytes of a call result, or the reason it has none."""
    if result is None:
        return "reverted"
    if isinstance(result, bytes):
        raw = result
    else:
        try:
            raw = bytes.fromhex(result[2:] if result[:2] in ("0x", "0X") else result)
        except ValueError:
            return "not hex"
    return raw if raw else "empty result"


def _text(raw: bytes) -> str | None:
    """UTF-8 text without NUL bytes, or None (Postgres text cannot hold NUL; invalid UTF-8 is garbage)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def parse_text(result: CallResult) -> Text:
    """symbol()/name() return data → text, as an ABI ``string`` or a ``bytes32``."""
    raw = _raw(result)
    if isinstance(raw, str):
        return Text(None, None, raw)
    if len(raw) == 32:
        stripped = raw.rstrip(b"\x00")
        text = _text(stripped) if stripped else None
        if text is None:
            return Text(None, None, "bytes32 is empty" if not stripped else "bytes32 is not text")
        return Text(text, "bytes32", None)
    if len(raw) < 64 or len(raw) % 32:
        return Text(None, None, f"garbage ({len(raw)} bytes)")
    offset = int.from_bytes(raw[:32], "big")
    if offset % 32 or offset + 32 > len(raw):
        return Text(None, None, "garbage (bad string offset)")
    length = int.from_bytes(raw[offset : offset + 32], "big")
    if length > MAX_TEXT_BYTES:
        return Text(None, None, f"too long ({length} bytes)")
    start = offset + 32
    if start + length > len(raw):
        return Text(None, None, "garbage (string runs past the data)")
    text = _text(raw[start : start + length])
    if text is None:
        return Text(None, None, "string is not UTF-8 text")
    return Text(text, "string", None)


def parse_decimals(result: CallResult) -> tuple[int | None, str | None]:
    """decimals() return data → (decimals, None), or (None, reason)."""
    raw = _raw(result)
    if isinstance(raw, str):
        return None, raw
    if len(raw) < 32:
        return None, f"garbage ({len(raw)} bytes)"
    value = int.from_bytes(raw[:32], "big")
    if value > MAX_DECIMALS:
        return None, f"{value if value < 10**6 else 'huge'} is absurd (> {MAX_DECIMALS})"
    return value, None


def parse_token(address: str, results: Mapping[str, CallResult]) -> Token:
    """``records.Token`` from the results of ``TOKEN_CALLS`` (keyed by call name; a missing key = failed).

    ``source`` is "bytes32" when symbol or name came as bytes32, "call" when read as ABI strings or only
    decimals could be read, and "unknown" when nothing could.
    """
    symbol = parse_text(results.get(SYMBOL))
    name = parse_text(results.get(NAME))
    decimals, decimals_error = parse_decimals(results.get(DECIMALS))
    errors = [
        f"{field}: {error}"
        for field, error in ((SYMBOL, symbol.error), (NAME, name.error), (DECIMALS, decimals_error))
        if error is not None
    ]
    if "bytes32" in (symbol.encoding, name.encoding):
        source = "bytes32"
    elif symbol.value is None and name.value is None and decimals is None:
        source = "unknown"
    else:
        source = "call"
    return Token(
        address=address.lower(),
        symbol=symbol.value,
        name=name.value,
        decimals=decimals,
        source=source,
        error="; ".join(errors) or None,
    )
