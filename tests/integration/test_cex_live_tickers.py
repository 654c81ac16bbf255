"""Tickers from the generated live markets (``devnet/exchanges/live.py``), the demo's CEX side: Binance
``bookTicker``, OKX ``tickers`` and Kraken v2 ``ticker`` through ``cex.feed``.

Data: constructed (a generated market). Truth: the book a consumer rebuilds from the published snapshot and
deltas (plain dicts, ``tests/cex_harness.ConsumerBook``), which the feed tests check against the market:
each ticker follows the book change that moved the top, so at a ticker the consumer's best bid and ask,
price and size, must be the ticker's exactly.
"""

from __future__ import annotations

import asyncio

import pytest

from cex.exchanges import EXCHANGES
from cex.feed import FeedHandler
from core.retry import RetryPolicy
from devnet.exchanges.live import live_server
from records.cex import Ticker
from tests.cex_harness import ConsumerBook

pytestmark = pytest.mark.integration

SYMBOLS = ["ETH-USDT", "BTC-USDT"]
CHECKED = 15  # tickers compared per symbol


@pytest.mark.parametrize("exchange", ["binance", "okx", "kraken"])
async def test_live_markets_send_tickers_equal_to_the_top_of_the_book(exchange: str) -> None:
    server = live_server(exchange, SYMBOLS, seed=3, interval=0.005)
    await server.start()
    venue = EXCHANGES[exchange](ws_url=server.url, rest_url=server.rest_url)
    feed = FeedHandler(venue, SYMBOLS, ["book", "ticker"], stale_after=5,
                       retry=RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.2))  # fmt: skip
    books = {s: ConsumerBook(depth=venue.book_depth) for s in SYMBOLS}
    checked = dict.fromkeys(SYMBOLS, 0)
    task = asyncio.ensure_future(feed.run())
    try:
        async with asyncio.timeout(30):
            while min(checked.values()) < CHECKED:
                item = await feed.queue.get()
                symbol = getattr(item, "symbol", None)
                if symbol not in books:
                    continue
                book = books[symbol]
                if not isinstance(item, Ticker):
                    book.apply(item)
                    continue
                assert item.exchange == exchange
                if not book.valid:
                    continue  # Binance: tickers arrive while the REST snapshot is fetched
                bids, asks = book.levels()
                assert (item.bid_price, item.bid_size) == bids[0]
                assert (item.ask_price, item.ask_size) == asks[0]
                checked[symbol] += 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
