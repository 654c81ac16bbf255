"""``api/fastpath.py`` (the hot GET routes answered without FastAPI's per-request dependency
resolution) against FastAPI alone (``create_app(fast_path=False)``): both served by real uvicorn over
the same Postgres, filled by the real follower from the seeded devnet. The same status, headers and
bytes for valid requests, which the fast path answers, and for bad ones, which it hands to FastAPI
(its error words, 400 rather than 422)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

import api.query as api_query
from api.app import create_app
from core.settings import build_settings
from devnet import Devnet
from tests.api_check import Indexed, indexed_devnet, served

pytestmark = pytest.mark.integration
Request = tuple[str, list[tuple[str, Any]]]


@pytest.fixture(scope="module")
async def indexed(pg_server: tuple[str, bool], devnet: Devnet) -> AsyncIterator[Indexed]:
    async with indexed_devnet(pg_server, devnet, "dexnode_api_fastpath") as served_chain:
        yield served_chain


def answered_here(indexed: Indexed, cursor: str) -> list[Request]:
    """Valid requests of every fast route (some answered with an ``ApiError``: 400, 404)."""
    chain = indexed.chain
    block, tx, log = chain["blocks"][5], chain["transactions"][3], chain["logs"][0]
    pool = indexed.devnet.manifest["pools"][0]["address"]
    return [
        ("/v1/blocks/latest", []),
        (f"/v1/blocks/{block['number']}", []),
        (f"/v1/blocks/{block['hash']}", []),
        ("/v1/blocks/%31%30", []),
        ("/v1/blocks/123456789", []),
        ("/v1/blocks/0xabc", []),
        ("/v1/blocks", [("limit", 3), ("order", "desc")]),
        ("/v1/blocks", [("from_block", 10), ("to_block", 5)]),
        (f"/v1/transactions/{tx['hash']}", []),
        ("/v1/transactions", [("address", "0x" + tx["from_address"][2:].upper())]),
        ("/v1/logs", [("address", log["address"]), ("topic0", log["topic0"]), ("limit", 5)]),
        ("/v1/token-transfers", [("standard", "erc20"), ("limit", 4)]),
        (f"/v1/tokens/{indexed.devnet.manifest['tokens'][0]['address']}", []),
        (f"/v1/pools/{pool}", []),
        ("/v1/pools", [("limit", 2)]),
        ("/v1/dex/trades", [("pool", pool), ("limit", 2), ("cursor", cursor)]),
        ("/v1/dex/trades", [("pool", pool), ("cursor", cursor), ("order", "desc")]),
        ("/v1/dex/trades", [("cursor", "garbled")]),
        ("/v1/dex/trades", [("from_block", "007"), ("to_block", 50), ("from_time", "2020-01-01T00:00:00Z")]),
        ("/v1/dex/trades", [("from_time", "yesterday")]),
        ("/v1/dex/liquidity", [("pool", pool), ("order", "desc")]),
        ("/v1/dex/candles", [("pool", pool), ("interval", "5m"), ("limit", 3)]),
        ("/v1/dex/candles", [("pool", "0x" + "0" * 40), ("interval", "1m")]),
    ]


def handed_to_fastapi(indexed: Indexed) -> list[Request]:
    """Requests the fast path does not accept, for FastAPI to refuse (or, for a number written other
    than as plain digits, to accept in its own way)."""
    address = indexed.chain["transactions"][3]["from_address"]
    return [
        ("/v1/blocks", [("limit", 0)]),
        ("/v1/blocks", [("limit", "+5")]),
        ("/v1/blocks", [("limit", " 5")]),
        ("/v1/blocks", [("limit", "1_0")]),
        ("/v1/blocks", [("limit", 5), ("limit", 6)]),
        ("/v1/blocks", [("from_block", 2**63)]),
        ("/v1/blocks", [("frm_block", 1)]),
        ("/v1/blocks", [("order", "")]),
        ("/v1/blocks/latest", [("x", "1")]),
        ("/v1/blocks/" + "9" * 81, []),
        ("/v1/transactions", [("address", "0xnothex")]),
        ("/v1/transactions", [("address", address + "\n")]),
        ("/v1/token-transfers", [("standard", "erc999")]),
        ("/v1/pools", [("exchange", "UNI")]),
        ("/v1/dex/candles", [("interval", "1m")]),
        ("/v1/dex/candles", [("pool", address), ("interval", "2m")]),
    ]


async def test_fast_path_answers_what_fastapi_answers(indexed: Indexed) -> None:
    settings = build_settings(database_url=indexed.dsn, rpc_http=indexed.devnet.rpc_http)
    fast_app = create_app(settings)
    pool = indexed.devnet.manifest["pools"][0]["address"]
    async with (
        served(fast_app) as fast_url,
        served(create_app(settings, fast_path=False)) as slow_url,
        httpx.AsyncClient(base_url=fast_url) as fast,
        httpx.AsyncClient(base_url=slow_url) as slow,
    ):
        first = await fast.get("/v1/dex/trades", params={"pool": pool, "limit": 2})
        valid, refused = answered_here(indexed, first.json()["next_cursor"]), handed_to_fastapi(indexed)
        for path, params in [*valid, *refused, ("/v1/dex/trades/", [])]:
            a, b = await fast.get(path, params=params), await slow.get(path, params=params)
            assert (a.status_code, _headers(a), a.content) == (b.status_code, _headers(b), b.content), (
                path,
                params,
            )
            assert a.status_code < 500, (path, params)
        statuses = {(await fast.get(path, params=params)).status_code for path, params in valid}
    assert statuses == {200, 400, 404}
    stats = fast_app.state.fast_path
    # the first page and the valid requests twice answered here; the refused ones handed over (the
    # trailing slash is FastAPI's redirect, never seen as a fast route)
    assert (stats.answered, stats.passed) == (1 + 2 * len(valid), len(refused))


def _headers(answer: httpx.Response) -> dict[str, str]:
    """Without the date, and a redirect's location without the server's own address."""
    base = f"{answer.request.url.scheme}://{answer.request.url.netloc.decode()}"
    return {k: v.removeprefix(base) for k, v in answer.headers.items() if k != "date"}


async def test_pages_written_by_the_c_extension_are_orjsons_bytes(
    indexed: Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every list answered with its page written by ``api/_pagejson.c`` and again through dict +
    orjson (the extension switched off): the same bytes, over the real rows of every list kind."""
    native = api_query._objects
    if native is None:
        pytest.skip("make install builds the optional C extension api._pagejson")
    written = []

    def counted(keys: tuple[bytes, ...], rows: list[Any], count: int) -> bytes:
        written.append(len(rows))
        return native(keys, rows, count)

    settings = build_settings(database_url=indexed.dsn, rpc_http=indexed.devnet.rpc_http)
    pool = indexed.devnet.manifest["pools"][0]["address"]
    lists = [
        ("/v1/blocks", [("limit", 7), ("order", "desc")]),
        ("/v1/transactions", [("limit", 50)]),
        ("/v1/logs", [("limit", 100)]),
        ("/v1/token-transfers", [("limit", 100)]),
        ("/v1/pools", []),
        ("/v1/dex/trades", [("limit", 1000)]),
        ("/v1/dex/trades", [("pool", pool), ("limit", 3)]),
        ("/v1/dex/liquidity", [("order", "desc")]),
    ]
    async with served(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        monkeypatch.setattr(api_query, "_objects", counted)
        in_c = [(await client.get(path, params=params)).content for path, params in lists]
        monkeypatch.setattr(api_query, "_objects", None)
        through_orjson = [(await client.get(path, params=params)).content for path, params in lists]
    assert in_c == through_orjson
    assert all(orjson.loads(body)["data"] for body in in_c)  # every list has rows
    # offered to the C writer: logs, transfers, pools (refused: a list column), the two trade pages;
    # blocks, transactions and liquidity have columns to convert (``as_read``) and go through orjson
    assert len(written) == 5 and max(written) > 10
