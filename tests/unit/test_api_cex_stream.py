"""The CEX side of the websocket: the seed's subscribe form mapped onto the channels, CEX filters validated
and normalised, live-only channels refusing a replay, the hub's fan-out (filters, held books, resyncs), the
merged trade shape, and the REST time parameter. Records are constructed here; expected values are worked
out by hand."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from api.errors import ApiError
from api.routes.cex import parse_moment
from api.stream.cex import CexFanOut, CexSubscription
from api.stream.cex_listener import CexNotifyReader
from api.stream.events import Ref
from api.stream.frames import Message, text_of
from api.stream.hub import Client, Hub, Limits
from api.stream.protocol import Code, ProtocolError, Subscribe, parse
from cex.dispatch import RawFrame
from records.cex import BookDelta, BookSnapshot, Trade
from records.chain import Block, DexTrade
from sinks import merged_trades

pytestmark = pytest.mark.unit

WETH = "0x" + "c0" * 20  # higher address: the quote
USDC = "0x" + "a0" * 20  # lower address: the base (token0)


def sub(doc: dict[str, object]) -> Subscribe:
    message = parse(orjson.dumps({"op": "subscribe", **doc}), 7)
    assert isinstance(message, Subscribe)
    return message


def code_of(doc: dict[str, object]) -> tuple[Code, str]:
    with pytest.raises(ProtocolError) as err:
        parse(orjson.dumps({"op": "subscribe", **doc}), 1)
    return err.value.code, err.value.message


@pytest.mark.parametrize(
    ("feed", "channel"),
    [
        ("trades", "cex_trades"),
        ("lob", "cex_book"),
        ("ticker", "cex_ticker"),
        ("ohlcv-m1", "cex_candles"),
        ("funding", "cex_funding"),
        ("open_interest", "cex_open_interest"),
    ],
)
def test_seed_form_maps_onto_the_channel_with_an_exchange_filter(feed: str, channel: str) -> None:
    spec = sub({"exchange": "Binance", "feed": feed, "symbol": "btc-usdt"})
    assert spec.channel.name == channel and spec.channel.live_only
    assert spec.filters == {"exchange": frozenset({"binance"}), "symbol": frozenset({"BTC-USDT"})}
    assert spec.id == "7"


@pytest.mark.parametrize(
    ("doc", "code", "words"),
    [
        (
            {"exchange": "binance", "feed": "raw", "symbol": "BTC-USDT"},
            Code.BAD_FILTER,
            "(filters: exchange)",
        ),
        ({"exchange": "binance", "feed": "l3"}, Code.UNKNOWN_CHANNEL, "unknown feed 'l3'"),
        ({"feed": "trades"}, Code.BAD_MESSAGE, "needs 'exchange'"),
        ({"exchange": "okx", "feed": "trades", "channel": "cex_trades"}, Code.BAD_MESSAGE, "not both"),
        ({"channel": "cex_trades", "from_block": 5}, Code.BAD_CURSOR, "live only"),
        ({"channel": "cex_book", "finality": "confirmed"}, Code.BAD_CURSOR, "live only"),
        ({"channel": "trades", "from": "abc"}, Code.BAD_CURSOR, "live only"),
        ({"channel": "cex_trades", "exchange": "bin ance"}, Code.BAD_FILTER, "lower-case name"),
        ({"channel": "cex_trades", "symbol": ["BTC-USDT", 5]}, Code.BAD_FILTER, "symbol"),
        ({"channel": "cex_trades", "symbol": []}, Code.BAD_FILTER, "1 to 100 values"),
        ({"channel": "cex_trades", "pool": "0x" + "00" * 20}, Code.BAD_FILTER, "unknown field(s) pool"),
        ({"channel": "trades", "pool": "0x12"}, Code.BAD_FILTER, "0x address"),
        ({"channel": "cex_trade"}, Code.UNKNOWN_CHANNEL, "cex_trades"),
    ],
)
def test_bad_cex_subscriptions_get_their_documented_code(
    doc: dict[str, object], code: Code, words: str
) -> None:
    got, message = code_of(doc)
    assert got == code and words in message, message


def test_merged_trades_filters_by_venue_symbol_and_pool() -> None:
    spec = sub(
        {"channel": "trades", "venue": ["OKX", "uniswap-v2"], "symbol": "usdc-weth", "pool": "0x" + "A0" * 20}
    )
    assert spec.filters == {
        "venue": frozenset({"okx", "uniswap-v2"}),
        "symbol": frozenset({"USDC-WETH"}),
        "pool": frozenset({USDC}),
    }


class ListClient:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    def offer(self, message: Message) -> None:
        self.sent.append(orjson.loads(text_of(message)))

    def data(self) -> list[tuple[object, object]]:
        return [(m["type"], m["data"]) for m in self.sent if "type" in m]


def trade(symbol: str, trade_id: str, price: str = "100.50") -> Trade:
    return Trade("okx", symbol, Decimal(price), Decimal("0.010"), "buy", trade_id, None, None, 1_000, 2_000)


def delta(side: str, price: str, size: str, sequence: int) -> BookDelta:
    return BookDelta("okx", "BTC-USDT", side, Decimal(price), Decimal(size), None, sequence, 5, 6)


class Resync:
    def __init__(self, reason: str | None) -> None:
        self.exchange, self.symbol, self.reason, self.sequence = "okx", "BTC-USDT", reason, 9


def test_fan_out_filters_and_keeps_books_for_late_subscribers() -> None:
    fan = CexFanOut()
    eth, btc, books = ListClient(), ListClient(), ListClient()
    fan.add(CexSubscription(sub({"channel": "cex_trades", "symbol": "ETH-USDT", "id": "e"}), eth))
    fan.add(CexSubscription(sub({"channel": "trades", "venue": "okx", "id": "m"}), btc))
    fan.add(CexSubscription(sub({"channel": "cex_book", "id": "b"}), books))
    snap = BookSnapshot(
        "okx", "BTC-USDT", ((Decimal("99"), Decimal("1.0")),), ((Decimal("101"), Decimal("2")),), 3, 4, 5
    )
    fan.publish([trade("ETH-USDT", "1"), trade("BTC-USDT", "2"), snap, delta("bid", "99", "0", 4),
                 delta("ask", "100.5", "0.25", 5), Resync("gap")])  # fmt: skip
    expected_trade = {
        "exchange": "okx", "symbol": "ETH-USDT", "price": "100.50", "size": "0.010", "taker_side": "buy",
        "trade_id": "1", "maker_order_id": None, "taker_order_id": None, "event_timestamp": 1000,
        "atom_timestamp": 2000,
    }  # fmt: skip
    assert eth.data() == [("trade", expected_trade)]
    assert [d["trade_id"] for _, d in btc.data()] == ["1", "2"]  # type: ignore[index]
    kinds = [k for k, _ in books.data()]
    assert kinds == ["book_snapshot", "book_delta", "book_delta", "resync"]
    assert books.data()[0][1] == {"exchange": "okx", "symbol": "BTC-USDT", "bids": [["99", "1.0"]],
                                  "asks": [["101", "2"]], "sequence": 3, "event_timestamp": 4,
                                  "atom_timestamp": 5, "engine_sequence": None, "engine_timestamp": None,
                                  "valid": True}  # fmt: skip
    assert books.data()[-1][1] == {"exchange": "okx", "symbol": "BTC-USDT", "reason": "gap", "sequence": 9,
                                   "valid": False}  # fmt: skip

    late = ListClient()  # while the book is invalid: told so
    fan.add(CexSubscription(sub({"channel": "cex_book", "id": "late"}), late))
    assert [k for k, _ in late.data()] == ["resync"]
    fan.publish([BookSnapshot("okx", "BTC-USDT", (), ((Decimal("7"), Decimal("1")),), 10, 11, 12),
                 delta("bid", "6.5", "3", 11)])  # fmt: skip
    later = ListClient()  # now: a snapshot of the held book (the snapshot plus the delta)
    fan.add(CexSubscription(sub({"channel": "cex_book", "symbol": "BTC-USDT", "id": "x"}), later))
    held = {
        "exchange": "okx", "symbol": "BTC-USDT", "bids": [["6.5", "3"]], "asks": [["7", "1"]], "sequence": 11,
        "event_timestamp": 5, "atom_timestamp": 6, "engine_sequence": None, "engine_timestamp": None,
        "valid": True,
    }  # fmt: skip
    assert later.data() == [("book_snapshot", held)]
    assert later.sent[-1] == {"event": "live", "id": "x"}


def dex_trade(bought: str, sold: str, amount_bought: str, amount_sold: str) -> DexTrade:
    symbols = {USDC: "USDC", WETH: "WETH"}
    price = Decimal(amount_sold) / Decimal(amount_bought)
    taker = "0x" + "44" * 20
    return DexTrade(19_000_000, 1_700_000_000, "0x" + "11" * 32, "0x" + "22" * 32, 3, 17, "uniswap", "2",
                    "uniswap-v2", "0x" + "33" * 20, taker, None, bought, sold, symbols[bought], symbols[sold],
                    0, 0, Decimal(amount_bought), Decimal(amount_sold), price, taker, None)  # fmt: skip


def test_merged_shape_of_a_dex_trade_is_quote_per_base_of_the_pool_order() -> None:
    # the taker buys 2 WETH (the quote) for 4000 USDC (the base): a sell of 4000 USDC at 0.0005 WETH each
    sell = merged_trades.dex_trade(dex_trade(WETH, USDC, "2", "4000"))
    assert sell == {"venue": "uniswap-v2", "symbol": "USDC-WETH", "pool": "0x" + "33" * 20, "price": "0.0005",
                    "size": "4000", "side": "sell", "time": 1_700_000_000_000,
                    "trade_id": "0x" + "22" * 32 + ":17", "block_number": 19_000_000}  # fmt: skip
    # the taker buys 3000 USDC (the base) for 1.5 WETH: a buy of 3000 at 0.0005
    buy = merged_trades.dex_trade(dex_trade(USDC, WETH, "3000", "1.5"))
    assert (buy["symbol"], buy["side"], buy["price"], buy["size"]) == ("USDC-WETH", "buy", "0.0005", "3000")


def test_merged_shape_of_a_cex_trade() -> None:
    assert merged_trades.cex_trade(trade("BTC-USDT", "42")) == {
        "venue": "okx", "symbol": "BTC-USDT", "pool": None, "price": "100.50", "size": "0.010", "side": "buy",
        "time": 1_000, "trade_id": "42", "block_number": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1700000000", 1_700_000_000_000_000),
        ("1700000000.25", 1_700_000_000_250_000),
        ("1700000000.000001", 1_700_000_000_000_001),
        ("2023-11-14T22:13:20.5Z", 1_700_000_000_500_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000_000),
    ],
)
def test_moments_are_microseconds(text: str, micros: int) -> None:
    assert parse_moment("at", text) == micros


@pytest.mark.parametrize("text", ["tomorrow", "1700000000.1234567", "-5", "99999999999999999", "1e9"])
def test_bad_moments_are_400s_naming_the_parameter(text: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_moment("at", text)
    assert err.value.status == 400 and err.value.detail.startswith("at: ")


class NoStore:
    """Live-only channels never read storage."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"a live-only subscription read the store ({name})")


def drain(client: Client) -> list[dict[str, object]]:
    out = []
    while not client.queue.empty():
        out.append(orjson.loads(text_of(client.queue.get_nowait())))
    return out


def test_hub_sends_a_blocks_dex_trades_and_its_reorgs_to_the_merged_channel() -> None:
    hub = Hub(NoStore(), confirmations=3, limits=Limits(max_subscriptions=2))  # type: ignore[arg-type]
    client = hub.connect("test")
    client.subscribe(sub({"channel": "trades", "symbol": "usdc-weth", "id": "m"}))
    client.subscribe(sub({"channel": "cex_trades", "id": "m"}))  # the id is taken
    client.subscribe(sub({"channel": "cex_book", "id": "b"}))
    client.subscribe(sub({"channel": "cex_ticker", "id": "t"}))  # over the cap of 2
    first = [m.get("code") or m.get("event") for m in drain(client)]
    assert first == ["subscribed", "live", int(Code.DUPLICATE_ID), "subscribed", "live",
                     int(Code.TOO_MANY_SUBSCRIPTIONS)]  # fmt: skip
    trade = dex_trade(WETH, USDC, "2", "4000")
    b = Block(19_000_000, trade.block_hash, "0x" + "10" * 32, None, None, None, None, None, None, None, None,
              None, None, None, 30_000_000, 21_000, None, 1_700_000_000, 1)  # fmt: skip
    hub.publish_blocks([b], {DexTrade: [trade]})
    hub.publish_blocks([b], {DexTrade: [trade]})  # the same block again: not sent twice
    hub.publish_reorg(
        Ref(18_999_999, "0x" + "10" * 32), [trade.block_hash], Ref(19_000_000, "0x" + "99" * 32)
    )
    got = drain(client)
    assert [(m["id"], m["type"]) for m in got] == [("m", "merged_trade"), ("m", "reorg")]
    assert got[0]["data"] == merged_trades.dex_trade(trade)
    assert got[1]["data"] == {
        "common_ancestor": {"number": 18_999_999, "hash": "0x" + "10" * 32},
        "orphaned": [{"number": 19_000_000, "hash": trade.block_hash}],
        "new_head": {"number": 19_000_000, "hash": "0x" + "99" * 32},
    }
    client.unsubscribe("m")
    assert drain(client) == [{"event": "unsubscribed", "id": "m"}]
    hub.publish_blocks([b], {DexTrade: [trade]})
    hub.disconnect(client)
    assert hub.cex.by_channel == {"trades": set(), "cex_book": set()}


@pytest.mark.parametrize(
    "payload",
    [
        "{",
        "[]",
        '{"v": 1, "ranges": {"pg_authid": [1, 2]}, "candles": []}',  # not a CEX table: never read
        '{"v": 1, "ranges": {"cex_trades": [1]}, "candles": []}',
        '{"v": 1, "ranges": {}, "candles": [["okx", "BTC-USDT", "1m"]]}',
        '{"v": 1, "candles": []}',
    ],
)
async def test_a_malformed_cex_notification_is_counted_and_skipped(payload: str) -> None:
    hub = Hub(NoStore(), confirmations=3)  # type: ignore[arg-type]
    reader = CexNotifyReader(NoStore(), hub)  # type: ignore[arg-type]
    await reader.handle(payload)
    assert reader.skipped == 1


def test_seed_raw_feed_is_the_cex_raw_channel_filtered_by_exchange() -> None:
    spec = sub({"exchange": "Binance", "feed": "raw"})
    assert spec.channel.name == "cex_raw" and spec.channel.live_only
    assert spec.filters == {"exchange": frozenset({"binance"})}
    assert sub({"channel": "cex_raw"}).filters == {}


def test_raw_is_refused_where_no_feed_runs() -> None:
    hub = Hub(NoStore(), confirmations=3)  # type: ignore[arg-type]
    client = hub.connect("test")
    client.subscribe(sub({"exchange": "okx", "feed": "raw", "id": "r"}))
    (got,) = drain(client)
    assert got["code"] == int(Code.RAW_UNAVAILABLE) and got["id"] == "r"
    assert "cex.<exchange>.raw" in str(got["message"]) and not hub.cex.raw.wanted


def test_raw_frames_reach_subscribers_of_their_exchange_and_a_slow_one_is_dropped() -> None:
    hub = Hub(NoStore(), confirmations=3, limits=Limits(queue_messages=6))  # type: ignore[arg-type]
    listener = hub.cex.raw.attach()
    assert not listener.wanted  # no subscriber: the feed does nothing per frame
    okx, anyone = hub.connect("okx"), hub.connect("anyone")
    okx.subscribe(sub({"exchange": "okx", "feed": "raw", "id": "r"}))
    anyone.subscribe(sub({"channel": "cex_raw", "id": "all"}))
    assert [m["event"] for m in drain(okx) + drain(anyone)] == ["subscribed", "live"] * 2
    assert listener.wanted
    frames = [
        RawFrame("okx", 0, 10, '{"arg":{"channel":"trades"},"data":[]}'),
        RawFrame("kraken", 1, 11, "not json at all"),
        RawFrame("okx", 1, 12, b"\x00\xff"),
    ]
    for frame in frames:
        listener.raw(frame)
    got = drain(okx)
    assert [(m["id"], m["channel"], m["type"], m["version"]) for m in got] == [("r", "cex_raw", "raw", 1)] * 2
    assert [m["data"] for m in got] == [
        {
            "exchange": "okx",
            "connection": 0,
            "atom_timestamp": 10,
            "frame": '{"arg":{"channel":"trades"},"data":[]}',
        },
        {"exchange": "okx", "connection": 1, "atom_timestamp": 12, "frame": "AP8=", "encoding": "base64"},
    ]
    assert [m["data"]["frame"] for m in drain(anyone)] == [f.frame for f in frames[:2]] + ["AP8="]
    for _ in range(7):  # nobody reads "anyone" or "okx": past 6 queued, each is disconnected
        listener.raw(frames[0])
    assert okx.closed.is_set() and anyone.closed.is_set() and "slow consumer" in str(okx.close_reason)
    assert not listener.wanted and hub.cex.raw.subs == set()
    again = hub.connect("again")
    again.subscribe(sub({"channel": "cex_raw", "id": "x"}))
    again.unsubscribe("x")
    assert [m["event"] for m in drain(again)] == ["subscribed", "live", "unsubscribed"]
    assert not listener.wanted
