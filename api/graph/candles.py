"""``candles(pool:, interval:, fromTime:, toTime:, first:, orderDirection:)``: the REST candles'
SQL (``api/candles.py``) as GraphQL; page on by ``fromTime``/``toTime``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import strawberry
from strawberry.types import Info

from api import candles as ohlcv
from api.graph.resolve import MAX_FIRST, Context, error
from api.graph.types import BigDecimal, BigInt, Int64, OrderDirection
from api.query import indexed_head


@strawberry.type
class Candle:
    pool_address: str
    token0: str
    token1: str
    interval: str
    start: Int64  # Unix seconds: past 2^31 in 2038
    end: Int64
    open: BigDecimal
    high: BigDecimal
    low: BigDecimal
    close: BigDecimal
    volume0: BigDecimal
    volume1: BigDecimal
    trade_count: int


def resolver() -> Any:
    async def candles(
        info: Info,
        pool: str,
        interval: str,
        from_time: BigInt | None = None,
        to_time: BigInt | None = None,
        first: int = 100,
        order_direction: OrderDirection | None = None,
    ) -> list[Candle]:
        if interval not in ohlcv.INTERVALS:
            raise error(
                f"interval must be one of {', '.join(ohlcv.INTERVALS)} (got {interval!r})", "BAD_USER_INPUT"
            )
        if not 0 <= first <= MAX_FIRST:
            raise error(f"first must be between 0 and {MAX_FIRST} (got {first})", "BAD_USER_INPUT")
        if from_time is not None and to_time is not None and from_time > to_time:
            raise error(f"fromTime ({from_time}) is after toTime ({to_time})", "BAD_USER_INPUT")
        for name, value in (("fromTime", from_time), ("toTime", to_time)):
            if value is not None and not 0 <= value < ohlcv.MAX_TIME:
                raise error(f"{name} is out of range", "BAD_USER_INPUT")
        address = pool.lower()
        descending = order_direction is not None and order_direction.value == "desc"
        context: Context = info.context
        async with (
            context.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            row = await conn.fetchrow("SELECT token0, token1 FROM pools WHERE address = $1", address)
            head = await indexed_head(conn)
            if row is None or head is None:
                return []
            seconds = ohlcv.INTERVALS[interval]
            window = ohlcv.trade_window(seconds, from_time, to_time, None, descending)
            found = await ohlcv.candles(
                conn,
                pool=address,
                token0=row["token0"],
                interval=interval,
                head=head.number,
                window=window,
                limit=first,
                descending=descending,
            )
        return [
            Candle(
                pool_address=address,
                token0=row["token0"],
                token1=row["token1"],
                interval=interval,
                start=c["start"],
                end=c["end"],
                open=BigDecimal(Decimal(c["open"])),
                high=BigDecimal(Decimal(c["high"])),
                low=BigDecimal(Decimal(c["low"])),
                close=BigDecimal(Decimal(c["close"])),
                volume0=BigDecimal(Decimal(c["volume0"])),
                volume1=BigDecimal(Decimal(c["volume1"])),
                trade_count=c["trade_count"],
            )
            for c in found
        ]

    return candles
