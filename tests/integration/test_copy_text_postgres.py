"""COPY text data from both encoders (sinks/_copy.c and the generated Python one) read by a real
PostgreSQL: every value read back equals the value written (the records themselves are the truth,
not an encoding of them), for the characters the text format escapes, NULL and its look-alikes,
non-ASCII text, integers past 64 bits, negative numbers and Decimals in every notation."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from core.database import DatabaseInfo
from sinks import copy_text
from sinks.copy_text import record_encoder

pytestmark = pytest.mark.integration

_TABLE = sa.Table(
    "copy_text_check",
    sa.MetaData(),
    sa.Column("id", sa.Integer, nullable=False),
    sa.Column("word", sa.Text, nullable=False),
    sa.Column("maybe", sa.Text),
    sa.Column("amount", sa.Numeric(78, 0), nullable=False),
    sa.Column("price", sa.Numeric),
    sa.Column("words", sa.ARRAY(sa.Text)),
)
_COLUMNS = ("id", "word", "maybe", "amount", "price", "words")
_DDL = (
    "CREATE TEMP TABLE copy_text_check (id integer NOT NULL, word text NOT NULL, maybe text, "
    "amount numeric(78,0) NOT NULL, price numeric, words text[])"
)


class _Row:
    def __init__(self, *values: Any) -> None:
        for name, value in zip(_COLUMNS, values, strict=True):
            setattr(self, name, value)


_SPECIAL = "a\tb\nc\rd\\e"
_ROWS = [
    _Row(0, _SPECIAL, _SPECIAL, 2**256 - 1, Decimal("0E-18"), (_SPECIAL, "x")),
    _Row(1, "\\N", "\\N", 0, None, ("NULL", "null", "Null", "\\N", "")),
    _Row(2, "", "", -(2**255), Decimal("-12.3400"), ()),
    _Row(3, "NULL", None, 2**63, Decimal("1E+5"), None),
    _Row(
        4,
        "é ü 𝄞 \u2028",
        "日本",
        -(2**63) - 1,
        Decimal("-0.000000000000000001"),
        ('a "q" b', "{x,y}", "a,b", " s "),
    ),
    _Row(5, "0x" + "ab" * 32, "\\", -1, Decimal("123456789012345678901234567890.123456789"), ("é",)),
]


def _encoders() -> list[bool]:
    return [True, False] if copy_text.C_ENCODER else [True]


@pytest.mark.parametrize("python", _encoders(), ids=lambda p: "python" if p else "c")
async def test_postgres_reads_back_every_value_written(migrated_db: DatabaseInfo, python: bool) -> None:
    data = record_encoder(_TABLE, _COLUMNS, {}, python=python)(_ROWS)
    conn = await asyncpg.connect(migrated_db.dsn)
    try:
        await conn.execute(_DDL)
        await conn.copy_to_table("copy_text_check", source=io.BytesIO(data), format="text")
        got = await conn.fetch(f"SELECT {', '.join(_COLUMNS)} FROM copy_text_check ORDER BY id")
    finally:
        await conn.close()
    assert len(got) == len(_ROWS)
    for row, record in zip(got, _ROWS, strict=True):
        for name in _COLUMNS:
            want = getattr(record, name)
            value = row[name]
            if name == "words" and want is not None:
                want = list(want)
            if name in ("amount", "price") and want is not None:
                assert isinstance(value, Decimal)
                # the same value and scale (digits after the point; NUMERIC has no negative scale)
                scale = min(0, int(Decimal(want).as_tuple().exponent))
                assert value == want and min(0, int(value.as_tuple().exponent)) == scale, (record.id, name)
            else:
                assert value == want, (record.id, name)
