"""The Postgres writer's COPY text encoding: nulls, escaping and exact numbers, as Postgres reads them.

Every test runs against both encoders: the generated Python one and ``sinks/_copy.c`` (which the writer
uses when it is built). The C encoder is also compared byte for byte with the Python one on real
records: two recorded mainnet blocks with their receipts (ethereum-etl's fixtures) and the helios block
(withdrawals as JSON, 463 logs, token transfers), through the writer's own table encoders."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from indexer.chain.extract import ExtractedBlock, extract_block, extract_receipts_only
from indexer.pipeline.pipeline import RECORD_MAKERS, batch_of
from records import Log, TokenTransfer, Transaction
from sinks import copy_text, postgres
from sinks.copy_text import escape, record_encoder, text_array

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"

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
_COLUMNS = ("hash", "name", "amount", "price", "hashes", "extra")


class _Row:
    def __init__(
        self,
        hash: str,
        name: str | None,
        amount: int | Decimal,
        price: Decimal | int | None,
        hashes: tuple[str, ...] | None,
    ):
        self.hash, self.name, self.amount, self.price, self.hashes = hash, name, amount, price, hashes


ENCODERS = pytest.mark.parametrize(
    "python",
    [
        True,
        pytest.param(
            False, marks=pytest.mark.skipif(copy_text._copy is None, reason="sinks/_copy.c not built")
        ),
    ],
    ids=["python", "c"],
)


@ENCODERS
def test_rows_print_as_postgres_text_format(python: bool) -> None:
    encode = record_encoder(_TABLE, _COLUMNS, {"extra": lambda r: '{"a":"\\t"}'}, python=python)
    rows = [
        _Row("0xab", None, 2**256 - 1, Decimal("0E-18"), ("0x01", "0x02")),
        _Row("0xcd", "tab\there\\ new\nline\r", 0, None, None),
    ]
    assert encode(rows) == (
        b"0xab\t\\N\t115792089237316195423570985008687907853269984665640564039457584007913129639935\t0E-18"
        b'\t{0x01,0x02}\t{"a":"\\\\t"}\n'
        b'0xcd\ttab\\there\\\\ new\\nline\\r\t0\t\\N\t\\N\t{"a":"\\\\t"}\n'
    )


@ENCODERS
def test_edge_values(python: bool) -> None:
    """Integers at and past 64 bits, negative, Decimals in exponent notation, non-ASCII text (UTF-8,
    a tab after a multi-byte character), empty strings, a converter returning None, no rows."""
    encode = record_encoder(_TABLE, _COLUMNS, {"extra": lambda r: None if r.name else "é\\"}, python=python)
    rows = [
        _Row("", "", 2**63 - 1, -(2**63), ()),
        _Row("é\tü", "x", 2**63, -(2**63) - 1, ("a b",)),
        _Row("0x", None, -1, Decimal("1E+5"), None),
        _Row("0x", None, Decimal("-12.3400"), Decimal("0.000"), None),
    ]
    assert (
        encode(rows)
        == (
            "\t\t9223372036854775807\t-9223372036854775808\t{}\té\\\\\n"
            'é\\tü\tx\t9223372036854775808\t-9223372036854775809\t{"a b"}\t\\N\n'
            "0x\t\\N\t-1\t1E+5\t\\N\té\\\\\n"
            "0x\t\\N\t-12.3400\t0.000\t\\N\té\\\\\n"
        ).encode()
    )
    assert encode([]) == b""


@ENCODERS
def test_a_none_in_a_not_null_column_is_not_stored_as_text(python: bool) -> None:
    encode = record_encoder(_TABLE, ("hash",), {}, python=python)
    with pytest.raises((AttributeError, TypeError)):  # Python: None.isalnum; C: "a str expected"
        encode([_Row(None, None, 0, None, None)])  # type: ignore[arg-type]


def test_escaping_helpers() -> None:
    assert escape("a\\b\tc") == "a\\\\b\\tc"
    assert text_array(None) == "\\N"
    assert text_array(["0xab", 'odd "one", with\\']) == '{0xab,"odd \\\\"one\\\\", with\\\\\\\\"}'
    # unquoted NULL (any case) is a null element to array_in: a string that reads so is quoted
    assert text_array(["NULL", "null", "nUlL", "NULLS", "x"]) == '{"NULL","null","nUlL",NULLS,x}'


def _result(path: Path) -> Any:
    return json.loads(path.read_text())["result"]


def _recorded_blocks() -> list[ExtractedBlock]:
    stream = FIXTURES / "ethereum-etl" / "test_stream" / "blocks_1755634_1755635"
    out = []
    for n in ("0x1ac9f2", "0x1ac9f3"):
        raw = _result(stream / f"web3_response.eth_getBlockByNumber_{n}_true.json")
        receipts = [
            _result(stream / f"web3_response.eth_getTransactionReceipt_{tx['hash']}.json")
            for tx in raw["transactions"]
        ]
        out.append(extract_block(raw, receipts, RECORD_MAKERS))
    helios = FIXTURES / "mainnet-block-21925176-helios"
    out.append(
        extract_receipts_only(
            json.loads((helios / "block.json").read_text()),
            json.loads((helios / "receipts.json").read_text()),
        )
    )
    return out


@pytest.mark.skipif(copy_text._copy is None, reason="sinks/_copy.c not built")
@pytest.mark.usefixtures("fixtures_dir")
def test_c_encoder_equals_python_on_recorded_blocks() -> None:
    batch = batch_of("test", _recorded_blocks())
    compared: dict[str, int] = {}
    for writer in postgres._WRITERS:
        rows = batch.of(writer.record)
        if writer.encode is None or not rows:
            continue
        converters = {
            c: postgres._nested_json(c) for c in writer.columns if isinstance(writer.table.c[c].type, JSONB)
        }
        python = record_encoder(writer.table, writer.columns, converters, python=True)
        assert writer.encode(rows) == python(rows), writer.table.name
        compared[writer.table.name] = len(rows)
    # every table the recorded blocks have rows for (logs in text too, with the C encoder built); the
    # helios block's 16 withdrawals as JSON
    assert compared == {
        "blocks": 3,
        "transactions": len(batch.of(Transaction)),
        "logs": len(batch.of(Log)),
        "token_transfers": len(batch.of(TokenTransfer)),
    }
    assert len(batch.of(Transaction)) == 2 and len(batch.of(TokenTransfer)) > 100
    assert sum(len(b.withdrawals or ()) for b in batch.blocks) == 16
