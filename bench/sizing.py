"""Disk per million blocks, measured: real mainnet rows through the real writer into Postgres.

Rows: mainnet block 21925176 (2025-02-25, 202 transactions, 463 logs, ``../shared/fixtures``),
extracted by ``indexer.chain.extract`` exactly as the follower does (the fixture has receipts, not
transaction bodies: transactions are built from the receipts, with ``INPUT_BYTES`` of calldata — the
one assumed size, docs/sizing.md), plus one ``DexTrade`` per Uniswap
v2/v3 ``Swap`` log of the block (pool, taker, raw amounts from the log itself; token addresses and
symbols fixed, as the enricher would add them; 18 decimals). The block is written ``--blocks`` times
through ``sinks.postgres.PostgresSink`` (the follower's and backfill's writer: COPY, indexes, cursor)
in 20-block batches; copy k is block 21925176 + k with its block and transaction hashes replaced by
deterministic pseudo-random ones (``bench/storage.py`` does the same), so every key is unique and the
indexes grow as they would.

Then ``VACUUM ANALYZE`` and, per table, ``pg_total_relation_size`` (heap + TOAST + indexes) divided
by the number of blocks = bytes per block; × 1,000,000 = per million blocks of this kind. A 2025
mainnet block is this size or so; blocks from before 2020 carry a third to a half as many
transactions, so a full-history index is smaller per block than this figure (docs/sizing.md).

CEX, per exchange-day: rows per second per symbol counted in the recorded frames (as the replay
servers read them: one ``cex_book_events`` row per changed level or snapshot, one row per trade or
ticker) over the recording's duration, times bytes per row measured by writing ``--cex-rows`` rows of
each table through ``cex.store.CexStore``.

Server: ``DATABASE_URL`` if set (a scratch database there, dropped at the end), else an embedded
pgserver in a temp dir.

    .venv/bin/python bench/sizing.py [--blocks 500] [--cex-rows 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from cex.store import CexStore
from core.database import DatabaseInfo, asyncpg_dsn, embedded_server, ensure_database
from devnet.exchanges import recording
from indexer.chain.extract import ExtractedBlock, extract_receipts_only
from indexer.pipeline.pipeline import batch_of
from migrations import runner
from records import Block, DexTrade, Transaction
from records.cex import BookDelta, BookSnapshot, Ticker, Trade
from sinks.postgres import PostgresSink

BLOCK = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mainnet-block-21925176-helios"
BATCH_BLOCKS = 20
V2_SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
V3_SWAP = "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
INPUT_BYTES = 68  # a 4-byte selector and two 32-byte words: an ERC-20 transfer
TABLES = ("blocks", "transactions", "logs", "token_transfers", "dex_trades")


def _varied(value: str, copy: int) -> str:
    return "0x" + hashlib.blake2b(f"{value}:{copy}".encode(), digest_size=32).hexdigest()


def _words(data: str) -> list[int]:
    raw = bytes.fromhex(data[2:])
    return [int.from_bytes(raw[i : i + 32], "big", signed=False) for i in range(0, len(raw), 32)]


def transactions_of(extracted: ExtractedBlock, receipts: list[dict[str, Any]]) -> tuple[Transaction, ...]:
    """Transactions from the block's receipts: every receipt field is the real one; the fields a
    receipt lacks are filled with typical values: nonce, value 0, gas = 1.25 x gas used, EIP-1559 fees
    at the effective price, and ``INPUT_BYTES`` of calldata (the fixture has no calldata: this is the
    one assumed size, see docs/sizing.md for its weight)."""
    block = extracted.block
    out = []
    for r in receipts:
        gas_used, price = int(r["gasUsed"], 16), int(r["effectiveGasPrice"], 16)
        seed = r["transactionHash"].encode()
        digest = hashlib.shake_256(seed).hexdigest(INPUT_BYTES)  # incompressible, as calldata mostly is
        out.append(
            Transaction(
                hash=r["transactionHash"],
                block_number=block.number,
                block_hash=block.hash,
                block_timestamp=block.timestamp,
                transaction_index=int(r["transactionIndex"], 16),
                nonce=int(r["transactionIndex"], 16) * 37,
                from_address=r["from"],
                to_address=r["to"],
                value=0,
                gas=gas_used * 5 // 4,
                gas_price=price,
                input="0x" + digest,
                max_fee_per_gas=price * 2,
                max_priority_fee_per_gas=price - (block.base_fee_per_gas or 0),
                max_fee_per_blob_gas=None,
                blob_versioned_hashes=None,
                type=int(r["type"], 16),
                status=int(r["status"], 16),
                root=None,
                gas_used=gas_used,
                cumulative_gas_used=int(r["cumulativeGasUsed"], 16),
                effective_gas_price=price,
                contract_address=r["contractAddress"],
            )
        )
    return tuple(out)


def trades_of(extracted: ExtractedBlock) -> list[DexTrade]:
    """One trade per v2/v3 Swap log, its raw amounts read from the log (two's complement for v3)."""
    tx_of = {t.hash: t for t in extracted.transactions}  # after transactions_of
    trades = []
    for log in extracted.logs:
        if log.topic0 not in (V2_SWAP, V3_SWAP) or log.topic2 is None:
            continue
        words = _words(log.data)
        if log.topic0 == V2_SWAP:
            amount0_in, amount1_in, amount0_out, amount1_out = words[:4]
            sold, bought = max(amount0_in, amount1_in), max(amount0_out, amount1_out)
            version, maker = "2", log.address
        else:
            a0, a1 = (w - (1 << 256) if w >> 255 else w for w in words[:2])
            sold, bought = max(a0, a1), -min(a0, a1)
            version, maker = "3", None
        tx = tx_of[log.transaction_hash]
        amount_sold, amount_bought = Decimal(sold).scaleb(-18), Decimal(bought).scaleb(-18)
        trades.append(
            DexTrade(
                block_number=log.block_number,
                block_time=extracted.block.timestamp,
                block_hash=log.block_hash,
                transaction_hash=log.transaction_hash,
                transaction_index=log.transaction_index,
                log_index=log.log_index,
                protocol="uniswap",
                version=version,
                exchange=f"uniswap-v{version}",
                pool_address=log.address,
                taker="0x" + log.topic2[-40:],
                maker=maker,
                token_bought_address=WETH,
                token_sold_address=USDC,
                token_bought_symbol="WETH",
                token_sold_symbol="USDC",
                amount_bought_raw=bought,
                amount_sold_raw=sold,
                amount_bought=amount_bought,
                amount_sold=amount_sold,
                price=(amount_sold / amount_bought) if bought else None,
                tx_from=tx.from_address,
                tx_to=tx.to_address,
            )
        )
    return trades


def copy_of(block: ExtractedBlock, trades: list[DexTrade], k: int) -> tuple[ExtractedBlock, list[DexTrade]]:
    number = block.block.number + k
    block_hash = _varied(block.block.hash, k)
    tx = {t.hash: _varied(t.hash, k) for t in block.transactions}
    keys: dict[str, Any] = {"block_number": number, "block_hash": block_hash}
    parent = _varied(block.block.hash, k - 1) if k else block.block.parent_hash
    new_block: Block = replace(block.block, number=number, hash=block_hash, parent_hash=parent)
    txs = tuple(replace(t, hash=tx[t.hash], **keys) for t in block.transactions)
    logs = tuple(replace(x, transaction_hash=tx[x.transaction_hash], **keys) for x in block.logs)
    transfers = tuple(
        replace(x, transaction_hash=tx[x.transaction_hash], **keys) for x in block.token_transfers
    )
    new_trades = [replace(x, transaction_hash=tx[x.transaction_hash], **keys) for x in trades]
    return replace(block, block=new_block, transactions=txs, logs=logs, token_transfers=transfers), new_trades


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[DatabaseInfo]:
    name = f"dexnode_sizing_{secrets.token_hex(4)}"
    url = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if url:
            server = url
        else:
            tmp = tempfile.mkdtemp(prefix="dexnode-sizing-")
            stack.callback(shutil.rmtree, tmp, True)
            server = stack.enter_context(embedded_server(Path(tmp)))
        dsn = await ensure_database(server, name)
        try:
            yield DatabaseInfo(dsn=dsn, embedded=not url)
        finally:
            conn = await asyncpg.connect(asyncpg_dsn(server))
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()


async def measure(blocks: int) -> dict[str, tuple[int, int, int]]:
    """{table: (rows, total bytes, index bytes)} after writing ``blocks`` copies."""
    header = json.loads((BLOCK / "block.json").read_text())
    receipts = json.loads((BLOCK / "receipts.json").read_text())
    real = extract_receipts_only(header, receipts)
    real = replace(real, transactions=transactions_of(real, receipts))
    trades = trades_of(real)
    async with scratch_database() as db:
        await runner.upgrade(db.sqlalchemy_url)
        sink = await PostgresSink.connect(db.dsn)
        try:
            for start in range(0, blocks, BATCH_BLOCKS):
                copies = [copy_of(real, trades, k) for k in range(start, min(blocks, start + BATCH_BLOCKS))]
                batch = batch_of("backfill", [c[0] for c in copies])
                batch = batch.replacing({DexTrade: [t for c in copies for t in c[1]]})
                await sink.write(batch)
        finally:
            await sink.pool.close()
        conn = await asyncpg.connect(db.dsn)
        try:
            await conn.execute("VACUUM ANALYZE")
            sizes = {}
            for table in TABLES:
                rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
                total = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
                index = await conn.fetchval("SELECT pg_indexes_size($1::regclass)", table)
                sizes[table] = (rows, total, index)
        finally:
            await conn.close()
    return sizes


def report(blocks: int, sizes: dict[str, tuple[int, int, int]]) -> None:
    print(f"{blocks} copies of mainnet block 21925176 through PostgresSink, after VACUUM ANALYZE")
    print(f"{'table':<16}{'rows/block':>11}{'bytes/row':>11}{'of which index':>16}{'GB per 1M blocks':>18}")
    total = 0
    for table, (rows, size, index) in sizes.items():
        total += size
        per_row = size / rows if rows else 0
        print(
            f"{table:<16}{rows / blocks:>11.1f}{per_row:>11.0f}{index / size if size else 0:>15.0%}"
            f"{size / blocks * 1e6 / 1e9:>18.1f}"
        )
    print(f"{'all of these':<54}{total / blocks * 1e6 / 1e9:>18.1f}")


# -- CEX: rows per second from the recordings, bytes per row from CexStore ------------------------

CEX_RECORDINGS = {  # the file whose received frames' first and last timestamps give the duration
    "binance": "binance/BINANCE.ws.1.0",
    "bybit": "bybit/BYBIT.ws.26.0",
    "coinbase": "coinbase/COINBASE.ws.28.0.first1000lines",
    "kraken": "kraken/KRAKEN.ws.48.0",
    "okx": "okx/OKX.ws.1.0",
}


def cex_rates() -> dict[str, tuple[int, float, dict[str, int]]]:
    """Per exchange: (symbols, seconds recorded, stored rows by table) from the replay servers' own
    reading of the recordings (``devnet.exchanges.<x>.events``): one ``cex_book_events`` row per book
    level changed (a delta) or per snapshot, one ``cex_trades`` row per trade, one ``cex_tickers`` per
    ticker."""
    out = {}
    for name, rel in CEX_RECORDINGS.items():
        events = importlib.import_module(f"devnet.exchanges.{name}").events()
        stamps = [
            line.timestamp
            for line in recording.read(recording.FIXTURES / rel)
            if line.kind == "received" and line.timestamp
        ]
        rows = {"cex_book_events": 0, "cex_trades": 0, "cex_tickers": 0}
        for event in events:
            if event.channel == "book":
                rows["cex_book_events"] += len(event.bids) + len(event.asks)
            elif event.channel == "snapshot":
                rows["cex_book_events"] += 1
            elif event.channel == "trades":
                rows["cex_trades"] += 1
            elif event.channel == "ticker":
                rows["cex_tickers"] += 1
        out[name] = (len({e.symbol for e in events}), stamps[-1] - stamps[0], rows)
    return out


def cex_records(count: int) -> list[Any]:
    """``count`` rows of each CEX table: book deltas with the recorded OKX levels' price and size text,
    trades and tickers shaped like the recorded ones (a BTC-USDT price, 8-decimal sizes, numeric ids)."""
    levels = [lv for e in importlib.import_module("devnet.exchanges.okx").events() for lv in e.bids + e.asks]
    start = 1_700_000_000_000_000
    out: list[Any] = []
    for i in range(count):
        price, size = levels[i % len(levels)]
        t = start + i * 1000
        common: dict[str, Any] = {
            "exchange": "okx",
            "symbol": "BTC-USDT",
            "event_timestamp": t // 1000,
            "atom_timestamp": t,
        }
        side = "bid" if i % 2 else "ask"
        out.append(
            BookDelta(
                side=side, price=Decimal(price), size=Decimal(size), order_id=None, sequence=i, **common
            )
        )
        out.append(
            Trade(
                price=Decimal("43123.4") + i % 100,
                size=Decimal("0.00123456") * (1 + i % 7),
                taker_side="buy",
                trade_id=str(418_000_000 + i),
                maker_order_id=None,
                taker_order_id=None,
                **common,
            )
        )
        out.append(
            Ticker(
                bid_price=Decimal("43123.4"),
                bid_size=Decimal("1.2345"),
                ask_price=Decimal("43123.5"),
                ask_size=Decimal("0.5"),
                **common,
            )
        )
    return out


async def cex_bytes_per_row(count: int) -> dict[str, float]:
    async with scratch_database() as db:
        await runner.upgrade(db.sqlalchemy_url)
        store = await CexStore.connect(db.dsn)
        try:
            records = cex_records(count)
            for start in range(0, len(records), 6000):
                await store.write(records[start : start + 6000])
        finally:
            await store.close()
        conn = await asyncpg.connect(db.dsn)
        try:
            await conn.execute("VACUUM ANALYZE")
            sizes = {}
            for table in ("cex_book_events", "cex_trades", "cex_tickers"):
                rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
                total = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
                sizes[table] = total / rows
            # stored snapshots (``dexnode cex --snapshot-every``, default 60 s): the recorded OKX books
            await store_snapshots(db.dsn)
            sizes["snapshot"] = float(
                await conn.fetchval(
                    "SELECT avg(pg_column_size(t.*)) FROM cex_book_events t WHERE kind = 'snapshot'"
                )
            )
        finally:
            await conn.close()
    return sizes


async def store_snapshots(dsn: str) -> None:
    """The deepest recorded OKX snapshot (BTC-USDT, 400 bids and 400 asks) stored 100 times as
    ``BookSnapshot`` rows."""
    recorded = [
        e for e in importlib.import_module("devnet.exchanges.okx").events() if e.channel == "snapshot"
    ]
    books = [max(recorded, key=lambda e: len(e.bids) + len(e.asks))]
    store = await CexStore.connect(dsn)
    try:
        snapshots = []
        for i in range(100):
            book = books[i % len(books)]
            snapshots.append(
                BookSnapshot(
                    exchange="okx",
                    symbol=book.symbol,
                    bids=tuple((Decimal(p), Decimal(q)) for p, q in book.bids),
                    asks=tuple((Decimal(p), Decimal(q)) for p, q in book.asks),
                    sequence=i,
                    event_timestamp=1_700_000_000_000 + i,
                    atom_timestamp=1_700_000_000_000_000 + i,
                )
            )
        await store.write(snapshots)
    finally:
        await store.close()


def cex_report(rates: dict[str, tuple[int, float, dict[str, int]]], per_row: dict[str, float]) -> None:
    print(
        "\nCEX: bytes per stored row (CexStore, after VACUUM ANALYZE): "
        + ", ".join(f"{t} {b:.0f}" for t, b in per_row.items() if t != "snapshot")
        + f"; a stored 400+400-level OKX snapshot {per_row['snapshot']:,.0f} (row, compressed),"
        f" {per_row['snapshot'] * 1440 / 1e6:.0f} MB per symbol-day at one a minute"
    )
    print(
        f"{'exchange':<10}{'symbols':>8}{'seconds':>8}{'book rows/s':>12}{'trades/s':>9}{'tickers/s':>10}"
        f"{'MB/symbol-day':>15}"
    )
    for name, (symbols, seconds, rows) in rates.items():
        per_s = {t: n / seconds / symbols for t, n in rows.items()}  # snapshots: counted as one row each
        day = sum(per_s[t] * per_row[t] for t in per_s) * 86_400 / 1e6
        print(
            f"{name:<10}{symbols:>8}{seconds:>8.1f}{per_s['cex_book_events']:>12.1f}{per_s['cex_trades']:>9.2f}"
            f"{per_s['cex_tickers']:>10.2f}{day:>15.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=500, help="copies of the block to write")
    parser.add_argument("--cex-rows", type=int, default=20_000, help="rows per CEX table to write")
    args = parser.parse_args()
    report(args.blocks, asyncio.run(measure(args.blocks)))
    cex_report(cex_rates(), asyncio.run(cex_bytes_per_row(args.cex_rows)))


if __name__ == "__main__":
    main()
