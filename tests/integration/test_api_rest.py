"""REST under /v1 against a real Postgres filled by the real follower from the seeded devnet, served by
real uvicorn. Every answer is compared with the chain read independently: blocks, transactions, logs
and token transfers from the node's raw JSON-RPC answers parsed by ``tests/chain_check.py``; trades
from the pools' logs decoded with eth-abi (``test_dex_devnet.expected_trade``); candles summed here
with Decimal from those trades and the blocks' timestamps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import content_type_conformance, not_a_server_error, status_code_conformance
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema

from api.app import create_app
from api.query import records_json
from core.settings import build_settings
from devnet import Devnet
from records import kinds, to_dict
from sinks.postgres_read import record_columns, record_of, row_json
from tests.api_check import (
    Indexed,
    all_pages,
    assert_same_rows,
    exact,
    expected_candles,
    indexed_devnet,
    liquidity_of,
    served_in_thread,
    swaps_of,
)
from tests.conftest import dexnode_bin, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def indexed(pg_server: tuple[str, bool], devnet: Devnet) -> AsyncIterator[Indexed]:
    async with indexed_devnet(pg_server, devnet, "dexnode_api_rest") as served_chain:
        yield served_chain


@pytest.fixture
async def client(indexed: Indexed) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=indexed.url, timeout=30) as c:
        yield c


async def test_blocks_transactions_logs_and_transfers_are_the_chain(
    indexed: Indexed, client: httpx.AsyncClient
) -> None:
    chain = indexed.chain
    for path, table, limit in (
        ("/v1/blocks", "blocks", 97),
        ("/v1/transactions", "transactions", 250),
        ("/v1/logs", "logs", 1000),
        ("/v1/token-transfers", "token_transfers", 333),
    ):
        rows, pages = await all_pages(client, path, {"limit": limit})
        assert_same_rows(path, chain[table], rows)
        assert pages == len(chain[table]) // limit + 1
        newest_first, _ = await all_pages(client, path, {"limit": limit, "order": "desc"})
        assert_same_rows(path + " desc", chain[table][::-1], newest_first)
    assert len(chain["logs"]) > 1000 and len(chain["token_transfers"]) > 300


async def test_rows_to_json_equal_the_records_own_encoding(indexed: Indexed) -> None:
    """The API's fast paths (``row_json``, and ``records_json`` on a page) against the reference:
    every stored row of every kind decoded into its record and encoded by ``records.to_dict``."""
    conn = await asyncpg.connect(indexed.dsn)
    try:
        for kind in kinds.BATCH_KINDS:
            rows = await conn.fetch(f'SELECT {record_columns(kind)} FROM "{kind.table}"')
            assert rows, kind.name
            want = [to_dict(record_of(kind.record, row))["data"] for row in rows]
            assert [row_json(kind.record, row) for row in rows] == want, kind.name
            assert records_json(kind.record, rows) == want, kind.name
    finally:
        await conn.close()


async def test_one_block_transaction_token_and_pool(indexed: Indexed, client: httpx.AsyncClient) -> None:
    blocks = indexed.chain["blocks"]
    latest = (await client.get("/v1/blocks/latest")).json()
    assert_same_rows("latest", [blocks[-1]], [latest["data"]])
    for block in (blocks[0], blocks[len(blocks) // 2]):
        by_number = (await client.get(f"/v1/blocks/{block['number']}")).json()
        by_hash = (await client.get(f"/v1/blocks/{block['hash'].upper().replace('0X', '0x')}")).json()
        assert_same_rows("block", [block, block], [by_number["data"], by_hash["data"]])
    logs = indexed.chain["logs"]
    tx = next(
        t
        for t in indexed.chain["transactions"]
        if sum(lg["transaction_hash"] == t["hash"] for lg in logs) > 2
    )
    answer = (await client.get(f"/v1/transactions/{tx['hash']}")).json()
    assert set(answer) == {"data", "logs"}
    assert_same_rows("transaction", [tx], [answer["data"]])
    assert_same_rows("its logs", [lg for lg in logs if lg["transaction_hash"] == tx["hash"]], answer["logs"])
    manifest = indexed.devnet.manifest
    for t in manifest["tokens"]:
        got = (await client.get(f"/v1/tokens/{t['address']}")).json()["data"]
        assert (got["address"], got["symbol"], got["name"], got["decimals"]) == (
            t["address"], t["symbol"], t["name"], t["decimals"],
        )  # fmt: skip
    for p in manifest["pools"]:
        got = (await client.get(f"/v1/pools/{p['address']}")).json()["data"]
        fields = ("exchange", "token0", "token1", "factory", "created_block_number")
        assert tuple(got[f] for f in fields) == (
            p["label"], p["token0"], p["token1"], p["factory"], p["created_block"],
        )  # fmt: skip
    pools, _ = await all_pages(client, "/v1/pools", {"limit": 4})
    assert [p["address"] for p in pools] == sorted(p["address"] for p in manifest["pools"])
    some_token = manifest["tokens"][0]["address"]
    with_token, _ = await all_pages(client, "/v1/pools", {"token": some_token})
    assert {p["address"] for p in with_token} == {
        p["address"] for p in manifest["pools"] if some_token in (p["token0"], p["token1"])
    }


async def test_filters_select_what_the_chain_says(indexed: Indexed, client: httpx.AsyncClient) -> None:
    chain = indexed.chain
    txs = chain["transactions"]
    sender = txs[len(txs) // 2]["from_address"]
    got, _ = await all_pages(client, "/v1/transactions", {"address": sender.upper().replace("0X", "0x")})
    assert_same_rows("by address", [t for t in txs if sender in (t["from_address"], t["to_address"])], got)
    lo, hi = indexed.head // 3, indexed.head // 2
    got, _ = await all_pages(client, "/v1/transactions", {"from_block": lo, "to_block": hi, "limit": 7})
    assert_same_rows("block range", [t for t in txs if lo <= t["block_number"] <= hi], got)
    got, _ = await all_pages(client, "/v1/transactions", {"block": hi})
    assert_same_rows("one block", [t for t in txs if t["block_number"] == hi], got)
    logs = chain["logs"]
    sample = next(lg for lg in logs if lg["topic2"] is not None)
    params = {"address": sample["address"], "topic0": sample["topic0"], "topic2": sample["topic2"]}
    got, _ = await all_pages(client, "/v1/logs", params)
    want = [lg for lg in logs if all(lg[k] == v for k, v in params.items())]
    assert_same_rows("logs by address and topics", want, got)
    transfers = chain["token_transfers"]
    token = transfers[0]["token_address"]
    holder = transfers[-1]["to_address"]
    for params, keep in (
        ({"token": token}, lambda t: t["token_address"] == token),
        ({"address": holder}, lambda t: holder in (t["from_address"], t["to_address"])),
        ({"standard": "erc721"}, lambda t: t["standard"] == "erc721"),
    ):
        got, _ = await all_pages(client, "/v1/token-transfers", {**params, "limit": 50})
        want = [t for t in transfers if keep(t)]
        assert want, params
        assert_same_rows(f"transfers {params}", want, got)


async def test_dex_trades_are_the_pools_swap_logs(indexed: Indexed, client: httpx.AsyncClient) -> None:
    swaps, decimals = swaps_of(indexed)
    got, _ = await all_pages(client, "/v1/dex/trades", {"limit": 1000})
    assert len(got) == len(swaps) > 100
    for s, g in zip(swaps, got, strict=True):
        block_hash, log_index, label, pool, taker, sold, bought, sold_raw, bought_raw, number, time = s
        assert (g["block_hash"], g["log_index"], g["exchange"], g["pool_address"], g["taker"]) == (
            block_hash.lower(), log_index, label, pool, taker,
        )  # fmt: skip
        assert (g["token_sold_address"], g["token_bought_address"], g["block_number"], g["block_time"]) == (
            sold, bought, number, time,
        )  # fmt: skip
        assert (g["amount_sold_raw"], g["amount_bought_raw"]) == (str(sold_raw), str(bought_raw))
        assert Decimal(g["amount_sold"]) == exact(sold_raw, decimals[sold])
        assert Decimal(g["amount_bought"]) == exact(bought_raw, decimals[bought])
    pool = swaps[len(swaps) // 2][3]
    taker = swaps[0][4]
    token = swaps[0][5]
    t0, t1 = swaps[len(swaps) // 3][10], swaps[2 * len(swaps) // 3][10]
    iso = {"from_time": _iso(t0), "to_time": _iso(t1)}
    for params, keep in (
        ({"pool": pool}, lambda s: s[3] == pool),
        ({"taker": taker}, lambda s: s[4] == taker),
        ({"token": token}, lambda s: token in (s[5], s[6])),
        ({"exchange": "sushiswap"}, lambda s: s[2] == "sushiswap"),
        ({"from_time": t0, "to_time": t1}, lambda s: t0 <= s[10] <= t1),
        (iso, lambda s: t0 <= s[10] <= t1),
    ):
        rows, _ = await all_pages(client, "/v1/dex/trades", {**params, "limit": 200})
        want = [(s[0].lower(), s[1]) for s in swaps if keep(s)]
        assert want, params
        assert [(r["block_hash"], r["log_index"]) for r in rows] == want, params


async def test_dex_liquidity_is_the_pools_mint_burn_collect_logs(
    indexed: Indexed, client: httpx.AsyncClient
) -> None:
    want = liquidity_of(indexed)
    got, _ = await all_pages(client, "/v1/dex/liquidity", {"limit": 150})
    fields = ("block_hash", "log_index", "event", "event_type", "amount0_raw", "amount1_raw", "exchange")
    assert [(*(g[f] for f in fields), g["pool_address"]) for g in got] == [
        (*w[:4], str(w[4]), str(w[5]), w[6], w[7]) for w in want
    ]
    assert len(want) > 300 and {w[2] for w in want} == {"mint", "burn", "collect"}
    pool = want[len(want) // 2][7]
    in_pool, _ = await all_pages(client, "/v1/dex/liquidity", {"pool": pool, "order": "desc", "limit": 30})
    assert [(g["block_hash"], g["log_index"]) for g in in_pool] == [
        (w[0], w[1]) for w in want if w[7] == pool
    ][::-1]


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_candles_are_the_trades_summed_with_decimal(
    indexed: Indexed, client: httpx.AsyncClient
) -> None:
    swaps, decimals = swaps_of(indexed)
    pools = {p["address"]: p for p in indexed.devnet.manifest["pools"]}
    busiest = max(pools, key=lambda a: sum(s[3] == a for s in swaps))
    token0, token1 = pools[busiest]["token0"], pools[busiest]["token1"]
    for interval, seconds in (("1m", 60), ("5m", 300), ("1h", 3600)):
        want = expected_candles(swaps, decimals, pools[busiest], seconds)
        got, _ = await all_pages(
            client, "/v1/dex/candles", {"pool": busiest, "interval": interval, "limit": 7}
        )
        assert [g["start"] for g in got] == sorted(want), interval
        for g in got:
            w = want[g["start"]]
            assert (g["pool_address"], g["token0"], g["token1"], g["interval"], g["end"]) == (
                busiest, token0, token1, interval, g["start"] + seconds,
            )  # fmt: skip
            assert [Decimal(g[k]) for k in ("open", "high", "low", "close", "volume0", "volume1")] == [
                w["open"], w["high"], w["low"], w["close"], w["v0"], w["v1"],
            ], (interval, g["start"])  # fmt: skip
            assert g["trade_count"] == w["n"]
        starts = sorted(want)
        middle = starts[len(starts) // 3 : 2 * len(starts) // 3]
        window = {"pool": busiest, "interval": interval, "from_time": middle[0], "to_time": middle[-1] + 1}
        part, _ = await all_pages(client, "/v1/dex/candles", {**window, "order": "desc", "limit": 3})
        assert [g["start"] for g in part] == middle[::-1]


async def test_bad_input_is_a_clear_400_or_404(indexed: Indexed, client: httpx.AsyncClient) -> None:
    first_page = (await client.get("/v1/blocks", params={"limit": 2})).json()
    for path, params, status, words in (
        ("/v1/blocks/0xabc", {}, 400, "neither a block number"),
        ("/v1/blocks/-1", {}, 400, "neither a block number"),
        ("/v1/blocks/99999999999999999999999", {}, 400, "neither a block number"),
        ("/v1/blocks/123456789", {}, 404, "no block"),
        ("/v1/blocks", {"from_block": -1}, 400, "from_block"),
        ("/v1/blocks", {"from_block": 2**70}, 400, "from_block"),
        ("/v1/blocks", {"from_block": 10, "to_block": 5}, 400, "range is empty"),
        ("/v1/blocks", {"limit": 0}, 400, "limit"),
        ("/v1/blocks", {"limit": 1001}, 400, "limit"),
        ("/v1/blocks", {"order": "sideways"}, 400, "order"),
        ("/v1/blocks", {"frm_block": 1}, 400, "unknown query parameter(s): frm_block"),
        ("/v1/blocks", {"cursor": "not-a-cursor"}, 400, "bad cursor"),
        ("/v1/blocks", {"cursor": first_page["next_cursor"], "order": "desc"}, 400, "another query"),
        ("/v1/transactions", {"cursor": first_page["next_cursor"]}, 400, "bad cursor"),
        ("/v1/transactions/0x1234", {}, 400, "not a hash"),
        ("/v1/transactions/0x" + "0" * 64, {}, 404, "no transaction"),
        ("/v1/transactions", {"address": "0xnothex"}, 400, "address"),
        ("/v1/logs", {"topic0": "0x" + "1" * 63}, 400, "topic0"),
        ("/v1/token-transfers", {"standard": "erc999"}, 400, "standard"),
        ("/v1/tokens/0x12", {}, 400, "not an address"),
        ("/v1/pools/0x" + "0" * 40, {}, 404, "no pool"),
        ("/v1/dex/trades", {"from_time": "yesterday"}, 400, "ISO-8601"),
        ("/v1/dex/trades", {"from_time": "2026-01-02", "to_time": "2026-01-01"}, 400, "range is empty"),
        ("/v1/dex/candles", {"interval": "1m"}, 400, "pool"),
        ("/v1/dex/candles", {"pool": "0x" + "0" * 40, "interval": "2m"}, 400, "interval"),
        ("/v1/dex/candles", {"pool": "0x" + "0" * 40, "interval": "1m"}, 404, "no pool"),
        ("/v1/nothing", {}, 404, "Not Found"),
    ):
        answer = await client.get(path, params=params)
        assert answer.status_code == status, (path, params, answer.text)
        assert words in answer.json()["detail"], (path, params, answer.text)


async def test_health_ready_and_metrics(indexed: Indexed, client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = (await client.get("/ready")).json()
    top = indexed.chain["blocks"][-1]
    assert ready["head"] == {"number": top["number"], "hash": top["hash"], "timestamp": top["timestamp"]}
    node_head, _ = indexed.devnet.head()
    assert ready["node_head"] == node_head and ready["lag_blocks"] == node_head - top["number"]
    assert ready["lag_seconds"] >= 0
    await client.get("/v1/blocks/1")
    text = (await client.get("/metrics")).text
    assert f"dexnode_indexed_head_number {float(top['number'])}" in text
    assert f"dexnode_blocks_indexed {float(len(indexed.chain['blocks']))}" in text
    assert "dexnode_reorgs 0.0" in text
    assert 'dexnode_api_request_seconds_count{method="GET",route="/v1/blocks/{block}"}' in text


async def test_dexnode_serve_command_serves_the_database(indexed: Indexed, cli_env: dict[str, str]) -> None:
    port = free_port()
    env = {**cli_env, "DEXNODE_DATABASE_URL": indexed.dsn, "DEXNODE_RPC_HTTP": indexed.devnet.rpc_http}
    proc = await asyncio.create_subprocess_exec(
        dexnode_bin(), "serve", "--port", str(port), env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(300):
                try:
                    answer = await client.get("/v1/blocks/latest")
                    break
                except httpx.TransportError:
                    assert proc.returncode is None, "dexnode serve exited"
                    await asyncio.sleep(0.1)
            assert_same_rows("latest", [indexed.chain["blocks"][-1]], [answer.json()["data"]])
            assert "dexnode API" in (await client.get("/docs")).text
    finally:
        proc.terminate()
        # SIGTERM ends every dexnode command the same way: cleaned up, "dexnode: terminated", 143
        assert await asyncio.wait_for(proc.wait(), 20) == 143


@pytest.fixture(scope="module")
def api_schema(indexed: Indexed) -> Iterator[BaseSchema]:
    """The API's own OpenAPI schema, from a second server (in a thread) over the indexed database."""
    settings = build_settings(database_url=indexed.dsn, rpc_http=indexed.devnet.rpc_http)
    with served_in_thread(create_app(settings)) as url:
        yield schemathesis.openapi.from_url(url + "/openapi.json")


def test_openapi_schema_holds_for_generated_requests(api_schema: BaseSchema) -> None:
    """Generated requests (valid and not) for every operation never get a 500, and only the documented
    status codes and content types. (Driven here, not by schemathesis's pytest plugin: its
    ``from_fixture`` does not run under pytest 9.)"""
    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    results = list(api_schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), [r for r in results if not isinstance(r, Ok)]
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) >= 15
    statuses: list[int] = []
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=20, deadline=None, suppress_health_check=list(hypothesis.HealthCheck), database=None
        )
        def check(case: schemathesis.Case) -> None:
            statuses.append(case.call_and_validate(checks=checks, timeout=30).status_code)

        check()
    assert len(statuses) > 5 * len(operations) and {200, 400} <= set(statuses), sorted(set(statuses))
