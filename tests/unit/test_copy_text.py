"""The Postgres writer's COPY text encoding: nulls, escaping and exact numbers, as Postgres reads them."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from sinks.copy_text import escape, record_encoder, text_array

pytestmark = pytest.mark.unit

_TABLE = sa.Table(
    "t",
    sa.MetaData(),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("amount", sa.Numeric(78, 0), nullable=False),
    sa.Column("price", sa.Numeric),
    sa.Column("hashes", sa.ARRAY(sa.Text)),
    sa.Column("extra", sa.Text),
)


class _Row:
    def __init__(
        self, hash: str, name: str | None, amount: int, price: Decimal | None, hashes: tuple[str, ...] | None
    ):
        self.hash, self.name, self.amount, self.price, self.hashes = hash, name, amount, price, hashes


def test_rows_print_as_postgres_text_format() -> None:
    encode = record_encoder(
        _TABLE, ("hash", "name", "amount", "price", "hashes", "extra"), {"extra": lambda r: '{"a":"\\t"}'}
    )
    rows = [
        _Row("0xab", None, 2**256 - 1, Decimal("0E-18"), ("0x01", "0x02")),
        _Row("0xcd", "tab\there\\ new\nline\r", 0, None, None),
    ]
    assert encode(rows) == (
        b"0xab\t\\N\t115792089237316195423570985008687907853269984665640564039457584007913129639935\t0E-18"
        b'\t{0x01,0x02}\t{"a":"\\\\t"}\n'
        b'0xcd\ttab\\there\\\\ new\\nline\\r\t0\t\\N\t\\N\t{"a":"\\\\t"}\n'
    )


def test_a_none_in_a_not_null_column_is_not_stored_as_text() -> None:
    encode = record_encoder(_TABLE, ("hash",), {})
    with pytest.raises(AttributeError):
        encode([_Row(None, None, 0, None, None)])  # type: ignore[arg-type]


def test_escaping_helpers() -> None:
    assert escape("a\\b\tc") == "a\\\\b\\tc"
    assert text_array(None) == "\\N"
    assert text_array(["0xab", 'odd "one", with\\']) == '{0xab,"odd \\\\"one\\\\", with\\\\\\\\"}'
