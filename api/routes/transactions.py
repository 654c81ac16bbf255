"""Transactions (with their receipts' fields) and logs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from api.deps import PoolDep
from api.errors import RESPONSES, not_found, reject_unknown_params
from api.listing import JsonBytes, fetch_one, list_records
from api.params import (
    Address,
    BlockNumber,
    Hash32,
    ListArgs,
    between,
    hash_path,
    list_args,
    lower,
)
from api.query import Query, reading, records_json
from records import kinds
from sinks.postgres_read import record_columns

router = APIRouter(
    tags=["transactions and logs"], dependencies=[Depends(reject_unknown_params)], responses=RESPONSES
)
Args = Annotated[ListArgs, Depends(list_args)]

_LOGS_OF_TX = (
    f"SELECT {record_columns(kinds.LOGS)} FROM logs WHERE transaction_hash = $1 AND block_hash = $2"
    " ORDER BY log_index"
)


@router.get("/transactions/{hash}", response_class=JsonBytes)
async def transaction(
    pool: PoolDep, hash: Annotated[str, Path(max_length=80, description="0x + 64 hex")]
) -> JsonBytes:
    """One transaction with its receipt fields; its logs beside it (``logs``, in log order)."""
    tx_hash = hash_path("hash", hash)
    data = await fetch_one(pool, kinds.TRANSACTIONS, "hash", tx_hash)
    if data is None:
        raise not_found(f"no transaction {tx_hash} in the indexed data")
    async with reading(pool) as conn:
        rows = await conn.fetch(_LOGS_OF_TX, tx_hash, data["block_hash"])
    return JsonBytes({"data": data, "logs": records_json(kinds.LOGS.record, rows)})


@router.get("/transactions", response_class=JsonBytes)
async def transactions(
    pool: PoolDep,
    args: Args,
    address: Address = None,
    block: BlockNumber = None,
    from_block: BlockNumber = None,
    to_block: BlockNumber = None,
) -> JsonBytes:
    """Transactions in chain order (block, index); ``address`` matches the sender or the recipient."""
    query = Query(kinds.TRANSACTIONS, kinds.TRANSACTIONS.order, descending=args.order == "desc")
    if address is not None:
        query.any_column(("from_address", "to_address"), address.lower())
    if block is not None:
        query.compare("block_number", "=", block)
    between(query, "block_number", ("from_block", "to_block"), from_block, to_block)
    filters = {"address": lower(address), "block": block, "from_block": from_block, "to_block": to_block}
    return await list_records(pool, query, args, "transactions", filters)


@router.get("/logs", response_class=JsonBytes)
async def logs(
    pool: PoolDep,
    args: Args,
    address: Address = None,
    topic0: Hash32 = None,
    topic1: Hash32 = None,
    topic2: Hash32 = None,
    topic3: Hash32 = None,
    from_block: BlockNumber = None,
    to_block: BlockNumber = None,
) -> JsonBytes:
    """Logs in chain order (block, log index), by emitting contract and topics."""
    query = Query(kinds.LOGS, kinds.LOGS.order, descending=args.order == "desc")
    filters = {"address": lower(address), "from_block": from_block, "to_block": to_block}
    if address is not None:
        query.compare("address", "=", address.lower())
    for name, topic in (("topic0", topic0), ("topic1", topic1), ("topic2", topic2), ("topic3", topic3)):
        if topic is not None:
            query.compare(name, "=", topic.lower())
            filters[name] = topic.lower()
    between(query, "block_number", ("from_block", "to_block"), from_block, to_block)
    return await list_records(pool, query, args, "logs", filters)
