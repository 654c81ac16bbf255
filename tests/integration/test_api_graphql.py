"""GraphQL at /graphql through the ``gql`` client, against the seeded devnet indexed by the real follower:
answers compared with the chain read independently (``tests/chain_check.py``'s oracle rows, the pools'
swap logs decoded with eth-abi, the devnet's manifest for tokens and pools)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport

from devnet import Devnet
from tests.api_check import Indexed, assert_same_rows, exact, expected_candles, indexed_devnet, swaps_of
from tests.chain_check import Json

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def indexed(pg_server: tuple[str, bool], devnet: Devnet) -> AsyncIterator[Indexed]:
    async with indexed_devnet(pg_server, devnet, "dexnode_api_graphql") as served_chain:
        yield served_chain


async def query(indexed: Indexed, document: str, **variables: Any) -> Json:
    transport = HTTPXAsyncTransport(url=indexed.url + "/graphql", timeout=60)
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        request = gql(document)
        request.variable_values = variables or None
        result: Json = await session.execute(request)
        return result


async def fails(indexed: Indexed, document: str, **variables: Any) -> str:
    with pytest.raises(TransportQueryError) as caught:
        await query(indexed, document, **variables)
    return str(caught.value)


def snake(row: Json) -> Json:
    """camelCase keys back to the records' snake_case names (the oracle's)."""
    out = {}
    for key, value in row.items():
        out["".join("_" + c.lower() if c.isupper() else c for c in key)] = value
    return out


BLOCK_FIELDS = " ".join(
    (
        "number hash parentHash nonce sha3Uncles logsBloom transactionsRoot stateRoot receiptsRoot miner",
        "difficulty totalDifficulty extraData size gasLimit gasUsed baseFeePerGas timestamp",
        "transactionCount withdrawalsRoot blobGasUsed excessBlobGas parentBeaconBlockRoot requestsHash",
        "withdrawals { index validatorIndex address amount }",
    )
)


async def test_blocks_paged_by_cursor_and_filtered_are_the_chain(indexed: Indexed) -> None:
    want = indexed.chain["blocks"]
    got: list[Json] = []
    after = None
    while True:
        page = (
            await query(
                indexed,
                "query($after: String) { blocksPage(first: 64, after: $after)"
                f" {{ nodes {{ {BLOCK_FIELDS} }} pageInfo {{ hasNextPage endCursor }} }} }}",
                after=after,
            )
        )["blocksPage"]
        got.extend(snake(b) for b in page["nodes"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert_same_rows("blocks", want, got)
    window = await query(
        indexed,
        "{ blocks(where: {number_gte: 10, number_lt: 20}, orderDirection: desc) { number hash } }",
    )
    assert [(b["number"], b["hash"]) for b in window["blocks"]] == [
        (b["number"], b["hash"]) for b in reversed(want[10:20])
    ]
    skipped = await query(indexed, "{ blocks(first: 5, skip: 7) { number } }")
    assert [b["number"] for b in skipped["blocks"]] == [7, 8, 9, 10, 11]
    both = "query($h: String!) { blockByHash(hash: $h) { number } block(number: 3) { hash } }"
    one = await query(indexed, both, h=want[42]["hash"])
    assert one == {"blockByHash": {"number": 42}, "block": {"hash": want[3]["hash"]}}


async def test_transactions_and_logs_where_filters(indexed: Indexed) -> None:
    txs = indexed.chain["transactions"]
    sender = txs[len(txs) // 2]["from_address"]
    got = await query(
        indexed,
        "query($s: String!) { transactions(first: 1000, where: {fromAddress: $s}) { hash blockNumber value"
        " gasPrice nonce status } }",
        s=sender.upper().replace("0X", "0x"),
    )
    want = [t for t in txs if t["from_address"] == sender]
    assert [(t["hash"], t["blockNumber"], t["value"], t["gasPrice"], t["nonce"], t["status"]) for t in
            got["transactions"]] == [(t["hash"], t["block_number"], str(t["value"]), str(t["gas_price"]),
                                      str(t["nonce"]), t["status"]) for t in want]  # fmt: skip
    logs = indexed.chain["logs"]
    sample = logs[len(logs) // 2]
    addresses = [sample["address"], logs[-1]["address"]]
    topic = sample["topic0"]
    got = await query(
        indexed,
        "query($a: [String!], $t: String) { logs(first: 1000, where: {address_in: $a, topic0: $t,"
        " blockNumber_gt: 5}) { blockNumber logIndex address topic0 data } }",
        a=addresses,
        t=topic,
    )
    want = [
        lg for lg in logs if lg["address"] in addresses and lg["topic0"] == topic and lg["block_number"] > 5
    ]
    assert want and [(lg["blockNumber"], lg["logIndex"], lg["data"]) for lg in got["logs"]] == [
        (lg["block_number"], lg["log_index"], lg["data"]) for lg in want
    ]


async def test_trades_with_nested_pool_and_tokens_in_few_queries(indexed: Indexed) -> None:
    swaps, decimals = swaps_of(indexed)
    manifest = indexed.devnet.manifest
    pools = {p["address"]: p for p in manifest["pools"]}
    symbols = {t["address"]: t["symbol"] for t in manifest["tokens"]}
    got: list[Json] = []
    after = None
    indexed.queries.clear()
    while True:
        page = (
            await query(
                indexed,
                "query($after: String) { dexTradesPage(first: 1000, after: $after) { nodes { blockHash"
                " logIndex exchange taker amountSoldRaw amountBought pool { address token0 { symbol }"
                " token1 { symbol } } tokenSold { address decimals } }"
                " pageInfo { hasNextPage endCursor } } }",
                after=after,
            )
        )["dexTradesPage"]
        got.extend(page["nodes"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    pages = len(swaps) // 1000 + 1
    assert len(got) == len(swaps) > 1000
    for s, g in zip(swaps, got, strict=True):
        pool = pools[s[3]]
        assert (g["blockHash"], g["logIndex"], g["exchange"], g["taker"], g["amountSoldRaw"]) == (
            s[0].lower(), s[1], s[2], s[4], str(s[7]),
        )  # fmt: skip
        assert Decimal(g["amountBought"]) == exact(s[8], decimals[s[6]])
        assert g["pool"] == {"address": s[3], "token0": {"symbol": symbols[pool["token0"]]},
                             "token1": {"symbol": symbols[pool["token1"]]}}  # fmt: skip
        assert g["tokenSold"] == {"address": s[5], "decimals": decimals[s[5]]}
    # per page of 1000 trades: one query for their pools, at most two for their tokens (tokenSold
    # with the pools, then token0/token1 once the pools are known): never one per trade
    pools_loads = [q for q in indexed.queries if 'FROM "pools" WHERE' in q]
    tokens_loads = [q for q in indexed.queries if 'FROM "tokens" WHERE' in q]
    assert len(pools_loads) == pages and pages <= len(tokens_loads) <= 2 * pages, indexed.queries


async def test_block_pinned_order_and_candles(indexed: Indexed) -> None:
    swaps, decimals = swaps_of(indexed)
    pin = swaps[len(swaps) // 2][9]
    got = await query(
        indexed,
        "query($n: Int!) { dexTrades(first: 1000, block: {number: $n}, orderBy: blockNumber,"
        " orderDirection: desc) { blockNumber logIndex } }",
        n=pin,
    )
    want = sorted(((s[9], s[1]) for s in swaps if s[9] <= pin), reverse=True)[:1000]
    assert [(t["blockNumber"], t["logIndex"]) for t in got["dexTrades"]] == want
    pools = {p["address"]: p for p in indexed.devnet.manifest["pools"]}
    busiest = max(pools, key=lambda a: sum(s[3] == a for s in swaps))
    candles = (
        await query(
            indexed,
            'query($p: String!) { candles(pool: $p, interval: "5m", first: 1000) { start end open high low'
            " close volume0 volume1 tradeCount } }",
            p=busiest,
        )
    )["candles"]
    want_candles = expected_candles(swaps, decimals, pools[busiest], 300)
    assert [c["start"] for c in candles] == sorted(want_candles)
    for c in candles:
        w = want_candles[c["start"]]
        assert [Decimal(c[k]) for k in ("open", "high", "low", "close", "volume0", "volume1")] == [
            w["open"], w["high"], w["low"], w["close"], w["v0"], w["v1"],
        ]  # fmt: skip
        assert c["tradeCount"] == w["n"] and c["end"] == c["start"] + 300


async def test_limits_and_bad_input_are_clear_errors(indexed: Indexed) -> None:
    assert "first must be between 0 and 1000" in await fails(indexed, "{ blocks(first: 1001) { number } }")
    assert "skip must be between" in await fails(indexed, "{ blocks(skip: 100000) { number } }")
    assert "bad cursor" in await fails(indexed, '{ blocks(after: "garbage") { number } }')
    assert "is not indexed" in await fails(indexed, "{ blocks(block: {number: 99999999}) { number } }")
    assert "exceeds the limit" in await fails(
        indexed,
        "{ a: dexTrades(first: 1000) { pool { token0 { symbol } token1 { symbol } } tokenSold { symbol } } "
        "b: dexTrades(first: 1000) { pool { token0 { symbol } } } c: logs(first: 1000) { data }"
        " d: blocks(first: 1000) { number } e: blocks(first: 1000) { number } }",
    )
    deep = "{ dexTradesPage { nodes { pool { token0 { symbol { a { b { c } } } } } } } }"
    assert "exceeds maximum operation depth" in await fails(indexed, deep)
    assert "Cannot query field" in await fails(indexed, "{ blocks { nope } }")
    assert "BigInt" in await fails(indexed, '{ dexTrades(where: {amountSoldRaw_gt: "x"}) { logIndex } }')
    assert "interval must be one of" in await fails(
        indexed, '{ candles(pool: "0x0000000000000000000000000000000000000000", interval: "2m") { start } }'
    )
