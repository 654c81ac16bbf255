"""A local Coinbase Exchange websocket ``full`` channel with the REST L3 snapshot
``/products/{id}/book?level=3``, over a generated order-by-order market.

All constructed: the fixtures in ``../shared/fixtures/cex/coinbase`` are the retired Pro feed's ``level2``,
``ticker`` and ``matches`` channels (PROVENANCE.md there), no ``full`` frames. The message shapes are
Coinbase Exchange's documented ones (``received``, ``open``, ``done``, ``match``, ``change``; ``sequence``
per product; ``match.side`` the maker's). The market (``L3Market``) is random but consistent and
deterministic by seed: limit orders that rest, cancels, size changes, and taker orders that match the best
resting orders in price-time priority; ``orders`` is the resting set after every message, the truth a
client's book must equal. Faults as ``server.ReplayServer`` (``drop``, ``duplicate``, ``reorder``,
``close``, ``silent``) count the session's ``full`` messages per product.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from decimal import Decimal

from devnet.exchanges.server import Event, MarketBook, ReplayServer, Session

_TIME = "2026-11-30T12:00:00.000000Z"


class L3Market:
    """One product's orders: ``orders[id] = (side "buy"|"sell", price text, size text)``, integers inside."""

    def __init__(self, product: str, seed: int, mid: int = 300_000, tick: str = "0.01",
                 lot: str = "0.0001") -> None:  # fmt: skip
        self.product = product
        self.rng = random.Random(f"{seed}:{product}")
        self.mid = mid  # in ticks
        self.tick, self.lot = Decimal(tick), Decimal(lot)
        self.resting: dict[str, tuple[str, int, int]] = {}  # id -> (side, ticks, lots), arrival order
        self.sequence = 0
        self.trade_id = 0

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def price(self, ticks: int) -> str:
        return str(Decimal(ticks) * self.tick)

    def size(self, lots: int) -> str:
        return str(Decimal(lots) * self.lot)

    @property
    def orders(self) -> dict[str, tuple[str, str, str]]:
        return {i: (s, self.price(p), self.size(q)) for i, (s, p, q) in self.resting.items()}

    def _msg(self, kind: str, **fields: object) -> dict[str, object]:
        self.sequence += 1
        return {"type": kind, "time": _TIME, "product_id": self.product, "sequence": self.sequence, **fields}

    def _best(self, side: str) -> int | None:
        prices = [p for s, p, _ in self.resting.values() if s == side]
        if not prices:
            return None
        return max(prices) if side == "buy" else min(prices)

    def messages(self) -> Iterator[dict[str, object]]:
        while True:
            roll = self.rng.random()
            if roll < 0.5 or len(self.resting) < 40:  # the book fills up to ~40 orders, then churns
                yield from self._limit()
            elif roll < 0.7:
                order_id = self.rng.choice(list(self.resting))
                side, ticks, lots = self.resting.pop(order_id)
                yield self._msg("done", order_id=order_id, price=self.price(ticks), side=side,
                                reason="canceled", remaining_size=self.size(lots))  # fmt: skip
            elif roll < 0.8:
                order_id = self.rng.choice(list(self.resting))
                side, ticks, lots = self.resting[order_id]
                if lots > 1:
                    new = self.rng.randint(1, lots - 1)
                    self.resting[order_id] = (side, ticks, new)
                    yield self._msg("change", order_id=order_id, side=side, price=self.price(ticks),
                                    old_size=self.size(lots), new_size=self.size(new),
                                    reason="modify_order")  # fmt: skip
            else:
                yield from self._take()

    def _limit(self) -> Iterator[dict[str, object]]:
        side = self.rng.choice(("buy", "sell"))
        other = self._best("sell" if side == "buy" else "buy")
        distance = self.rng.randint(1, 40)
        ticks = self.mid - distance if side == "buy" else self.mid + distance
        if other is not None:  # a resting limit order never crosses the other side
            ticks = min(ticks, other - 1) if side == "buy" else max(ticks, other + 1)
        lots = self.rng.randint(1, 5000)
        order_id = self._id()
        yield self._msg("received", order_id=order_id, size=self.size(lots), price=self.price(ticks),
                        side=side, order_type="limit")  # fmt: skip
        self.resting[order_id] = (side, ticks, lots)
        yield self._msg("open", order_id=order_id, price=self.price(ticks), remaining_size=self.size(lots),
                        side=side)  # fmt: skip

    def _take(self) -> Iterator[dict[str, object]]:
        taker_side = self.rng.choice(("buy", "sell"))
        maker_side = "sell" if taker_side == "buy" else "buy"
        makers = [(i, p) for i, (s, p, _) in self.resting.items() if s == maker_side]
        if len(makers) < 2:
            return
        # price-time priority: best price first, then arrival order (dicts keep it)
        makers.sort(key=lambda m: m[1] if maker_side == "sell" else -m[1])
        wanted = self.rng.randint(1, 8000)
        taker = self._id()
        yield self._msg("received", order_id=taker, size=self.size(wanted), side=taker_side,
                        order_type="market")  # fmt: skip
        for maker, ticks in makers[:-1]:  # a side is never emptied
            if wanted <= 0:
                break
            side, _, lots = self.resting[maker]
            take = min(wanted, lots)
            wanted -= take
            self.trade_id += 1
            # the market moves before the message is made: a snapshot served after it includes it
            if take == lots:
                del self.resting[maker]
            else:
                self.resting[maker] = (side, ticks, lots - take)
            yield self._msg("match", trade_id=self.trade_id, maker_order_id=maker, taker_order_id=taker,
                            size=self.size(take), price=self.price(ticks), side=maker_side)  # fmt: skip
            if take == lots:
                yield self._msg("done", order_id=maker, price=self.price(ticks), side=maker_side,
                                reason="filled", remaining_size="0")  # fmt: skip
        yield self._msg("done", order_id=taker, side=taker_side, reason="filled", remaining_size="0")


def events(products: dict[str, L3Market], count: int) -> Iterator[Event]:
    """``count`` messages, the products' markets taking turns."""
    streams = {p: m.messages() for p, m in products.items()}
    for i in range(count):
        product = list(streams)[i % len(streams)]
        yield Event(product, "book", raw=next(streams[product]))


class CoinbaseL3Server(ReplayServer):
    def __init__(self, markets: dict[str, L3Market], count: int, **kwargs: object) -> None:
        super().__init__(events(markets, count), **kwargs)  # type: ignore[arg-type]
        self.markets = markets

    def apply(self, event: Event, book: MarketBook) -> str | None:
        return json.dumps(event.raw)  # the market moved when the message was made (``L3Market``)

    def render(self, event: Event, book: MarketBook) -> str:
        return json.dumps(event.raw)

    def snapshot_frame(self, symbol: str, book: MarketBook) -> str | None:
        return None  # REST

    async def rest(self, path: str, query: dict[str, list[str]]) -> tuple[int, str]:
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "book" or query.get("level") != ["3"]:
            return 404, json.dumps({"message": "NotFound"})
        market = self.markets.get(parts[1])
        if market is None:
            return 404, json.dumps({"message": "NotFound"})
        bids = sorted(
            ((i, p, q) for i, (s, p, q) in market.resting.items() if s == "buy"), key=lambda o: -o[1]
        )
        asks = sorted(
            ((i, p, q) for i, (s, p, q) in market.resting.items() if s == "sell"), key=lambda o: o[1]
        )
        body = {
            "sequence": market.sequence,
            "bids": [[market.price(p), market.size(q), i] for i, p, q in bids],
            "asks": [[market.price(p), market.size(q), i] for i, p, q in asks],
        }
        return 200, json.dumps(body)

    def heartbeat(self) -> str | None:
        return None

    def on_message(self, session: Session, text: str) -> None:
        msg = json.loads(text)
        if msg.get("type") != "subscribe":
            session.send(json.dumps({"type": "error", "message": "Failed to subscribe"}))
            return
        session.send(json.dumps({"type": "subscriptions", "channels": [
            {"name": c, "product_ids": msg["product_ids"]} for c in msg["channels"]]}))  # fmt: skip
        if "full" in msg["channels"]:
            for product in msg["product_ids"]:
                self.subscribed(session, "book", product)
