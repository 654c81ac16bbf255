"""``dexnode run --exchanges okx`` against the local OKX replay server (``devnet/exchanges``): the recorded
trades are stored in Postgres and reach ``/ws`` in process, every field as recorded; the live book the
API serves is the market's; SIGTERM still ends the node with exit 0."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from devnet import Devnet
from devnet.exchanges import okx as okx_server
from tests.api_check import own_database
from tests.integration.test_api_cex import (
    SYMBOLS,
    WsClient,
    check_trades,
    eventually,
    levels,
    recorded_trades,
)
from tests.integration.test_run import running

pytestmark = pytest.mark.integration


async def test_run_with_an_exchange_stores_and_streams_its_trades(
    devnet: Devnet, pg_server: tuple[str, bool], cli_env: dict[str, str], tmp_path: Path
) -> None:
    truth = recorded_trades()
    # the market plays once two sessions subscribed: the node's feed, and this test's (below), so the
    # test's websocket client is subscribed to the node before the first trade
    server = await okx_server.OkxServer(okx_server.events(), [], wait_for_sessions=2).start()
    # the exchange comes from a configuration file (dexnode run --config), as a user would write it
    config = tmp_path / "dexnode.toml"
    config.write_text(
        "[cex]\nexchanges = ['okx']\nfeeds = ['trades', 'book', 'ticker']\n"
        f"[cex.okx]\nsymbols = {list(SYMBOLS)!r}\nws_url = '{server.url}'\n"
    )
    try:
        async with own_database(pg_server, "dexnode_run_cex") as db:
            args = [
                "--config", str(config), "--rpc-http", devnet.rpc_http, "--rpc-ws", devnet.rpc_ws,
                "--database-url", db.dsn, "--quiet",
            ]  # fmt: skip
            async with running(args, cli_env, tmp_path) as node:
                assert f"  CEX        okx {','.join(SYMBOLS)} (trades,book,ticker)" in node.banner
                assert f"  config     {config}" in node.banner
                trades_ws = await WsClient.open(node.http, {"channel": "cex_trades", "exchange": "okx"})
                async with connect(server.url) as gate:
                    await gate.send(
                        orjson.dumps(
                            {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]}
                        )
                    )
                    await asyncio.wait_for(server.done.wait(), 60)
                await eventually(lambda: len(trades_ws.data("trade")) >= len(truth), "every trade on /ws")
                check_trades(trades_ws.data("trade"), truth)
                await trades_ws.close()

                conn = await asyncpg.connect(db.dsn)
                try:
                    rows = await conn.fetch("SELECT * FROM cex_trades WHERE exchange = 'okx'")
                finally:
                    await conn.close()
                stored = [
                    {k: (format(v, "f") if isinstance(v, Decimal) else v) for k, v in dict(r).items()}
                    for r in rows
                ]
                check_trades(stored, truth)

                # the live book (FeedBooks handed to the API) is the market's after the replay
                market = server.books["BTC-USDT"].as_decimals()
                async with httpx.AsyncClient(base_url=node.http, timeout=30) as http:

                    async def book_is_the_market() -> bool:
                        answer = (await http.get("/v1/cex/books/okx/BTC-USDT")).json()["data"]
                        return (
                            bool(answer["valid"])
                            and (levels(answer["bids"]), levels(answer["asks"])) == market
                        )

                    for _ in range(100):
                        if await book_is_the_market():
                            break
                        await asyncio.sleep(0.1)
                    assert await book_is_the_market()

                node.proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(node.proc.wait(), 60)
                assert code == 0, node.log()
                assert "Traceback" not in node.log()
    finally:
        await server.stop()


async def test_run_serves_raw_frames_on_the_websocket_with_no_kafka_and_no_setting(
    devnet: Devnet, pg_server: tuple[str, bool], cli_env: dict[str, str], tmp_path: Path
) -> None:
    """``dexnode run``'s own wiring of the ``cex_raw`` channel (cli/node.py hands the feed the hub's raw
    fan-out), with neither Kafka nor DEXNODE_CEX_RAW (``cli_env`` has no ``DEXNODE_*``): a client gets the
    frames the feed's connection received, verbatim, in order. Truth: what the local OKX server wrote to
    that socket (``Session.sent``). The frames before the client subscribed (the subscribe answers) are
    not owed to it; every market frame is."""
    assert not any(k in cli_env for k in ("DEXNODE_CEX_RAW", "DEXNODE_KAFKA_BOOTSTRAP_SERVERS"))
    server = await okx_server.OkxServer(okx_server.events(), [], wait_for_sessions=2).start()
    config = tmp_path / "dexnode.toml"
    config.write_text(
        f"[cex]\nexchanges = ['okx']\nfeeds = ['trades', 'book']\n"
        f"[cex.okx]\nsymbols = {list(SYMBOLS)!r}\nws_url = '{server.url}'\n"
    )
    try:
        async with own_database(pg_server, "dexnode_run_cex_raw") as db:
            args = [
                "--config", str(config), "--rpc-http", devnet.rpc_http, "--rpc-ws", devnet.rpc_ws,
                "--database-url", db.dsn, "--quiet",
            ]  # fmt: skip
            async with running(args, cli_env, tmp_path) as node:
                raw_ws = await WsClient.open(node.http, {"channel": "cex_raw", "exchange": "okx"})
                async with connect(server.url) as gate:  # the second session starts the market
                    await gate.send(
                        orjson.dumps(
                            {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]}
                        )
                    )
                    await asyncio.wait_for(server.done.wait(), 60)

                    def feeds_session() -> list[str]:
                        """What the server wrote to the node's feed (the session with book frames)."""
                        (sent,) = [s.sent for s in server.sessions if any('"books"' in f for f in s.sent)]
                        return sent

                    def caught_up() -> bool:
                        got = [d["frame"] for d in raw_ws.data("raw")]
                        sent = feeds_session()
                        first_market = next(i for i, f in enumerate(sent) if '"data"' in f)
                        return len(sent) - first_market <= len(got) and sent[len(sent) - len(got) :] == got

                    await eventually(caught_up, "every market frame of the feed's socket on cex_raw", 30)
                got = raw_ws.data("raw")
                sent = feeds_session()
                assert [d["frame"] for d in got] == sent[len(sent) - len(got) :]
                assert sum('"books"' in d["frame"] and '"data"' in d["frame"] for d in got) > 100
                assert {(d["exchange"], d["connection"]) for d in got} == {("okx", 0)}
                times = [d["atom_timestamp"] for d in got]
                assert times == sorted(times)
                await raw_ws.close()
                node.proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(node.proc.wait(), 60) == 0, node.log()
    finally:
        await server.stop()
