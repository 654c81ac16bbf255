"""A generated live market for one symbol: random but consistent, deterministic given a seed.

The book is integers (price in ticks, size in lots) so nothing drifts by rounding; the text an exchange
sends is ``ticks * tick`` and ``lots * lot`` as ``Decimal`` text with the instrument's fixed decimals
("3000.10", "0.0150", "0.0000" for a removed level), the same text every time a level is mentioned.

Each ``step()`` is one thing that happens on the market, returned as ``server.Event``s in the order an
exchange publishes them:

- a quote change: 1-3 levels added, resized or cancelled around a fair price that drifts by a tick now
  and then (a bid never at or above the best ask, an ask never at or below the best bid);
- a trade: a taker buys from the asks (or sells into the bids) from the best level on, consuming whole
  levels and part of the last; one ``trades`` event per level touched, then one ``book`` event with
  those levels' new sizes. The book refills towards ``levels`` per side in later quote changes.

The first step is a ``snapshot`` event with the whole book. After it, applying every ``book`` event's
levels (absolute sizes, 0 = removed) to the snapshot gives ``bids()``/``asks()`` at every step: the
invariant the exchange servers and the unit tests rely on.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from devnet.exchanges.server import Event


@dataclass(frozen=True)
class Instrument:
    symbol: str  # ours: ETH-USDT
    mid: Decimal  # where the fair price starts
    tick: Decimal  # price step
    lot: Decimal  # size step

    @property
    def price_decimals(self) -> int:
        return max(0, -int(self.tick.as_tuple().exponent))

    @property
    def size_decimals(self) -> int:
        return max(0, -int(self.lot.as_tuple().exponent))


INSTRUMENTS = {
    "ETH-USDT": Instrument("ETH-USDT", Decimal("3000"), Decimal("0.01"), Decimal("0.0001")),
    "BTC-USDT": Instrument("BTC-USDT", Decimal("60000"), Decimal("0.1"), Decimal("0.00001")),
}


@dataclass(frozen=True)
class GeneratedTrade:
    trade_id: int  # 1, 2, ... per market
    price: str
    size: str
    taker_side: str  # buy | sell
    timestamp_ms: int


Levels = list[tuple[str, str]]


class LiveMarket:
    """One symbol's market. ``name`` is the symbol as the exchange writes it (``ETHUSDT``, ``ETH-USDT``)."""

    def __init__(
        self,
        instrument: Instrument,
        seed: int,
        *,
        name: str | None = None,
        levels: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instrument = instrument
        self.name = name or instrument.symbol
        self.levels = levels
        self.clock = clock
        self.rng = random.Random(f"{seed}:{self.name}")  # each exchange its own market
        self.fair = int(instrument.mid / instrument.tick)  # in ticks
        self.spread = max(2, levels // 4)  # ticks between fair and the first quotes, at most
        self.bid: dict[int, int] = {}  # ticks -> lots
        self.ask: dict[int, int] = {}
        self.trade_id = 0
        self.started = False
        for i in range(levels):
            self.bid[self.fair - 1 - i * 2] = self._lots()
            self.ask[self.fair + 1 + i * 2] = self._lots()

    # -- the text an exchange sends -------------------------------------------------------------------
    def price(self, ticks: int) -> str:
        return str(Decimal(ticks) * self.instrument.tick)

    def size(self, lots: int) -> str:
        return str(Decimal(lots) * self.instrument.lot)

    def bids(self) -> Levels:
        """Best first."""
        return [(self.price(p), self.size(self.bid[p])) for p in sorted(self.bid, reverse=True)]

    def asks(self) -> Levels:
        return [(self.price(p), self.size(self.ask[p])) for p in sorted(self.ask)]

    def _lots(self) -> int:
        return self.rng.randint(1, 400) * self.rng.choice((1, 1, 1, 5, 25))

    # -- what happens ---------------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        while True:
            yield from self.step()

    def step(self) -> list[Event]:
        if not self.started:
            self.started = True
            return [Event(self.name, "snapshot", self.bids(), self.asks())]
        if self.rng.random() < 0.3:
            return self._trade()
        return self._quotes()

    def _quotes(self) -> list[Event]:
        if self.rng.random() < 0.3:
            self.fair += self.rng.choice((-1, 1)) * self.rng.randint(1, 3)
        before_bid, before_ask = dict(self.bid), dict(self.ask)
        for _ in range(self.rng.randint(1, 3)):
            buy = self.rng.random() < 0.5
            book = self.bid if buy else self.ask
            if len(book) > 2 and self.rng.random() < 0.3:
                # cancel: most often the level farthest from the fair price
                prices = sorted(book, key=lambda p: abs(p - self.fair), reverse=True)
                del book[prices[0] if self.rng.random() < 0.7 else self.rng.choice(prices)]
                continue
            price = self._quote_price(buy)
            if price is None:
                continue
            if price not in book and len(book) >= self.levels:
                # a full side makes room first: the book never holds more than ``levels`` a side, so a
                # client keeping only that many (Kraken's subscribed depth) never misses a level
                del book[max(book, key=lambda p: abs(p - self.fair))]
            book[price] = self._lots()
        # what a client sees: the net change of the step (a level added and cancelled within it is not)
        bids = self._diff(before_bid, self.bid, best_first=True)
        asks = self._diff(before_ask, self.ask, best_first=False)
        if not bids and not asks:
            return []
        return [Event(self.name, "book", bids, asks)]

    def _diff(self, before: dict[int, int], after: dict[int, int], *, best_first: bool) -> Levels:
        prices = sorted(set(before) | set(after), reverse=best_first)
        return [(self.price(p), self.size(after.get(p, 0))) for p in prices if before.get(p) != after.get(p)]

    def _quote_price(self, buy: bool) -> int | None:
        """A price for a new or resized quote: near the fair price, never crossing the other side."""
        distance = self.rng.randint(1, self.spread + 2 * self.levels)
        if buy:
            price = self.fair - distance
            limit = min(self.ask) - 1 if self.ask else price
            return min(price, limit) if min(price, limit) > 0 else None
        price = self.fair + distance
        floor = max(self.bid) + 1 if self.bid else price
        return max(price, floor)

    def _trade(self) -> list[Event]:
        buy = self.rng.random() < 0.5  # the taker's side
        book = self.ask if buy else self.bid
        if len(book) < 2:
            return self._quotes()
        prices = sorted(book, reverse=not buy)
        wanted = self.rng.randint(1, book[prices[0]] + (book[prices[1]] if self.rng.random() < 0.3 else 0))
        now = int(self.clock() * 1000)
        events: list[Event] = []
        changed: dict[int, int] = {}
        for price in prices[:-1]:  # a side is never emptied
            if wanted <= 0:
                break
            take = min(wanted, book[price])
            wanted -= take
            book[price] -= take
            changed[price] = book[price]
            if book[price] == 0:
                del book[price]
            self.trade_id += 1
            trade = GeneratedTrade(
                self.trade_id, self.price(price), self.size(take), "buy" if buy else "sell", now
            )
            events.append(Event(self.name, "trades", raw=trade))
        levels = [(self.price(p), self.size(q)) for p, q in sorted(changed.items(), reverse=not buy)]
        events.append(Event(self.name, "book", [] if buy else levels, levels if buy else []))
        # the fair price follows the trades a little
        self.fair += (1 if buy else -1) * self.rng.randint(0, 1)
        return events


def interleave(markets: list[LiveMarket]) -> Iterator[Event]:
    """The markets' events, one step of each in turn: one deterministic stream for a server."""
    while True:
        for market in markets:
            yield from market.step()
