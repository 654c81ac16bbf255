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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
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


# Records of the hot loop are built positionally, in field order; checked here once, so a field
# added to or moved in a record fails at import instead of shifting every later column.
_LOG_FIELDS = (
    "block_number", "block_hash", "transaction_hash", "transaction_index", "log_index", "address", "data",
    "topic0", "topic1", "topic2", "topic3",
)  # fmt: skip
_TRANSACTION_FIELDS = (
    "hash", "block_number", "block_hash", "block_timestamp", "transaction_index", "nonce", "from_address",
    "to_address", "value", "gas", "gas_price", "input", "max_fee_per_gas", "max_priority_fee_per_gas",
    "max_fee_per_blob_gas", "blob_versioned_hashes", "type", "status", "root", "gas_used",
    "cumulative_gas_used", "effective_gas_price", "contract_address", "blob_gas_used", "blob_gas_price",
    "authorization_list",
)  # fmt: skip
if (
    tuple(f.name for f in fields(Log)) != _LOG_FIELDS
    or tuple(f.name for f in fields(Transaction)) != _TRANSACTION_FIELDS
):
    raise ImportError("records.Log or records.Transaction changed its fields: update extract.py")


@dataclass(frozen=True, slots=True)
class Makers:
    """What the hot loop builds its records with, positionally: the record classes themselves, or
    makers that give equal records more cheaply. The backfill passes ``indexer.pipeline.pipeline.
    RECORD_MAKERS`` (``protocols/_speedups.c``: slots filled in one C call, records left out of the cycle
    collector's tracking), which this layer cannot import (``protocols`` stands beside it)."""

    log: Callable[..., Log] = Log
    transaction: Callable[..., Transaction] = Transaction
    transfer: Callable[..., TokenTransfer] = TokenTransfer  # ERC-20 transfers (``decode_transfers``)
    # ``protocols._speedups.receipt_logs``: a receipt's logs checked and made in C where all is as a node
    # normally writes it, else None (nothing appended) and ``_receipt_logs`` decides, accepting or
    # raising as it always does; arguments as ``_receipt_logs``'s
    receipt_logs: Callable[..., int | None] | None = None


CLASSES = Makers()
_NO_RECEIPT: Json = {}
_MISSING_TOPICS = tuple((None,) * (4 - n) for n in range(5))  # topic0..3 absent after the n given


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
    tx: Json,
    receipt: Json | None,
    block_number: int,
    block_hash: str,
    block_timestamp: int,
    make: Callable[..., Transaction] = Transaction,
) -> Transaction:
    """A full transaction object, joined with its receipt (``None``: receipt fields are null)."""
    # Positional and inlined (no helper per field): this runs once per transaction in the backfill.
    get = tx.get
    r = _NO_RECEIPT if receipt is None else receipt
    rget = r.get
    to = get("to")
    blob_hashes = get("blobVersionedHashes")
    gas_price = get("gasPrice")
    max_fee = get("maxFeePerGas")
    max_priority = get("maxPriorityFeePerGas")
    max_blob_fee = get("maxFeePerBlobGas")
    tx_type = get("type")
    status = rget("status")
    root = rget("root")
    gas_used = rget("gasUsed")
    cumulative = rget("cumulativeGasUsed")
    effective = rget("effectiveGasPrice")
    contract = rget("contractAddress")
    blob_gas_used = rget("blobGasUsed")
    blob_gas_price = rget("blobGasPrice")
    authorizations = get("authorizationList")
    return make(
        tx["hash"].lower(),
        block_number,
        block_hash,
        block_timestamp,
        int(tx["transactionIndex"], 16),
        int(tx["nonce"], 16),
        tx["from"].lower(),
        None if to is None else to.lower(),
        int(tx["value"], 16),
        int(tx["gas"], 16),
        None if gas_price is None else int(gas_price, 16),
        tx["input"],
        None if max_fee is None else int(max_fee, 16),
        None if max_priority is None else int(max_priority, 16),
        None if max_blob_fee is None else int(max_blob_fee, 16),
        None if blob_hashes is None else tuple(h.lower() for h in blob_hashes),
        None if tx_type is None else int(tx_type, 16),
        None if status is None else int(status, 16),
        None if root is None else root.lower(),
        None if gas_used is None else int(gas_used, 16),
        None if cumulative is None else int(cumulative, 16),
        None if effective is None else int(effective, 16),
        None if contract is None else contract.lower(),
        None if blob_gas_used is None else int(blob_gas_used, 16),
        None if blob_gas_price is None else int(blob_gas_price, 16),
        None if authorizations is None else map_authorizations(authorizations),
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
    number_hex: str,
    out: list[Log],
    last_log_index: int,
    new_log: Callable[..., Log] = Log,
) -> int:
    """Check one receipt against its block and transaction, append its logs; → last log index.

    ``number_hex`` is the block's number as the node wrote it: a field equal to it (or to the
    lower-cased hash) as a string is equal as a value, so the int parse and the lower-casing are
    only paid for the rare field written differently (this loop runs once per log)."""
    r_hash = receipt.get("blockHash")
    if r_hash is None or (r_hash != block_hash and r_hash.lower() != block_hash):
        raise InconsistentBlockError(
            f"block {block_number} {block_hash}: receipt {index} is from block {r_hash}"
        )
    r_number = receipt.get("blockNumber")
    if r_number is not None and r_number != number_hex and int(r_number, 16) != block_number:
        raise InconsistentBlockError(
            f"block {block_number} {block_hash}: receipt {index} says block number {r_number}"
        )
    r_tx = receipt.get("transactionHash")
    if r_tx is None or (r_tx != tx_hash and r_tx.lower() != tx_hash):
        raise InconsistentBlockError(
            f"block {block_number} {block_hash}: receipt {index} is for tx {r_tx}, expected {tx_hash}"
        )
    append = out.append
    for lg in receipt["logs"]:
        log_index = int(lg["logIndex"], 16)
        get = lg.get
        lg_hash = get("blockHash")
        lg_number = get("blockNumber")
        lg_tx = get("transactionHash")
        if (
            log_index <= last_log_index
            or (lg_hash is not None and lg_hash != block_hash and lg_hash.lower() != block_hash)
            or (lg_number is not None and lg_number != number_hex and int(lg_number, 16) != block_number)
            or (lg_tx is not None and lg_tx != tx_hash and lg_tx.lower() != tx_hash)
            or get("removed")
        ):
            raise InconsistentBlockError(
                f"block {block_number} {block_hash}: log {log_index} of tx {tx_hash} is inconsistent "
                f"(block {lg_hash} / {lg_number}, tx {lg_tx}, removed {get('removed')}, "
                f"previous log index {last_log_index})"
            )
        last_log_index = log_index
        topics = lg["topics"]
        n = len(topics)
        if n > 4:
            raise InconsistentBlockError(f"block {block_number}: log {log_index} has {n} topics")
        append(
            new_log(
                block_number,
                block_hash,
                tx_hash,
                index,
                log_index,
                lg["address"].lower(),
                lg["data"],
                *map(str.lower, topics),  # map: no frame per log, as a comprehension has (3.11)
                *_MISSING_TOPICS[n],
            )
        )
    return last_log_index


def _check_count(block_number: int, block_hash: str, n_txs: int, receipts: Sequence[Json]) -> None:
    if len(receipts) != n_txs:
        raise InconsistentBlockError(
            f"block {block_number} {block_hash}: {n_txs} transactions but {len(receipts)} receipts"
        )


def _finish(
    block: Block,
    transactions: tuple[Transaction, ...],
    logs: list[Log],
    make_transfer: Callable[..., TokenTransfer] = TokenTransfer,
) -> ExtractedBlock:
    decoded = decode_transfers(logs, make_transfer)
    return ExtractedBlock(
        block=block,
        transactions=transactions,
        logs=tuple(logs),
        token_transfers=decoded.transfers,
        skipped_transfers=len(decoded.skipped),
    )


def extract_block(block_json: Json, receipts: Sequence[Json], makers: Makers = CLASSES) -> ExtractedBlock:
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
    number_hex = block_json["number"]
    new_log, new_transaction, fast_logs = makers.log, makers.transaction, makers.receipt_logs
    for i, (tx, receipt) in enumerate(zip(txs, receipts, strict=True)):
        tx_hash = tx["hash"].lower()
        tx_block = tx.get("blockHash")
        if int(tx["transactionIndex"], 16) != i or (
            tx_block is not None and tx_block != block_hash and tx_block.lower() != block_hash
        ):
            raise InconsistentBlockError(
                f"block {block_number} {block_hash}: transaction {i} ({tx_hash}) says index "
                f"{tx['transactionIndex']} in block {tx_block}"
            )
        args = (receipt, i, tx_hash, block_number, block_hash, number_hex, logs, last_log_index, new_log)
        last = None if fast_logs is None else fast_logs(*args)
        last_log_index = _receipt_logs(*args) if last is None else last
        transactions.append(
            map_transaction(tx, receipt, block_number, block_hash, timestamp, new_transaction)
        )
    return _finish(block, tuple(transactions), logs, makers.transfer)


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
        last_log_index = _receipt_logs(
            receipt, i, tx_hash, block_number, block_hash, header_json["number"], logs, last_log_index
        )
    return _finish(block, (), logs)
