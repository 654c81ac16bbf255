"""``dexnode cex`` in a subprocess against the local OKX and Binance replay servers, endpoints given by
``DEXNODE_CEX_<EXCHANGE>_WS_URL`` / ``_REST_URL``.

Recorded frames (OKX 2022-05-13, Binance 2021-10-12); constructed: OKX seqIds and the servers' envelopes.
Truth: the recording's own trades (counted and compared here from the raw JSON) and the server's book.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import asyncpg
import pytest

from cex.store import CexStore
from core.database import DatabaseInfo
from devnet.exchanges import binance as binance_server
from devnet.exchanges import okx as okx_server
from devnet.exchanges import recording
from tests.conftest import dexnode_bin

pytestmark = pytest.mark.integration


def _recorded_okx_trades(inst: str) -> list[dict[str, str]]:
    out = []
    for payload in recording.received(recording.FIXTURES / "okx" / "OKX.ws.1.0"):
        msg = json.loads(payload)
        if msg.get("arg", {}).get("channel") == "trades" and msg["arg"]["instId"] == inst and "data" in msg:
            out += msg["data"]
    return out


async def _run(args: list[str], env: dict[str, str]) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        dexnode_bin(), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out, err


async def test_cex_prints_the_recorded_trades_and_a_checked_book(cli_env: dict[str, str]) -> None:
    server = await okx_server.OkxServer(okx_server.events(), pace=0.003).start()
    try:
        env = {**cli_env, "DEXNODE_CEX_OKX_WS_URL": server.url}
        args = ["cex", "--exchange", "okx", "--symbols", "BTC-USDT", "--feeds", "trades,book", "--no-store",
                "--print", "--duration", "4"]  # fmt: skip
        code, out, err = await _run(args, env)
    finally:
        await server.stop()
    assert code == 0, err.decode()[-2000:]
    lines = [json.loads(line) for line in out.splitlines()]
    trades = [doc["data"] for doc in lines if doc["type"] == "trade"]
    recorded = _recorded_okx_trades("BTC-USDT")
    assert [(t["trade_id"], t["price"], t["size"], t["taker_side"]) for t in trades] == [
        (r["tradeId"], r["px"], r["sz"], r["side"]) for r in recorded
    ]
    assert not [doc for doc in lines if doc["type"] == "resync"]
    # the printed snapshot + deltas rebuild the server's book
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    for doc in lines:
        data = doc["data"]
        if doc["type"] == "book_snapshot":
            bids = {Decimal(p): Decimal(s) for p, s in data["bids"]}
            asks = {Decimal(p): Decimal(s) for p, s in data["asks"]}
        elif doc["type"] == "book_delta":
            side = bids if data["side"] == "bid" else asks
            if Decimal(data["size"]):
                side[Decimal(data["price"])] = Decimal(data["size"])
            else:
                side.pop(Decimal(data["price"]), None)
    want_bids, want_asks = server.books["BTC-USDT"].as_decimals()
    assert (sorted(bids.items(), reverse=True), sorted(asks.items())) == (want_bids, want_asks)


async def test_cex_stores_binance_trades_and_book(cli_env: dict[str, str], clean_db: DatabaseInfo) -> None:
    server = await binance_server.BinanceServer(binance_server.events(), pace=0.003).start()
    try:
        env = {
            **cli_env,
            "DEXNODE_CEX_BINANCE_WS_URL": f"{server.url}/stream",
            "DEXNODE_CEX_BINANCE_REST_URL": server.rest_url,
            "DEXNODE_DATABASE_URL": clean_db.dsn,
        }
        args = ["cex", "--exchange", "binance", "--symbols", "NKN-USDT,BLZ-ETH,LRC-BTC,RUNE-EUR",
                "--feeds", "trades,book,ticker", "--duration", "5", "--snapshot-every", "0.5"]  # fmt: skip
        code, _, err = await _run(args, env)
    finally:
        await server.stop()
    assert code == 0, err.decode()[-2000:]
    conn = await asyncpg.connect(clean_db.dsn)
    try:
        trades = await conn.fetch(
            "SELECT symbol, trade_id, price::text, size::text FROM cex_trades ORDER BY trade_id"
        )
        tickers = await conn.fetchval("SELECT count(*) FROM cex_tickers")
        resyncs = await conn.fetchval("SELECT count(*) FROM cex_book_events WHERE kind = 'resync'")
    finally:
        await conn.close()
    assert len(trades) == 2 and tickers == 84 and resyncs == 0
    recorded = [
        json.loads(p)["data"]
        for p in recording.received(recording.FIXTURES / "binance" / "BINANCE.ws.1.0")
        if "aggTrade" in p
    ]
    assert sorted((str(d["a"]), d["p"], d["q"]) for d in recorded) == [(t[1], t[2], t[3]) for t in trades]
    store = await CexStore.connect(clean_db.dsn)
    try:
        for symbol, native in (("NKN-USDT", "NKNUSDT"), ("LRC-BTC", "LRCBTC")):
            stored = await store.rebuild_book("binance", symbol)
            assert stored.valid
            assert (stored.bids, stored.asks) == server.books[native].as_decimals(), symbol
    finally:
        await store.close()
