"""GraphQL integers above 2^31: block numbers, timestamps and gas (BIGINT columns) are ``Int64``, a JSON
number without ``Int``'s 32-bit cap, and raw amounts stay ``BigInt`` strings. Checked with the schema's
own object and filter types (``api.graph.schema``) executed by strawberry on a real mainnet block
record whose numbers are pushed past 2^31."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import strawberry
from strawberry.schema.config import StrawberryConfig

from api.graph.schema import _entities, build_schema
from api.graph.types import SCALARS, Int64
from indexer.chain.extract import extract_receipts_only
from records import Block

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("fixtures_dir")]

HELIOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mainnet-block-21925176-helios"
BIG = 2**40 + 7  # above Int's 2^31 - 1, below JavaScript's 2^53


@pytest.fixture(scope="module")
def far_block() -> Block:
    header = json.loads((HELIOS / "block.json").read_text())
    receipts = json.loads((HELIOS / "receipts.json").read_text())
    block = extract_receipts_only(header, receipts).block
    assert block.withdrawals
    withdrawal = dataclasses.replace(block.withdrawals[0], index=2**33, amount=2**70)
    return dataclasses.replace(
        block,
        number=BIG,
        timestamp=2**33,
        gas_limit=2**35,
        withdrawals=(withdrawal,),
        base_fee_per_gas=2**100,
    )


def _schema(block: Block) -> strawberry.Schema:
    """The schema's own ``Block`` type and ``Block_filter`` input, over one record."""
    entity = _entities()["blocks"]

    def block_field() -> Any:
        return block

    def echo_number_gt(where: Any) -> int:
        return int(where.number_gt)

    block_field.__annotations__ = {"return": entity.object_type}
    echo_number_gt.__annotations__ = {"where": entity.filter_type, "return": Int64}
    query = strawberry.type(
        type(
            "Query",
            (),
            {
                "block": strawberry.field(resolver=block_field),
                "echo": strawberry.field(resolver=echo_number_gt),
            },
        )
    )
    return strawberry.Schema(query=query, config=StrawberryConfig(scalar_map=SCALARS))


def test_numbers_above_2_31_are_answered_as_json_numbers(far_block: Block) -> None:
    result = _schema(far_block).execute_sync(
        "{ block { number timestamp gasLimit gasUsed baseFeePerGas withdrawals { index amount } } }"
    )
    assert result.errors is None, result.errors
    assert result.data == {
        "block": {
            "number": BIG,
            "timestamp": 2**33,
            "gasLimit": 2**35,
            "gasUsed": far_block.gas_used,
            "baseFeePerGas": str(2**100),  # a NUMERIC: BigInt, a decimal string as in The Graph
            "withdrawals": [{"index": 2**33, "amount": str(2**70)}],
        }
    }


@pytest.mark.parametrize("literal", [str(BIG), f'"{BIG}"'])
def test_a_filter_above_2_31_round_trips(far_block: Block, literal: str) -> None:
    result = _schema(far_block).execute_sync(f"{{ echo(where: {{number_gt: {literal}}}) }}")
    assert result.errors is None, result.errors
    assert result.data == {"echo": BIG}

    variables = _schema(far_block).execute_sync(
        "query($w: Block_filter!) { echo(where: $w) }", variable_values={"w": {"number_gt": BIG}}
    )
    assert variables.errors is None and variables.data == {"echo": BIG}


def test_outside_bigint_range_is_a_clear_error(far_block: Block) -> None:
    result = _schema(far_block).execute_sync(f"{{ echo(where: {{number_gt: {2**63}}}) }}")
    assert result.errors and "outside -2^63 .. 2^63-1" in str(result.errors[0])


def test_the_served_schema_types_bigint_columns_as_int64() -> None:
    sdl = str(build_schema())
    fields = {
        "Block": ("number: Int64!", "timestamp: Int64!", "gasUsed: Int64!", "transactionCount: Int!"),
        "Transaction": ("blockNumber: Int64!", "gas: Int64!", "value: BigInt!", "transactionIndex: Int!"),
        "DexTrade": ("blockNumber: Int64!", "blockTime: Int64!", "amountSoldRaw: BigInt!"),
        "Candle": ("start: Int64!", "end: Int64!"),
        "Withdrawal": ("index: Int64!", "validatorIndex: Int64!", "amount: BigInt!"),
    }
    for type_name, expected in fields.items():
        start = sdl.index(f"type {type_name} {{")
        body = sdl[start : sdl.index("}", start)]
        for field in expected:
            assert f"  {field}\n" in body, (type_name, field)
    assert "block(number: Int64!): Block" in sdl
    assert "input Block_height {\n  number: Int!" in sdl  # The Graph's, unchanged
