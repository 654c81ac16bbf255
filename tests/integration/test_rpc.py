"""The real ``RpcClient`` against a local JSON-RPC server replaying recorded mainnet answers.

Retries are asserted by counts (requests the server saw, the client's counters, the delays the
client asked to sleep), never by wall-clock time.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from indexer.chain.extract import InconsistentBlockError, extract_block, extract_receipts_only
from indexer.chain.rpc import (
    CallReverted,
    InvalidParams,
    NotAvailableYet,
    RetryPolicy,
    RpcClient,
    RpcRetryableError,
)
from tests.rpc_replay import ETL, FIXTURES, Fault, ReplayServer
from tests.trie import receipts_root

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fixtures_dir")]  # fails without the fixtures

FOLDERS = (
    ETL / "test_stream/blocks_1755634_1755635",
    ETL / "test_export_blocks_job/block_with_logs",
    ETL / "test_export_blocks_job/blocks_with_transactions",
    ETL / "test_export_blocks_job/block_without_transactions",
    ETL / "test_export_receipts_job/receipts_with_logs",
    ETL / "test_stream/blocks_2112234_2112234",
)
TOKEN = "0xdbdacfc9eb9d42559ac1efbdb40460c728139e6a"
NAME, SYMBOL, DECIMALS = "0x06fdde03", "0x95d89b41", "0x313ce567"
BLOCK_RECEIPTS_MISSING = {
    "code": -32601,
    "message": "the method eth_getBlockReceipts does not exist/is not available",
}


class Sleeps:
    """Records the delays the client asks for instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    async with ReplayServer(FOLDERS) as srv:
        yield srv


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def recorded(path: Path) -> Any:
    return json.loads(path.read_text())["result"]


def client_for(server: ReplayServer, sleeps: Sleeps, **kwargs: Any) -> RpcClient:
    kwargs.setdefault("retry", RetryPolicy(attempts=4, base_delay=0.5, max_delay=4.0))
    return RpcClient(server.url, sleep=sleeps, **kwargs)


async def test_batches_split_and_reordered_by_id(server: ReplayServer, sleeps: Sleeps) -> None:
    server.reverse_batches = True
    numbers = [0xB872, 0xB873, 0x76250, 0x0, 0x1AC9F2]
    async with client_for(server, sleeps, max_batch_size=2) as rpc:
        blocks = await rpc.get_blocks(numbers)
        assert [int(b["number"], 16) for b in blocks] == numbers
        assert server.requests == [["eth_getBlockByNumber"] * 2] * 2 + [["eth_getBlockByNumber"]]
        assert (rpc.stats.requests, rpc.stats.batches, rpc.stats.calls, rpc.stats.retries) == (3, 2, 5, 0)
        assert await rpc.chain_id() == 0x1234
        latest = await rpc.get_block_by_number("latest", full_txs=False)
        assert latest["number"] == "0x71993a"
    assert server.connections == 1  # keep-alive: one connection for all requests


async def test_receipts_fallback_is_remembered(server: ReplayServer, sleeps: Sleeps) -> None:
    server.faults.append(
        Fault("error", method="eth_getBlockReceipts", times=99, error=BLOCK_RECEIPTS_MISSING)
    )
    async with client_for(server, sleeps) as rpc:
        block = await rpc.get_block_by_number(0x1AC9F3)
        extracted = extract_block(block, await rpc.get_receipts_for_block(block))
        assert [t.hash for t in extracted.transactions] == [tx["hash"] for tx in block["transactions"]]
        assert [lg.log_index for lg in extracted.logs] == [0, 1]
        assert extracted.token_transfers[0].value == 5 * 10**18
        block = await rpc.get_block_by_number(0x76250)
        receipts = await rpc.get_receipts_for_block(block)
        assert receipts_root(receipts) == block["receiptsRoot"]
        assert len(extract_block(block, receipts).token_transfers) == 2
        assert rpc.stats.retries == 0  # method-not-found is not retried
    assert server.count("eth_getBlockReceipts") == 1  # tried once, then remembered
    assert server.count("eth_getTransactionReceipt") == 6
    assert server.requests[-1] == ["eth_getTransactionReceipt"] * 4  # one batch per block


async def test_block_receipts_of_a_cancun_block(server: ReplayServer, sleeps: Sleeps) -> None:
    helios = FIXTURES / "mainnet-block-21925176-helios"
    header = json.loads((helios / "block.json").read_text())
    server.set_result("eth_getBlockByNumber", ["0x14e8d38", False], header)
    helios_receipts = json.loads((helios / "receipts.json").read_text())
    server.set_result("eth_getBlockReceipts", [header["hash"]], helios_receipts)
    async with client_for(server, sleeps) as rpc:
        block = await rpc.get_block_by_number(21925176, full_txs=False)
        receipts = await rpc.get_receipts_for_block(block)
    assert receipts_root(receipts) == header["receiptsRoot"]
    assert len(extract_receipts_only(block, receipts).logs) == 463
    assert server.requests == [["eth_getBlockByNumber"], ["eth_getBlockReceipts"]]


async def test_block_receipts_by_number_where_a_hash_is_refused(server: ReplayServer, sleeps: Sleeps) -> None:
    folder = ETL / "test_stream/blocks_1755634_1755635"
    block = recorded(folder / "web3_response.eth_getBlockByNumber_0x1ac9f3_true.json")
    receipts = [
        recorded(folder / f"web3_response.eth_getTransactionReceipt_{tx['hash']}.json")
        for tx in block["transactions"]
    ]
    server.set_result("eth_getBlockReceipts", ["0x1ac9f3"], receipts)
    no_hash = {"code": -32602, "message": "invalid argument 0: block number expected"}
    server.faults.append(Fault("error", method="eth_getBlockReceipts", match=block["hash"], error=no_hash))
    async with client_for(server, sleeps) as rpc:
        assert await rpc.get_receipts_for_block(block) == receipts
        assert await rpc.get_receipts_for_block(block) == receipts  # straight by number now
        assert rpc.stats.retries == 0
    assert server.requests == [["eth_getBlockReceipts"]] * 3


async def test_429_retry_after_is_honoured(server: ReplayServer, sleeps: Sleeps) -> None:
    server.set_result("eth_blockNumber", [], "0x1ac9f3")
    server.faults.append(Fault("http", status=429, retry_after="7", times=2))
    async with client_for(server, sleeps) as rpc:
        assert await rpc.block_number() == 0x1AC9F3
        assert rpc.stats.retries == 2 and rpc.stats.requests == 3
    assert len(sleeps.delays) == 2 and all(d >= 7.0 for d in sleeps.delays)


async def test_5xx_retried_with_growing_backoff(server: ReplayServer, sleeps: Sleeps) -> None:
    for status in (500, 502, 503):
        server.faults.append(Fault("http", status=status))
    async with client_for(
        server, sleeps, retry=RetryPolicy(attempts=5, base_delay=1.0, max_delay=60.0)
    ) as rpc:
        block = await rpc.get_block_by_number(0x0)
        assert block["hash"] == "0xd4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
        assert rpc.stats.retries == 3
    assert len(server.requests) == 4
    for retry, delay in enumerate(sleeps.delays, start=1):  # full jitter in [d/2, d], d doubling
        assert 2 ** (retry - 1) / 2 <= delay <= 2 ** (retry - 1)


async def test_timeout_retried(server: ReplayServer, sleeps: Sleeps) -> None:
    server.faults.append(Fault("timeout", delay=3.0))
    async with client_for(server, sleeps, timeout=0.3) as rpc:
        block = await rpc.get_block_by_number(0xB872)
        assert block["number"] == "0xb872"
        assert rpc.stats.retries == 1 and rpc.stats.requests == 2
    assert len(server.requests) == 2


async def test_connection_refused_retried_then_given_up(sleeps: Sleeps) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rpc = RpcClient(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=3), sleep=sleeps)
    async with rpc:
        with pytest.raises(RpcRetryableError, match="connection error"):
            await rpc.block_number()
        assert rpc.stats.requests == 3 and rpc.stats.retries == 2


async def test_null_block_retried_then_served(server: ReplayServer, sleeps: Sleeps) -> None:
    server.faults.append(Fault("null", method="eth_getBlockByNumber", times=2))
    async with client_for(server, sleeps) as rpc:
        block = await rpc.get_block_by_number(0x1AC9F2)
        assert block["hash"] == "0xa06fc36a7144c4bbb1f7ab13b541144414fa7808c119e8a4635e392ea544c178"
        assert rpc.stats.retries == 2
        server.faults.append(Fault("null", method="eth_getBlockByNumber", times=99))
        with pytest.raises(NotAvailableYet):  # never an empty block: the error, after the last try
            await rpc.get_block_by_number(0x1AC9F2)
    assert len(server.requests) == 3 + 4


async def test_only_failed_batch_entries_are_resent(server: ReplayServer, sleeps: Sleeps) -> None:
    limited = {"code": -32005, "message": "limit exceeded"}
    server.faults.append(Fault("error", match="0xb873", error=limited))
    async with client_for(server, sleeps) as rpc:
        blocks = await rpc.get_blocks([0xB872, 0xB873, 0x76250])
        assert [b["number"] for b in blocks] == ["0xb872", "0xb873", "0x76250"]
        assert rpc.stats.retries == 1
    assert server.requests == [["eth_getBlockByNumber"] * 3, ["eth_getBlockByNumber"]]


async def test_batch_too_large_is_split_and_remembered(server: ReplayServer, sleeps: Sleeps) -> None:
    server.max_batch = 2
    numbers = [0xB872, 0xB873, 0x76250, 0x0, 0x1AC9F2]
    async with client_for(server, sleeps, max_batch_size=8) as rpc:
        assert [int(b["number"], 16) for b in await rpc.get_blocks(numbers)] == numbers
        assert rpc.max_batch_size == 2
        assert [int(b["number"], 16) for b in await rpc.get_blocks(numbers)] == numbers
        assert rpc.stats.retries == 0
    assert [len(r) for r in server.requests] == [5, 2, 2, 1, 2, 2, 1]


async def test_fatal_errors_are_not_retried(server: ReplayServer, sleeps: Sleeps) -> None:
    bad = {"code": -32602, "message": "invalid argument 0: hex string has leading zero digits"}
    server.faults.append(Fault("error", error=bad))
    async with client_for(server, sleeps) as rpc:
        with pytest.raises(InvalidParams):
            await rpc.get_block_by_number(0xB872)
        assert rpc.stats.retries == 0
    assert len(server.requests) == 1 and sleeps.delays == []


async def test_eth_calls_report_a_revert_per_call(server: ReplayServer, sleeps: Sleeps) -> None:
    reverted = {"code": 3, "message": "execution reverted", "data": "0x"}
    server.faults.append(Fault("error", method="eth_call", match=SYMBOL, times=2, error=reverted))
    async with client_for(server, sleeps) as rpc:
        results = await rpc.eth_calls([(TOKEN, NAME), (TOKEN, SYMBOL), (TOKEN, DECIMALS)])
        assert [r.ok for r in results] == [True, False, True]
        assert isinstance(results[1].error, CallReverted) and results[1].data is None
        assert results[2].data == "0x" + "0" * 64  # this token's decimals() answers 0
        with pytest.raises(CallReverted):
            await rpc.eth_call(TOKEN, SYMBOL)
        assert rpc.stats.retries == 0
    assert [len(r) for r in server.requests] == [3, 1]


async def test_inconsistent_receipts_are_rejected(server: ReplayServer, sleeps: Sleeps) -> None:
    folder = ETL / "test_stream/blocks_1755634_1755635"
    block = recorded(folder / "web3_response.eth_getBlockByNumber_0x1ac9f3_true.json")
    receipts = [
        recorded(folder / f"web3_response.eth_getTransactionReceipt_{tx['hash']}.json")
        for tx in block["transactions"]
    ]
    server.set_result("eth_getBlockReceipts", [block["hash"]], receipts[::-1])  # out of order
    async with client_for(server, sleeps) as rpc:
        fetched = await rpc.get_block_by_number(0x1AC9F3)
        with pytest.raises(InconsistentBlockError):
            extract_block(fetched, await rpc.get_receipts_for_block(fetched))
        server.set_result("eth_getBlockReceipts", [block["hash"]], receipts[:1])  # one missing
        with pytest.raises(NotAvailableYet):
            await rpc.get_receipts_for_block(fetched)
        assert rpc.stats.retries == 3
