"""Reorg batches written twice, and reorg batches cut short by a crash, on real Postgres and the mock broker.

- A reorg batch written again after Postgres committed it (its COMMIT acknowledgement lost, or the
  ``confirmed.*`` publisher failing after the commit) must leave Postgres and ``head.*`` as one write
  does: no revert of the new branch, one ``reorgs`` row, one reorg record.
- A crash after a reorg batch's reverts reached Kafka but before Postgres committed it, then a
  restart: whether the chain flipped back to the old branch or stayed on the new one, a ``head.*``
  consumer applying reverts ends with exactly the canonical chain.

Expectations come from the blocks the test builds; the consumer rule is applied here, as docs/kafka.md
states it, not through dexnode's consumer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.database import DatabaseInfo
from indexer.pipeline.pipeline import write_with_retry
from records import (
    Block,
    DexLiquidity,
    DexTrade,
    Log,
    Pool,
    Record,
    Reorg,
    Revert,
    Token,
    TokenTransfer,
    Transaction,
    from_dict,
)
from records.batch import Batch
from sinks.kafka import KafkaOptions, kafka_composite
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.postgres import PostgresSink
from sinks.postgres_read import StoredChain
from tests.finalizing import FinalizingWriter
from tests.integration.test_kafka_consumers import OLD_POOL, TOKENS, block, chain
from tests.kafka_check import read_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

HEAD_KINDS = ("blocks", "transactions", "logs", "token_transfers", "tokens", "pools", "dex_trades",
              "dex_liquidity", "reorgs")  # fmt: skip
# the records on each topic, as docs/kafka.md names them (reorgs: not a batch's records)
RECORD_OF: dict[str, type[Record]] = {
    "blocks": Block, "transactions": Transaction, "logs": Log, "token_transfers": TokenTransfer,
    "tokens": Token, "pools": Pool, "dex_trades": DexTrade, "dex_liquidity": DexLiquidity,
}  # fmt: skip


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


class Killed(BaseException):
    """The process dies here: nothing after it runs, nothing catches it."""


class FaultyPostgres(PostgresSink):
    """The real Postgres sink, with one fault on the first reorg batch: ``lost_ack`` — the batch
    commits, then the connection drops before the acknowledgement arrives; ``killed`` — the node
    dies after every Kafka delivery of the batch was acknowledged, before the COMMIT (``sigkill``:
    the same, by SIGKILL of the process)."""

    def __init__(self, pool: asyncpg.Pool, fault: str) -> None:
        super().__init__(pool)
        self.fault: str | None = fault

    async def write(
        self, batch: Batch, *, before_commit: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        fault = self.fault if batch.reorg is not None else None
        if fault is not None:
            self.fault = None
        if fault in ("killed", "sigkill"):
            assert before_commit is not None

            async def delivered_then_killed() -> None:
                await before_commit()
                if fault == "sigkill":  # the real thing: the process dies, mid-transaction
                    os.kill(os.getpid(), signal.SIGKILL)
                raise Killed

            await super().write(batch, before_commit=delivered_then_killed)
            return
        await super().write(batch, before_commit=before_commit)
        if fault == "lost_ack":
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")


def merged(batches: list[Batch], reorg: Reorg | None = None) -> Batch:
    return Batch(
        "follow",
        [b for x in batches for b in x.blocks],
        {cls: [r for x in batches for r in x.of(cls)] for cls in (DexTrade, DexLiquidity, Pool, Token)},
        reorg=reorg,
    )


def records_of(batches: list[Batch], kind: str) -> set[Any]:
    return {r for b in batches for r in b.of(RECORD_OF[kind])}


def consumer_view(messages: list[Any]) -> tuple[set[Record], list[Revert]]:
    """docs/kafka.md's consumer rule: the latest record per key; a revert drops the key if the record
    held has the revert's block hash. Returns what is held, and every revert seen."""
    held: dict[str, tuple[str, dict[str, Any]]] = {}
    reverts: list[Revert] = []
    for m in messages:
        if m.doc["type"] == "revert":
            revert = from_dict(m.doc)
            assert isinstance(revert, Revert) and revert.key == m.key
            reverts.append(revert)
            if m.key in held and held[m.key][0] == revert.block_hash:
                del held[m.key]
        else:
            held[m.key] = (m.block_hash, m.doc)
    return {from_dict(doc) for _, doc in held.values()}, reverts


def reverts_of(batches: list[Batch]) -> Counter[Revert]:
    """The reverts docs/kafka.md promises for orphaned blocks, keys as its key table states them."""
    out: Counter[Revert] = Counter()
    for b in batches:
        (blk,) = b.blocks
        out[Revert(blk.number, blk.hash, Block.TYPE, str(blk.number))] += 1
        for t in b.of(DexTrade):
            out[Revert(blk.number, blk.hash, DexTrade.TYPE, f"{blk.hash}:{t.log_index}")] += 1
        for lq in b.of(DexLiquidity):
            out[Revert(blk.number, blk.hash, DexLiquidity.TYPE, f"{blk.hash}:{lq.log_index}")] += 1
        for p in b.of(Pool):
            out[Revert(blk.number, blk.hash, "pool", p.address)] += 1
    return out


async def assert_postgres_holds(dsn: str, canonical: list[Batch], reorgs: list[Reorg]) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        tip = canonical[-1].blocks[-1].number
        stored = await StoredChain(pool).batch_between(0, tip)
        for kind in HEAD_KINDS[:-1]:
            got = stored.of(RECORD_OF[kind])
            assert Counter(got) == Counter(records_of(canonical, kind)), f"Postgres {kind}"
        rows = await pool.fetch(
            "SELECT common_ancestor_number, common_ancestor_hash, depth, orphaned_hashes, new_hashes"
            " FROM reorgs ORDER BY id"
        )
        assert [tuple(r.values()) for r in rows] == [
            (r.common_ancestor_number, r.common_ancestor_hash, r.depth, list(r.orphaned_hashes),
             list(r.new_hashes)) for r in reorgs
        ]  # fmt: skip
        cursor = await pool.fetchrow("SELECT block_number, block_hash FROM cursors WHERE stream = 'follow'")
        last = canonical[-1].blocks[-1]
        assert (cursor["block_number"], cursor["block_hash"]) == (last.number, last.hash)
    finally:
        await pool.close()


def assert_head_topics_hold(
    kafka: KafkaDev, prefix: str, canonical: list[Batch], reorgs: list[Reorg]
) -> list[Revert]:
    """Every head.* topic, reverts applied, holds exactly the canonical records and the reorgs that
    made it; returns the reverts seen."""
    reverts: list[Revert] = []
    for kind in HEAD_KINDS:
        held, seen = consumer_view(read_all(kafka.bootstrap, f"{prefix}head.{kind}"))
        want = set(reorgs) if kind == "reorgs" else records_of(canonical, kind)
        assert held == want, f"head.{kind} after reverts"
        reverts += seen
    return reverts


def scripted() -> tuple[Batch, list[Batch], list[Batch], Reorg]:
    """Genesis, the main branch 1..7, a side branch 4'..8' forking above block 3; the reorg 4..6 → 4'..5'."""
    genesis = block(0, "main", "0x" + "0" * 64)
    main = chain(1, 7, "main", genesis.hash, salt=0)
    side = chain(4, 8, "side", main[2].blocks[0].hash, salt=7)
    orphaned = tuple(b.blocks[0].hash for b in main[3:6])
    new = tuple(b.blocks[0].hash for b in side[:2])
    return (
        Batch("follow", [genesis], {Pool: [OLD_POOL], Token: TOKENS}),
        main,
        side,
        Reorg(3, main[2].blocks[0].hash, 3, orphaned, new, 1_700_000_000_000_000),
    )


async def test_a_reorg_batch_written_again_after_a_lost_commit_ack_is_applied_once(
    clean_db: DatabaseInfo, kafka: KafkaDev
) -> None:
    prefix = f"i{uuid.uuid4().hex[:8]}."
    genesis, main, side, reorg = scripted()
    postgres = FaultyPostgres((await PostgresSink.connect(clean_db.dsn)).pool, "lost_ack")
    writer = kafka_composite(KafkaOptions(kafka.bootstrap, prefix, 3), postgres)
    try:
        for b in [genesis, *main[:6]]:
            await write_with_retry(writer, b)
        await write_with_retry(writer, merged(side[:2], reorg))  # committed, then written again
        assert postgres.fault is None, "the fault did not fire"
        for b in side[2:]:
            await write_with_retry(writer, b)
    finally:
        await writer.close()
    canonical = [genesis, *main[:3], *side]
    await assert_postgres_holds(clean_db.dsn, canonical, [reorg])
    reverts = assert_head_topics_hold(kafka, prefix, canonical, [reorg])
    assert Counter(reverts) == reverts_of(main[3:6]), "exactly the old branch reverted, once"
    reorg_messages = [m for m in read_all(kafka.bootstrap, f"{prefix}head.reorgs")]
    assert [from_dict(m.doc) for m in reorg_messages] == [reorg]


async def test_a_reorg_to_a_shorter_branch_written_twice_is_applied_once(
    clean_db: DatabaseInfo, kafka: KafkaDev
) -> None:
    """The new branch is shorter and not fetched yet: the batch carries the reorg alone, and moves
    the cursor back to the common ancestor. Written twice, as a retry after its commit does."""
    prefix = f"s{uuid.uuid4().hex[:8]}."
    genesis, main, _, _ = scripted()
    reorg = Reorg(3, main[2].blocks[0].hash, 3, tuple(b.blocks[0].hash for b in main[3:6]), (), 1)
    writer = kafka_composite(
        KafkaOptions(kafka.bootstrap, prefix, 3), await PostgresSink.connect(clean_db.dsn)
    )
    try:
        for b in [genesis, *main[:6]]:
            await writer.write(b)
        await writer.write(Batch("follow", [], reorg=reorg))
        await writer.write(Batch("follow", [], reorg=reorg))
    finally:
        await writer.close()
    canonical = [genesis, *main[:3]]
    await assert_postgres_holds(clean_db.dsn, canonical, [reorg])
    reverts = assert_head_topics_hold(kafka, prefix, canonical, [reorg])
    assert Counter(reverts) == reverts_of(main[3:6])
    assert [from_dict(m.doc) for m in read_all(kafka.bootstrap, f"{prefix}head.reorgs")] == [reorg]


async def test_a_confirmed_publisher_failure_after_the_commit_does_not_apply_the_reorg_twice(
    clean_db: DatabaseInfo, kafka: KafkaDev
) -> None:
    """The real path: the publisher, after the reorg batch committed, fails on Postgres (a
    connection failure, raised by the database on its cursor update); the pipeline writes the batch
    again."""
    prefix = f"c{uuid.uuid4().hex[:8]}."
    genesis = block(0, "main", "0x" + "0" * 64)
    main = chain(1, 6, "main", genesis.hash, salt=0)
    side = chain(6, 9, "side", main[4].blocks[0].hash, salt=7)  # replaces 6 with 6', 7' (above 5)
    reorg = Reorg(5, main[4].blocks[0].hash, 1, (main[5].blocks[0].hash,),
                  tuple(b.blocks[0].hash for b in side[:2]), 1_700_000_000_000_000)  # fmt: skip
    first = Batch("follow", [genesis], {Pool: [OLD_POOL], Token: TOKENS})
    writer = FinalizingWriter(  # the publisher's failure is in finalize: the batch is written again
        kafka_composite(KafkaOptions(kafka.bootstrap, prefix, 2), await PostgresSink.connect(clean_db.dsn)), 2
    )
    conn = await asyncpg.connect(clean_db.dsn)
    seq = f"fail_once_{uuid.uuid4().hex[:8]}"
    try:
        for b in [first, *main]:
            await write_with_retry(writer, b)
        # from now on, the first move of the confirmed publisher's cursor fails like a lost connection
        await conn.execute(f"""
            CREATE SEQUENCE {seq};
            CREATE FUNCTION {seq}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.stream = 'kafka.confirmed' THEN
                    IF nextval('{seq}') = 1 THEN
                        RAISE EXCEPTION 'connection failure (injected)' USING ERRCODE = '08006';
                    END IF;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER {seq} BEFORE INSERT OR UPDATE ON cursors FOR EACH ROW EXECUTE FUNCTION {seq}();
        """)  # fmt: skip
        await write_with_retry(writer, merged(side[:2], reorg))  # publishes block 5, then fails
        assert await conn.fetchval(f"SELECT last_value FROM {seq}") >= 1, "the fault did not fire"
        for b in side[2:]:
            await write_with_retry(writer, b)
    finally:
        await conn.execute(f"DROP TRIGGER IF EXISTS {seq} ON cursors; DROP FUNCTION IF EXISTS {seq}();"
                           f" DROP SEQUENCE IF EXISTS {seq}")  # fmt: skip
        await conn.close()
        await writer.close()
    canonical = [first, *main[:5], *side]
    await assert_postgres_holds(clean_db.dsn, canonical, [reorg])
    reverts = assert_head_topics_hold(kafka, prefix, canonical, [reorg])
    assert Counter(reverts) == reverts_of(main[5:]), "exactly the old block 6 reverted, once"
    assert [from_dict(m.doc) for m in read_all(kafka.bootstrap, f"{prefix}head.reorgs")] == [reorg]
    confirmed, _ = consumer_view(read_all(kafka.bootstrap, f"{prefix}confirmed.blocks"))
    assert confirmed == {b.blocks[0] for b in [first, *main[:5], *side[:2]]}  # up to tip 9 - 2


async def crash_during_the_reorg(bootstrap: str, prefix: str, dsn: str, fault: str) -> None:
    """Write the main branch, then the reorg batch, dying after its Kafka deliveries (the reverts of
    4..6, the reorg, 4'..5'), before its COMMIT. Run in a subprocess for ``sigkill``."""
    genesis, main, side, reorg = scripted()
    postgres = FaultyPostgres((await PostgresSink.connect(dsn)).pool, fault)
    crashing = kafka_composite(KafkaOptions(bootstrap, prefix, 3), postgres)
    for b in [genesis, *main[:6]]:
        await crashing.write(b)
    await crashing.write(merged(side[:2], reorg))  # never returns


@pytest.mark.parametrize(
    ("crash", "after_restart"), [("sigkill", "flips_back"), ("killed", "flips_back"), ("killed", "stays")]
)
async def test_a_crash_after_the_reverts_reached_kafka_is_undone_at_restart(
    clean_db: DatabaseInfo, kafka: KafkaDev, crash: str, after_restart: str
) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}."
    genesis, main, side, reorg = scripted()
    if crash == "sigkill":
        code = (
            "import asyncio, sys; from {0} import crash_during_the_reorg as c; asyncio.run(c(*sys.argv[1:]))"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code.format(__name__), kafka.bootstrap, prefix, clean_db.dsn, crash,
            cwd=REPO, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == -signal.SIGKILL, err.decode()
    else:
        with pytest.raises(Killed):  # the node's sinks are dropped, never closed
            await crash_during_the_reorg(kafka.bootstrap, prefix, clean_db.dsn, crash)
    # the node is gone; it restarts on the same database and broker
    restarted = kafka_composite(
        KafkaOptions(kafka.bootstrap, prefix, 3), await PostgresSink.connect(clean_db.dsn)
    )
    try:
        if after_restart == "flips_back":  # the node is on the old branch again: it grows to 7
            canonical, reorgs = [genesis, *main], []
            await write_with_retry(restarted, main[6])
        else:  # the node stays on the new branch: the follower finds the reorg again
            canonical, reorgs = [genesis, *main[:3], *side], [reorg]
            await write_with_retry(restarted, merged(side[:2], reorg))
            for b in side[2:]:
                await write_with_retry(restarted, b)
    finally:
        await restarted.close()
    await assert_postgres_holds(clean_db.dsn, canonical, reorgs)
    assert_head_topics_hold(kafka, prefix, canonical, reorgs)
