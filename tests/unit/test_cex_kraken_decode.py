"""Kraken v2 ``book`` frames: the typed fast path (msgspec, levels paired in C) gives exactly the messages
the general path (the standard library's decoder with ``parse_float=Decimal``) gives, on every frame of the
recording (``../shared/fixtures/cex/kraken``, v1 frames converted to v2 by ``devnet.exchanges.kraken_v2``)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

import cex.exchanges.kraken as kraken_module
from cex.exchange import MalformedMessage
from cex.exchanges.kraken import Kraken
from devnet.exchanges import kraken_v2

pytestmark = pytest.mark.unit
_STD = json.JSONDecoder(parse_float=Decimal)


def _expected(frame: str) -> list[tuple[object, ...]]:
    """The book messages written out from the standard decoder's dicts, independently of Kraken.parse."""
    msg = _STD.decode(frame)
    return [
        (
            item["symbol"].replace("/", "-"),
            msg["type"] == "snapshot",
            [(row["price"], row["qty"]) for row in item["bids"]],
            [(row["price"], row["qty"]) for row in item["asks"]],
            item["checksum"],
        )
        for item in msg["data"]
    ]


@pytest.mark.parametrize("pairs", ["C", "Python"])
def test_typed_book_frames_equal_the_standard_decoder_digit_for_digit(fixtures_dir: Path, pairs: str) -> None:
    recorded = kraken_v2.from_v1(fixtures_dir / "cex" / "kraken" / "KRAKEN.ws.50.0.first500lines")
    c_pairs = kraken_module._pairs
    assert c_pairs is not kraken_module._pairs_python, "cex/_speedups.c is not built (make install)"
    kraken_module._pairs = c_pairs if pairs == "C" else kraken_module._pairs_python
    try:
        exchange = Kraken(depth=1000)
        levels = 0
        for frame in recorded.frames:
            assert frame.startswith(kraken_module._BOOK_PREFIX)  # the fast path is the one taken
            got = [(m.symbol, m.snapshot, m.bids, m.asks, m.checksum) for m in exchange.parse(frame, 0).books]
            expected = _expected(frame)
            assert got == expected
            # the same digits, not only equal values (the checksum is computed from them)
            assert [[str(p) for p, _ in m[2] + m[3]] for m in got] == [
                [str(p) for p, _ in m[2] + m[3]] for m in expected
            ]
            levels += sum(len(m[2]) + len(m[3]) for m in got)
        assert levels == 7945
    finally:
        kraken_module._pairs = c_pairs


def test_a_book_frame_of_another_shape_takes_the_general_path_and_is_malformed() -> None:
    exchange = Kraken()
    # qty missing: the typed decoder refuses it, the general path raises what the feed counts as malformed
    bad = '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":1.5}],'
    bad += '"asks":[],"checksum":1}]}'
    with pytest.raises(KeyError):
        exchange.parse(bad, 0)
    with pytest.raises(ValueError):  # not JSON at all
        exchange.parse('{"channel":"book",', 0)


@pytest.mark.parametrize("number", ["null", "true", '{"x":1}', "[1]"])
def test_a_price_that_is_not_a_number_is_malformed(number: str) -> None:
    """The typed decoder refuses a level whose price is no number; the frame goes to the general path, which
    says it is malformed (what the feed counts and skips), never a book message."""
    exchange = Kraken()
    frame = '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":' + number
    frame += ',"qty":1.25}],"asks":[],"checksum":1}]}'
    with pytest.raises(MalformedMessage):
        exchange.parse(frame, 0)
