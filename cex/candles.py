"""1-minute (or any interval) candles from trades, as trades arrive.

``CandleBuilder.add(trade)`` returns the candles to publish: the trade's candle, updated (``closed`` False),
and, when the trade opens a new interval, the previous candle closed. Trades are bucketed by the
exchange's ``event_timestamp`` (ms; receipt time when the exchange gives none). A trade older than the open
candle (late, or a replay) is counted and not applied: a closed candle is never reopened.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from records.cex import Candle, Trade

INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}


@dataclass
class CandleBuilder:
    interval: str = "1m"
    late: int = 0

    def __post_init__(self) -> None:
        self.width = INTERVALS_MS[self.interval]
        self.open: dict[tuple[str, str], Candle] = {}

    def add(self, trade: Trade) -> list[Candle]:
        when = trade.event_timestamp if trade.event_timestamp is not None else trade.atom_timestamp // 1000
        start = when - when % self.width
        key = (trade.exchange, trade.symbol)
        current = self.open.get(key)
        out: list[Candle] = []
        if current is not None and start < current.start:
            self.late += 1
            return out
        if current is not None and start > current.start:
            out.append(replace(current, closed=True))
            current = None
        if current is None:
            current = Candle(trade.exchange, trade.symbol, self.interval, start, start + self.width - 1,
                             trade.price, trade.price, trade.price, trade.price, trade.size, 1, False,
                             trade.event_timestamp, trade.atom_timestamp)  # fmt: skip
        else:
            current = replace(
                current,
                high=max(current.high, trade.price),
                low=min(current.low, trade.price),
                close=trade.price,
                volume=current.volume + trade.size,
                trades=(current.trades or 0) + 1,
                event_timestamp=trade.event_timestamp,
                atom_timestamp=trade.atom_timestamp,
            )
        self.open[key] = current
        out.append(current)
        return out
