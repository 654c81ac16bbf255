"""``dexnode demo``: the node's main job on embedded defaults, narrated.

1. the database (embedded PostgreSQL in the data dir unless a URL is given) at the schema's head;
2. a devnet: anvil with the official Uniswap v2, a v2 fork (sushiswap) and v3 contracts, and seeded
   activity;
3. the devnet's confirmed history backfilled in parallel (blocks, transactions, logs, transfers,
   pools, tokens, DEX trades and liquidity), then the live head followed from where the backfill
   ended while new activity and a real reorg happen;
4. a summary read back from Postgres: what is stored, trades per exchange, the reorg.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from decimal import Decimal
from typing import Any

import typer

from cli.follow import start_chain
from core.database import open_database
from core.settings import Settings
from devnet import Devnet
from indexer.backfill.job import backfill
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_for
from indexer.pipeline.pipeline import FOLLOW_STREAM, consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from migrations import runner
from records import kinds
from sinks.postgres import PostgresSink

# what a demo empties to start from an empty chain: every chain kind's table, and where streams stand
_KIND_TABLES = tuple(dict.fromkeys(k.table for k in kinds.CHAIN))
_PROGRESS_TABLES = ("cursors", "backfill_chunks")


def venue_settings(manifest: dict[str, Any]) -> tuple[str, str]:
    """The devnet's factories as the indexer's venue configuration (DEXNODE_UNISWAP_V2/V3_FACTORIES)."""
    v2 = ",".join(f"{e['factory']}={e['label']}" for e in manifest["exchanges"] if e["version"] == 2)
    v3 = ",".join(f"{e['factory']}={e['label']}" for e in manifest["exchanges"] if e["version"] == 3)
    return v2, v3


async def _wait_for(sink: PostgresSink, rpc: RpcClient, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head = await rpc.get_block_by_number("latest", full_txs=False)
        cursor = await sink.cursor(FOLLOW_STREAM)
        if cursor is not None and cursor.hash == head["hash"].lower():
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the follower did not reach the devnet's head")


async def _summary(sink: PostgresSink) -> None:
    counts = {}
    for table in _KIND_TABLES:
        counts[table] = await sink.pool.fetchval(f"SELECT count(*) FROM {table}")
    typer.echo("stored: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    rows = await sink.pool.fetch(
        "SELECT exchange, count(*) AS trades, count(DISTINCT pool_address) AS pools FROM dex_trades"
        " GROUP BY exchange ORDER BY exchange"
    )
    for r in rows:
        typer.echo(f"  {r['exchange']:<12} {r['trades']:>5} trades in {r['pools']} pools")
    top = await sink.pool.fetch(
        "SELECT token_bought_symbol, token_sold_symbol, amount_bought, amount_sold, price, exchange,"
        " block_number FROM dex_trades WHERE amount_bought > 0"
        " ORDER BY block_number DESC, log_index DESC LIMIT 3"
    )
    for r in top:
        price = Decimal(r["price"]).normalize() if r["price"] is not None else None
        typer.echo(
            f"  block {r['block_number']}: sold {r['amount_sold']} {r['token_sold_symbol']} for"
            f" {r['amount_bought']} {r['token_bought_symbol']} on {r['exchange']} (price {price})"
        )
    for r in await sink.pool.fetch("SELECT depth, common_ancestor_number, orphaned_hashes FROM reorgs"):
        typer.echo(
            f"  reorg: {r['depth']} block(s) above {r['common_ancestor_number']} replaced, none left behind"
        )


async def run_demo(settings: Settings, *, blocks: int = 300, live_blocks: int = 12) -> None:
    async with open_database(settings) as db:
        where = f"embedded PostgreSQL in {settings.data_dir / 'postgres'}" if db.embedded else db.display
        typer.echo(f"[1/4] database: {where}")
        await runner.upgrade(db.sqlalchemy_url)
        st = await runner.status(db.sqlalchemy_url)
        typer.echo(f"      schema at revision {st.current}: {len(st.tables)} tables")
        devnet_dir = settings.data_dir / "demo-devnet"
        shutil.rmtree(devnet_dir, ignore_errors=True)
        typer.echo(f"[2/4] devnet: anvil + Uniswap v2, sushiswap, v3; {blocks} blocks of seeded activity ...")
        devnet = await asyncio.to_thread(Devnet.start, devnet_dir, seed=1, blocks=blocks)
        try:
            m = devnet.manifest
            counts = m["counts"]
            swaps = sum(counts["swaps"].values())
            typer.echo(
                f"      {devnet.rpc_http}: head {m['head']['number']},"
                f" {counts['transactions']} txs, {swaps} swaps"
            )
            sink = await PostgresSink.connect(db.dsn)
            try:
                async with sink.pool.acquire() as conn:  # a demo starts from an empty chain each time
                    await conn.execute("TRUNCATE " + ", ".join((*_KIND_TABLES, *_PROGRESS_TABLES)))
                await _index(settings, devnet, sink, live_blocks)
                typer.echo("[4/4] what Postgres holds now:")
                await _summary(sink)
            finally:
                await sink.close()
        finally:
            devnet.stop()
    typer.echo("done. Explore it: `dexnode db status`, or psql on the same database.")


async def _index(settings: Settings, devnet: Devnet, sink: PostgresSink, live_blocks: int) -> None:
    v2, v3 = venue_settings(devnet.manifest)
    node = settings.with_overrides(
        rpc_http=devnet.rpc_http, rpc_ws=devnet.rpc_ws, uniswap_v2_factories=v2, uniswap_v3_factories=v3
    )
    started = time.monotonic()
    report = await backfill(node, from_block=0, to="confirmed", progress_tty=False)
    took = time.monotonic() - started
    typer.echo(
        f"[3/4] backfilled the confirmed history (head - {node.confirmations}): {report.blocks} blocks,"
        f" {report.dex_trades} DEX trades in {took:.1f}s; following the head from where it ended:"
    )
    async with RpcClient(devnet.rpc_http) as rpc:
        enrich = DexEnricher(rpc, sink.pool, registry_for(node))
        chain = await start_chain(sink, node.max_reorg_depth + 1)
        follower = Follower(
            rpc, HeadStream(devnet.rpc_ws, rpc), start=chain, max_reorg_depth=node.max_reorg_depth
        )
        task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
        try:
            await _wait_for(sink, rpc)
            typer.echo(f"      caught up with the head, block {await rpc.block_number()}")
            await asyncio.to_thread(devnet.activity, live_blocks // 2, 10.0)
            await _wait_for(sink, rpc)
            result = await asyncio.to_thread(devnet.reorg, 3)
            typer.echo(
                f"      reorg: blocks {result.common_ancestor + 1}..{result.common_ancestor + 3} replaced"
            )
            await asyncio.to_thread(devnet.activity, live_blocks - live_blocks // 2, 10.0)
            await _wait_for(sink, rpc)
            typer.echo(f"      followed to block {await rpc.block_number()}")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
