"""Block + receipts (JSON-RPC shapes) → records. Pure: no I/O, runs in the backfill hot loop.

``extract_block(block_json, receipts)`` needs the block fetched with full transaction objects
(``eth_getBlockByNumber(n, true)``) and the block's receipts in transaction order. Before anything
is built, the two answers are checked to be one block: as many receipts as transactions, each
receipt (and each of its logs) naming this block's hash and number and the transaction at its
index, log indexes strictly increasing. A node behind a load balancer can answer the block from
one backend and the receipts from another, or mid-reorg: such a pair raises
``InconsistentBlockError`` (retryable: fetch again) and must never be stored.

``extract_receipts_only(header_json, receipts)`` is the same for a block fetched with hashes only
(``full_txs=False``): block, logs and token transfers, no transactions (their fields are not in
receipts). The recorded helios block (header + ``eth_getBlockReceipts``) is such a pair, and a node
that indexes only logs could use it to fetch less.

JSON-RPC quantities (hex) become ints; addresses and hashes are lower-cased; fields a node does not
return (``baseFeePerGas`` before London, ``status`` before Byzantium, where ``root`` is set instead,
blob fields before Cancun, ``requestsHash`` before Prague, ``authorizationList`` outside type-4
transactions, ``to`` of a contract creation) are null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import FatalError, RetryableError
from decoders.transfers import decode_transfers
from records import Authorization, Block, Log, TokenTransfer, Transaction, Withdrawal

Json = Mapping[str, Any]


class InconsistentBlockError(RetryableError):
    """The block and receipts a node returned are not one block (lagging or load-balanced node)."""


@dataclass(frozen=True, slots=True)
class ExtractedBlock:
    block: Block
    transactions: tuple[Transaction, ...]
    logs: tuple[Log, ...]
    token_transfers: tuple[TokenTransfer, ...]
    skipped_transfers: int


def _opt(value: str | None) -> int | None:
    return None if value is None else int(value, 16)


def _opt_lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


def map_block(b: Json) -> Block:
    """A JSON-RPC block (full transactions or hashes) → ``Block``."""
    withdrawals_json = b.get("withdrawals")
    withdrawals = (
        None
        if withdrawals_json is None
        else tuple(
            Withdrawal(
                index=int(w["index"], 16),
                validator_index=int(w["validatorIndex"], 16),
                address=w["address"].lower(),
                amount=int(w["amount"], 16),
            )
            for w in withdrawals_json
        )
    )
    get = b.get
    return Block(
        number=int(b["number"], 16),
        hash=b["hash"].lower(),
        parent_hash=b["parentHash"].lower(),
        nonce=get("nonce"),
        sha3_uncles=_opt_lower(get("sha3Uncles")),
        logs_bloom=get("logsBloom"),
        transactions_root=_opt_lower(get("transactionsRoot")),
        state_root=_opt_lower(get("stateRoot")),
        receipts_root=_opt_lower(get("receiptsRoot")),
        miner=_opt_lower(get("miner")),
        difficulty=_opt(get("difficulty")),
        total_difficulty=_opt(get("totalDifficulty")),
        extra_data=get("extraData"),
        size=_opt(get("size")),
        gas_limit=int(b["gasLimit"], 16),
        gas_used=int(b["gasUsed"], 16),
        base_fee_per_gas=_opt(get("baseFeePerGas")),
        timestamp=int(b["timestamp"], 16),
        transaction_count=len(b["transactions"]),
        withdrawals_root=_opt_lower(get("withdrawalsRoot")),
        withdrawals=withdrawals,
        blob_gas_used=_opt(get("blobGasUsed")),
        excess_blob_gas=_opt(get("excessBlobGas")),
        parent_beacon_block_root=_opt_lower(get("parentBeaconBlockRoot")),
        requests_hash=_opt_lower(get("requestsHash")),
    )


def _word(value: str) -> str:
    """A uint256 quantity as 32-byte lower-case hex (``0x`` + 64 digits), leading zeros restored."""
    return f"0x{int(value, 16):064x}"


def map_authorizations(entries: Sequence[Json] | None) -> tuple[Authorization, ...] | None:
    """A type-4 transaction's ``authorizationList`` (execution-apis ``AuthorizationList``: chainId,
    address, nonce, yParity, r, s) → ``Authorization`` records; None when the node gives none."""
    if entries is None:
        return None
    return tuple(
        Authorization(
            chain_id=int(a["chainId"], 16),
            address=a["address"].lower(),
            nonce=int(a["nonce"], 16),
            y_parity=int(a["yParity"], 16),
            r=_word(a["r"]),
            s=_word(a["s"]),
        )
        for a in entries
    )


def map_transaction(
    tx: Json, receipt: Json | None, block_number: int, block_hash: str, block_timestamp: int
) -> Transaction:
    """A full transaction object, joined with its receipt (``None``: receipt fields are null)."""
    get = tx.get
    to = get("to")
    blob_hashes = get("blobVersionedHashes")
    if receipt is None:
        r: Json = {}
    else:
        r = receipt
    contract = r.get("contractAddress")
    root = r.get("root")
    return Transaction(
        hash=tx["hash"].lower(),
        block_number=block_number,
        block_hash=block_hash,
        block_timestamp=block_timestamp,
        transaction_index=int(tx["transactionIndex"], 16),
        nonce=int(tx["nonce"], 16),
        from_address=tx["from"].lower(),
        to_address=None if to is None else to.lower(),
        value=int(tx["value"], 16),
        gas=int(tx["gas"], 16),
        gas_price=_opt(get("gasPrice")),
        input=tx["input"],
        max_fee_per_gas=_opt(get("maxFeePerGas")),
        max_priority_fee_per_gas=_opt(get("maxPriorityFeePerGas")),
        max_fee_per_blob_gas=_opt(get("maxFeePerBlobGas")),
        blob_versioned_hashes=None if blob_hashes is None else tuple(h.lower() for h in blob_hashes),
        type=_opt(get("type")),
        status=_opt(r.get("status")),
        root=None if root is None else root.lower(),
        gas_used=_opt(r.get("gasUsed")),
        cumulative_gas_used=_opt(r.get("cumulativeGasUsed")),
        effective_gas_price=_opt(r.get("effectiveGasPrice")),
        contract_address=None if contract is None else contract.lower(),
        blob_gas_used=_opt(r.get("blobGasUsed")),
        blob_gas_price=_opt(r.get("blobGasPrice")),
        authorization_list=map_authorizations(get("authorizationList")),
    )


def _check_header(b: Json) -> tuple[int, str]:
    block_hash = b.get("hash")
    number = b.get("number")
    if block_hash is None or number is None:
        raise FatalError("block has no hash or number (a pending block cannot be extracted)")
    return int(number, 16), block_hash.lower()


def _receipt_logs(
    receipt: Json,
    index: int,
    tx_hash: str,
    block_number: int,
    block_hash: str,
    out: list[Log],
    last_log_index: int,
) -> int:
    """Check one receipt against its block and transaction, append its logs; → last log index."""
    r_hash = receipt.get("blockHash")
    if r_hash is None or r_hash.lower() != block_hash:
        raise InconsistentBlockError(
            f"block {block_number} {block_hash}: receipt {index} is from block {r_hash}"
        )
    r_number = receipt.get("blockNumber")
    if r_number is not None and int(r_number, 16) != block_number:
        raise InconsistentBlockError(
            f"block {block_number} {block_hash}: receipt {index} says block number {r_number}"
        )
    r_tx = receipt.get("transactionHash")
    if r_tx is None or r_tx.lower() != tx_hash:
        raise InconsistentBlockError(
            f"block {block_number} {block_hash}: receipt {index} is for tx {r_tx}, expected {tx_hash}"
        )
    append = out.append
    for lg in receipt["logs"]:
        log_index = int(lg["logIndex"], 16)
        lg_hash = lg.get("blockHash")
        lg_number = lg.get("blockNumber")
        lg_tx = lg.get("transactionHash")
        if (
            log_index <= last_log_index
            or (lg_hash is not None and lg_hash.lower() != block_hash)
            or (lg_number is not None and int(lg_number, 16) != block_number)
            or (lg_tx is not None and lg_tx.lower() != tx_hash)
            or lg.get("removed")
        ):
            raise InconsistentBlockError(
                f"block {block_number} {block_hash}: log {log_index} of tx {tx_hash} is inconsistent "
                f"(block {lg_hash} / {lg_number}, tx {lg_tx}, removed {lg.get('removed')}, "
                f"previous log index {last_log_index})"
            )
        last_log_index = log_index
        topics = lg["topics"]
        n = len(topics)
        if n > 4:
            raise InconsistentBlockError(f"block {block_number}: log {log_index} has {n} topics")
        append(
            Log(
                block_number=block_number,
                block_hash=block_hash,
                transaction_hash=tx_hash,
                transaction_index=index,
                log_index=log_index,
                address=lg["address"].lower(),
                data=lg["data"],
                topic0=topics[0].lower() if n > 0 else None,
                topic1=topics[1].lower() if n > 1 else None,
                topic2=topics[2].lower() if n > 2 else None,
                topic3=topics[3].lower() if n > 3 else None,
            )
        )
    return last_log_index


def _check_count(block_number: int, block_hash: str, n_txs: int, receipts: Sequence[Json]) -> None:
    if len(receipts) != n_txs:
        raise InconsistentBlockError(
            f"block {block_number} {block_hash}: {n_txs} transactions but {len(receipts)} receipts"
        )


def _finish(block: Block, transactions: tuple[Transaction, ...], logs: list[Log]) -> ExtractedBlock:
    decoded = decode_transfers(logs)
    return ExtractedBlock(
        block=block,
        transactions=transactions,
        logs=tuple(logs),
        token_transfers=decoded.transfers,
        skipped_transfers=len(decoded.skipped),
    )


def extract_block(block_json: Json, receipts: Sequence[Json]) -> ExtractedBlock:
    """Records of one block; raises ``InconsistentBlockError`` when block and receipts disagree."""
    block_number, block_hash = _check_header(block_json)
    txs = block_json["transactions"]
    if txs and isinstance(txs[0], str):
        raise FatalError(
            f"block {block_number} has transaction hashes only: fetch it with full transactions "
            "(get_block_by_number(n, full_txs=True)) or use extract_receipts_only"
        )
    _check_count(block_number, block_hash, len(txs), receipts)
    block = map_block(block_json)
    timestamp = block.timestamp
    transactions: list[Transaction] = []
    logs: list[Log] = []
    last_log_index = -1
    for i, (tx, receipt) in enumerate(zip(txs, receipts, strict=True)):
        tx_hash = tx["hash"].lower()
        tx_block = tx.get("blockHash")
        if int(tx["transactionIndex"], 16) != i or (tx_block is not None and tx_block.lower() != block_hash):
            raise InconsistentBlockError(
                f"block {block_number} {block_hash}: transaction {i} ({tx_hash}) says index "
                f"{tx['transactionIndex']} in block {tx_block}"
            )
        last_log_index = _receipt_logs(receipt, i, tx_hash, block_number, block_hash, logs, last_log_index)
        transactions.append(map_transaction(tx, receipt, block_number, block_hash, timestamp))
    return _finish(block, tuple(transactions), logs)


def extract_receipts_only(header_json: Json, receipts: Sequence[Json]) -> ExtractedBlock:
    """Block, logs and token transfers from a header (hashes or full txs) and its receipts.

    ``transactions`` is empty: a receipt lacks nonce, value, input, gas and fee fields. The same
    consistency checks apply, with the header's transaction hashes as the reference.
    """
    block_number, block_hash = _check_header(header_json)
    txs = header_json["transactions"]
    _check_count(block_number, block_hash, len(txs), receipts)
    block = map_block(header_json)
    logs: list[Log] = []
    last_log_index = -1
    for i, (tx, receipt) in enumerate(zip(txs, receipts, strict=True)):
        tx_hash = (tx if isinstance(tx, str) else tx["hash"]).lower()
        last_log_index = _receipt_logs(receipt, i, tx_hash, block_number, block_hash, logs, last_log_index)
    return _finish(block, (), logs)
