"""The exchanges' book checksums, computed from the book itself in the exchange's own spelling (a
``Decimal`` keeps the digits of the text it was made from, ``Decimal("0.10")`` prints ``0.10``).

Both exchanges checksum the top of the book after every update, so these run once per message; the text of
each level is made once and kept by the book until that level changes (``L2Book.top_texts``, in C when
``cex/_speedups.c`` is built).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from decimal import Decimal

from cex.book import L2Book, TextStyle


def _plain(value: Decimal) -> str:
    """The decimal text without exponent, digits as the exchange sent them (``str`` is 4x faster than
    ``format``; it only differs where it would write an exponent)."""
    text = str(value)
    return format(value, "f") if "E" in text else text


def _kraken_digits(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def kraken_checksum_text(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]]) -> str:
    """Kraken's checksum input: asks ascending then bids descending (the top 10 of each, as given), each
    price then quantity with '.' removed and leading zeros stripped."""
    return "".join(_kraken_digits(p) + _kraken_digits(q) for p, q in (*asks, *bids))


def _at_precision(value: Decimal, decimals: int | None) -> str:
    plain = _plain(value)
    if decimals is None:
        return plain
    dot = plain.find(".")
    # already at the precision (the usual case: the JSON text carries it): no formatting
    if (dot < 0 and decimals == 0) or (dot >= 0 and len(plain) - dot - 1 == decimals):
        return plain
    return f"{value:.{decimals}f}"


_KrakenRule = tuple[tuple[str, int | None, int | None], Callable[[Decimal, Decimal], str], TextStyle]
_KRAKEN_RULES: dict[tuple[int | None, int | None], _KrakenRule] = {}


def _kraken_rule(price_decimals: int | None, qty_decimals: int | None) -> _KrakenRule:
    """(the rule's name, its level maker, its C style) for a pair's precisions, made once per precisions
    (a checksum runs after every message)."""
    rule = _KRAKEN_RULES.get((price_decimals, qty_decimals))
    if rule is None:

        def digits(price: Decimal, qty: Decimal) -> str:
            return _kraken_digits(_at_precision(price, price_decimals)) + _kraken_digits(
                _at_precision(qty, qty_decimals)
            )

        name = ("kraken", price_decimals, qty_decimals)
        style: TextStyle = (1, price_decimals, qty_decimals)
        rule = _KRAKEN_RULES[(price_decimals, qty_decimals)] = (name, digits, style)
    return rule


def kraken_checksum(book: L2Book, price_decimals: int | None = None, qty_decimals: int | None = None) -> int:
    """CRC32 (unsigned) over the top 10 levels. v1 (the recordings): the prices and volumes as sent, which
    carry the pair's decimals. v2: numbers are formatted to the instrument's ``price_precision`` and
    ``qty_precision`` first (pass them; JSON numbers do not keep trailing zeros)."""
    name, digits, style = _kraken_rule(price_decimals, qty_decimals)
    bids, asks = book.top_texts(10, name, digits, style)
    return zlib.crc32("".join(asks + bids).encode())


_OKX_STYLE: TextStyle = (0, None, None)


def _okx_level(price: Decimal, size: Decimal) -> str:
    return f"{_plain(price)}:{_plain(size)}"


def okx_checksum_text(book: L2Book) -> str:
    """OKX ``books``: the top 25 levels interleaved ``bid:bidsize:ask:asksize:...``; when one side is
    shorter, the other's remaining levels follow alone."""
    bids, asks = book.top_texts(25, "okx", _okx_level, _OKX_STYLE)
    common = min(len(bids), len(asks))
    parts: list[str] = [""] * (2 * common)  # interleaved by two slice assignments (C), not a loop
    parts[0::2] = bids[:common]
    parts[1::2] = asks[:common]
    parts.extend(bids[common:] or asks[common:])
    return ":".join(parts)


def okx_checksum(book: L2Book) -> int:
    """CRC32 as OKX sends it: a signed 32-bit integer."""
    crc = zlib.crc32(okx_checksum_text(book).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc
