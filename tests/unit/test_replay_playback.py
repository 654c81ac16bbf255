"""A replay connection's parameters, and the book order a replay keeps, on hand-written records."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from api.stream.history import Playback, moment_us, playback_of
from api.stream.protocol import ProtocolError
from archive.books import fold
from archive.history import cex_steps
from records.cex import BookDelta, BookSnapshot

pytestmark = pytest.mark.unit

KNOWN = frozenset({"block", "trade", "book_delta"})
DEFAULTS = Playback(None, None)


def test_moments_are_microseconds_from_seconds_or_iso() -> None:
    assert moment_us("1700000000", "from") == 1_700_000_000_000_000
    assert moment_us("1700000000.000250", "from") == 1_700_000_000_000_250
    assert moment_us("2026-01-02T03:04:05.250Z", "from") == 1_767_323_045_250_000
    assert moment_us("2026-01-02T03:04:05.250", "from") == 1_767_323_045_250_000  # naive: UTC
    assert moment_us("2026-01-02T05:04:05.250+02:00", "from") == 1_767_323_045_250_000
    for bad in ("nan", "1700000000000", "yesterday", ""):
        with pytest.raises(ProtocolError, match="from"):
            moment_us(bad, "from")


def test_a_connection_gives_its_range_speed_kinds_and_start() -> None:
    query = {"from": "10", "to": "20.5", "speed": "4", "kinds": "trade, block", "subscriptions": "3"}
    assert playback_of(query, DEFAULTS, KNOWN) == Playback(
        10_000_000, 20_500_000, 4.0, frozenset({"trade", "block"}), 3
    )
    # what the URL leaves out comes from the command line's defaults; speed 0: as fast as it reads
    server = Playback(1_000_000, 2_000_000, 10.0, None, None, 0.5)
    assert playback_of({"speed": "0", "settle": "2"}, server, KNOWN) == Playback(
        1_000_000, 2_000_000, None, None, None, 2.0
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "give the range"),
        ({"from": "5"}, "give the range"),
        ({"from": "5", "to": "5"}, "after 'from'"),
        ({"from": "0", "to": "5", "speed": "-1"}, "speed"),
        ({"from": "0", "to": "5", "speed": "inf"}, "speed"),
        ({"from": "0", "to": "5", "kinds": "trade,candles"}, "kinds: unknown candles"),
        ({"from": "0", "to": "5", "kinds": ","}, "kinds"),
        ({"from": "0", "to": "5", "subscriptions": "0"}, "subscriptions"),
        ({"from": "0", "to": "5", "subscriptions": "1.5"}, "subscriptions"),
        ({"from": "0", "to": "5", "colour": "red"}, "unknown query parameter"),
    ],
)
def test_bad_parameters_are_named(query: dict[str, str], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        playback_of(query, DEFAULTS, KNOWN)


def _snap(seq: int | None, at: int, bids: tuple[tuple[D, D], ...] = ((D("100"), D("1")),)) -> BookSnapshot:
    return BookSnapshot("okx", "ETH-USDT", bids, ((D("101"), D("2")),), seq, at // 1000, at)


def _delta(seq: int | None, at: int, side: str = "bid", price: str = "100", size: str = "3") -> BookDelta:
    return BookDelta("okx", "ETH-USDT", side, D(price), D(size), None, seq, at // 1000, at)


def test_a_rest_snapshots_buffered_deltas_replay_after_it() -> None:
    before = _delta(9, 1_000)  # applied to the old book, before it went wrong
    snapshot = _snap(10, 5_000)  # a REST answer received at 5 ms
    buffered = _delta(11, 3_000, "ask", "101", "0")  # received at 3 ms, after the snapshot's sequence
    later = _delta(12, 6_000)
    other = BookDelta("okx", "BTC-USDT", "bid", D("1"), D("1"), None, 1, 4, 4_000)
    steps = cex_steps({"book_delta": [before, buffered, other, later], "book_snapshot": [snapshot]})
    order = [(s.time_us, r) for s in steps for r in s.cex]
    assert order == [(1_000, before), (4_000, other), (5_000, snapshot), (5_000, buffered), (6_000, later)]
    # without sequences, arrival time alone decides
    plain = cex_steps({"book_delta": [_delta(None, 3_000)], "book_snapshot": [_snap(None, 5_000)]})
    assert [type(r).__name__ for s in plain for r in s.cex] == ["BookDelta", "BookSnapshot"]


def test_the_book_at_a_moment_is_the_snapshot_and_the_deltas_after_it() -> None:
    snapshot = _snap(10, 5_000, ((D("100"), D("1")), (D("99.50"), D("2"))))
    deltas = [
        _delta(10, 4_000, price="98", size="7"),  # in the snapshot already (its sequence)
        _delta(11, 3_000, price="99.5", size="0"),  # buffered, after the snapshot: removes 99.50
        _delta(12, 6_000, side="ask", price="102", size="4"),
        _delta(13, 9_000, price="100", size="8"),  # at the moment: not yet
    ]
    book = fold(snapshot, deltas, 9_000)
    assert book == BookSnapshot(
        "okx", "ETH-USDT", ((D("100"), D("1")),), ((D("101"), D("2")), (D("102"), D("4"))), 12, 6, 6_000
    )
    assert fold(snapshot, [], 9_000) == snapshot
