"""The dashboard at ``/`` in a real headless Chromium (Debian's ``chromium``, driven by playwright) against
live nodes: ``dexnode run`` in process (a devnet, anvil with real Uniswap contracts, and a local Binance
server's generated market), and ``dexnode cex`` in a subprocess beside an API process that reads it
through Postgres ``LISTEN/NOTIFY``.

What the page shows is compared with independent truth, never with what the API answers: the node's
head over JSON-RPC; each swap's sides decoded with eth-abi from the node's logs and named by the devnet's
deployment (its token symbols); CEX trades against the same seeded market generated again; the book
against the exchange server's own. Screenshots go to ``.dexnode-test-artifacts/`` (``dashboard.png``:
chart, book and tape together).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Page, async_playwright

from api.app import create_app
from cli.node import run_node
from core.database import DatabaseInfo
from core.settings import build_settings
from devnet import Devnet
from devnet.exchanges.live import LIVE_SERVERS, interleave, markets_for
from devnet.exchanges.server import ReplayServer
from indexer.chain.rpc import RpcClient
from tests.api_check import start_server
from tests.chain_check import wait_for_tip
from tests.conftest import dexnode_bin, free_port
from tests.integration.test_dex_devnet import V2_SWAP, V3_SWAP, expected_trade, venues

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000
CEX_SYMBOL = "ETH-USDT"
CEX_NATIVE = "ETHUSDT"  # as Binance writes it
CEX_SEED = 3
CEX_MAX_EVENTS = 20_000  # generated market steps at most (the test halts the market much sooner)
CEX_TRADES = 10  # CEX trades the page must show before the market is halted
CEX_PACE = 0.01
CEX_ROWS = "document.querySelectorAll('#trades-body tr.buy, #trades-body tr.sell')"  # the tape's CEX rows
BOOK_LEVELS = 12  # what the page shows per side


async def _serve(dsn: str, rpc_http: str) -> tuple[str, Any]:
    settings = build_settings(database_url=dsn, rpc_http=rpc_http, confirmations=3, ws_heartbeat_seconds=1.0)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    port, stop_server = await start_server(create_app(settings, pool=pool))

    async def stop() -> None:
        await stop_server()
        await pool.close()

    return f"http://127.0.0.1:{port}", stop


@contextlib.asynccontextmanager
async def dexnode_run(
    devnet: Devnet, dsn: str, exchange: ReplayServer
) -> AsyncIterator[tuple[RpcClient, str]]:
    """``dexnode run`` in this process (``cli.node.run_node``): the follower with the devnet's venues,
    the API with the live hub, and a Binance feed of ``exchange`` (a local server), into ``dsn``."""
    v2, v3 = venues(devnet.manifest)
    settings = build_settings(
        database_url=dsn,
        rpc_http=devnet.rpc_http,
        rpc_ws=devnet.rpc_ws,
        api_port=free_port(),
        confirmations=3,
        uniswap_v2_factories=v2,
        uniswap_v3_factories=v3,
        cex_exchanges="binance",
        cex_symbols=CEX_SYMBOL,
        plugin_settings={
            "cex_binance_ws_url": f"{exchange.url}/stream",
            "cex_binance_rest_url": exchange.rest_url,
        },
    )
    stop = asyncio.Event()
    ready = asyncio.Event()
    running = asyncio.create_task(run_node(settings, stop=stop, quiet=True, on_ready=lambda _: ready.set()))
    try:
        started = asyncio.create_task(ready.wait())
        await asyncio.wait((running, started), return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if running.done():
            running.result()  # raises what stopped the node
        async with RpcClient(devnet.rpc_http) as rpc:
            await wait_for_tip(dsn, rpc, timeout=60)
            yield rpc, f"http://127.0.0.1:{settings.api_port}"
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)


def exact_text(raw: int, decimals: int) -> str:
    """The exact amount as plain decimal text (the page cuts it, never rounds: its text is a prefix)."""
    with localcontext() as ctx:
        ctx.prec = 200  # exact for any uint256 over any decimals (the default 28 digits would round)
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


@contextlib.asynccontextmanager
async def browser_page(url: str) -> AsyncIterator[tuple[Page, list[str]]]:
    """The dashboard loaded in headless Chromium; the list collects page errors and failed requests."""
    if not await asyncio.to_thread(Path(CHROMIUM).exists):
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium package")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            await page.goto(url + "/")
            yield page, errors
        finally:
            await browser.close()


def artifact(pytestconfig: pytest.Config, name: str) -> Path:
    """A stable, git-ignored place for the screenshots (printed, so a person can look)."""
    folder = Path(pytestconfig.rootpath) / ".dexnode-test-artifacts"
    folder.mkdir(exist_ok=True)
    return folder / name


async def test_dashboard_on_dexnode_run_shows_blocks_trades_a_book_and_reorgs(
    fresh_devnet: Devnet, clean_db: DatabaseInfo, pytestconfig: pytest.Config
) -> None:
    """The node as ``dexnode run`` runs it (one process: follower, API with the live hub, a CEX feed of a
    local Binance server's generated market): new blocks, DEX trades with their symbols, CEX trades and
    a valid book appear; a reorg shows the orphaned trades undone."""
    screenshot = artifact(pytestconfig, "dashboard.png")
    markets = markets_for("binance", [CEX_SYMBOL], CEX_SEED)
    exchange = LIVE_SERVERS["binance"][0](interleave(markets), pace=0.05, wait_for_sessions=1)
    exchange.setup(markets)
    await exchange.start()
    async with (
        dexnode_run(fresh_devnet, clean_db.dsn, exchange) as (rpc, url),
        browser_page(url) as (page, page_errors),
    ):
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
        # the websocket drops: the page reconnects and resumes each subscription from its last cursor,
        # so the blocks mined meanwhile arrive with their trades, none missed
        sent: list[dict[str, Any]] = []
        page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(json.loads(frame))))
        last_cursor = await page.evaluate(
            """() => {
                const stream = window.dexnode.stream;
                const cursor = stream.subs.get('dex').cursor;
                stream.socket.close();
                return cursor;
            }"""
        )
        assert last_cursor, "the page had no cursor to resume from"
        before = await rpc.block_number()
        await asyncio.to_thread(fresh_devnet.activity, 2, 10.0)
        await wait_for_tip(clean_db.dsn, rpc)
        after = await rpc.block_number()
        await shown_latest_block(page, after)
        missed = await swaps_in(fresh_devnet, rpc, before + 1, after)
        assert missed, "the devnet mined no swaps while the page was away"
        rows = await tape_rows(page, list(missed))
        for key, expected in missed.items():
            assert_side(rows[key]["sold"], expected["sold"], expected["sold_symbol"])
        resumed = [m for m in sent if m.get("op") == "subscribe" and m.get("id") == "dex"]
        assert resumed[:1] == [{"op": "subscribe", "id": "dex", "channel": "dex_trades", "from": last_cursor}]

        # the CEX side beside it: trades equal to the generated market's, a valid book with its sequence
        await page.wait_for_function(
            "document.querySelector('#book-state').dataset.valid === 'true'"
            " && document.querySelectorAll('#bids-body tr').length > 0"
            f" && {CEX_ROWS}.length > 0",
            timeout=WAIT_MS,
        )
        assert (await page.locator("#book-state").inner_text()).startswith("valid · sequence ")
        assert_cex_rows(await cex_rows(page))
        await page.screenshot(path=str(screenshot), full_page=True)
        print(f"\ndashboard screenshot: {screenshot}")
        assert not page_errors, page_errors
    await exchange.stop()


# -- the CEX side ---------------------------------------------------------------------------------


def canonical(text: str) -> str:
    return format(Decimal(text).normalize(), "f")


def generated_trades(upto: int) -> dict[str, Any]:
    """The same seeded market generated again, apart from the server: its trades by id (the truth)."""
    twin = markets_for("binance", [CEX_SYMBOL], CEX_SEED)[0]
    trades: dict[str, Any] = {}
    while len(trades) < upto:
        for event in twin.step():
            if event.channel == "trades":
                trades[str(event.raw.trade_id)] = event.raw
    return trades


async def cex_rows(page: Page) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = await page.evaluate(
        """() => [...document.querySelectorAll('#trades-body tr.buy, #trades-body tr.sell')].map(tr => ({
            key: tr.dataset.key, side: tr.className, venue: tr.querySelector('td.venue').innerText,
            price: tr.querySelector('td.price').title, sold: tr.querySelector('td.sold').innerText,
            bought: tr.querySelector('td.bought').innerText}))"""
    )
    return rows


def assert_cex_rows(rows: list[dict[str, str]]) -> None:
    """Each CEX row is the generated market's trade of that id: side, exact price, the taker's sides."""
    assert rows, "no CEX trade reached the tape"
    truth = generated_trades(max(int(r["key"].rsplit(":", 1)[1]) for r in rows))
    for row in rows:
        exchange, symbol, trade_id = row["key"].split(":")
        trade = truth[trade_id]
        shown = (exchange, symbol, row["venue"], row["side"])
        assert shown == ("binance", CEX_SYMBOL, "binance", trade.taker_side)
        assert Decimal(row["price"]) == Decimal(trade.price)
        base = row["bought"] if trade.taker_side == "buy" else row["sold"]
        quote = row["sold"] if trade.taker_side == "buy" else row["bought"]
        assert_side(base, canonical(trade.size), "ETH")
        assert_side(quote, canonical(str(Decimal(trade.size) * Decimal(trade.price))), "USDT")


async def test_dashboard_shows_cex_trades_and_a_valid_book(
    clean_db: DatabaseInfo, cli_env: dict[str, str], pytestconfig: pytest.Config
) -> None:
    """``dexnode cex`` against the local Binance server (a generated market) writes Postgres; the API
    reads it through NOTIFY. The page's CEX trades equal the market's generated trades, and its book,
    once the market stops, equals the server's book, shown valid with its sequence."""
    markets = markets_for("binance", [CEX_SYMBOL], CEX_SEED)
    halted: list[bool] = []

    def until_halted() -> Iterator[Any]:
        """The market's events until the test has seen enough of them on the page (then the server
        goes quiet and its book is final): as long as a loaded machine needs, no fixed length."""
        for event in itertools.islice(interleave(markets), CEX_MAX_EVENTS):
            if halted:
                return
            yield event

    server = LIVE_SERVERS["binance"][0](until_halted(), pace=CEX_PACE, wait_for_sessions=1)
    server.setup(markets)
    await server.start()
    url, stop = await _serve(clean_db.dsn, "http://127.0.0.1:9")  # no node here: the status says so
    feed = None
    try:
        async with browser_page(url) as (page, page_errors):
            await page.wait_for_function(
                "document.querySelector('[data-field=node_head]').textContent === 'node not answering'",
                timeout=WAIT_MS,
            )
            assert await page.locator("#book-state").inner_text() == "no exchange feeds configured"
            env = {
                **cli_env,
                "DEXNODE_CEX_BINANCE_WS_URL": f"{server.url}/stream",
                "DEXNODE_CEX_BINANCE_REST_URL": server.rest_url,
                "DEXNODE_DATABASE_URL": clean_db.dsn,
            }
            feed = await asyncio.create_subprocess_exec(
                dexnode_bin(), "cex", "--exchange", "binance", "--symbols", CEX_SYMBOL,
                "--feeds", "trades,book", env=env, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await page.wait_for_function(f"{CEX_ROWS}.length >= {CEX_TRADES}", timeout=60_000)
            halted.append(True)
            await asyncio.wait_for(server.done.wait(), 30)
            book = server.final_books()[CEX_NATIVE]
            want = {
                "bids": [[canonical(p), canonical(q)] for p, q in book.sorted_bids()[:BOOK_LEVELS]],
                "asks": [[canonical(p), canonical(q)] for p, q in book.sorted_asks()[:BOOK_LEVELS]],
            }
            # the page's book converges on the server's final book (exact decimals in each cell's title)
            await page.wait_for_function(
                """want => {
                    const canon = t => t.includes('.') ? t.replace(/0+$/, '').replace(/\\.$/, '') : t;
                    const side = (id, priceFirst) => [...document.querySelectorAll(`#${id} tr`)].map(tr => {
                        const [a, b] = [...tr.cells].map(td => canon(td.title));
                        return priceFirst ? [a, b] : [b, a];
                    });
                    return JSON.stringify(side('bids-body', false)) === JSON.stringify(want.bids)
                        && JSON.stringify(side('asks-body', true)) === JSON.stringify(want.asks);
                }""",
                arg=want,
                timeout=WAIT_MS,
            )
            # the status: the node this API was given does not answer (counted); the feed never resynced
            figure = "document.querySelector('[data-field={}]').textContent"
            assert int(await page.evaluate(figure.format("rpc_errors"))) > 0
            await page.wait_for_function(f"{figure.format('feed_resyncs')} === '0'", timeout=WAIT_MS)
            state = await page.locator("#book-state").inner_text()
            assert await page.locator("#book-state").get_attribute("data-valid") == "true", state
            assert state.startswith("valid · sequence "), state
            assert await page.locator("#book-market").inner_text() == f"{CEX_SYMBOL} on binance"

            assert_cex_rows(await cex_rows(page))
            caption = "document.getElementById('cex-chart-caption').textContent.includes(' close ')"
            await page.wait_for_function(caption, timeout=WAIT_MS)
            screenshot = artifact(pytestconfig, "dashboard-cex.png")
            await page.screenshot(path=str(screenshot), full_page=True)
            print(f"\ndashboard screenshot (CEX): {screenshot}")
            assert not page_errors, page_errors
    finally:
        if feed is not None and feed.returncode is None:
            feed.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(feed.communicate(), 30)
            assert feed.returncode in (0, 130), err.decode()[-2000:]  # 130: stopped by SIGINT, cleanly
        await stop()
        await server.stop()
