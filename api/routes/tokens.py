"""Token transfers, tokens and pools."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from api.deps import PoolDep
from api.errors import RESPONSES, reject_unknown_params
from api.listing import JsonBytes, list_records, one_record
from api.params import Address, BlockNumber, ListArgs, address_path, between, list_args, lower
from api.query import Query as RecordQuery
from records import kinds

router = APIRouter(
    tags=["tokens and pools"], dependencies=[Depends(reject_unknown_params)], responses=RESPONSES
)
Args = Annotated[ListArgs, Depends(list_args)]
AddressPath = Annotated[str, Path(max_length=80, description="0x + 40 hex digits")]
Label = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9._-]+$")]


@router.get("/token-transfers", response_class=JsonBytes)
async def token_transfers(
    pool: PoolDep,
    args: Args,
    token: Address = None,
    address: Address = None,
    standard: Literal["erc20", "erc721", "erc1155"] | None = None,
    from_block: BlockNumber = None,
    to_block: BlockNumber = None,
) -> JsonBytes:
    """ERC-20/721/1155 transfers in chain order; ``address`` matches the sender or the receiver."""
    query = RecordQuery(kinds.TOKEN_TRANSFERS, kinds.TOKEN_TRANSFERS.order, descending=args.order == "desc")
    if token is not None:
        query.compare("token_address", "=", token.lower())
    if address is not None:
        query.any_column(("from_address", "to_address"), address.lower())
    if standard is not None:
        query.compare("standard", "=", standard)
    between(query, "block_number", ("from_block", "to_block"), from_block, to_block)
    filters = {
        "token": lower(token),
        "address": lower(address),
        "standard": standard,
        "from_block": from_block,
        "to_block": to_block,
    }
    return await list_records(pool, query, args, "token-transfers", filters)


@router.get("/tokens/{address}", response_class=JsonBytes)
async def token(pool: PoolDep, address: AddressPath) -> JsonBytes:
    """A token's metadata as read from the chain (``error`` says why a field is null)."""
    return await one_record(pool, kinds.TOKENS, "address", address_path("address", address), "token")


@router.get("/pools/{address}", response_class=JsonBytes)
async def pool_by_address(pool: PoolDep, address: AddressPath) -> JsonBytes:
    """One DEX pool."""
    return await one_record(pool, kinds.POOLS, "address", address_path("address", address), "pool")


@router.get("/pools", response_class=JsonBytes)
async def pools(
    pool: PoolDep,
    args: Args,
    token: Address = None,
    protocol: Label = None,
    exchange: Label = None,
) -> JsonBytes:
    """Pools by address; ``token`` matches token0 or token1. Pools created above the pinned head
    are left out, so the pages are stable while the node follows."""
    query = RecordQuery(kinds.POOLS, kinds.POOLS.order, descending=args.order == "desc")
    if token is not None:
        query.any_column(("token0", "token1"), token.lower())
    if protocol is not None:
        query.compare("protocol", "=", protocol)
    if exchange is not None:
        query.compare("exchange", "=", exchange)
    filters = {"token": lower(token), "protocol": protocol, "exchange": exchange}
    return await list_records(pool, query, args, "pools", filters)
