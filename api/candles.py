"""OHLCV candles of a pool, computed in SQL from ``dex_trades``.

Price is token1 per token0 of the pool (its own token order): per trade, amount1 / amount0 of the
exact amounts, as Postgres ``NUMERIC`` divides (rounded half away from zero at 78 decimal places,
trailing zeros trimmed). Open and close are the first and last trade of the bucket in chain order
(block, log index); high and low the extremes; volume0 / volume1 the sums of the exact amounts of
token0 / token1; ``trade_count`` the trades counted. A trade counts when both exact amounts are known
(both tokens' decimals were read) and non-zero. Buckets are aligned on Unix time (``start`` is a
multiple of the interval) and always whole: ``from_time``/``to_time`` select the candles whose
``start`` lies in ``[floor(from_time), to_time]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}
MAX_TIME = 2**62

_SQL = """
WITH t AS (
  SELECT d.block_number, d.log_index, d.block_time - d.block_time % $2 AS start,
    CASE WHEN d.token_sold_address = $3 THEN d.amount_sold ELSE d.amount_bought END AS a0,
    CASE WHEN d.token_sold_address = $3 THEN d.amount_bought ELSE d.amount_sold END AS a1
  FROM dex_trades d
  WHERE d.pool_address = $1 AND d.block_number <= $4 AND d.block_time >= $5 AND d.block_time < $6
), priced AS (
  SELECT block_number, log_index, start, a0, a1, trim_scale(round(a1, 78) / a0) AS price
  FROM t WHERE a0 > 0 AND a1 > 0
)
SELECT start,
  (array_agg(price ORDER BY block_number, log_index))[1]::text AS open,
  max(price)::text AS high,
  min(price)::text AS low,
  (array_agg(price ORDER BY block_number DESC, log_index DESC))[1]::text AS close,
  trim_scale(sum(a0))::text AS volume0,
  trim_scale(sum(a1))::text AS volume1,
  count(*) AS trade_count
FROM priced GROUP BY start ORDER BY start {direction} LIMIT $7
"""
SQL_ASC = _SQL.format(direction="ASC")
SQL_DESC = _SQL.format(direction="DESC")


@dataclass(frozen=True)
class CandleRange:
    """Trades with ``first <= block_time < stop`` make the candles asked for."""

    first: int
    stop: int


def trade_window(
    seconds: int, from_time: int | None, to_time: int | None, after: int | None, descending: bool
) -> CandleRange:
    """The block_time window of the candles in ``[from_time, to_time]``, past the cursor's ``after``."""
    first = (from_time or 0) // seconds * seconds
    stop = MAX_TIME if to_time is None else to_time // seconds * seconds + seconds
    if after is not None:
        if descending:
            stop = min(stop, after)
        else:
            first = max(first, after + seconds)
    return CandleRange(first, stop)


async def candles(
    conn: asyncpg.Connection,
    *,
    pool: str,
    token0: str,
    interval: str,
    head: int,
    window: CandleRange,
    limit: int,
    descending: bool,
) -> list[dict[str, Any]]:
    seconds = INTERVALS[interval]
    rows = await conn.fetch(
        SQL_DESC if descending else SQL_ASC, pool, seconds, token0, head, window.first, window.stop, limit
    )
    return [
        {
            "start": r["start"],
            "end": r["start"] + seconds,
            "open": r["open"],
            "high": r["high"],
            "low": r["low"],
            "close": r["close"],
            "volume0": r["volume0"],
            "volume1": r["volume1"],
            "trade_count": r["trade_count"],
        }
        for r in rows
    ]
