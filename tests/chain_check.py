"""Test helpers: drive a bare anvil, and compare the database with the node's canonical chain.

``assert_db_is_canonical`` is an oracle that shares no code with the indexer: it asks the node for the
raw JSON-RPC answers (``eth_getBlockByNumber`` with full transactions, ``eth_getBlockReceipts``) over its
own HTTP request, derives every expected row with the minimal parsing written here (hex quantities to
ints, hex text lower-cased, token transfers decoded by hand from the standards' event layouts), and
compares every column of ``blocks``, ``transactions``, ``logs`` and ``token_transfers``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
from eth_abi import decode as abi_decode
from eth_utils import keccak

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


# -- the oracle: expected rows from the node's raw answers --------------------------------------------

Json = dict[str, Any]

ERC20_721_TRANSFER = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
ERC1155_SINGLE = "0x" + keccak(text="TransferSingle(address,address,address,uint256,uint256)").hex()
ERC1155_BATCH = "0x" + keccak(text="TransferBatch(address,address,address,uint256[],uint256[])").hex()

BLOCK_COLUMNS = (
    "number", "hash", "parent_hash", "nonce", "sha3_uncles", "logs_bloom", "transactions_root", "state_root",
    "receipts_root", "miner", "difficulty", "total_difficulty", "extra_data", "size", "gas_limit", "gas_used",
    "base_fee_per_gas", "timestamp", "transaction_count", "withdrawals_root", "withdrawals", "blob_gas_used",
    "excess_blob_gas", "parent_beacon_block_root", "requests_hash",
)  # fmt: skip
TRANSACTION_COLUMNS = (
    "hash", "block_number", "block_hash", "block_timestamp", "transaction_index", "nonce", "from_address",
    "to_address", "value", "gas", "gas_price", "input", "max_fee_per_gas", "max_priority_fee_per_gas",
    "max_fee_per_blob_gas", "blob_versioned_hashes", "type", "status", "root", "gas_used",
    "cumulative_gas_used", "effective_gas_price", "contract_address", "blob_gas_used", "blob_gas_price",
    "authorization_list",
)  # fmt: skip
LOG_COLUMNS = (
    "block_hash", "log_index", "block_number", "transaction_hash", "transaction_index", "address", "data",
    "topic0", "topic1", "topic2", "topic3",
)  # fmt: skip
TRANSFER_COLUMNS = (
    "block_hash", "log_index", "batch_index", "block_number", "transaction_hash", "transaction_index",
    "token_address", "from_address", "to_address", "value", "token_id", "standard", "operator",
)  # fmt: skip


def _int(value: str | None) -> int | None:
    return None if value is None else int(value, 16)


def _hex(value: str | None) -> str | None:
    return None if value is None else value.lower()


async def raw_chain(
    url: str, numbers: Sequence[int], *, per_request: int = 50
) -> list[tuple[Json, list[Json]]]:
    """(block with full transactions, its receipts) for ``numbers``, straight from the node."""
    out: list[tuple[Json, list[Json]]] = []
    async with httpx.AsyncClient(timeout=60) as http:
        for start in range(0, len(numbers), per_request):
            part = numbers[start : start + per_request]
            calls = [("eth_getBlockByNumber", [hex(n), True]) for n in part]
            calls += [("eth_getBlockReceipts", [hex(n)]) for n in part]
            body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
            answers = {a["id"]: a for a in (await http.post(url, json=body)).json()}
            results = [answers[i]["result"] for i in range(len(calls))]
            for block, receipts in zip(results[: len(part)], results[len(part) :], strict=True):
                assert all(r["blockHash"] == block["hash"] for r in receipts), "the node moved mid-check"
                out.append((block, receipts))
    return out


def expected_block(b: Json) -> Json:
    withdrawals = b.get("withdrawals")
    return {
        "number": int(b["number"], 16),
        "hash": b["hash"].lower(),
        "parent_hash": b["parentHash"].lower(),
        "nonce": _hex(b.get("nonce")),
        "sha3_uncles": _hex(b.get("sha3Uncles")),
        "logs_bloom": _hex(b.get("logsBloom")),
        "transactions_root": _hex(b.get("transactionsRoot")),
        "state_root": _hex(b.get("stateRoot")),
        "receipts_root": _hex(b.get("receiptsRoot")),
        "miner": _hex(b.get("miner")),
        "difficulty": _int(b.get("difficulty")),
        "total_difficulty": _int(b.get("totalDifficulty")),
        "extra_data": _hex(b.get("extraData")),
        "size": _int(b.get("size")),
        "gas_limit": int(b["gasLimit"], 16),
        "gas_used": int(b["gasUsed"], 16),
        "base_fee_per_gas": _int(b.get("baseFeePerGas")),
        "timestamp": int(b["timestamp"], 16),
        "transaction_count": len(b["transactions"]),
        "withdrawals_root": _hex(b.get("withdrawalsRoot")),
        "withdrawals": None
        if withdrawals is None
        else [
            {
                "index": int(w["index"], 16),
                "validator_index": int(w["validatorIndex"], 16),
                "address": w["address"].lower(),
                "amount": str(int(w["amount"], 16)),  # the records' JSON form: big integers as strings
            }
            for w in withdrawals
        ],
        "blob_gas_used": _int(b.get("blobGasUsed")),
        "excess_blob_gas": _int(b.get("excessBlobGas")),
        "parent_beacon_block_root": _hex(b.get("parentBeaconBlockRoot")),
        "requests_hash": _hex(b.get("requestsHash")),
    }


def expected_transaction(tx: Json, receipt: Json, block: Json) -> Json:
    blob_hashes = tx.get("blobVersionedHashes")
    authorizations = tx.get("authorizationList")
    return {
        "hash": tx["hash"].lower(),
        "block_number": int(block["number"], 16),
        "block_hash": block["hash"].lower(),
        "block_timestamp": int(block["timestamp"], 16),
        "transaction_index": int(tx["transactionIndex"], 16),
        "nonce": int(tx["nonce"], 16),
        "from_address": tx["from"].lower(),
        "to_address": _hex(tx.get("to")),
        "value": int(tx["value"], 16),
        "gas": int(tx["gas"], 16),
        "gas_price": _int(tx.get("gasPrice")),
        "input": tx["input"].lower(),
        "max_fee_per_gas": _int(tx.get("maxFeePerGas")),
        "max_priority_fee_per_gas": _int(tx.get("maxPriorityFeePerGas")),
        "max_fee_per_blob_gas": _int(tx.get("maxFeePerBlobGas")),
        "blob_versioned_hashes": None if blob_hashes is None else [h.lower() for h in blob_hashes],
        "type": _int(tx.get("type")),
        "status": _int(receipt.get("status")),
        "root": _hex(receipt.get("root")),
        "gas_used": _int(receipt.get("gasUsed")),
        "cumulative_gas_used": _int(receipt.get("cumulativeGasUsed")),
        "effective_gas_price": _int(receipt.get("effectiveGasPrice")),
        "contract_address": _hex(receipt.get("contractAddress")),
        "blob_gas_used": _int(receipt.get("blobGasUsed")),
        "blob_gas_price": _int(receipt.get("blobGasPrice")),
        "authorization_list": None
        if authorizations is None
        else [
            {
                "chain_id": str(int(a["chainId"], 16)),
                "address": a["address"].lower(),
                "nonce": int(a["nonce"], 16),
                "y_parity": int(a["yParity"], 16),
                "r": f"0x{int(a['r'], 16):064x}",
                "s": f"0x{int(a['s'], 16):064x}",
            }
            for a in authorizations
        ],
    }


def expected_log(lg: Json) -> Json:
    topics = [t.lower() for t in lg["topics"]] + [None] * (4 - len(lg["topics"]))
    return {
        "block_hash": lg["blockHash"].lower(),
        "log_index": int(lg["logIndex"], 16),
        "block_number": int(lg["blockNumber"], 16),
        "transaction_hash": lg["transactionHash"].lower(),
        "transaction_index": int(lg["transactionIndex"], 16),
        "address": lg["address"].lower(),
        "data": lg["data"].lower(),
        "topic0": topics[0],
        "topic1": topics[1],
        "topic2": topics[2],
        "topic3": topics[3],
    }


def _address_topic(topic: str | None) -> str | None:
    """An indexed address: 12 zero bytes then 20 address bytes, else None (not the standard layout)."""
    if topic is None or len(topic) != 66 or topic[2:26] != "0" * 24:
        return None
    return "0x" + topic[26:]


def expected_transfers(log_row: Json) -> list[Json]:
    """The token transfers in one log, decoded here from the standards (a non-standard shape: none).

    ERC-20 and ERC-721 share ``Transfer(address indexed from, address indexed to, uint256)``: three topics
    and one 32-byte data word is ERC-20 (the amount); four topics and empty data is ERC-721 (the token id
    indexed, one token moved). ERC-1155 ``TransferSingle(operator, from, to indexed; id, value)`` and
    ``TransferBatch(operator, from, to indexed; uint256[] ids, uint256[] values)``: one row per id."""
    topic0, data = log_row["topic0"], log_row["data"][2:]
    n_topics = sum(log_row[f"topic{i}"] is not None for i in range(4))
    moves: list[tuple[str, str | None, str | None, str | None, int, int | None]] = []
    if topic0 == ERC20_721_TRANSFER and n_topics == 3 and len(data) == 64:
        moves = [("erc20", None, log_row["topic1"], log_row["topic2"], int(data, 16), None)]
    elif topic0 == ERC20_721_TRANSFER and n_topics == 4 and data == "":
        moves = [("erc721", None, log_row["topic1"], log_row["topic2"], 1, int(log_row["topic3"], 16))]
    elif topic0 == ERC1155_SINGLE and n_topics == 4 and len(data) == 128:
        moves = [
            ("erc1155", log_row["topic1"], log_row["topic2"], log_row["topic3"], int(data[64:], 16),
             int(data[:64], 16))
        ]  # fmt: skip
    elif topic0 == ERC1155_BATCH and n_topics == 4:
        try:
            ids, values = abi_decode(["uint256[]", "uint256[]"], bytes.fromhex(data))
        except Exception:  # not the ABI layout: no transfer
            return []
        if len(ids) != len(values):
            return []
        moves = [
            ("erc1155", log_row["topic1"], log_row["topic2"], log_row["topic3"], v, i)
            for i, v in zip(ids, values, strict=True)
        ]
    out = []
    for batch_index, (standard, operator, source, target, value, token_id) in enumerate(moves):
        from_address, to_address = _address_topic(source), _address_topic(target)
        operator_address = None if operator is None else _address_topic(operator)
        if from_address is None or to_address is None or (operator is not None and operator_address is None):
            return []
        out.append(
            {
                "block_hash": log_row["block_hash"],
                "log_index": log_row["log_index"],
                "batch_index": batch_index,
                "block_number": log_row["block_number"],
                "transaction_hash": log_row["transaction_hash"],
                "transaction_index": log_row["transaction_index"],
                "token_address": log_row["address"],
                "from_address": from_address,
                "to_address": to_address,
                "value": value,
                "token_id": token_id,
                "standard": standard,
                "operator": operator_address,
            }
        )
    return out


def expected_rows(chain: Sequence[tuple[Json, list[Json]]]) -> dict[str, list[Json]]:
    """Every expected row of the four tables, in chain order."""
    rows: dict[str, list[Json]] = {"blocks": [], "transactions": [], "logs": [], "token_transfers": []}
    for block, receipts in chain:
        rows["blocks"].append(expected_block(block))
        by_hash = {r["transactionHash"].lower(): r for r in receipts}
        assert len(by_hash) == len(block["transactions"]), f"block {block['number']}: receipts do not match"
        for tx in block["transactions"]:
            rows["transactions"].append(expected_transaction(tx, by_hash[tx["hash"].lower()], block))
        for receipt in receipts:
            for lg in receipt["logs"]:
                log_row = expected_log(lg)
                rows["logs"].append(log_row)
                rows["token_transfers"].extend(expected_transfers(log_row))
    rows["transactions"].sort(key=lambda t: (t["block_number"], t["transaction_index"]))
    rows["logs"].sort(key=lambda t: (t["block_number"], t["log_index"]))
    rows["token_transfers"].sort(key=lambda t: (t["block_number"], t["log_index"], t["batch_index"]))
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    return value


_ORDER = {
    "blocks": ("number", BLOCK_COLUMNS),
    "transactions": ("block_number, transaction_index", TRANSACTION_COLUMNS),
    "logs": ("block_number, log_index", LOG_COLUMNS),
    "token_transfers": ("block_number, log_index, batch_index", TRANSFER_COLUMNS),
}
_JSON_COLUMNS = {"withdrawals", "authorization_list"}


async def stored_rows(conn: asyncpg.Connection) -> dict[str, list[Json]]:
    """Every row of the four tables, every column, as plain Python values in chain order."""
    out: dict[str, list[Json]] = {}
    for table, (order, columns) in _ORDER.items():
        stored = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 AND table_schema ="
            " current_schema()",
            table,
        )
        # a column the oracle does not know is a column nobody checks: add it above
        assert {r["column_name"] for r in stored} == set(columns), f"{table}: the oracle's columns differ"
        cols = ", ".join(f'"{c}"' for c in columns)
        out[table] = [
            {
                c: json.loads(r[c]) if c in _JSON_COLUMNS and r[c] is not None else _plain(r[c])
                for c in columns
            }
            for r in await conn.fetch(f'SELECT {cols} FROM "{table}" ORDER BY {order}')
        ]
    return out


async def assert_db_is_canonical(dsn: str, rpc: RpcClient, first: int) -> dict[str, int]:
    """The database holds exactly the node's canonical blocks ``first..head``: every column of every row
    of blocks, transactions, logs and token transfers equal to what the node's raw answers say, and
    nothing from an orphaned block. (``rpc`` gives the node's URL; the answers are fetched and parsed
    here, not by dexnode's client.)"""
    async with httpx.AsyncClient(timeout=30) as http:
        answer = (
            await http.post(rpc.url, json={"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"})
        ).json()
    head = int(answer["result"], 16)
    want = expected_rows(await raw_chain(rpc.url, list(range(first, head + 1))))
    conn = await asyncpg.connect(dsn)
    try:
        got = await stored_rows(conn)
    finally:
        await conn.close()
    for table, rows in want.items():
        if got[table] != rows:
            wrong = next(
                (i for i, (g, w) in enumerate(zip(got[table], rows, strict=False)) if g != w),
                min(len(rows), len(got[table])),
            )
            detail = (
                f"row {wrong}: stored {got[table][wrong] if wrong < len(got[table]) else None}"
                f" != node {rows[wrong] if wrong < len(rows) else None}"
            )
            raise AssertionError(f"{table}: {len(got[table])} rows stored, {len(rows)} on the node; {detail}")
    return {
        "blocks": len(want["blocks"]),
        "transactions": len(want["transactions"]),
        "logs": len(want["logs"]),
        "transfers": len(want["token_transfers"]),
    }
