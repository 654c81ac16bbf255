"""DEX trades, liquidity events and candles."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from api import candles as ohlcv
from api.cursor import Cursor
from api.deps import PoolDep
from api.errors import RESPONSES, not_found, reject_unknown_params
from api.listing import JsonBytes, list_records
from api.params import (
    Address,
    BlockNumber,
    ListArgs,
    Time,
    between,
    check_range,
    list_args,
    lower,
    parse_time,
)
from api.query import Query as RecordQuery
from api.query import pinned_head, reading
from records import kinds

router = APIRouter(tags=["dex"], dependencies=[Depends(reject_unknown_params)], responses=RESPONSES)
Args = Annotated[ListArgs, Depends(list_args)]
Label = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9._-]+$")]


@router.get("/dex/trades", response_class=JsonBytes)
async def trades(
    pool: PoolDep,
    args: Args,
    pool_address: Annotated[Address, Query(alias="pool")] = None,
    token: Address = None,
    taker: Address = None,
    exchange: Label = None,
    from_block: BlockNumber = None,
    to_block: BlockNumber = None,
    from_time: Time = None,
    to_time: Time = None,
) -> JsonBytes:
    """Swaps (Dune ``dex.trades`` shape) in chain order; ``token`` matches the bought or sold token,
    times filter on ``block_time``."""
    query = RecordQuery(kinds.DEX_TRADES, kinds.DEX_TRADES.order, descending=args.order == "desc")
    start, end = parse_time("from_time", from_time), parse_time("to_time", to_time)
    if pool_address is not None:
        query.compare("pool_address", "=", pool_address.lower())
    if token is not None:
        query.any_column(("token_bought_address", "token_sold_address"), token.lower())
    if taker is not None:
        query.compare("taker", "=", taker.lower())
    if exchange is not None:
        query.compare("exchange", "=", exchange)
    between(query, "block_number", ("from_block", "to_block"), from_block, to_block)
    between(query, "block_time", ("from_time", "to_time"), start, end)
    filters: dict[str, Any] = {
        "pool": lower(pool_address),
        "token": lower(token),
        "taker": lower(taker),
        "exchange": exchange,
        "from_block": from_block,
        "to_block": to_block,
        "from_time": start,
        "to_time": end,
    }
    return await list_records(pool, query, args, "dex/trades", filters)


@router.get("/dex/liquidity", response_class=JsonBytes)
async def liquidity(
    pool: PoolDep,
    args: Args,
    pool_address: Annotated[Address, Query(alias="pool")] = None,
    owner: Address = None,
    from_block: BlockNumber = None,
    to_block: BlockNumber = None,
) -> JsonBytes:
    """Liquidity events (mint, burn, collect; add/remove) in chain order."""
    query = RecordQuery(kinds.DEX_LIQUIDITY, kinds.DEX_LIQUIDITY.order, descending=args.order == "desc")
    if pool_address is not None:
        query.compare("pool_address", "=", pool_address.lower())
    if owner is not None:
        query.compare("owner", "=", owner.lower())
    between(query, "block_number", ("from_block", "to_block"), from_block, to_block)
    filters = {
        "pool": lower(pool_address),
        "owner": lower(owner),
        "from_block": from_block,
        "to_block": to_block,
    }
    return await list_records(pool, query, args, "dex/liquidity", filters)


@router.get("/dex/candles", response_class=JsonBytes)
async def candles(
    pool: PoolDep,
    args: Args,
    pool_address: Annotated[str, Query(alias="pool", pattern=r"^0x[0-9a-fA-F]{40}$")],
    interval: Literal["1m", "5m", "15m", "1h", "4h", "1d"],
    from_time: Time = None,
    to_time: Time = None,
) -> JsonBytes:
    """OHLCV of one pool from its trades: price = token1 per token0 of the pool (exact decimals),
    volume in both tokens, trade count. See ``api/candles.py`` for the exact rules."""
    start, end = parse_time("from_time", from_time), parse_time("to_time", to_time)
    check_range("from_time", start, "to_time", end)
    address = pool_address.lower()
    descending = args.order == "desc"
    filters = {"pool": address, "interval": interval, "from_time": start, "to_time": end}
    query = RecordQuery(kinds.DEX_TRADES, ("block_time",))  # the cursor's key: a bucket start (int)
    cursor, fp = args.start(query, "dex/candles", filters)
    async with reading(pool) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        pool_row = await conn.fetchrow("SELECT token0, token1 FROM pools WHERE address = $1", address)
        if pool_row is None:
            raise not_found(f"no pool {address} in the indexed data")
        head = await pinned_head(conn, cursor)
        if head is None:
            return JsonBytes({"data": [], "next_cursor": None})
        after = None if cursor is None else int(cursor.key[0])
        seconds = ohlcv.INTERVALS[interval]
        window = ohlcv.trade_window(seconds, start, end, after, descending)
        rows = await ohlcv.candles(
            conn,
            pool=address,
            token0=pool_row["token0"],
            interval=interval,
            head=head.number,
            window=window,
            limit=args.limit + 1,
            descending=descending,
        )
    more = len(rows) > args.limit
    rows = rows[: args.limit]
    extra = {"pool_address": address, "token0": pool_row["token0"], "token1": pool_row["token1"]}
    data = [{**extra, "interval": interval, **r} for r in rows]
    next_cursor = Cursor(head.number, head.hash, (rows[-1]["start"],), fp).encode() if more else None
    return JsonBytes({"data": data, "next_cursor": next_cursor})
