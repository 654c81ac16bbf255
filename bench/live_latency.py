"""Live latency: from the head notification to the block's commit in Postgres.

Starts a devnet (anvil with real Uniswap contracts), follows it into Postgres (DATABASE_URL's server
or an embedded one), and produces ~50-transaction blocks. For each block it records:

- total: head notification seen → Postgres commit done;
- node: time spent waiting on the node for that block (header + receipts);
- processing + commit: total - node (extraction, DEX decoding, batching, COPY, insert, commit,
  queueing).

Prints p50/p99 of each and the share of time spent waiting on the node, against the target
(processing + commit p99 under 25 ms on this machine).

    .venv/bin/python bench/live_latency.py [--blocks 150] [--rate 50] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.demo import venue_settings
from core.database import asyncpg_dsn, embedded_server, ensure_database
from devnet import Devnet
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import Timing, consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from migrations import runner
from sinks.postgres import PostgresSink

TARGET_P99_MS = 25.0
REPO = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def drive(directory: str, blocks: int, rate: float, interval: float) -> None:
    """Mine a block, then stay quiet for ``interval`` s while dexnode processes it, as a remote node
    would be: sending the next block's transactions right away would put this process and anvil on
    the same two cores as the code being measured."""
    devnet = Devnet.attach(Path(directory))
    for _ in range(blocks):
        devnet.activity(1, rate)
        time.sleep(interval)


async def run(dsn: str, devnet: Devnet, data_dir: Path, blocks: int, rate: float, interval: float) -> Timing:
    await runner.upgrade("postgresql+asyncpg://" + dsn.split("://", 1)[1])
    sink = await PostgresSink.connect(dsn)
    timing = Timing()
    try:
        async with RpcClient(devnet.rpc_http) as rpc:
            head = await rpc.block_number()
            heads = HeadStream(devnet.rpc_ws, rpc, silence_timeout=30)
            follower = Follower(rpc, heads, start=[], from_block=head + 1)
            v2, v3 = venue_settings(devnet.manifest)  # the node's job includes DEX decoding
            enrich = DexEnricher(rpc, sink.pool, registry_from(v2, v3))
            task = asyncio.create_task(consume(follower, sink, quiet=True, timing=timing, enrich=enrich))
            await asyncio.sleep(0.5)
            # the load comes from another process, as a node's would (it must not share our GIL), with a
            # quiet `interval` after each block as on a real chain, so blocks do not queue behind each other
            ctx = multiprocessing.get_context("spawn")
            driver = ctx.Process(target=drive, args=(str(data_dir / "devnet"), blocks, rate, interval))
            driver.start()
            await asyncio.to_thread(driver.join)
            if driver.exitcode != 0:
                raise SystemExit(f"the devnet driver failed (exit {driver.exitcode})")
            target = await rpc.block_number()
            deadline = time.monotonic() + 60
            while len(timing.total_ms) < target - head and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await sink.close()
    return timing


def report(timing: Timing) -> None:
    # the first block pays connection warm-up; it is not the steady state
    node, proc, total = timing.node_ms[1:], timing.process_commit_ms[1:], timing.total_ms[1:]
    if not total:
        raise SystemExit("no blocks were followed")
    print(f"blocks measured: {len(total)}")
    parts = (
        ("total", total),
        ("node", node),
        ("processing + commit", proc),
        ("  of which extract", timing.extract_ms[1:]),
        ("  of which DEX", timing.enrich_ms[1:]),
        ("  of which write", timing.write_ms[1:]),
    )
    for name, values in parts:
        print(
            f"{name:>20}: p50 {pct(values, 50):7.2f} ms   p99 {pct(values, 99):7.2f} ms"
            f"   mean {statistics.fmean(values):7.2f} ms"
        )
    share = sum(node) / sum(total)
    print(f"share of time waiting on the node: {share:.0%}")
    p99 = pct(proc, 99)
    verdict = "meets" if p99 < TARGET_P99_MS else "MISSES"
    ratio = p99 / TARGET_P99_MS
    print(f"processing + commit p99 {p99:.2f} ms vs target {TARGET_P99_MS} ms: {verdict} (ratio {ratio:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=150)
    parser.add_argument("--rate", type=float, default=50.0, help="transactions per block")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between blocks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dexnode-bench-") as tmp:
        data_dir = Path(tmp)
        devnet = Devnet.start(data_dir / "devnet", seed=7, blocks=5, cache_dir=data_dir)
        try:
            url = os.environ.get("DATABASE_URL")
            if url:
                dsn = asyncio.run(ensure_database(asyncpg_dsn(url), "dexnode_bench_latency"))
                timing = asyncio.run(run(dsn, devnet, data_dir, args.blocks, args.rate, args.interval))
            else:
                with embedded_server(Path(tmp) / "pg") as server:
                    dsn = asyncio.run(ensure_database(server, "dexnode"))
                    timing = asyncio.run(run(dsn, devnet, data_dir, args.blocks, args.rate, args.interval))
        finally:
            devnet.stop()
    report(timing)


if __name__ == "__main__":
    main()
