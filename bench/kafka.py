"""What Kafka costs: records/s written with and without the Kafka sinks, on the same batches.

Chain: the seeded devnet ``bench/backfill.py`` uses (2,000 blocks, ~20,000 transactions, Uniswap v2,
sushiswap and v3 activity), loaded from the anvil state cache in ``.dexnode-test-cache/`` (generated
once, about two minutes). Its blocks are fetched, extracted and DEX-decoded once, in memory, into the
batches a backfill writes (``--batch-blocks`` per batch, stream ``backfill``); the node and the
decoding are then out of the picture, so the ratio is the worst case: in a real backfill, fetching
and decoding take time Kafka does not add to.

- **postgres**: ``PostgresSink.write`` for every batch, in order, into emptied tables;
- **postgres + kafka**: the same through ``[KafkaHeadSink, PostgresSink, ConfirmedPublisher]``
  (idempotent producer, acks=all, lz4 as in ``PRODUCER_DEFAULTS``, every delivery waited for): each
  record on ``head.*`` and on ``confirmed.*``, into fresh topics on librdkafka's mock cluster (its own
  process);
- **postgres + kafka, history on confirmed only**: ``with_kafka(history_on_head=False)``, a backfill's
  records on ``confirmed.*`` only (one message per record);
- **live**: the first ``--live-blocks`` blocks one per batch (stream ``follow``, the in-flight journal
  on), the per-block write time with and without Kafka.

Rounds are interleaved (``--rounds``), every other one in reverse order; the best of each mode is kept,
and each round's Kafka rate is also divided by the same round's Postgres-only rate (the median of those
is the steadier figure on a shared machine). The producer's start-up (connection, idempotent producer
id), once per process, is done before the clock starts, as the topics' creation is. Target: Kafka costs
under 20% of the backfill write throughput (ratio ≥ 0.80). Also printed, as a floor: the CPU time of
encoding every record once (``encode_batch``: key, JSON value, headers), with nothing produced, against
the Postgres-only write time: the target allows Kafka a quarter of that time for everything it adds.
Postgres: ``DATABASE_URL``'s server if set, else an embedded pgserver in a temp dir. Two cores here:
the broker, Postgres and this process share them. Each round prints the CPU seconds of the write:
dexnode's process by thread (the event loop, the producer's thread, the waits serving delivery reports,
librdkafka's own threads), the broker's process (the mock cluster) and Postgres's backends (embedded
server only); ``--modes`` picks the modes, ``--live-blocks 0`` skips the live rounds. Modes 3 and 4
are the two Kafka modes again through confluent-kafka's ``Producer`` (a Python call and a delivery
report callback per message) instead of ``sinks._rdkafka`` (librdkafka called from C), in the same run.

    .venv/bin/python bench/kafka.py [--rounds 3] [--batch-blocks 100] [--live-blocks 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
from backfill import process_cpu  # bench/backfill.py: CPU seconds of a process (and its reaped children)

from core.database import asyncpg_dsn, embedded_server, ensure_database
from devnet import Devnet
from devnet.cache import DevnetCache
from indexer.chain.extract import extract_block
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import batch_of, fewer_collections
from migrations import runner
from records import DexLiquidity, DexTrade, Log, Pool, Token, TokenTransfer, Transaction
from records.batch import Batch
from sinks import kafka_producer
from sinks.base import Sink
from sinks.kafka import KafkaHeadSink, KafkaOptions, KafkaPostgresSink, kafka_composite
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.kafka_keys import encode_batch, out_message
from sinks.postgres import BlockRef, PostgresSink
from sinks.schema import metadata

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.80
CONFIRMATIONS = 12  # DEXNODE_CONFIRMATIONS's default
POSTGRES = "postgres"
BOTH = "postgres + kafka"  # each record on head.* and confirmed.*
CONFIRMED_ONLY = "postgres + kafka, history on confirmed only"  # with_kafka(history_on_head=False)
# the same two through confluent-kafka's Producer (sinks.kafka_producer.NATIVE off), against sinks/_rdkafka.c
BOTH_CONFLUENT = "postgres + kafka [confluent-kafka path]"
CONFIRMED_ONLY_CONFLUENT = "confirmed only [confluent-kafka path]"
MODES = (POSTGRES, BOTH, CONFIRMED_ONLY, BOTH_CONFLUENT, CONFIRMED_ONLY_CONFLUENT)
CONFLUENT = (BOTH_CONFLUENT, CONFIRMED_ONLY_CONFLUENT)


def venues(manifest: dict[str, object]) -> tuple[str, str]:
    exchanges = manifest["exchanges"]
    assert isinstance(exchanges, list)
    v2 = ",".join(f"{e['factory']}={e['label']}" for e in exchanges if e["version"] == 2)
    v3 = ",".join(f"{e['factory']}={e['label']}" for e in exchanges if e["version"] == 3)
    return v2, v3


async def load_batches(devnet: Devnet, batch_blocks: int) -> list[Batch]:
    """Every block of the devnet as backfill batches, with DEX records (fetched and decoded once)."""
    v2, v3 = venues(devnet.manifest)
    batches = []
    async with RpcClient(devnet.rpc_http) as rpc:
        enrich = DexEnricher(rpc, None, registry_from(v2, v3))
        head = await rpc.block_number()
        for first in range(0, head + 1, batch_blocks):
            numbers = list(range(first, min(head, first + batch_blocks - 1) + 1))
            blocks = await rpc.get_blocks(numbers)
            receipts = await rpc.get_receipts_for_blocks(blocks)
            extracted = [extract_block(b, r) for b, r in zip(blocks, receipts, strict=True)]
            batches.append(await enrich(extracted, batch_of("backfill", extracted)))
    return batches


def encode_seconds(batches: list[Batch], repeat: int = 3) -> float:
    """CPU seconds to encode every record of ``batches`` once, as the head sink does (best of ``repeat``)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        for batch in batches:
            encode_batch(batch)
        times.append(time.process_time() - t0)
    return min(times)


def records(batch: Batch) -> int:
    return batch.count()


def thread_cpu() -> dict[int, tuple[str, float]]:
    """This process's live threads: native id -> (role, CPU seconds so far). Roles: the event loop,
    the producer's thread (big batches encoded and produced), the waits (``asyncio.to_thread``: the
    flushes that serve delivery reports), librdkafka's own threads (``rdk:*``: batching, compression,
    the broker connections)."""
    python = {t.native_id: t.name for t in threading.enumerate()}
    main = threading.main_thread().native_id
    out: dict[int, tuple[str, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
        fields = rest.split()
        tid = int(task.name)
        name = python.get(tid, "")
        if tid == main:
            role = "event loop"
        elif name.startswith("dexnode-kafka-produce"):
            role = "producer thread"
        elif name.startswith("asyncio"):
            role = "waits"
        elif comm.startswith("rdk:"):
            role = "librdkafka"
        else:
            role = "other"
        out[tid] = (role, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def cpu_by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    roles: dict[str, float] = {}
    for tid, (role, seconds) in after.items():
        roles[role] = roles.get(role, 0.0) + seconds - before.get(tid, (role, 0.0))[1]
    return roles


@dataclass
class Written:
    seconds: list[float]  # per batch (workers == 1) or the whole run
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds: this process by role, broker, postgres


def one_block_batches(batches: list[Batch], count: int) -> list[Batch]:
    """The first ``count`` blocks as live batches: one block each with what belongs to it."""
    out: list[Batch] = []
    for batch in batches:
        for i, b in enumerate(batch.blocks):
            if len(out) == count:
                return out
            # a batch's tokens and pools not created in one of its blocks ride with its first block
            pools = [
                p
                for p in batch.of(Pool)
                if p.created_block_hash == b.hash or (i == 0 and not p.created_block_hash)
            ]
            out.append(
                Batch(
                    "follow",
                    [b],
                    {
                        **{
                            cls: [r for r in batch.of(cls) if r.block_hash == b.hash]
                            for cls in (Transaction, Log, TokenTransfer, DexTrade, DexLiquidity)
                        },
                        Pool: pools,
                        Token: batch.of(Token) if i == 0 else (),
                    },
                )
            )
    return out


async def empty(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in metadata.tables))
    finally:
        await conn.close()


async def write_all(
    dsn: str,
    batches: list[Batch],
    broker: KafkaDev | None,
    *,
    journal: bool,
    workers: int = 1,
    history_on_head: bool = True,
    postmaster: int | None = None,
) -> Written:
    """Write ``batches`` into emptied tables (and fresh topics), ``workers`` at a time in order as the
    backfill does; seconds per batch, the last one including the final flush, and the CPU seconds
    of the writes: this process's threads by role, the broker's process, Postgres's backends."""
    await empty(dsn)
    postgres = await PostgresSink.connect(dsn, max_size=workers + 2)
    writer: Sink = postgres
    finalizing: KafkaPostgresSink | None = None
    if broker is not None:
        options = KafkaOptions(broker.bootstrap, f"bench{uuid.uuid4().hex[:6]}.", CONFIRMATIONS)
        composite = kafka_composite(options, postgres, journal=journal, history_on_head=history_on_head)
        head = composite.sinks[0]
        assert isinstance(head, KafkaHeadSink)
        await head.start(batches[0].stream)  # once per process (topics, journal): not the write path
        # nor is the producer's start-up (its connection, the idempotent producer id, metadata), also once
        # per process: 0.1-0.5 s on the mock cluster, which the first batches' COMMITs used to wait for
        # in every round. One message to a topic of its own, outside the records' topics.
        await head.producer.send([out_message(f"{options.topic_prefix}_bench.warmup", b"", b"", [], -1)])
        writer = composite
        finalizing = composite if journal else None  # a follow stream: the core's Finalize events
    times: list[float] = []
    queue = list(reversed(batches))

    async def worker() -> None:
        while queue:
            batch = queue.pop()
            t0 = time.perf_counter()
            await writer.write(batch)
            tip = batch.tip
            if finalizing is not None and tip is not None and tip.number >= CONFIRMATIONS:
                # what the follower's core emits after each block: confirmed.* from the batches in memory
                await finalizing.finalize(BlockRef(tip.number - CONFIRMATIONS, tip.hash, ""))
            times.append(time.perf_counter() - t0)

    threads0, process0 = thread_cpu(), time.process_time()
    broker0, pg0 = process_cpu(broker.pid if broker else None), process_cpu(postmaster, children=True)
    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
        cpu = cpu_by_role(threads0, thread_cpu())  # before close: the producer's threads end there
    finally:
        await writer.close()
    wall = time.perf_counter() - started
    cpu["dexnode"] = time.process_time() - process0
    cpu["broker"] = process_cpu(broker.pid if broker else None) - broker0
    if postmaster is not None:
        await asyncio.sleep(0.3)  # the postmaster reaps the backends, adding their CPU to its children's
        cpu["postgres"] = process_cpu(postmaster, children=True) - pg0
    if workers > 1:  # concurrent: the wall time is what counts
        return Written([wall], cpu)
    times[-1] += wall - sum(times)  # the final flush belongs to the run
    return Written(times, cpu)


@contextlib.contextmanager
def postgres_server(tmp: Path) -> Iterator[tuple[str, int | None]]:
    """(server URI, the postmaster's pid when embedded: its backends' CPU is counted)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield asyncpg_dsn(url), None
        return
    with embedded_server(tmp / "pg") as uri:
        pid_file = tmp / "pg" / "postgres" / "postmaster.pid"
        yield uri, int(pid_file.read_text().split()[0]) if pid_file.exists() else None


ROLES = ("event loop", "producer thread", "waits", "librdkafka", "other")


def cpu_text(cpu: dict[str, float]) -> str:
    """dexnode's process (by thread role, librdkafka's threads included), the broker, Postgres."""
    own = " + ".join(f"{role} {cpu[role]:.2f}" for role in ROLES if cpu.get(role, 0.0) >= 0.005)
    text = f"dexnode {cpu['dexnode']:.2f} ({own}), broker {cpu['broker']:.2f}"
    return text + (f", postgres {cpu['postgres']:.2f}" if "postgres" in cpu else "")


async def rounds(
    args: argparse.Namespace,
    dsn: str,
    postmaster: int | None,
    batches: list[Batch],
    live: list[Batch],
    total: int,
    best: dict[str, float],
    live_ms: dict[str, list[float]],
    cpus: dict[str, list[dict[str, float]]],
    per_round: list[dict[str, float]],
) -> None:
    for round_ in range(args.rounds):
        per_round.append({})
        # every other round in reverse order, so no mode always runs first (after the previous round's
        # last one) or last
        for name in args.modes if round_ % 2 == 0 else reversed(args.modes):
            confirmed_only = name in (CONFIRMED_ONLY, CONFIRMED_ONLY_CONFLUENT)
            native = kafka_producer.NATIVE
            kafka_producer.NATIVE = native and name not in CONFLUENT
            try:
                with start_kafka_dev() if name != POSTGRES else contextlib.nullcontext() as broker:
                    written = await write_all(
                        dsn, batches, broker, journal=False, workers=args.workers,
                        history_on_head=not confirmed_only, postmaster=postmaster,
                    )  # fmt: skip
                    per_block = (
                        []
                        if confirmed_only or not args.live_blocks
                        else (await write_all(dsn, live, broker, journal=True)).seconds
                    )
            finally:
                kafka_producer.NATIVE = native
            seconds = sum(written.seconds)
            rate = total / seconds
            best[name] = max(best.get(name, 0.0), rate)
            per_round[-1][name] = rate
            cpus.setdefault(name, []).append(written.cpu)
            note = ""
            if per_block:
                live_ms.setdefault(name, []).extend(1000 * s for s in per_block[5:])  # past the warm-up
                note = f"   live p50 {statistics.median(per_block[5:]) * 1000:.2f} ms/block"
            print(
                f"  round {round_ + 1} {name:>34}: {rate:9,.0f} records/s ({seconds:.2f}s){note}\n"
                f"      CPU s: {cpu_text(written.cpu)}; load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )


async def measure(args: argparse.Namespace, server: str, postmaster: int | None, devnet: Devnet) -> None:
    dsn = await ensure_database(server, f"dexnode_bench_kafka_{os.getpid()}")
    await runner.upgrade("postgresql+asyncpg://" + dsn.split("://", 1)[1])
    t0 = time.perf_counter()
    batches = await load_batches(devnet, args.batch_blocks)
    total = sum(records(b) for b in batches)
    blocks = sum(len(b.blocks) for b in batches)
    live = one_block_batches(batches, args.live_blocks)
    print(f"batches: {len(batches)} of {args.batch_blocks} blocks, {blocks:,} blocks, {total:,} records"
          f" (fetched and decoded in {time.perf_counter() - t0:.1f}s); {args.workers} written at once",
          flush=True)  # fmt: skip
    best: dict[str, float] = {}
    live_ms: dict[str, list[float]] = {}
    cpus: dict[str, list[dict[str, float]]] = {}
    per_round: list[dict[str, float]] = []
    with fewer_collections():  # as the backfill runs (its garbage collector settings), both modes alike
        await rounds(args, dsn, postmaster, batches, live, total, best, live_ms, cpus, per_round)
        encoding = encode_seconds(batches)
    print()
    for name in args.modes:
        ratio = best[name] / best.get(POSTGRES, best[name])
        verdict = "" if name == POSTGRES else f"  ratio {ratio:.2f} (Kafka costs {1 - ratio:.0%})"
        if name in (BOTH, BOTH_CONFLUENT):
            verdict += f" vs target >= {TARGET_RATIO:.2f}: {'meets' if ratio >= TARGET_RATIO else 'MISSES'}"
        print(f"{name:>34}: {best[name]:9,.0f} records/s{verdict}")
        if name != POSTGRES and POSTGRES in best:
            # each round's rate against its own round's Postgres-only rate: the best of each mode alone
            # can pair a lucky round with an unlucky one
            ratios = [r[name] / r[POSTGRES] for r in per_round]
            print(f"{'':>34}  per round {', '.join(f'{x:.2f}' for x in ratios)}:"
                  f" median {statistics.median(ratios):.2f}")  # fmt: skip
        median = {k: statistics.median(c.get(k, 0.0) for c in cpus[name]) for k in cpus[name][0]}
        print(f"{'':>34}  CPU s (median of rounds): {cpu_text(median)}")
    pg_seconds = total / best.get(POSTGRES, min(best.values()))
    print(
        f"encoding alone (every record once, CPU, best of 3): {encoding:.2f}s ="
        f" {encoding / pg_seconds:.0%} of the Postgres-only write's {pg_seconds:.2f}s;"
        f" a ratio of {TARGET_RATIO:.2f} allows Kafka {1 / TARGET_RATIO - 1:.0%} of it in all"
    )
    for name, values in live_ms.items():
        values.sort()
        print(f"live, one block per batch, {name}: p50 {statistics.median(values):.2f} ms"
              f"  p90 {values[int(0.9 * (len(values) - 1))]:.2f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=2000, help="devnet blocks (bench/backfill.py's chain)")
    parser.add_argument("--rate", type=float, default=13.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-blocks", type=int, default=100)
    parser.add_argument(
        "--workers", type=int, default=4, help="batches written at once, as the backfill does"
    )
    parser.add_argument("--live-blocks", type=int, default=200, help="0: no live rounds")
    parser.add_argument(
        "--modes",
        type=lambda text: [MODES[int(i)] for i in text.split(",")],
        default=list(MODES[:3]),
        help="which modes, by index: 0 Postgres, 1 Kafka on both flavours, 2 confirmed only, 3 and 4: 1 and 2"
        " through confluent-kafka's Producer instead of sinks._rdkafka (default 0,1,2)",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dexnode-bench-kafka-"))
    cache = DevnetCache(REPO / ".dexnode-test-cache", tmp, args.seed, args.blocks, args.rate, True)
    print(f"devnet: seed {args.seed}, {args.blocks} blocks at rate {args.rate} (generated once, then cached)",
          flush=True)  # fmt: skip
    devnet = cache.load(headroom=0)
    try:
        with postgres_server(tmp) as (server, postmaster):
            asyncio.run(measure(args, server, postmaster, devnet))
    finally:
        devnet.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
