"""Message -> records for the channels the book tests do not cover.

Recorded: Kraken v1 trades (``KRAKEN.ws.48.0``, 10 trades) and tickers (``KRAKEN.ws.49.0``, 18), put into
v2 envelopes here (constructed; the values are the recorded text). Constructed from the exchanges'
documentation: OKX ``funding-rate`` / ``open-interest`` frames, Binance USDⓈ-M ``depthUpdate`` with ``pu``
and ``markPriceUpdate``. Each field is compared with the frame's own text.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from cex.exchanges.binance import BinanceFutures
from cex.exchanges.bybit import Bybit
from cex.exchanges.kraken import Kraken
from cex.exchanges.okx import Okx
from cex.sync import BookSync, Resync
from core.errors import ConfigError
from devnet.exchanges import recording
from devnet.exchanges.kraken_v2 import iso, v2_symbol
from records.cex import FundingRate, OpenInterest, Ticker, Trade

pytestmark = pytest.mark.unit


def _v1_frames(name: str) -> list[list[object]]:
    frames = [json.loads(p) for p in recording.received(recording.FIXTURES / "kraken" / name)]
    return [f for f in frames if isinstance(f, list)]


def test_kraken_v2_trades_from_the_recorded_trades() -> None:
    kraken = Kraken()
    seen = 0
    for channel_id, rows, _, pair in _v1_frames("KRAKEN.ws.48.0"):  # type: ignore[misc]
        for n, (price, volume, stamp, side, _, _) in enumerate(rows):  # type: ignore[arg-type]
            frame = (
                f'{{"channel":"trade","type":"update","data":[{{"symbol":"{v2_symbol(pair)}",'
                f'"side":"{"buy" if side == "b" else "sell"}","price":{price},"qty":{volume},'
                f'"ord_type":"limit","trade_id":{channel_id * 1000 + n},"timestamp":"{iso(stamp)}"}}]}}'
            )
            (got,) = kraken.parse(frame, 5).records
            assert isinstance(got, Trade)
            assert got.symbol == v2_symbol(pair).replace("/", "-")
            assert (format(got.price, "f"), format(got.size, "f")) == (price, volume)
            assert got.taker_side == ("buy" if side == "b" else "sell")
            whole, _, frac = stamp.partition(".")
            assert got.event_timestamp == int(whole) * 1000 + int(frac[:3])
            seen += 1
    assert seen == 10


def test_kraken_v2_tickers_from_the_recorded_tickers() -> None:
    kraken = Kraken()
    seen = 0
    for _, data, _, pair in _v1_frames("KRAKEN.ws.49.0"):  # type: ignore[misc]
        a, b = data["a"], data["b"]  # type: ignore[index]
        frame = (
            f'{{"channel":"ticker","type":"update","data":[{{"symbol":"{v2_symbol(pair)}","bid":{b[0]},'
            f'"bid_qty":{b[2]},"ask":{a[0]},"ask_qty":{a[2]},"last":{data["c"][0]}}}]}}'  # type: ignore[index]
        )
        (got,) = kraken.parse(frame, 5).records
        assert isinstance(got, Ticker)
        assert [format(v, "f") for v in (got.bid_price, got.bid_size, got.ask_price, got.ask_size)] == [  # type: ignore[arg-type]
            b[0],
            b[2],
            a[0],
            a[2],
        ]
        seen += 1
    assert seen == 18


def test_okx_funding_and_open_interest() -> None:
    okx = Okx()
    funding = (
        '{"arg":{"channel":"funding-rate","instId":"BTC-USDT-SWAP"},"data":[{"fundingRate":"0.0001515",'
        '"fundingTime":"1700000000000","instId":"BTC-USDT-SWAP","instType":"SWAP","method":"next_period",'
        '"nextFundingRate":"0.00029","nextFundingTime":"1700028800000","ts":"1699990000000"}]}'
    )
    (rate,) = okx.parse(funding, 9).records
    assert rate == FundingRate(
        "okx",
        "BTC-USDT-PERP",
        Decimal("0.0001515"),
        Decimal("0.00029"),
        None,
        1700000000000,
        1699990000000,
        9,
    )
    oi = (
        '{"arg":{"channel":"open-interest","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP",'
        '"instType":"SWAP","oi":"5000","oiCcy":"555.55","ts":"1699990000001"}]}'
    )
    assert okx.parse(oi, 9).records == [
        OpenInterest("okx", "BTC-USDT-PERP", Decimal("5000"), 1699990000001, 9)
    ]
    assert okx.to_exchange_symbol("BTC-USDT-PERP") == "BTC-USDT-SWAP"
    sub = json.loads(okx.subscribe(["BTC-USDT", "BTC-USDT-PERP"], ["funding", "book"])[0])
    assert sub["args"] == [
        {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
        {"channel": "books", "instId": "BTC-USDT"},
        {"channel": "books", "instId": "BTC-USDT-SWAP"},
    ]


def _futures_depth(first: int, last: int, prev: int, bid: str = "100") -> str:
    data = {
        "e": "depthUpdate",
        "E": 1,
        "T": 1,
        "s": "BTCUSDT",
        "U": first,
        "u": last,
        "pu": prev,
        "b": [[bid, "1"]],
        "a": [["101", "1"]],
    }
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": data})


def test_binance_futures_pu_rule() -> None:
    ex = BinanceFutures(rest_url="http://x")
    assert ex.to_exchange_symbol("BTC-USDT-PERP") == "BTCUSDT"
    assert "btcusdt@markPrice@1s" in ex.url(["BTC-USDT-PERP"], ["book", "funding"])
    sync = BookSync(ex.name, "BTC-USDT-PERP", ex.rule, None, True)
    # buffered before the snapshot (lastUpdateId 100): U <= 100 <= u is the first to apply
    for frame in (_futures_depth(90, 95, 89), _futures_depth(96, 104, 95), _futures_depth(105, 110, 104)):
        (msg,) = ex.parse(frame, 1).books
        assert sync.on_message(msg) == []
    snap = ex.parse_snapshot(
        "BTC-USDT-PERP", b'{"lastUpdateId":100,"E":1,"T":1,"bids":[["99","2"]],"asks":[]}', 1
    )
    out = sync.on_snapshot(snap)
    assert not any(isinstance(p, Resync) for p in out)
    assert (sync.book.sequence, sync.counters.applied, sync.counters.ignored) == (110, 2, 1)
    (gap,) = ex.parse(_futures_depth(112, 120, 111), 1).books  # pu 111 != 110: a lost event
    assert sync.on_message(gap) == [Resync("binance_futures", "BTC-USDT-PERP", "gap", 110)]
    funding = {
        "e": "markPriceUpdate",
        "E": 5,
        "s": "BTCUSDT",
        "p": "30000.10",
        "i": "30001",
        "P": "1",
        "r": "0.00010000",
        "T": 1700028800000,
    }
    (rate,) = ex.parse(json.dumps({"stream": "btcusdt@markPrice@1s", "data": funding}), 3).records
    assert rate == FundingRate(
        "binance_futures",
        "BTC-USDT-PERP",
        Decimal("0.00010000"),
        None,
        Decimal("30000.10"),
        1700028800000,
        5,
        3,
    )


def test_bybit_linear_tickers_merge_deltas_into_whole_records() -> None:
    # constructed from Bybit's v5 documentation: a snapshot, then a delta carrying only what changed
    bybit = Bybit()
    bybit.to_exchange_symbol("BTC-USDT-PERP")
    assert bybit.url(["BTC-USDT-PERP"], ["ticker"]).endswith("/v5/public/linear")
    snapshot = {
        "topic": "tickers.BTCUSDT",
        "type": "snapshot",
        "ts": 1,
        "cs": 1,
        "data": {
            "symbol": "BTCUSDT",
            "bid1Price": "30000.1",
            "bid1Size": "2.5",
            "ask1Price": "30000.2",
            "ask1Size": "1",
            "fundingRate": "0.0001",
            "nextFundingTime": "1700028800000",
            "openInterest": "5000.5",
            "markPrice": "30000",
        },
    }
    delta = {
        "topic": "tickers.BTCUSDT",
        "type": "delta",
        "ts": 2,
        "cs": 2,
        "data": {"symbol": "BTCUSDT", "bid1Price": "30000.0", "openInterest": "5001"},
    }
    first = bybit.parse(json.dumps(snapshot), 7).records
    assert first == [
        Ticker(
            "bybit", "BTC-USDT-PERP", Decimal("30000.1"), Decimal("2.5"), Decimal("30000.2"), Decimal(1), 1, 7
        ),
        FundingRate("bybit", "BTC-USDT-PERP", Decimal("0.0001"), None, Decimal(30000), 1700028800000, 1, 7),
        OpenInterest("bybit", "BTC-USDT-PERP", Decimal("5000.5"), 1, 7),
    ]
    second = bybit.parse(json.dumps(delta), 8).records
    assert second == [
        Ticker(
            "bybit", "BTC-USDT-PERP", Decimal("30000.0"), Decimal("2.5"), Decimal("30000.2"), Decimal(1), 2, 8
        ),
        OpenInterest("bybit", "BTC-USDT-PERP", Decimal("5001"), 2, 8),
    ]
    with pytest.raises(ConfigError):
        bybit.url(["BTC-USDT-PERP", "BTC-USDT"], ["book"])
