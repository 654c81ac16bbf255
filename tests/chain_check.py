"""Test helpers: drive a bare anvil, and compare the database with the node's canonical chain."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from indexer.chain.extract import extract_block
from indexer.chain.rpc import RpcClient

DEV0 = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"  # anvil's first default account
DEV1 = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"


async def send_transfers(rpc: RpcClient, count: int, *, salt: int = 0) -> list[str]:
    calls = [
        (
            "eth_sendTransaction",
            [{"from": DEV0, "to": DEV1, "value": hex(10**15 + salt * 1000 + i), "gas": "0x5208"}],
        )
        for i in range(count)
    ]
    return [str(h) for h in await rpc.batch(calls)]


async def mine(rpc: RpcClient, blocks: int = 1) -> None:
    await rpc.call("anvil_mine", [hex(blocks)])


async def reorg(rpc: RpcClient, depth: int, txs: int, *, salt: int) -> None:
    """anvil_reorg: replace the last ``depth`` blocks with a branch carrying other transactions."""
    pairs = [
        [{"from": DEV1, "to": DEV0, "value": hex(10**14 + salt * 100 + i), "gas": "0x5208"}, i % depth]
        for i in range(txs)
    ]
    await rpc.call("anvil_reorg", [depth, pairs])


async def wait_for_tip(dsn: str, rpc: RpcClient, *, timeout: float = 60.0, stream: str = "follow") -> None:
    """Until the stored cursor is the node's head (same hash)."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            head = await rpc.get_block_by_number("latest", full_txs=False)
            got = await conn.fetchval("SELECT block_hash FROM cursors WHERE stream = $1", stream)
            if got == head["hash"].lower():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"database tip {got} never reached the node's head {head['hash']}")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def assert_db_is_canonical(dsn: str, rpc: RpcClient, first: int) -> dict[str, int]:
    """The database holds exactly the node's canonical blocks ``first..head``: same hashes, and the same
    transactions, logs and transfers, row for row; nothing from an orphaned block."""
    head = await rpc.block_number()
    numbers = list(range(first, head + 1))
    blocks = await rpc.get_blocks(numbers)
    receipts = await rpc.get_receipts_for_blocks(blocks)
    want = [extract_block(b, r) for b, r in zip(blocks, receipts, strict=True)]
    conn = await asyncpg.connect(dsn)
    try:
        got_blocks = [
            (r["number"], r["hash"]) for r in await conn.fetch("SELECT number, hash FROM blocks ORDER BY 1")
        ]
        assert got_blocks == [(b.block.number, b.block.hash) for b in want]
        got_txs = [tuple(r) for r in await conn.fetch(
            "SELECT hash, block_hash, transaction_index, value, status, gas_used FROM transactions ORDER BY"
            " block_number, transaction_index")]  # fmt: skip
        want_txs = [
            (t.hash, t.block_hash, t.transaction_index, t.value, t.status, t.gas_used)
            for b in want
            for t in b.transactions
        ]
        assert got_txs == want_txs
        got_logs = [tuple(r) for r in await conn.fetch(
            "SELECT block_hash, log_index, transaction_hash, address, data, topic0, topic1, topic2, topic3"
            " FROM logs ORDER BY block_number, log_index")]  # fmt: skip
        want_logs = [
            (lg.block_hash, lg.log_index, lg.transaction_hash, lg.address, lg.data, lg.topic0, lg.topic1,
             lg.topic2, lg.topic3)
            for b in want for lg in b.logs
        ]  # fmt: skip
        assert got_logs == want_logs
        got_tt = [tuple(r) for r in await conn.fetch(
            "SELECT block_hash, log_index, batch_index, token_address, from_address, to_address, value,"
            " token_id FROM token_transfers ORDER BY block_number, log_index, batch_index")]  # fmt: skip
        want_tt = [
            (t.block_hash, t.log_index, t.batch_index, t.token_address, t.from_address, t.to_address, t.value,
             t.token_id)
            for b in want for t in b.token_transfers
        ]  # fmt: skip
        assert got_tt == want_tt
    finally:
        await conn.close()
    return {
        "blocks": len(want),
        "transactions": len(want_txs),
        "logs": len(want_logs),
        "transfers": len(want_tt),
    }
