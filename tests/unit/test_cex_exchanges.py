"""Exchange modules on recorded real frames: message -> records and books, every book check passed.

Recorded: OKX v5 (2022-05-13, complete), Binance spot depth + REST snapshots + bookTicker (2021-10-12,
complete). Constructed from recorded data: Kraken v2 frames from the recorded v1 frames
(``devnet/exchanges/kraken_v2.py``). Oracles are the exchanges' own numbers: checksums, bookTicker's best
bid/ask at the same update id, the recorded JSON fields.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from cex.exchanges.binance import Binance
from cex.exchanges.kraken import Kraken
from cex.exchanges.okx import Okx
from cex.sync import BookSync, Resync
from devnet.exchanges import kraken_v2, recording
from records.cex import BookDelta, BookSnapshot, Ticker, Trade

pytestmark = pytest.mark.unit


def _okx_frames(fixtures_dir: Path) -> list[str]:
    return recording.received(fixtures_dir / "cex" / "okx" / "OKX.ws.1.0")


def test_okx_books_through_the_module_pass_all_290_checksums(fixtures_dir: Path) -> None:
    okx = Okx()
    syncs: dict[str, BookSync] = {}
    verified = 0
    published: list[object] = []
    for frame in _okx_frames(fixtures_dir):
        for msg in okx.parse(frame, 1).books:
            sync = syncs.setdefault(msg.symbol, BookSync("okx", msg.symbol, okx.rule, okx.verify))
            assert msg.checksum  # the 2022 recordings carry a real one on every frame
            verified += 1
            published.extend(sync.on_message(msg))
    assert verified == 290
    assert sorted(syncs) == ["BTC-USD-220527", "BTC-USDT", "UNI-USD-PERP"]
    assert sum(s.counters.applied for s in syncs.values()) == 287
    assert sum(s.counters.snapshots for s in syncs.values()) == 3
    assert not any(isinstance(p, Resync) for p in published)
    assert all(s.book.valid and not s.book.crossed() for s in syncs.values())
    assert sum(isinstance(p, BookSnapshot) for p in published) == 3


def test_okx_corrupted_checksum_invalidates_and_publishes_nothing(fixtures_dir: Path) -> None:
    okx = Okx()
    sync: BookSync | None = None
    outcome: list[object] = []
    for frame in _okx_frames(fixtures_dir):
        for msg in okx.parse(frame, 1).books:
            if msg.symbol != "BTC-USDT":
                continue
            if sync is None:
                sync = BookSync("okx", msg.symbol, okx.rule, okx.verify)
                sync.on_message(msg)
                continue
            msg.checksum = (msg.checksum or 0) ^ 1
            outcome = sync.on_message(msg)
            break
        if outcome:
            break
    assert sync is not None
    assert outcome == [Resync("okx", "BTC-USDT", "checksum", None)]
    assert not sync.book.valid and sync.counters.checksum_failures == 1


def test_okx_trades_and_tickers_keep_every_recorded_field(fixtures_dir: Path) -> None:
    okx = Okx()
    trades: list[Trade] = []
    tickers: list[Ticker] = []
    expected_trades: list[dict[str, str]] = []
    for frame in _okx_frames(fixtures_dir):
        parsed = okx.parse(frame, 7)
        trades += [r for r in parsed.records if isinstance(r, Trade)]
        tickers += [r for r in parsed.records if isinstance(r, Ticker)]
        raw = json.loads(frame)
        if raw.get("arg", {}).get("channel") == "trades" and "data" in raw:
            expected_trades += raw["data"]
    assert (len(trades), len(tickers)) == (74, 28)  # cryptofeed's callback counts for this file
    for got, raw in zip(trades, expected_trades, strict=True):
        assert got.symbol == raw["instId"].replace("-SWAP", "-PERP")
        assert (format(got.price, "f"), format(got.size, "f")) == (raw["px"], raw["sz"])  # digit for digit
        assert got.taker_side == raw["side"]
        assert (got.trade_id, got.event_timestamp, got.atom_timestamp) == (raw["tradeId"], int(raw["ts"]), 7)
    first = tickers[0]
    assert (first.symbol, first.bid_price, first.bid_size, first.ask_price, first.ask_size) == (
        "BTC-USD-220527", Decimal("30210.4"), Decimal("4"), Decimal("30220.1"), Decimal("3"),
    )  # fmt: skip


def test_okx_sequence_rules_on_constructed_seq_ids() -> None:
    # constructed: today's frames carry seqId/prevSeqId, the 2022 recording does not
    okx = Okx()

    def frame(action: str, prev: int, seq: int, bid: str = "100") -> str:
        level = {"asks": [["101", "1", "0", "1"]], "bids": [[bid, "1", "0", "1"]], "ts": "1", "checksum": 0}
        data = [{**level, "prevSeqId": prev, "seqId": seq}]
        return json.dumps({"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": action, "data": data})

    sync = BookSync("okx", "BTC-USDT", okx.rule, okx.verify)
    (snap,) = okx.parse(frame("snapshot", -1, 10), 1).books
    assert isinstance(sync.on_message(snap)[0], BookSnapshot)
    (update,) = okx.parse(frame("update", 10, 11, "99"), 1).books
    assert [d.price for d in sync.on_message(update) if isinstance(d, BookDelta)] == [
        Decimal(99),
        Decimal(101),
    ]
    (heartbeat,) = okx.parse(frame("update", 11, 11), 1).books
    heartbeat.bids, heartbeat.asks = [], []
    assert sync.on_message(heartbeat) == [] and sync.book.valid
    assert sync.on_message(update) == [] and sync.counters.ignored == 1  # a duplicate
    (gap,) = okx.parse(frame("update", 12, 13), 1).books
    assert sync.on_message(gap) == [Resync("okx", "BTC-USDT", "gap", 11)]
    sync.on_message(snap)
    (reset,) = okx.parse(frame("update", 10, 3), 1).books
    assert sync.on_message(reset) == [Resync("okx", "BTC-USDT", "reset", 10)]


def test_kraken_v2_frames_from_the_recording_pass_all_472_checksums(fixtures_dir: Path) -> None:
    built = kraken_v2.from_v1(fixtures_dir / "cex" / "kraken" / "KRAKEN.ws.50.0.first500lines")
    kraken = Kraken(depth=1000)
    assert kraken.parse(built.instrument_frame(), 1).control
    syncs: dict[str, BookSync] = {}
    verified = 0
    for frame in built.frames:
        for msg in kraken.parse(frame, 1).books:
            sync = syncs.setdefault(
                msg.symbol, BookSync("kraken", msg.symbol, "none", kraken.verify, depth=1000)
            )
            verified += bool(msg.checksum)
            assert not any(isinstance(p, Resync) for p in sync.on_message(msg)), msg.symbol
    assert verified == built.checksums == 472
    assert sorted(syncs) == sorted(built.symbols)
    # the check is real: without the instrument's precisions the text loses digits and checksums fail
    bare = Kraken(depth=1000)
    sync = BookSync("kraken", "x", "none", bare.verify, depth=1000)
    results = [sync.on_message(m) for f in built.frames[:13] for m in bare.parse(f, 1).books]
    assert any(isinstance(p, Resync) and p.reason == "checksum" for out in results for p in out)


Tops = dict[tuple[str, int], tuple[str, str, str, str]]


def _top(sync: BookSync) -> tuple[str, str, str, str]:
    bid, ask = sync.book.best_bid(), sync.book.best_ask()
    assert bid is not None and ask is not None
    return (format(bid[0], "f"), format(bid[1], "f"), format(ask[0], "f"), format(ask[1], "f"))


def _binance_replay(fixtures_dir: Path) -> tuple[dict[str, BookSync], Tops, Tops, list[object]]:
    """Frames and REST snapshots in the order they were recorded (the snapshot answers arrived between
    depth frames; updates before a symbol's snapshot are buffered, as the feed does). Returns the syncs,
    the bookTicker tops by (symbol, update id), our tops by (symbol, update id), and what was published."""
    folder = fixtures_dir / "cex" / "binance"
    binance = Binance()
    for symbol in ("NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"):
        binance.to_exchange_symbol(symbol)
    events = [(line.timestamp, "ws", line.payload) for line in recording.read(folder / "BINANCE.ws.1.0")
              if line.kind == "received"]  # fmt: skip
    events += [
        (line.timestamp, line.url, line.payload) for line in recording.read(folder / "BINANCE.http.0.0")
    ]
    events.sort(key=lambda e: e[0] or 0.0)
    syncs: dict[str, BookSync] = {}
    ticker_tops: Tops = {}
    our_tops: Tops = {}
    out: list[object] = []
    for _, source, payload in events:
        touched: list[BookSync] = []
        if source == "ws":
            parsed = binance.parse(payload, 1)
            for r in parsed.records:
                if isinstance(r, Ticker):
                    u = json.loads(payload)["data"]["u"]
                    ticker_tops[(r.symbol, u)] = tuple(
                        format(v, "f")
                        for v in (r.bid_price, r.bid_size, r.ask_price, r.ask_size)  # type: ignore[assignment]
                    )
            for msg in parsed.books:
                sync = syncs.setdefault(msg.symbol, BookSync("binance", msg.symbol, "range", None, True))
                out += sync.on_message(msg)
                touched.append(sync)
        else:
            native = str(source).split("symbol=")[1].split("&")[0]
            symbol = binance.symbols[native]
            sync = syncs.setdefault(symbol, BookSync("binance", symbol, "range", None, True))
            snap = binance.parse_snapshot(symbol, payload.encode(), 1)
            assert not sync.needs_snapshot_refetch(snap.last)
            out += sync.on_snapshot(snap)
            touched.append(sync)
        for sync in touched:
            if sync.book.valid and sync.book.sequence is not None:
                our_tops[(sync.symbol, sync.book.sequence)] = _top(sync)
    return syncs, ticker_tops, our_tops, out


def test_binance_depth_syncs_with_its_recorded_rest_snapshots(fixtures_dir: Path) -> None:
    syncs, _, _, out = _binance_replay(fixtures_dir)
    assert not any(isinstance(p, Resync) for p in out)
    assert all(s.book.valid and not s.book.crossed() for s in syncs.values())
    counters = [s.counters for s in syncs.values()]
    assert sum(c.snapshots for c in counters) == 4
    # PROVENANCE: of 177 diffs, 5 have u <= lastUpdateId (dropped), 4 came before their snapshot (buffered)
    assert sum(c.buffered for c in counters) == 4
    assert sum(c.ignored for c in counters) == 5
    assert sum(c.applied for c in counters) == 172


def test_binance_book_agrees_with_book_ticker_at_the_same_update_id(fixtures_dir: Path) -> None:
    """Independent truth: Binance's bookTicker stream names the best bid/ask after update id ``u``;
    wherever our book stood at that same id, its top must be the same."""
    _, ticker_tops, our_tops, _ = _binance_replay(fixtures_dir)
    common = sorted(set(ticker_tops) & set(our_tops))
    assert len(common) >= 10, len(common)
    for key in common:
        assert our_tops[key] == ticker_tops[key], key


def test_a_garbled_level_is_a_malformed_message_or_a_resync_never_a_crash() -> None:
    okx = Okx()
    bad = '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update",'
    bad += '"data":[{"asks":[["abc","1","0","1"]],"bids":[],"ts":"1","checksum":0}]}'
    with pytest.raises(ArithmeticError):  # decimal.InvalidOperation: counted and skipped by the feed
        okx.parse(bad, 1)
    sync = BookSync("okx", "BTC-USDT", okx.rule, okx.verify)
    sync.on_message(okx.parse(bad.replace('"update"', '"snapshot"').replace('"abc"', '"100"'), 1).books[0])
    (nan,) = okx.parse(bad.replace('"abc"', '"NaN"'), 1).books
    with pytest.raises(ArithmeticError):  # the feed turns this into a "malformed" resync
        sync.on_message(nan)
