"""The order book, written once for every exchange: L2 by price level, L3 by order id.

L2 levels live per side in parallel lists kept in price order (prices, sizes, and per level its float key
and checksum text): no hashing of ``Decimal`` prices (0.4-1 µs each the first time), a level found by a
binary search over the float keys in C (Decimals compared only where two keys are equal: exact), snapshots
loaded in one ordered pass, the top N levels two slices. Sorted lists were 1.3x (OKX updates) to 2x
(Binance snapshots) faster than the dict keyed by price they replaced, which was 1.11-1.28x faster than
``sortedcontainers.SortedDict`` (L3 levels use that). Prices and sizes are ``Decimal`` built from the
exchange's text; ``Decimal`` keeps the text's digits (``Decimal("0.10")`` prints ``0.10``), so the
checksums (``cex.checksum``) are computed from the book itself, in the exchange's own spelling.

A book carries its ``sequence`` (the exchange's last applied update id, when it has one) and a ``valid``
flag: a book that failed a check stays invalid until it is rebuilt from a snapshot, and is never published
as if it were right.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from math import isfinite
from operator import eq, itemgetter
from typing import Literal

from sortedcontainers import SortedDict

from records.cex import BookSnapshot

Side = Literal["bid", "ask"]
Level = tuple[Decimal, Decimal]
_ZERO = Decimal(0)
_PRICE = itemgetter(0)

Keys = list[float | None]
ApplySide = Callable[..., None]  # (keys, prices, sizes, texts, levels[, level_keys])
RowLevels = Callable[..., list[Level]]  # (rows, cache[, keys])
TextStyle = tuple[int, int | None, int | None]
TopTexts = Callable[
    [list[Decimal], list[Decimal], list[str | None], int, bool, int, int | None, int | None,
     Callable[[Decimal, Decimal], str]],
    list[str],
]  # fmt: skip
_apply_side: ApplySide | None
_row_levels: RowLevels | None
_top_texts: TopTexts | None
_ordered_side: Callable[[Iterable[Level]], tuple[list[Decimal], list[Decimal]] | None] | None
try:  # cex/_speedups.c, built by `make install`; without it, the same steps run in Python
    from cex._speedups import apply_side as _apply_side
    from cex._speedups import levels as _row_levels
    from cex._speedups import ordered_side as _ordered_side
    from cex._speedups import top_texts as _top_texts
except ImportError:
    _apply_side = _row_levels = _top_texts = _ordered_side = None


class L2Book:
    """Aggregated levels, per side two parallel lists in ascending price order: the prices and their sizes.
    Bids best last, asks best first. A level is found by a C ``bisect`` over the prices (~10 ``Decimal``
    comparisons), never by hashing: a ``Decimal``'s hash costs 0.4-1 µs the first time (modular arithmetic
    over its digits), so a dict keyed by price paid it for every new level and every snapshot level, and a
    snapshot, sent in order, is loaded by one linear ``sort`` and two list copies."""

    __slots__ = (
        "_ask_keys", "_ask_prices", "_ask_sizes", "_ask_texts", "_bid_keys", "_bid_prices", "_bid_sizes",
        "_bid_texts", "_text_of", "depth", "sequence", "valid",
    )  # fmt: skip

    def __init__(self, depth: int | None = None) -> None:
        self._bid_prices: list[Decimal] = []
        self._bid_sizes: list[Decimal] = []
        self._ask_prices: list[Decimal] = []
        self._ask_sizes: list[Decimal] = []
        # per level, float(price) once the C search has read it (None: not yet): the search compares doubles,
        # and Decimals only between prices whose doubles are equal
        self._bid_keys: list[float | None] = []
        self._ask_keys: list[float | None] = []
        # per level, its checksum text once made (None: not made, or the level changed since): a checksum
        # covers the top 10-25 levels after every message, and few of them change from one to the next
        self._bid_texts: list[str | None] = []
        self._ask_texts: list[str | None] = []
        self._text_of: object = None  # what made the texts (a checksum rule may change on a book)
        self.depth = depth  # levels kept per side (the subscribed depth); None: all
        self.sequence: int | None = None
        self.valid = False

    @property
    def bids(self) -> dict[Decimal, Decimal]:
        """Price -> size (a copy, for reading; ascending)."""
        return dict(zip(self._bid_prices, self._bid_sizes, strict=True))

    @property
    def asks(self) -> dict[Decimal, Decimal]:
        return dict(zip(self._ask_prices, self._ask_sizes, strict=True))

    def clear(self) -> None:
        self.load((), ())
        self.sequence = None
        self.valid = False

    def load(self, bids: Iterable[Level], asks: Iterable[Level], sequence: int | None = None) -> None:
        """Replace the whole book by a snapshot; it is valid from here on (until a check fails). Zero sizes
        are dropped; a price given twice keeps its last non-zero size. A price whose double is not finite
        (``_refuse_unsearchable``) raises ``ArithmeticError`` and leaves the book as it was."""
        bid_prices, bid_sizes = _sorted_side(bids)
        ask_prices, ask_sizes = _sorted_side(asks)
        for prices in (bid_prices, ask_prices):
            if prices:  # in ascending order: only the lowest and the highest can lie beyond a double
                _refuse_unsearchable(prices[0])
                _refuse_unsearchable(prices[-1])
        self._bid_prices, self._bid_sizes = bid_prices, bid_sizes
        self._ask_prices, self._ask_sizes = ask_prices, ask_sizes
        self._bid_texts = [None] * len(self._bid_prices)
        self._ask_texts = [None] * len(self._ask_prices)
        self._bid_keys = [None] * len(self._bid_prices)
        self._ask_keys = [None] * len(self._ask_prices)
        if self.depth is not None:
            self.truncate(self.depth)
        self.sequence = sequence
        self.valid = True

    def update(self, bids: Iterable[Level], asks: Iterable[Level], bid_keys: Keys | None = None,
               ask_keys: Keys | None = None) -> None:  # fmt: skip
        """Apply levels with absolute sizes; size 0 removes the level (a missing one is no error: exchanges
        delete levels beyond the depth they send). The hot path of every feed: in C when built
        (``cex/_speedups.c`` ``apply_side``, the same steps as ``_update_python``). ``bid_keys`` and
        ``ask_keys``: the levels' search keys as ``row_levels`` made them from the exchange's text (a float
        per level, None where C makes it from the price), so C does not make each from the ``Decimal``.
        A price with no finite double raises ``ArithmeticError`` at its level, levels before it applied (the
        feed counts it malformed and rebuilds the book)."""
        if _apply_side is None:
            self._update_python(bids, asks)
        else:
            _apply_side(self._bid_keys, self._bid_prices, self._bid_sizes, self._bid_texts, bids, bid_keys)
            _apply_side(self._ask_keys, self._ask_prices, self._ask_sizes, self._ask_texts, asks, ask_keys)
        depth = self.depth
        if depth is not None and (len(self._bid_prices) > depth or len(self._ask_prices) > depth):
            self.truncate(depth)

    def _update_python(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Per side: binary search of the ascending prices, then set, delete or insert the level (its text,
        when it has one, is dropped: the level changed); a new level's key is left to the C search."""
        for levels, keys, prices, sizes, texts in (
            (bids, self._bid_keys, self._bid_prices, self._bid_sizes, self._bid_texts),
            (asks, self._ask_keys, self._ask_prices, self._ask_sizes, self._ask_texts),
        ):
            for price, size in levels:
                _refuse_unsearchable(price)
                i = bisect_left(prices, price)
                if i < len(prices) and prices[i] == price:
                    if size:
                        sizes[i] = size
                        texts[i] = None
                    else:
                        del keys[i], prices[i], sizes[i], texts[i]
                elif size:
                    keys.insert(i, None)
                    prices.insert(i, price)
                    sizes.insert(i, size)
                    texts.insert(i, None)

    def set(self, side: Side, price: Decimal, size: Decimal) -> None:
        if side == "bid":
            self.update(((price, size),), ())
        else:
            self.update((), ((price, size),))

    def truncate(self, depth: int) -> None:
        """Keep the best ``depth`` levels per side (the worst bid is first, the worst ask last)."""
        excess = len(self._bid_prices) - depth
        if excess > 0:
            del self._bid_keys[:excess], self._bid_prices[:excess], self._bid_sizes[:excess]
            del self._bid_texts[:excess]
        if len(self._ask_prices) > depth:
            del self._ask_keys[depth:], self._ask_prices[depth:], self._ask_sizes[depth:]
            del self._ask_texts[depth:]

    def best_bid(self) -> Level | None:
        return (self._bid_prices[-1], self._bid_sizes[-1]) if self._bid_prices else None

    def best_ask(self) -> Level | None:
        return (self._ask_prices[0], self._ask_sizes[0]) if self._ask_prices else None

    def crossed(self) -> bool:
        """Best bid at or above best ask: no real book looks like this, so a level was lost."""
        bids, asks = self._bid_prices, self._ask_prices
        return bool(bids) and bool(asks) and bids[-1] >= asks[0]

    def bid_levels(self, n: int | None = None) -> list[Level]:
        """Bids best first (descending), at most ``n``."""
        if n is None:
            return list(zip(self._bid_prices[::-1], self._bid_sizes[::-1], strict=True))
        return list(zip(self._bid_prices[: -n - 1 : -1], self._bid_sizes[: -n - 1 : -1], strict=True))

    def ask_levels(self, n: int | None = None) -> list[Level]:
        """Asks best first (ascending), at most ``n``."""
        if n is None:
            return list(zip(self._ask_prices, self._ask_sizes, strict=True))
        return list(zip(self._ask_prices[:n], self._ask_sizes[:n], strict=True))

    def top_texts(
        self, n: int, rule: object, make: Callable[[Decimal, Decimal], str], style: TextStyle | None = None
    ) -> tuple[list[str], list[str]]:
        """The best ``n`` bids' and asks' texts, best first, each ``make(price, size)`` of its level, made
        once and kept until the level changes. ``rule`` names ``make``: texts made by another are dropped.
        ``style`` says what ``make`` makes, so that C (``cex/_speedups.c`` ``top_texts``) makes the same text
        where it can: (0, None, None) OKX's ``price:size``, (1, price decimals, qty decimals) Kraken's digits;
        ``make`` is still called for the levels C leaves (exponents, other precisions)."""
        if rule != self._text_of:
            self._bid_texts = [None] * len(self._bid_prices)
            self._ask_texts = [None] * len(self._ask_prices)
            self._text_of = rule
        if style is not None and _top_texts is not None:
            code, price_decimals, qty_decimals = style
            bid_args = (self._bid_prices, self._bid_sizes, self._bid_texts, n, True)
            ask_args = (self._ask_prices, self._ask_sizes, self._ask_texts, n, False)
            return (
                _top_texts(*bid_args, code, price_decimals, qty_decimals, make),
                _top_texts(*ask_args, code, price_decimals, qty_decimals, make),
            )
        texts, prices, sizes = self._bid_texts, self._bid_prices, self._bid_sizes
        start = max(len(prices) - n, 0)
        for i in range(start, len(prices)):
            if texts[i] is None:
                texts[i] = make(prices[i], sizes[i])
        bids: list[str] = texts[start:][::-1]  # type: ignore[assignment]  # all made just above
        texts, prices, sizes = self._ask_texts, self._ask_prices, self._ask_sizes
        for i in range(min(n, len(prices))):
            if texts[i] is None:
                texts[i] = make(prices[i], sizes[i])
        asks: list[str] = texts[:n]  # type: ignore[assignment]
        return bids, asks

    def snapshot(self, exchange: str, symbol: str, atom_timestamp: int, depth: int | None = None,
                 event_timestamp: int | None = None) -> BookSnapshot:  # fmt: skip
        return BookSnapshot(
            exchange=exchange,
            symbol=symbol,
            bids=tuple(self.bid_levels(depth)),
            asks=tuple(self.ask_levels(depth)),
            sequence=self.sequence,
            event_timestamp=event_timestamp,
            atom_timestamp=atom_timestamp,
        )


def _refuse_unsearchable(price: Decimal) -> None:
    """What C's ``apply_side`` refuses: a price whose double, the search key, is not finite (beyond
    ~1.8e308, NaN); a snapshot's keys are made on first use, so such a level failed every later C search
    reaching it. Refused before it enters the book, on both paths (``adjusted``: no ``float`` below 1e308)."""
    if isinstance(price, Decimal) and price.is_finite() and price.adjusted() < 308:
        return
    if not isfinite(float(price)):
        raise ArithmeticError(f"not a finite price: {price!r}")


def _sorted_side(levels: Iterable[Level]) -> tuple[list[Decimal], list[Decimal]]:
    """A snapshot side as ascending (prices, sizes). Exchanges send it in order (asks ascending, bids
    descending): ``sort`` sees one run and only compares neighbours. A price twice (never seen, but possible)
    takes the dict path: the last non-zero size wins. In C when built (``ordered_side``: one pass, one
    ``Decimal`` compare per neighbour), for a side in strict order."""
    if _ordered_side is not None:
        levels = levels if isinstance(levels, list | tuple) else list(levels)  # read twice below, maybe
        ordered_side = _ordered_side(levels)
        if ordered_side is not None:
            return ordered_side
    ordered = sorted([level for level in levels if level[1]], key=_PRICE)
    prices = [price for price, _ in ordered]
    if any(map(eq, prices, prices[1:])):
        merged = dict(ordered)  # stable sort: the last of equal prices is the last given
        prices = sorted(merged)
        return prices, [merged[price] for price in prices]
    return prices, [size for _, size in ordered]


class L3Book:
    """Orders by id, grouped per price level in arrival order (time priority); ``level`` gives L2."""

    __slots__ = ("asks", "bids", "orders", "sequence", "valid")

    def __init__(self) -> None:
        self.orders: dict[str, tuple[Side, Decimal, Decimal]] = {}
        self.bids: SortedDict = SortedDict()  # price -> {order_id: size}
        self.asks: SortedDict = SortedDict()
        self.sequence: int | None = None
        self.valid = False

    def clear(self) -> None:
        self.orders.clear()
        self.bids.clear()
        self.asks.clear()
        self.sequence = None
        self.valid = False

    def add(self, order_id: str, side: Side, price: Decimal, size: Decimal) -> None:
        if order_id in self.orders:
            self.remove(order_id)
        self.orders[order_id] = (side, price, size)
        levels = self.bids if side == "bid" else self.asks
        queue = levels.get(price)
        if queue is None:
            queue = levels[price] = {}
        queue[order_id] = size

    def change(self, order_id: str, size: Decimal) -> bool:
        """New remaining size (0 removes); False when the order is unknown."""
        entry = self.orders.get(order_id)
        if entry is None:
            return False
        if not size:
            self.remove(order_id)
            return True
        side, price, _ = entry
        self.orders[order_id] = (side, price, size)
        (self.bids if side == "bid" else self.asks)[price][order_id] = size
        return True

    def remove(self, order_id: str) -> bool:
        entry = self.orders.pop(order_id, None)
        if entry is None:
            return False
        side, price, _ = entry
        levels = self.bids if side == "bid" else self.asks
        queue = levels[price]
        del queue[order_id]
        if not queue:
            del levels[price]
        return True

    def level(self, side: Side, price: Decimal) -> Decimal:
        queue = (self.bids if side == "bid" else self.asks).get(price)
        return sum(queue.values(), _ZERO) if queue else _ZERO

    def crossed(self) -> bool:
        return bool(self.bids) and bool(self.asks) and self.bids.peekitem(-1)[0] >= self.asks.peekitem(0)[0]

    # the L2 view, so an L3 book answers where an L2 one is read (the API's live book, periodic snapshots)
    def bid_levels(self, n: int | None = None) -> list[Level]:
        return self.to_l2().bid_levels(n)

    def ask_levels(self, n: int | None = None) -> list[Level]:
        return self.to_l2().ask_levels(n)

    def snapshot(self, exchange: str, symbol: str, atom_timestamp: int, depth: int | None = None,
                 event_timestamp: int | None = None) -> BookSnapshot:  # fmt: skip
        return self.to_l2().snapshot(exchange, symbol, atom_timestamp, depth, event_timestamp)

    def to_l2(self) -> L2Book:
        book = L2Book()
        book.load(
            ((p, sum(q.values(), _ZERO)) for p, q in self.bids.items()),
            ((p, sum(q.values(), _ZERO)) for p, q in self.asks.items()),
            self.sequence,
        )
        book.valid = self.valid
        return book


def levels_of(rows: Iterable[Iterable[str]]) -> Iterator[Level]:
    """``[[price, size, ...], ...]`` (exchange strings) -> (Decimal, Decimal) levels."""
    for row in rows:
        it = iter(row)
        yield Decimal(next(it)), Decimal(next(it))


def _row_levels_python(
    rows: Iterable[Sequence[object]], cache: dict[str, Decimal] | None, keys: Keys | None = None
) -> list[Level]:
    """``row_levels`` without the C extension: the same levels, the same cache; no keys (the Python search
    compares Decimals)."""
    out = []
    for row in rows:
        if not isinstance(row, list | tuple) or len(row) < 2:  # a string "12" would be [1, 2]
            raise ValueError(f"a book row is [price, size, ...], not {row!r}")
        pair = []
        for text in row[0], row[1]:
            if type(text) is not str:
                raise TypeError(f"a price or size is a decimal string, not {type(text).__name__}")
            value = None if cache is None else cache.get(text)
            if value is None:
                value = Decimal(text)
                if cache is not None:
                    if len(cache) >= 65_536:
                        cache.clear()
                    cache[text] = value
            pair.append(value)
        out.append((pair[0], pair[1]))
    return out


def row_levels(
    rows: Iterable[Sequence[object]], cache: dict[str, Decimal] | None, keys: Keys | None = None
) -> list[Level]:
    """``[[price, size, ...], ...]`` (exchange strings, as OKX and Binance send a book side) ->
    ``(Decimal, Decimal)`` levels, exactly ``Decimal(text)`` of each. In C when built (``cex/_speedups.c``):
    a plain decimal's ``Decimal`` is made from its digits directly (~0.04 µs, ``Decimal(text)`` ~0.3 µs,
    a dict lookup of the text ~0.05 µs), so ``cache`` is not used there; without C, or where CPython's
    ``Decimal`` layout did not pass the check at import, each text's ``Decimal`` is taken from ``cache``
    (text -> Decimal, one per exchange connection, cleared at 65,536 entries) when seen before; ``None``: no
    cache (a REST snapshot's thousands of texts, mostly seen once). C also appends each price's search key
    to ``keys`` when given: the double nearest the price (what ``float`` of the ``Decimal`` gives), None
    where C did not make it (``L2Book.update`` then reads it from the price's ``Decimal``, also in C)."""
    if _row_levels is None:
        return _row_levels_python(rows, cache, keys)
    if keys is None:
        return _row_levels(rows, cache)
    return _row_levels(rows, cache, keys)
