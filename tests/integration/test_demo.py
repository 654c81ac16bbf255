"""``dexnode demo`` as a user runs it: a subprocess with its own data dir (embedded PostgreSQL), watched
through the node's websocket while it runs, then stopped with Ctrl-C (SIGINT).

Truth is independent of the node: blocks, DEX trades and reorgs are checked against anvil's own answers
(the devnet's RPC URL is printed by the demo); CEX trades and books against the generated markets rebuilt
here from the same seed (``devnet.exchanges.market``: the servers' source, not the node's pipeline).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils import keccak
from websockets.asyncio.client import connect

from devnet import Devnet
from devnet.exchanges.live import markets_for
from devnet.exchanges.market import GeneratedTrade
from devnet.exchanges.server import MarketBook
from devnet.live import LiveDevnet, LiveOptions, Singletons
from tests.conftest import dexnode_bin, free_port

pytestmark = pytest.mark.integration

EXCHANGES = ("binance", "okx", "kraken")
SYMBOLS = ("ETH-USDT", "BTC-USDT")
SEED = 5
SINGLETONS = ("uniswap-v4", "balancer-v2")
V4_SWAP = "0x" + keccak(text="Swap(bytes32,address,int128,int128,uint160,uint128,int24,uint24)").hex()
# Balancer's Swap(bytes32 indexed poolId, address indexed tokenIn, address indexed tokenOut, ...)
BALANCER_SWAP = "0x" + keccak(text="Swap(bytes32,address,address,uint256,uint256)").hex()
DEX_VENUES = {"uniswap-v2", "sushiswap", "uniswap-v3", *SINGLETONS}
WATCH_SECONDS = 60.0  # the demo must show all of it within this (it usually takes well under half)


class Demo:
    """The subprocess, its stdout lines as they come, and the URLs its banner prints."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        args = [
            dexnode_bin(), "demo", "--duration", "150", "--port", str(port), "--blocks", "40",
            "--block-interval", "1", "--reorg-every", "6-10", "--reorg-depth", "1-2", "--seed", str(SEED),
            "--exchanges", ",".join(EXCHANGES), "--symbols", ",".join(SYMBOLS),
        ]  # fmt: skip
        self.started = time.monotonic()
        self.stderr = log.open("w")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)

    def banner(self, timeout: float = 120.0) -> dict[str, str]:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while "running" not in urls:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"no banner (exit {self.proc.returncode}): {''.join(self.stdout)}"
                    ) from None
                continue
            words = line.split()
            found = [w for w in words if w.startswith(("http://", "ws://"))]
            if line.startswith("  ") and found:
                urls[words[0]] = found[0].rstrip(":")  # "  REST docs  http://...": REST
            if line.startswith("demo: running"):
                urls["running"] = line
        return urls


def anvil(url: str, method: str, *params: Any) -> Any:
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    return reply.json()["result"]


def market_trades(exchange: str, symbol: str, upto: int) -> dict[str, GeneratedTrade]:
    """The generated market's trades 1..``upto`` (trade id -> trade), rebuilt from the seed."""
    (market,) = [m for m in markets_for(exchange, SYMBOLS, SEED) if m.instrument.symbol == symbol]
    trades: dict[str, GeneratedTrade] = {}
    while len(trades) < upto:
        for event in market.step():
            if event.channel == "trades":
                trades[str(event.raw.trade_id)] = event.raw
    return trades


def okx_book_at(symbol: str, sequence: int) -> MarketBook:
    """The OKX market's book at ``seqId`` (the snapshot event is 1, each book update one more)."""
    (market,) = [m for m in markets_for("okx", SYMBOLS, SEED) if m.instrument.symbol == symbol]
    book = MarketBook()
    seq = 0
    while seq < sequence:
        for event in market.step():
            if event.channel == "snapshot":
                book.load(event.bids, event.asks)
                seq += 1
            elif event.channel == "book" and seq < sequence:
                book.apply(event.bids, event.asks)
                seq += 1
    return book


@dataclass
class Seen:
    blocks_at_head: int = 0
    dex_trades: int = 0
    venues: set[str] = field(default_factory=set)  # labels of the verified DEX trades
    cex_trades: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    valid_books: set[tuple[str, str]] = field(default_factory=set)
    okx_books_checked: int = 0
    reorgs: list[dict[str, Any]] = field(default_factory=list)
    first_dex: float | None = None
    first_cex: float | None = None

    def done(self) -> bool:
        return (
            self.blocks_at_head >= 3
            and self.venues >= DEX_VENUES
            and len(self.cex_trades) == len(EXCHANGES) * len(SYMBOLS)
            and len(self.valid_books) == len(EXCHANGES) * len(SYMBOLS)
            and self.okx_books_checked >= 1
            and bool(self.reorgs)
        )


def check_block(data: dict[str, Any], rpc: str, seen: Seen) -> None:
    head = anvil(rpc, "eth_getBlockByNumber", "latest", False)
    if int(head["number"], 16) == data["number"] and head["hash"] == data["hash"]:
        seen.blocks_at_head += 1  # the node's newest block is the devnet's head, hash and all


def check_dex_trade(data: dict[str, Any], rpc: str, seen: Seen, now: float) -> None:
    receipt = anvil(rpc, "eth_getTransactionReceipt", data["transaction_hash"])
    if receipt is None or receipt["blockHash"] != data["block_hash"]:
        return  # reorged away since: the reorg message says so
    (log,) = [lg for lg in receipt["logs"] if int(lg["logIndex"], 16) == data["log_index"]]
    if data["exchange"] in SINGLETONS:  # the pool is an id in the PoolManager's / Vault's event
        assert log["topics"][1] == data["pool_address"]
    else:
        assert log["address"].lower() == data["pool_address"]
    assert int(receipt["blockNumber"], 16) == data["block_number"]
    seen.dex_trades += 1
    seen.venues.add(data["exchange"])
    seen.first_dex = seen.first_dex or now


def check_reorg(data: dict[str, Any], rpc: str, seen: Seen) -> None:
    ancestor = data["common_ancestor"]
    assert anvil(rpc, "eth_getBlockByNumber", hex(ancestor["number"]), False)["hash"] == ancestor["hash"]
    for block in data["orphaned"]:
        assert block["number"] > ancestor["number"]
        canonical = anvil(rpc, "eth_getBlockByNumber", hex(block["number"]), False)
        assert canonical is None or canonical["hash"] != block["hash"], "an orphaned block is canonical"
    seen.reorgs.append(data)


def check_book(data: dict[str, Any], seen: Seen) -> None:
    assert data["valid"] is True
    bids = [Decimal(p) for p, _ in data["bids"]]
    asks = [Decimal(p) for p, _ in data["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    seen.valid_books.add((data["exchange"], data["symbol"]))
    if data["exchange"] == "okx" and data.get("sequence") and seen.okx_books_checked < 3:
        market = okx_book_at(data["symbol"], int(data["sequence"]))
        assert data["bids"] == [list(level) for level in market.sorted_bids()]
        assert data["asks"] == [list(level) for level in market.sorted_asks()]
        seen.okx_books_checked += 1


async def watch(ws_url: str, rpc: str, started: float) -> Seen:
    seen = Seen()
    async with connect(ws_url, max_size=None) as ws:
        for sub in (
            {"op": "subscribe", "channel": "blocks", "id": "blocks"},
            {"op": "subscribe", "channel": "dex_trades", "id": "dex"},
            {"op": "subscribe", "channel": "cex_trades", "exchange": list(EXCHANGES), "id": "cex"},
            {"op": "subscribe", "channel": "cex_book", "exchange": list(EXCHANGES), "id": "book"},
        ):
            await ws.send(json.dumps(sub))
        deadline = time.monotonic() + WATCH_SECONDS
        while not seen.done() and time.monotonic() < deadline:
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            except TimeoutError:
                continue
            now = time.monotonic() - started
            kind, data = msg.get("type"), msg.get("data")
            assert msg.get("event") != "error", msg
            if kind == "block":
                await asyncio.to_thread(check_block, data, rpc, seen)
            elif kind == "dex_trade" and (seen.dex_trades < 5 or data["exchange"] not in seen.venues):
                await asyncio.to_thread(check_dex_trade, data, rpc, seen, now)
            elif kind == "reorg":
                await asyncio.to_thread(check_reorg, data, rpc, seen)
            elif kind == "trade":
                seen.cex_trades.setdefault((data["exchange"], data["symbol"]), []).append(data)
                seen.first_cex = seen.first_cex or now
            elif kind == "book_snapshot":
                check_book(data, seen)
    return seen


def leftover_processes(marker: str, pids: list[int]) -> list[str]:
    """Live processes (not zombies) among ``pids`` or whose command line mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (marker in cmdline or int(entry.name) in pids):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's basetemp: as root, pgserver runs PostgreSQL as an unprivileged user, which cannot
    enter pytest's 0700 ``pytest-of-root`` (as ``tests/conftest.py``'s ``pg_server``)."""
    root = Path(tempfile.mkdtemp(prefix="dexnode-demo-test-"))
    yield root / "data"
    shutil.rmtree(root, ignore_errors=True)


def test_demo_runs_live_until_ctrl_c(cli_env: dict[str, str], data_dir: Path, tmp_path: Path) -> None:
    env = {**cli_env, "DEXNODE_DATA_DIR": str(data_dir)}
    demo = Demo(env, free_port(), tmp_path / "demo.stderr")
    try:
        urls = demo.banner()
        assert urls["dashboard"].endswith("/") and urls["REST"].endswith("/docs") and "GraphQL" in urls
        state = json.loads((data_dir / "demo" / "devnet" / "devnet.json").read_text())
        rpc = urls["devnet"]
        assert state["rpc_http"] == rpc
        seen = asyncio.run(watch(urls["websocket"], rpc, demo.started))
        print(
            f"\nfirst DEX trade on the websocket {seen.first_dex:.1f} s after `dexnode demo` started,"
            f" first CEX trade {seen.first_cex:.1f} s (banner, then the websocket subscribed)"
        )
        exchange_line = next(line for line in demo.stdout if line.startswith("  exchanges"))
        ports = [int(w.rstrip(",").rsplit(":", 1)[1]) for w in exchange_line.split() if w.startswith("ws://")]
        demo.proc.send_signal(signal.SIGINT)
        code = demo.proc.wait(timeout=60)
    finally:
        if demo.proc.poll() is None:  # a failed check: stop it the user's way, so nothing is left behind
            demo.proc.send_signal(signal.SIGINT)
            try:
                demo.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                demo.proc.kill()
                demo.proc.wait()
        demo.stderr.close()
    stderr = (tmp_path / "demo.stderr").read_text()
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert seen.blocks_at_head >= 3
    assert seen.venues == DEX_VENUES  # every venue's trades, v4 and Balancer included, match anvil's logs
    assert sorted(seen.cex_trades) == sorted((e, s) for e in EXCHANGES for s in SYMBOLS)
    for (exchange, symbol), trades in seen.cex_trades.items():
        truth = market_trades(exchange, symbol, max(int(t["trade_id"]) for t in trades))
        for trade in trades:
            expected = truth[str(trade["trade_id"])]
            assert (Decimal(trade["price"]), Decimal(trade["size"]), trade["taker_side"]) == (
                Decimal(expected.price),
                Decimal(expected.size),
                expected.taker_side,
            ), (exchange, symbol, trade)
    assert seen.valid_books == {(e, s) for e in EXCHANGES for s in SYMBOLS}
    assert seen.okx_books_checked >= 1
    assert seen.reorgs, "no reorg reached the websocket"
    # everything stopped: anvil, the embedded PostgreSQL, the exchange servers
    assert "demo stopped" in "".join(demo.stdout)
    assert leftover_processes(str(data_dir), [state["pid"]]) == []
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not (data_dir / "demo" / "postgres" / "postmaster.pid").exists()


def test_live_devnet_mines_at_its_pace_with_singleton_swaps_and_reorgs_until_stopped(tmp_path: Path) -> None:
    """``LiveDevnet`` alone: blocks at the wall-clock time, v4 and Balancer swaps among them, reorgs of the
    configured depths (each replaced exactly its blocks), and ``stop()`` ends the thread."""
    devnet = Devnet.start(tmp_path / "devnet", seed=3, blocks=20)
    try:
        singletons = Singletons(devnet)
        first = devnet.head()[0] + 1
        options = LiveOptions(block_interval=0.25, reorg_every=(1.0, 1.5), reorg_depth=(1, 3), seed=3)
        live = LiveDevnet(devnet, options, singletons=singletons).start()
        deadline = time.monotonic() + 60
        while (live.stats.blocks < 24 or len(live.stats.reorgs) < 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        live.stop()
        assert not live.running
        assert live.stats.errors == 0, live.stats.last_error
        head = anvil(devnet.rpc_http, "eth_getBlockByNumber", "latest", False)
        assert abs(int(head["timestamp"], 16) - time.time()) < 30  # the wall clock, not +12 s a block
        for reorg in live.stats.reorgs:
            assert 1 <= reorg.depth <= 3 and len(reorg.old_hashes) == len(reorg.new_hashes) == reorg.depth
            for number, old in enumerate(reorg.old_hashes, reorg.common_ancestor + 1):
                canonical = anvil(devnet.rpc_http, "eth_getBlockByNumber", hex(number), False)
                assert canonical["hash"] != old  # orphaned for good (a later reorg replaces, never restores)
        logs = anvil(
            devnet.rpc_http,
            "eth_getLogs",
            {
                "fromBlock": hex(first),
                "toBlock": "latest",
                "address": [singletons.v4.manager, singletons.balancer.vault],
            },
        )
        swaps = {lg["address"] for lg in logs if lg["topics"][0] in (V4_SWAP, BALANCER_SWAP)}
        assert swaps == {singletons.v4.manager, singletons.balancer.vault}
        after = devnet.head()
        time.sleep(options.block_interval * 3)
        assert devnet.head() == after, "blocks after stop()"
    finally:
        devnet.stop()
