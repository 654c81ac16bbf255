"""REST (and GraphQL) cursors while the real follower indexes a live devnet: pages stay pinned to the
first page's head while new blocks arrive (no row skipped or repeated, compared with the chain read
independently), and after a real reorg (anvil_reorg) a cursor pinned to an orphaned block answers 409
with the reorg, while one pinned below the common ancestor continues."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport

from api.app import create_app
from core.settings import build_settings
from devnet import Devnet
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from sinks.postgres import PostgresSink
from tests.api_check import Json, assert_same_rows, own_database, served
from tests.chain_check import expected_rows, raw_chain, wait_for_tip
from tests.integration.test_dex_devnet import venues

pytestmark = pytest.mark.integration


async def test_pages_stay_pinned_while_following_and_an_orphaned_pin_is_409(
    pg_server: tuple[str, bool], fresh_devnet: Devnet
) -> None:
    async with own_database(pg_server, "dexnode_api_reorg") as db:
        sink = await PostgresSink.connect(db.dsn)
        async with RpcClient(fresh_devnet.rpc_http) as rpc:
            heads = HeadStream(fresh_devnet.rpc_ws, rpc, silence_timeout=5)
            follower = Follower(rpc, heads, start=[], from_block=0, max_reorg_depth=16)
            v2, v3 = venues(fresh_devnet.manifest)
            enrich = DexEnricher(rpc, sink.pool, registry_from(v2, v3))
            task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
            settings = build_settings(database_url=db.dsn, rpc_http=fresh_devnet.rpc_http)
            try:
                await wait_for_tip(db.dsn, rpc, timeout=120)
                async with (
                    served(create_app(settings, pool=sink.pool)) as url,
                    httpx.AsyncClient(base_url=url, timeout=30) as client,
                ):
                    await _paging_while_the_node_follows(client, fresh_devnet, db.dsn, rpc)
                    await _orphaned_pin(client, fresh_devnet, db.dsn, rpc)
                assert not task.done()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await sink.close()


async def _paging_while_the_node_follows(
    client: httpx.AsyncClient, devnet: Devnet, dsn: str, rpc: RpcClient
) -> None:
    pinned = (await client.get("/v1/blocks/latest")).json()["data"]["number"]
    first = (await client.get("/v1/transactions", params={"limit": 100})).json()
    down = (await client.get("/v1/transactions", params={"limit": 100, "order": "desc"})).json()
    await asyncio.to_thread(devnet.activity, 6, 8.0)  # the node moves on between pages
    await wait_for_tip(dsn, rpc)
    rest, _ = await _follow(client, "/v1/transactions", {"limit": 100}, first)
    rest_down, _ = await _follow(client, "/v1/transactions", {"limit": 100, "order": "desc"}, down)
    want = expected_rows(await raw_chain(devnet.rpc_http, list(range(pinned + 1))))["transactions"]
    assert_same_rows("pages pinned at the first page's head", want, rest)
    assert_same_rows("pages pinned, newest first", want[::-1], rest_down)
    newer = (await client.get("/v1/transactions", params={"from_block": pinned + 1})).json()["data"]
    assert newer, "the follower indexed the new blocks (a fresh first page sees them)"


async def _follow(
    client: httpx.AsyncClient, path: str, params: dict[str, Any], first: Json
) -> tuple[list[Json], int]:
    rows, cursor, pages = list(first["data"]), first["next_cursor"], 1
    while cursor is not None:
        body = (await client.get(path, params={**params, "cursor": cursor})).json()
        rows.extend(body["data"])
        cursor, pages = body["next_cursor"], pages + 1
    return rows, pages


async def _orphaned_pin(client: httpx.AsyncClient, devnet: Devnet, dsn: str, rpc: RpcClient) -> None:
    old = (await client.get("/v1/blocks", params={"limit": 5})).json()  # pinned at today's head
    await asyncio.to_thread(devnet.activity, 6, 8.0)
    await wait_for_tip(dsn, rpc)
    trades = (await client.get("/v1/dex/trades", params={"limit": 5, "order": "desc"})).json()
    candle_query = {"pool": trades["data"][0]["pool_address"], "interval": "1m", "limit": 1}
    candles_first = (await client.get("/v1/dex/candles", params=candle_query)).json()
    after = (
        await graphql(client, "{ dexTradesPage(first: 5, orderDirection: desc) { pageInfo { endCursor } } }")
    )["dexTradesPage"]["pageInfo"]["endCursor"]
    reorg = await asyncio.to_thread(devnet.reorg, 3)
    await wait_for_tip(dsn, rpc)
    answer = await client.get(
        "/v1/dex/trades", params={"limit": 5, "order": "desc", "cursor": trades["next_cursor"]}
    )
    assert answer.status_code == 409, answer.text
    body = answer.json()
    ancestor = devnet.rpc.call("eth_getBlockByNumber", hex(reorg.common_ancestor), False)
    assert body["reorg"]["common_ancestor"] == {
        "number": reorg.common_ancestor,
        "hash": ancestor["hash"].lower(),
    }
    assert body["reorg"]["orphaned"] == [
        {"number": reorg.common_ancestor + 1 + i, "hash": h.lower()} for i, h in enumerate(reorg.old_hashes)
    ]
    new_branch = [b["hash"] for b in body["reorg"]["new"]]
    assert new_branch and new_branch == [h.lower() for h in reorg.new_hashes][: len(new_branch)]
    node_head, node_hash = devnet.head()
    assert body["new_head"] == {"number": node_head, "hash": node_hash.lower()}
    assert body["pinned"]["hash"] == reorg.old_hashes[-1].lower()
    assert "orphaned by a reorg" in body["detail"]
    assert "\ndexnode_reorgs 1.0\n" in (await client.get("/metrics")).text
    candles = await client.get(
        "/v1/dex/candles", params={**candle_query, "cursor": candles_first["next_cursor"]}
    )
    assert candles.status_code == 409, candles.text
    with pytest.raises(TransportQueryError, match="orphaned by a reorg") as caught:
        page = f'dexTradesPage(first: 5, orderDirection: desc, after: "{after}")'
        await graphql(client, f"{{ {page} {{ nodes {{ logIndex }} }} }}")
    assert caught.value.errors is not None and caught.value.errors[0]["extensions"]["code"] == "REORG"
    # a cursor pinned below the common ancestor is still on the canonical chain: it continues
    assert (
        await client.get("/v1/blocks", params={"limit": 5, "cursor": old["next_cursor"]})
    ).status_code == 200


async def graphql(client: httpx.AsyncClient, document: str) -> Json:
    transport = HTTPXAsyncTransport(url=str(client.base_url.join("/graphql")), timeout=30)
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        result: Json = await session.execute(gql(document))
        return result
