"""Blocks: the newest, one by number or hash, a range."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from api.deps import PoolDep
from api.errors import RESPONSES, not_found, reject_unknown_params
from api.listing import JsonBytes, list_records, one_record
from api.params import BlockNumber, ListArgs, block_ref, check_range, list_args
from api.query import Query, reading, record_json
from records import kinds
from sinks.postgres_read import record_columns

router = APIRouter(tags=["blocks"], dependencies=[Depends(reject_unknown_params)], responses=RESPONSES)
Args = Annotated[ListArgs, Depends(list_args)]
_LATEST = f"SELECT {record_columns(kinds.BLOCKS)} FROM blocks ORDER BY number DESC LIMIT 1"


@router.get("/blocks/latest", response_class=JsonBytes)
async def latest_block(pool: PoolDep) -> JsonBytes:
    """The newest indexed block."""
    async with reading(pool) as conn:  # one statement: the newest row itself
        row = await conn.fetchrow(_LATEST)
    if row is None:
        raise not_found("no block indexed yet")
    return JsonBytes({"data": record_json(kinds.BLOCKS.record, row)})


@router.get("/blocks/{block}", response_class=JsonBytes)
async def block(
    pool: PoolDep, block: Annotated[str, Path(max_length=80, description="number or 0x hash")]
) -> JsonBytes:
    """One block, by number (digits) or hash (0x + 64 hex)."""
    ref = block_ref(block)
    column = "number" if isinstance(ref, int) else "hash"
    return await one_record(pool, kinds.BLOCKS, column, ref, "block")


@router.get("/blocks", response_class=JsonBytes)
async def blocks(
    pool: PoolDep, args: Args, from_block: BlockNumber = None, to_block: BlockNumber = None
) -> JsonBytes:
    """Blocks in chain order, pinned to the indexed head at the first page."""
    check_range("from_block", from_block, "to_block", to_block)
    query = Query(kinds.BLOCKS, kinds.BLOCKS.order, descending=args.order == "desc")
    if from_block is not None:
        query.compare("number", ">=", from_block)
    if to_block is not None:
        query.compare("number", "<=", to_block)
    return await list_records(pool, query, args, "blocks", {"from_block": from_block, "to_block": to_block})
