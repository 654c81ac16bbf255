"""A string with a NUL character (``\\u0000`` in the JSON) cannot be stored in Postgres ``text``: one such
trade id or order id would fail the COPY of its whole batch. The feed refuses the message at parse time,
counts it as malformed and logs it; the messages around it go through. Frames constructed in each
exchange's current message shape (a recorded message with its id changed)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cex.exchange import Exchange, MalformedMessage, refuse_nul
from cex.exchanges.binance import Binance
from cex.exchanges.coinbase_exchange import CoinbaseExchange
from cex.exchanges.kraken import Kraken
from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from records.cex import Trade

pytestmark = pytest.mark.unit

_BINANCE = (
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1633998512568,"s":"BTCUSDT","t":%s,'
    '"p":"57000.10","q":"0.0100","b":1,"a":2,"T":1633998512567,"m":true,"M":true}}'
)
_OKX = (
    '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":%s,'
    '"px":"57000.1","sz":"0.01","side":"buy","ts":"1633998512567"}]}'
)
_KRAKEN = (
    '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":57000.1,'
    '"qty":0.01,"ord_type":"market","trade_id":%s,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
)


def _binance() -> Exchange:
    exchange = Binance()
    exchange.to_exchange_symbol("BTC-USDT")
    return exchange


@pytest.mark.parametrize(
    ("make", "template"),
    [(_binance, _BINANCE), (Okx, _OKX), (Kraken, _KRAKEN)],
    ids=["binance", "okx", "kraken"],
)
def test_a_trade_id_with_nul_is_a_counted_logged_skip(
    make: type[Exchange], template: str, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = make()
    clean, bad, look_alike = template % '"7"', template % '"7\\u0000"', template % '"7\\\\u0000"'
    assert [type(r) for r in exchange.parse(bad, 1).records] == [Trade]  # parsed: the id holds the NUL
    with pytest.raises(MalformedMessage, match="NUL"):
        refuse_nul(bad, exchange.parse(bad, 1))
    with pytest.raises(MalformedMessage, match="NUL"):
        refuse_nul(bad.encode(), exchange.parse(bad.encode(), 1))

    async def run() -> tuple[list[object], int]:
        feed = FeedHandler(exchange, ["BTC-USDT"], ["trades"])
        conn = feed.conns[0]
        for frame in (clean, bad, look_alike):
            await feed.on_frame(conn, None, frame)
        return [feed.queue.get_nowait() for _ in range(feed.queue.qsize())], conn.counters.malformed

    with caplog.at_level(logging.WARNING, logger="cex.feed"):
        records, malformed = asyncio.run(run())
    # the clean trade and the escaped backslash (an id spelled `7\u0000`, six characters, no NUL) go through
    assert [r.trade_id for r in records] == ["7", "7\\u0000"]  # type: ignore[attr-defined]
    assert malformed == 1
    assert any("NUL" in message for message in caplog.messages)


def test_an_order_id_with_nul_in_a_coinbase_l3_message_is_refused() -> None:
    exchange = CoinbaseExchange()
    frame = (
        '{"type":"open","side":"sell","price":"57000.10","order_id":"d50ec984\\u0000","remaining_size":"0.5",'
        '"product_id":"BTC-USD","sequence":10,"time":"2021-10-12T00:28:32.312000Z"}'
    )
    parsed = exchange.parse(frame, 1)
    with pytest.raises(MalformedMessage, match="NUL"):
        refuse_nul(frame, parsed)
    refuse_nul(frame.replace("\\u0000", ""), exchange.parse(frame.replace("\\u0000", ""), 1))  # no error
