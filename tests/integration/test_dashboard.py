"""The dashboard at ``/`` in a real headless Chromium (Debian's ``chromium``, driven by playwright) against
a live node: a devnet (anvil with real Uniswap contracts), the follower writing Postgres, and the API in
its own uvicorn server reading live events through Postgres ``LISTEN/NOTIFY``.

What the page shows is compared with the devnet itself: the node's head over JSON-RPC, and each swap's
sides decoded with eth-abi from the node's logs, named by the devnet's deployment (its token symbols),
never with what the API answers. A screenshot is saved to ``.dexnode-test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from playwright.async_api import Page, async_playwright

from api.app import create_app
from core.database import DatabaseInfo
from core.settings import build_settings
from devnet import Devnet
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from sinks.postgres import PostgresSink
from tests.chain_check import wait_for_tip
from tests.conftest import free_port
from tests.integration.test_dex_devnet import V2_SWAP, V3_SWAP, expected_trade, venues

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
FOLLOW_FROM_BACK = 30  # the node indexes the devnet's newest blocks only: pools are classified on chain
WAIT_MS = 30_000


async def _serve(dsn: str, rpc_http: str) -> tuple[str, Any]:
    settings = build_settings(database_url=dsn, rpc_http=rpc_http, confirmations=3, ws_heartbeat_seconds=1.0)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, pool=pool),
            host="127.0.0.1",
            port=free_port(),
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done(), "the API server stopped while starting"
        assert time.monotonic() < deadline, "the API server did not start"
        await asyncio.sleep(0.05)

    async def stop() -> None:
        server.should_exit = True
        await task
        await pool.close()

    return f"http://127.0.0.1:{server.config.port}", stop


@contextlib.asynccontextmanager
async def node(devnet: Devnet, dsn: str) -> AsyncIterator[tuple[RpcClient, str]]:
    """Follower (with the DEX step) + API, like ``dexnode follow`` beside ``dexnode serve``."""
    sink = await PostgresSink.connect(dsn)
    async with RpcClient(devnet.rpc_http) as rpc:
        head = await rpc.block_number()
        v2, v3 = venues(devnet.manifest)
        follower = Follower(
            rpc, HeadStream(devnet.rpc_ws, rpc), start=[], from_block=head - FOLLOW_FROM_BACK, confirmations=3
        )
        enrich = DexEnricher(rpc, sink.pool, registry_from(v2, v3))
        following = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
        stop = None
        try:
            await wait_for_tip(dsn, rpc, timeout=60)
            url, stop = await _serve(dsn, devnet.rpc_http)
            yield rpc, url
        finally:
            if stop is not None:
                await asyncio.wait_for(stop(), 30)
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            await sink.close()


def exact_text(raw: int, decimals: int) -> str:
    """The exact amount as plain decimal text (the page cuts it, never rounds: its text is a prefix)."""
    value = (Decimal(raw) / Decimal(10) ** decimals).normalize()
    return format(value, "f")


async def swaps_in(devnet: Devnet, rpc: RpcClient, first: int, last: int) -> dict[str, dict[str, str]]:
    """Every swap of the devnet's pools in blocks first..last, keyed as the page keys its rows
    (``tx:logIndex``): sold and bought token symbols and exact amounts, from eth-abi and the deployment."""
    deployment = devnet.deployment
    pools = {p["address"].lower(): p for p in devnet.manifest["pools"]}
    logs = await rpc.call(
        "eth_getLogs", [{"fromBlock": hex(first), "toBlock": hex(last), "topics": [[V2_SWAP, V3_SWAP]]}]
    )
    truth: dict[str, dict[str, str]] = {}
    for log in logs:
        pool = pools.get(log["address"].lower())
        if pool is None:
            continue
        *_, sold, bought, sold_raw, bought_raw = expected_trade(log, pool)
        sold_token, bought_token = deployment.token_at(sold), deployment.token_at(bought)
        truth[f"{log['transactionHash'].lower()}:{int(log['logIndex'], 16)}"] = {
            "block": str(int(log["blockNumber"], 16)),
            "sold_symbol": sold_token.symbol,
            "bought_symbol": bought_token.symbol,
            "sold": exact_text(sold_raw, sold_token.decimals),
            "bought": exact_text(bought_raw, bought_token.decimals),
        }
    return truth


async def shown_latest_block(page: Page, number: int) -> None:
    await page.wait_for_function(
        "n => document.getElementById('latest-block').textContent === String(n)", arg=number, timeout=WAIT_MS
    )


async def tape_rows(page: Page, keys: list[str]) -> dict[str, dict[str, str]]:
    """Wait until the tape has a row for each key with its symbols resolved; return the rows' text."""
    await page.wait_for_function(
        """keys => keys.every(k => {
            const tr = document.querySelector(`#trades-body tr[data-key="${k}"]`);
            return tr && !tr.textContent.includes('…');
        })""",
        arg=keys,
        timeout=WAIT_MS,
    )
    rows: dict[str, dict[str, str]] = await page.evaluate(
        """keys => Object.fromEntries(keys.map(k => {
            const tr = document.querySelector(`#trades-body tr[data-key="${k}"]`);
            const cell = name => tr.querySelector(`td.${name}`).innerText;
            return [k, {block: cell('block'), sold: cell('sold'), bought: cell('bought'),
                        state: cell('state'), row_state: tr.dataset.state}];
        }))""",
        keys,
    )
    return rows


def assert_side(shown: str, amount: str, symbol: str) -> None:
    number, _, shown_symbol = shown.partition(" ")
    assert shown_symbol == symbol, f"shown {shown!r}, the devnet says {amount} {symbol}"
    assert amount.startswith(number.rstrip(".")) and number, f"shown {shown!r}, exact {amount} {symbol}"


async def test_dashboard_shows_blocks_trades_and_reorgs_live(
    fresh_devnet: Devnet, clean_db: DatabaseInfo, pytestconfig: pytest.Config
) -> None:
    if not await asyncio.to_thread(Path(CHROMIUM).exists):
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium package")
    artifacts = Path(pytestconfig.rootpath) / ".dexnode-test-artifacts"
    artifacts.mkdir(exist_ok=True)
    screenshot = artifacts / "dashboard.png"
    async with node(fresh_devnet, clean_db.dsn) as (rpc, url), async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1600, "height": 1000})
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        page.on("console", lambda m: page_errors.append(m.text) if m.type == "error" else None)
        page.on("response", lambda r: page_errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        try:
            await page.goto(url + "/")
            head = await rpc.block_number()
            await shown_latest_block(page, head)

            # new blocks with DEX trades: the page shows the node's head and every trade's sides
            await asyncio.to_thread(fresh_devnet.activity, 4, 10.0)
            await wait_for_tip(clean_db.dsn, rpc)
            new_head = await rpc.block_number()
            await shown_latest_block(page, new_head)
            truth = await swaps_in(fresh_devnet, rpc, head + 1, new_head)
            assert truth, "the devnet mined no swaps: nothing to look for"
            rows = await tape_rows(page, list(truth))
            for key, expected in truth.items():
                row = rows[key]
                shown = (row["block"], row["state"], row["row_state"])
                assert shown == (expected["block"], "ok", "canonical")
                assert_side(row["sold"], expected["sold"], expected["sold_symbol"])
                assert_side(row["bought"], expected["bought"], expected["bought_symbol"])

            # candles drawn for a pool, with its close as text beside the canvas
            caption = "document.getElementById('dex-chart-caption').textContent.includes(' close ')"
            await page.wait_for_function(caption, timeout=WAIT_MS)
            assert await page.locator("#dex-chart-canvas canvas").count() > 0

            # a reorg: the orphaned blocks' trades are shown undone, then the new branch's head
            reorg = await asyncio.to_thread(fresh_devnet.reorg, 3)
            orphaned = [k for k, t in truth.items() if int(t["block"]) > reorg.common_ancestor]
            assert orphaned, "the reorg orphaned no trade the page had shown"
            await page.wait_for_function(
                """keys => keys.every(k => {
                    const tr = document.querySelector(`#trades-body tr[data-key="${k}"]`);
                    return tr && tr.dataset.state === 'reorged'
                        && tr.querySelector('td.state').textContent === 'reorged';
                })""",
                arg=orphaned,
                timeout=WAIT_MS,
            )
            kept = [k for k, t in truth.items() if int(t["block"]) <= reorg.common_ancestor]
            rows = await tape_rows(page, kept) if kept else {}
            assert all(r["row_state"] == "canonical" for r in rows.values())
            await wait_for_tip(clean_db.dsn, rpc)
            await shown_latest_block(page, await rpc.block_number())
            log_text = await page.locator("#reorg-log").inner_text()
            assert f"reorg above block {reorg.common_ancestor}" in log_text
            await page.wait_for_function(
                "document.querySelector('[data-field=reorgs]').textContent.startsWith('1 (last: depth 3')",
                timeout=WAIT_MS,
            )
            await page.screenshot(path=str(screenshot), full_page=True)
            print(f"\ndashboard screenshot: {screenshot}")
            assert not page_errors, page_errors
        finally:
            await browser.close()
