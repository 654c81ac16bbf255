"""Kafka consumers over DEX records: ``examples/pool_volume.py`` across reorgs and duplicates, the DEX topics
(trades, liquidity, pools, tokens) against Postgres, the ``dexnode consume`` command, and a backfill-like
stream of confirmed batches.

The DEX records here are built in the test, not decoded from a node, so each test knows exactly what
the consumers must see: a chain of blocks, each with trades and liquidity events in two pools, one
pool created in an indexed block.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from subprocess import PIPE

import orjson
import pytest
from eth_abi import encode
from eth_utils import keccak

from core.database import DatabaseInfo
from protocols.base import Context
from protocols.registry import default_registry
from records import Block, DexLiquidity, DexTrade, Log, Pool, Reorg, Token, from_dict
from records.batch import Batch
from sinks.kafka import KafkaOptions, kafka_composite
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.postgres import PostgresSink
from sinks.postgres_read import StoredChain
from tests.conftest import dexnode_bin
from tests.finalizing import FinalizingWriter
from tests.kafka_check import assert_kafka_is_postgres, assert_merged_trades_are, net_records, read_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIRMATIONS = 3  # the reorg below is 3 deep: confirmed.* must not have published block 4
TOKENS = [Token(f"0x{i:040x}", f"T{i}", f"Token {i}", 18, "call") for i in (1, 2, 3)]
OLD_POOL = Pool("0x" + "a" * 40, "uniswap", "2", "uniswap-v2", None, TOKENS[0].address, TOKENS[1].address,
                3000, None, None, None, None, None)  # fmt: skip


def _hash(*parts: object) -> str:
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


def block(number: int, branch: str, parent: str) -> Block:
    return Block(number, _hash(number, branch), parent, None, None, None, None, None, None, None, None,
                 None, None, None, 30_000_000, 100_000, 7, 1_700_000_000 + 12 * number, 2)  # fmt: skip


def trade(b: Block, log_index: int, pool: str, amount: int) -> DexTrade:
    t0, t1 = TOKENS[0].address, TOKENS[2 if pool != OLD_POOL.address else 1].address
    taker = "0x" + "c" * 40
    return DexTrade(b.number, b.timestamp, b.hash, _hash("tx", b.hash, log_index), 0, log_index, "uniswap",
                    "2", "uniswap-v2", pool, taker, pool, t0, t1, "T1", "T3", amount, 2 * amount + 1,
                    Decimal(amount).scaleb(-18), Decimal(2 * amount + 1).scaleb(-18), Decimal("0.5"),
                    taker, pool)  # fmt: skip


def liquidity(b: Block, log_index: int, pool: str) -> DexLiquidity:
    return DexLiquidity(b.number, b.timestamp, b.hash, _hash("tx", b.hash, log_index), 1, log_index,
                        "uniswap", "2", "uniswap-v2", pool, "mint", "add", TOKENS[0].address,
                        TOKENS[2].address, 10**20, 3 * 10**20, Decimal(100), Decimal(300), None,
                        "0x" + "d" * 40, None, None, None)  # fmt: skip


def test_liquidity_fixture_is_what_the_v2_plugin_writes() -> None:
    """The hand-built record above equals the v2 plugin's record for the same Mint log (event "mint",
    not the event's Solidity name), so consumers are tested on what production publishes."""
    b = block(1, "a", "0x" + "0" * 64)
    pool = Pool("0x" + "e" * 40, "uniswap", "2", "uniswap-v2", None, TOKENS[0].address, TOKENS[2].address,
                3000, None, None, None, None, None)  # fmt: skip
    want = liquidity(b, 3, pool.address)
    mint = Log(b.number, b.hash, want.transaction_hash, 1, 3, pool.address,
               "0x" + encode(["uint256", "uint256"], [10**20, 3 * 10**20]).hex(),
               "0x" + keccak(text="Mint(address,uint256,uint256)").hex(),
               "0x" + encode(["address"], ["0x" + "d" * 40]).hex(), None, None)  # fmt: skip
    ctx = Context({pool.address: pool}, {t.address: t for t in TOKENS}, {b.hash: b.timestamp},
                  {want.transaction_hash: ("0x" + "c" * 40, pool.address)})  # fmt: skip
    assert default_registry().decode([mint], ctx).records == [want]


def chain(first: int, last: int, branch: str, parent: str, *, salt: int) -> list[Batch]:
    """One batch per block: trades in the old pool and in a pool created at block ``first``."""
    batches = []
    new_pool = None
    for n in range(first, last + 1):
        b = block(n, branch, parent)
        parent = b.hash
        pools: list[Pool] = []
        if new_pool is None:
            new_pool = Pool(_hash("pool", branch)[:42], "uniswap", "2", "uniswap-v2", "0x" + "f" * 40,
                            TOKENS[0].address, TOKENS[2].address, 3000, None, b.number, b.hash,
                            _hash("tx", b.hash, 0), 0)  # fmt: skip
            pools = [new_pool]
        trades = [
            trade(b, 1, OLD_POOL.address, 10**18 * (n + salt)),
            trade(b, 2, new_pool.address, 5 * n + salt),
        ]
        batches.append(
            Batch(
                "follow",
                [b],
                {
                    DexTrade: trades,
                    DexLiquidity: [liquidity(b, 3, new_pool.address)],
                    Pool: pools,
                    Token: TOKENS if n == first else (),
                },
            )
        )
    return batches


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


@pytest.fixture
async def written(clean_db: DatabaseInfo, kafka: KafkaDev) -> AsyncIterator[str]:
    """A DEX chain 0..6 written through Kafka + Postgres, a reorg replacing 4..6 with 4'..5', a replayed
    batch (duplicates on Kafka), then 6'..8'. Yields the topic prefix."""
    prefix = f"d{uuid.uuid4().hex[:8]}."
    postgres = await PostgresSink.connect(clean_db.dsn)
    writer = FinalizingWriter(
        kafka_composite(KafkaOptions(kafka.bootstrap, prefix, CONFIRMATIONS), postgres), CONFIRMATIONS
    )
    try:
        genesis = block(0, "main", "0x" + "0" * 64)
        await writer.write(Batch("follow", [genesis], {Pool: [OLD_POOL], Token: TOKENS}))
        main = chain(1, 6, "main", genesis.hash, salt=0)
        for b in main:
            await writer.write(b)
        side = chain(4, 8, "side", main[2].blocks[0].hash, salt=7)
        orphaned = tuple(b.blocks[0].hash for b in main[3:])
        reorg = Reorg(3, main[2].blocks[0].hash, 3, orphaned, tuple(b.blocks[0].hash for b in side[:2]), 1)
        await writer.write(
            Batch(
                "follow",
                [*side[0].blocks, *side[1].blocks],
                {
                    DexTrade: [*side[0].of(DexTrade), *side[1].of(DexTrade)],
                    DexLiquidity: [*side[0].of(DexLiquidity), *side[1].of(DexLiquidity)],
                    Pool: side[0].of(Pool),
                },
                reorg=reorg,
            )
        )
        await writer.write(side[1])  # replayed after a "crash": same keys, same content
        for b in side[2:]:
            await writer.write(b)
    finally:
        await writer.close()
    yield prefix


async def test_pool_volume_example_matches_postgres_across_a_reorg_and_duplicates(
    written: str, kafka: KafkaDev, clean_db: DatabaseInfo
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "examples" / "pool_volume.py"), "--bootstrap-servers", kafka.bootstrap,
        "--topic", f"{written}head.dex_trades", "--until-end", "--every", "0", stdout=PIPE, stderr=PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    got = orjson.loads(out.splitlines()[-1])
    import asyncpg

    conn = await asyncpg.connect(clean_db.dsn)
    try:
        rows = await conn.fetch(
            "SELECT pool_address, token, sum(amount)::text AS total FROM ("
            " SELECT pool_address, token_bought_address AS token, amount_bought_raw AS amount FROM dex_trades"
            " UNION ALL SELECT pool_address, token_sold_address, amount_sold_raw FROM dex_trades) t"
            " GROUP BY 1, 2"
        )
        trades = await conn.fetchval("SELECT count(*) FROM dex_trades")
    finally:
        await conn.close()
    want: dict[str, dict[str, str]] = {}
    for r in rows:
        want.setdefault(r["pool_address"], {})[r["token"]] = r["total"]
    assert got["pools"] == want
    assert got["trades"] == trades == 2 * 8
    assert got["reverted"] == 2 * 3  # blocks 4, 5, 6 of the old branch, two trades each
    assert got["duplicates_ignored"] == 2


async def test_dex_topics_equal_postgres(written: str, kafka: KafkaDev, clean_db: DatabaseInfo) -> None:
    counts = await assert_kafka_is_postgres(
        kafka.bootstrap, written, clean_db.dsn, confirmations=CONFIRMATIONS
    )
    assert counts["reverts"] == 3 * (1 + 2 + 1)  # per orphaned block: the block, 2 trades, 1 liquidity event


async def test_consume_command_prints_the_records_that_survive_the_reverts(
    written: str, kafka: KafkaDev, clean_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    env = cli_env | {
        "DEXNODE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "DEXNODE_KAFKA_TOPIC_PREFIX": written,
    }
    proc = await asyncio.create_subprocess_exec(
        dexnode_bin(), "consume", "head.dex_liquidity", "--apply-reverts", env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    survivors = [from_dict(orjson.loads(line)) for line in out.splitlines()]
    assert [(r.block_number, r.block_hash) for r in survivors] == [  # type: ignore[attr-defined]
        (n, _hash(n, "main" if n <= 3 else "side")) for n in range(1, 9)
    ]
    raw = await asyncio.create_subprocess_exec(
        dexnode_bin(),
        "consume",
        "head.dex_liquidity",
        "--from-beginning",
        "--until-end",
        "--meta",
        env=env,
        stdout=PIPE,
        stderr=PIPE,
    )
    out, err = await asyncio.wait_for(raw.communicate(), 60)
    assert raw.returncode == 0, err.decode()
    kinds = [orjson.loads(line)["record"]["type"] for line in out.splitlines()]
    assert kinds.count("revert") == 3 and kinds.count("dex_liquidity") == 6 + 5 + 1  # the replay: once more


async def test_a_backfill_written_out_of_order_is_all_on_confirmed_topics_without_reading_back(
    clean_db: DatabaseInfo, kafka: KafkaDev, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_back: list[tuple[int, int]] = []
    original = StoredChain.batch_between

    async def spy(self: StoredChain, first: int, last: int, *, stream: str = "") -> Batch:
        read_back.append((first, last))
        return await original(self, first, last, stream=stream)

    monkeypatch.setattr(StoredChain, "batch_between", spy)
    prefix = f"b{uuid.uuid4().hex[:8]}."
    postgres = await PostgresSink.connect(clean_db.dsn)
    writer = kafka_composite(KafkaOptions(kafka.bootstrap, prefix, CONFIRMATIONS), postgres, journal=False)
    genesis = block(0, "bf", "0x" + "0" * 64)
    blocks = [Batch("backfill", [genesis], {Pool: [OLD_POOL], Token: TOKENS})]
    blocks += [Batch("backfill", b.blocks, b.records) for b in chain(1, 9, "bf", genesis.hash, salt=3)]
    try:
        chunks = [
            Batch(
                "backfill",
                [x for b in part for x in b.blocks],
                {cls: [x for b in part for x in b.of(cls)] for cls in (DexTrade, DexLiquidity, Pool, Token)},
            )
            for part in (blocks[i : i + 3] for i in range(0, len(blocks), 3))
        ]
        # written out of order, as a backfill's parallel workers finish them; two at once
        await asyncio.gather(writer.write(chunks[1]), writer.write(chunks[0]))
        await writer.write(chunks[3])
        await writer.write(chunks[2])
    finally:
        await writer.close()
    # a backfill's blocks are confirmed by construction: all of them are on confirmed.*, none held back
    monkeypatch.undo()
    counts = await assert_kafka_is_postgres(kafka.bootstrap, prefix, clean_db.dsn, confirmations=0)
    assert counts["reverts"] == 0 and counts["confirmed"] == counts["records"]
    assert read_back == [], "a backfill's batches are published from memory, never read back"
    # and every backfilled DEX trade once on the merged trades topic (the chain the test wrote)
    want = [t for b in blocks for t in b.of(DexTrade)]
    assert assert_merged_trades_are(kafka.bootstrap, f"{prefix}trades", want) == len(want) > 0


async def test_a_reorg_deeper_than_confirmations_is_an_error_once_and_the_new_branch_follows(
    clean_db: DatabaseInfo, kafka: KafkaDev, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}."
    postgres = await PostgresSink.connect(clean_db.dsn)
    writer = FinalizingWriter(kafka_composite(KafkaOptions(kafka.bootstrap, prefix, 1), postgres), 1)
    try:
        genesis = block(0, "main", "0x" + "0" * 64)
        await writer.write(Batch("follow", [genesis]))
        main = chain(1, 6, "main", genesis.hash, salt=0)
        for b in main:
            await writer.write(b)  # confirmed.* now holds blocks up to 5
        side = chain(4, 9, "side", main[2].blocks[0].hash, salt=7)
        orphaned = tuple(b.blocks[0].hash for b in main[3:])
        reorg = Reorg(3, main[2].blocks[0].hash, 3, orphaned, (side[0].blocks[0].hash,), 1)
        await writer.write(
            Batch(
                "follow",
                side[0].blocks,
                {DexTrade: side[0].of(DexTrade), Pool: side[0].of(Pool)},
                reorg=reorg,
            )
        )
        for b in side[1:]:
            await writer.write(b)
    finally:
        await writer.close()
    errors = [r for r in caplog.records if "reorg deeper than DEXNODE_CONFIRMATIONS" in r.getMessage()]
    assert len(errors) == 1
    messages = read_all(kafka.bootstrap, f"{prefix}confirmed.blocks")
    numbers = sorted(from_dict(m.doc).number for m in messages)  # type: ignore[attr-defined]
    assert numbers == [0, 1, 2, 3, 4, 4, 5, 5, 6, 7, 8]  # the old 4 and 5, and the new branch from 4
    latest = net_records(messages)  # per key (the number), the last in its partition: the new branch
    assert [latest[str(n)].hash for n in range(4, 9)] == [b.blocks[0].hash for b in side[:5]]  # type: ignore[attr-defined]
