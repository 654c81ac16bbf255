"""A frame of the right JSON but the wrong shape (a list where an object is expected, a number where a
symbol string is) is a counted, logged skip in the feed, never an exception out of the frame handler
(which would end the connection's read loop). Frames constructed from each exchange's message shape."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cex.exchange import Exchange
from cex.exchanges.binance import Binance
from cex.exchanges.kraken import Kraken
from cex.feed import FeedHandler

pytestmark = pytest.mark.unit

_BINANCE_TRADE = (
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1633998512568,"s":"BTCUSDT","t":7,'
    '"p":"57000.10","q":"0.0100","b":1,"a":2,"T":1633998512567,"m":true,"M":true}}'
)
_KRAKEN_TRADE = (
    '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":57000.1,'
    '"qty":0.01,"ord_type":"market","trade_id":7,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
)


def _binance() -> Exchange:
    exchange = Binance()
    exchange.to_exchange_symbol("BTC-USDT")
    return exchange


@pytest.mark.parametrize(
    ("make", "garbled", "clean"),
    [
        (_binance, '{"data":[1]}', _BINANCE_TRADE),
        (_binance, '{"stream":"btcusdt@trade","data":[1]}', _BINANCE_TRADE),
        (Kraken, _KRAKEN_TRADE.replace('"BTC/USD"', "5"), _KRAKEN_TRADE),
    ],
    ids=["binance-data-list", "binance-stream-data-list", "kraken-symbol-number"],
)
def test_a_frame_of_the_wrong_shape_is_a_counted_skip(
    make: type[Exchange], garbled: str, clean: str, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = make()

    async def run() -> tuple[list[object], int]:
        feed = FeedHandler(exchange, ["BTC-USDT" if exchange.name == "binance" else "BTC-USD"], ["trades"])
        conn = feed.conns[0]
        for frame in (
            clean,
            garbled,
            clean.replace('"trade_id":7', '"trade_id":8').replace('"t":7', '"t":8'),
        ):
            await feed.on_frame(conn, None, frame)
        return [feed.queue.get_nowait() for _ in range(feed.queue.qsize())], conn.counters.malformed

    with caplog.at_level(logging.WARNING, logger="cex.feed"):
        records, malformed = asyncio.run(run())
    assert [r.trade_id for r in records] == ["7", "8"]  # type: ignore[attr-defined]
    assert malformed == 1
    assert any("malformed frame" in message for message in caplog.messages)
