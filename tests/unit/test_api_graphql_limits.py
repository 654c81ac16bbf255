"""GraphQL documents refused before anything runs: cost, depth, aliases, unknown fields and bad scalars
(validated by the schema alone: no context, no database)."""

from __future__ import annotations

import asyncio

import pytest

from api.graph.limits import MAX_COST
from api.graph.schema import build_schema

pytestmark = pytest.mark.unit

SCHEMA = build_schema()


def errors_of(document: str) -> list[str]:
    result = asyncio.run(SCHEMA.execute(document, context_value=None))
    return [e.message for e in result.errors or ()]


def test_cost_counts_rows_times_the_objects_loaded_per_row() -> None:
    # 1000 trades + 1000 pools + 1000 token0 + 1000 token1 = 4000: allowed (it fails later, at the
    # missing database, which shows validation let it through)
    errors = errors_of("{ dexTrades(first: 1000) { pool { token0 { symbol } token1 { symbol } } } }")
    assert not any("cost" in e for e in errors)
    heavy = " ".join(f"a{i}: dexTrades(first: 1000) {{ pool {{ token0 {{ symbol }} }} }}" for i in range(4))
    errors = errors_of("{ " + heavy + " }")
    assert errors == [f"query cost 12000 exceeds the limit of {MAX_COST}: ask for fewer rows (first) or fewer"
                      " nested objects, and page with after"]  # fmt: skip


def test_a_variable_first_counts_as_the_maximum() -> None:
    doc = "query($n: Int!) { " + " ".join(f"a{i}: blocks(first: $n) {{ number }}" for i in range(11)) + " }"
    assert any("query cost 11000" in e for e in errors_of(doc))


def test_depth_aliases_fields_and_scalars() -> None:
    deep = "{ dexTradesPage { nodes { pool { token0 { symbol { a { b { c } } } } } } } }"
    assert any("exceeds maximum operation depth" in e for e in errors_of(deep))
    many = "{ " + " ".join(f'a{i}: token(address: "0x") {{ symbol }}' for i in range(30)) + " }"
    assert any("aliases" in e for e in errors_of(many))
    assert any("Cannot query field 'nope'" in e for e in errors_of("{ blocks { nope } }"))
    assert any(
        "BigInt" in e for e in errors_of('{ dexTrades(where: {amountSoldRaw_gt: "1.5"}) { logIndex } }')
    )


def test_the_graph_conventions_are_in_the_schema() -> None:
    text = SCHEMA.as_str()
    for line in (
        "dexTrades(first: Int! = 100, skip: Int! = 0, where: DexTrade_filter = null,"
        " orderBy: DexTrade_orderBy = null, orderDirection: OrderDirection = null,"
        " block: Block_height = null, after: String = null):"
        " [DexTrade!]!",
        "  blockNumber_gte: Int64 = null",  # a BIGINT column: Int64, not the 32-bit Int
        "  poolAddress_in: [String!] = null",
        "  amountSoldRaw_lt: BigInt = null",
        "  pool: Pool",
        "  token0: Token",
    ):
        assert line in text, line
