"""The oracle ``tests.chain_check.assert_db_is_canonical`` can fail: on a real anvil chain with ERC-20,
ERC-721, ERC-1155 single and batch transfers and non-standard transfer-shaped logs, backfilled by the real
``dexnode backfill``, it passes; then one changed column in any table, a missing row or a stored orphan
each make it fail."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator

import asyncpg
import pytest
from eth_abi import encode

from core.database import DatabaseInfo
from indexer.chain.rpc import RpcClient
from tests.chain_check import (
    DEV0,
    ERC20_721_TRANSFER,
    ERC1155_BATCH,
    ERC1155_SINGLE,
    assert_db_is_canonical,
    mine,
    send_transfers,
)
from tests.conftest import dexnode_bin

pytestmark = pytest.mark.integration

# runtime: LOG4(topics = calldata words 0..3, data = calldata[128:]); STOP
_LOG4 = "3660809003" + "8060806000" + "37" + "606035604035602035600035" + "84" + "6000" + "a4" + "00"
# runtime: LOG3(topics = calldata words 0..2, data = calldata[96:]); STOP
_LOG3 = "3660609003" + "8060606000" + "37" + "604035602035600035" + "83" + "6000" + "a3" + "00"


def _init_code(runtime: str) -> str:
    size = len(runtime) // 2  # PUSH1 size DUP1 PUSH1 11 PUSH1 0 CODECOPY PUSH1 0 RETURN, then the runtime
    return f"0x60{size:02x}80600b6000396000f3" + runtime


def _address_word(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
async def rpc(anvil: str) -> AsyncIterator[RpcClient]:
    async with RpcClient(anvil) as client:
        yield client


async def _deploy(rpc: RpcClient, runtime: str) -> str:
    tx = await rpc.call("eth_sendTransaction", [{"from": DEV0, "data": _init_code(runtime)}])
    await mine(rpc)
    return str((await rpc.call("eth_getTransactionReceipt", [tx]))["contractAddress"]).lower()


async def _emit(rpc: RpcClient, emitter: str, topics: list[str], data: str) -> None:
    calldata = "0x" + "".join(t.removeprefix("0x") for t in topics) + data
    await rpc.call("eth_sendTransaction", [{"from": DEV0, "to": emitter, "data": calldata, "gas": "0x30000"}])


async def _chain_with_every_transfer_kind(rpc: RpcClient) -> None:
    log3, log4 = await _deploy(rpc, _LOG3), await _deploy(rpc, _LOG4)
    alice, bob, operator = _address_word(0xA11CE), _address_word(0xB0B), _address_word(0x09E)
    await send_transfers(rpc, 3)
    await _emit(rpc, log3, [ERC20_721_TRANSFER, alice, bob], f"{10**30 + 7:064x}")  # ERC-20
    await _emit(rpc, log4, [ERC20_721_TRANSFER, alice, bob, f"{42:064x}"], "")  # ERC-721, token 42
    await _emit(rpc, log4, [ERC1155_SINGLE, operator, alice, bob], f"{5:064x}{2**255:064x}")
    batch = encode(["uint256[]", "uint256[]"], [[1, 2, 3], [10, 20, 2**256 - 1]]).hex()
    await _emit(rpc, log4, [ERC1155_BATCH, operator, bob, alice], batch)
    await mine(rpc)
    # transfer-shaped but not standard: no transfer row (the raw logs are still stored)
    await _emit(rpc, log4, [ERC20_721_TRANSFER, alice, bob, f"{1:064x}"], f"{5:064x}")  # 4 topics with data
    await _emit(rpc, log3, [ERC20_721_TRANSFER, "ff" * 32, bob], f"{5:064x}")  # not an address topic
    await _emit(rpc, log4, [ERC1155_BATCH, operator, bob, alice], encode(["uint256[]"], [[1]]).hex())
    await mine(rpc, 2)


async def test_the_oracle_passes_on_the_indexed_chain_and_fails_on_any_difference(
    rpc: RpcClient, anvil: str, clean_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    await _chain_with_every_transfer_kind(rpc)
    args = ["backfill", "--from", "0", "--to", "confirmed", "--confirmations", "0", "--allow-unconfirmed"]
    args += ["--no-dex", "--rpc-http", anvil, "--database-url", clean_db.dsn]
    run = await asyncio.to_thread(
        subprocess.run, [dexnode_bin(), *args], env=cli_env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    counts = await assert_db_is_canonical(clean_db.dsn, rpc, 0)
    assert counts["transfers"] == 1 + 1 + 1 + 3  # erc20, erc721, 1155 single, 1155 batch of 3
    assert counts["logs"] == 7

    conn = await asyncpg.connect(clean_db.dsn)
    try:
        stored = {
            (r["standard"], r["batch_index"], r["token_id"], r["value"], r["operator"])
            for r in await conn.fetch("SELECT * FROM token_transfers")
        }
        assert stored == {
            ("erc20", 0, None, 10**30 + 7, None),
            ("erc721", 0, 42, 1, None),
            ("erc1155", 0, 5, 2**255, "0x" + _address_word(0x09E)[24:]),
            ("erc1155", 0, 1, 10, "0x" + _address_word(0x09E)[24:]),
            ("erc1155", 1, 2, 20, "0x" + _address_word(0x09E)[24:]),
            ("erc1155", 2, 3, 2**256 - 1, "0x" + _address_word(0x09E)[24:]),
        }
        changes = [
            ("blocks", "state_root", "'0x' || repeat('0', 64)", "number = 1"),
            ("blocks", "size", "size + 1", "number = 2"),
            ("blocks", "withdrawals", "'[{\"index\": 1}]'::jsonb", "number = 3"),
            ("transactions", "gas_used", "gas_used + 1", "transaction_index = 0"),
            ("transactions", "input", "input || '00'", "transaction_index = 0"),
            ("transactions", "effective_gas_price", "effective_gas_price + 1", "transaction_index = 0"),
            ("logs", "topic3", "NULL", "topic3 IS NOT NULL"),
            ("logs", "data", "data || '00'", "log_index = 0"),
            ("token_transfers", "value", "value + 1", "standard = 'erc20'"),
            ("token_transfers", "token_id", "token_id + 1", "standard = 'erc721'"),
            ("token_transfers", "operator", "NULL", "batch_index = 2"),
        ]
        for table, column, value, where in changes:
            async with _restored(conn, table):
                await conn.execute(
                    f'UPDATE "{table}" SET "{column}" = {value}'
                    f' WHERE ctid = (SELECT ctid FROM "{table}" WHERE {where} LIMIT 1)'
                )
                with pytest.raises(AssertionError, match=f"^{table}: .* row \\d+: stored"):
                    await assert_db_is_canonical(clean_db.dsn, rpc, 0)
        for table in ("blocks", "transactions", "logs", "token_transfers"):
            async with _restored(conn, table):
                await conn.execute(f'DELETE FROM "{table}" WHERE ctid = (SELECT max(ctid) FROM "{table}")')
                with pytest.raises(AssertionError, match=rf"^{table}: "):
                    await assert_db_is_canonical(clean_db.dsn, rpc, 0)
        async with _restored(conn, "blocks"):  # a block of another branch above the head
            await conn.execute(
                "INSERT INTO blocks SELECT number + 100, 'orphan', hash, nonce, sha3_uncles, logs_bloom,"
                " transactions_root, state_root, receipts_root, miner, difficulty, total_difficulty,"
                " extra_data, size, gas_limit, gas_used, base_fee_per_gas, timestamp, transaction_count,"
                " withdrawals_root, withdrawals, blob_gas_used, excess_blob_gas, parent_beacon_block_root,"
                " requests_hash FROM blocks ORDER BY number DESC LIMIT 1"
            )
            with pytest.raises(AssertionError, match=r"^blocks: "):
                await assert_db_is_canonical(clean_db.dsn, rpc, 0)
        await assert_db_is_canonical(clean_db.dsn, rpc, 0)  # every change was undone
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _restored(conn: asyncpg.Connection, table: str) -> AsyncIterator[None]:
    """The table's rows as they were before the block, whatever it changed (committed meanwhile, so the
    oracle's own connection sees the change)."""
    await conn.execute(f'CREATE TEMP TABLE _saved AS SELECT * FROM "{table}"')
    try:
        yield
    finally:
        await conn.execute(
            f'TRUNCATE "{table}"; INSERT INTO "{table}" SELECT * FROM _saved; DROP TABLE _saved'
        )
