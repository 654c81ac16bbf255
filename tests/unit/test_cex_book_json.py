"""Frames read by ``cex._speedups.book_json`` (book sides made levels straight from the bytes) against
the general path (orjson, then ``cex.book.row_levels``): the same records, book messages and published book
output on every recorded frame (``../shared/fixtures/cex/binance``: spot and Binance US depth, trades,
bookTicker, kline, REST snapshots; recorded 2021-10-12), and on edge cases and mutated frames the reader
either gives exactly what the general path gives or declines (None), errors included.
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

import cex.book as book_module
import cex.exchanges.binance as binance_module
import cex.exchanges.kraken as kraken_module
from cex._speedups import book_json, fast_decimals
from cex.book import _row_levels_python
from cex.exchanges.binance import Binance
from cex.exchanges.kraken import Kraken
from cex.sync import BookSync
from devnet.exchanges import kraken_v2, recording

pytestmark = pytest.mark.unit

_RECORDINGS = (("BINANCE.ws.1.0", "BINANCE.http.0.0"), ("BINANCE_US.ws.1.0", "BINANCE_US.http.0.0"))


def _exact(value: Any) -> Any:
    """A comparable form that tells ``Decimal('1.0')`` from ``Decimal('1.00')`` (``==`` does not)."""
    try:
        return repr(value)
    except ValueError as exc:  # an int past repr's 4,300 digits (a mutated frame's exponent, general path)
        return f"unprintable: {exc}"


def _events(folder: Path, ws: str, http: str) -> list[tuple[str | None, str]]:
    lines = [
        (line.timestamp or 0.0, line.url if line.kind == "rest" else None, line.payload)
        for name in (ws, http)
        for line in recording.read(folder / name)
        if line.kind in ("received", "rest")
    ]
    lines.sort(key=lambda x: x[0])
    return [(url, payload) for _, url, payload in lines]


def _replay(folder: Path, ws: str, http: str) -> list[str]:
    """Every frame through ``Binance.parse`` / ``parse_snapshot`` and ``BookSync``: the exact text of each
    frame's records, book messages and published output (or the error it raised)."""
    exchange = Binance()
    events = _events(folder, ws, http)
    for url, _ in events:  # the recording's symbols (its snapshots name all of them), spelled natively
        if url is not None:
            native = url.split("symbol=")[1].split("&")[0]
            exchange.symbols[native] = native
    out: list[str] = []
    syncs: dict[str, BookSync] = {}
    for url, payload in events:
        if url is not None:
            symbol = url.split("symbol=")[1].split("&")[0]
            sync = syncs.setdefault(symbol, BookSync("binance", symbol, "range", None, True))
            snap = exchange.parse_snapshot(symbol, payload.encode(), 7)
            out.append(_exact(snap))
            out.append(_exact(sync.on_snapshot(snap)))
            continue
        try:
            parsed = exchange.parse(payload, 7)
        except Exception as exc:  # compared between the paths, not swallowed
            out.append(f"{type(exc).__name__}: {exc}")
            continue
        out.append(_exact(parsed))
        for msg in parsed.books:
            sync = syncs.setdefault(msg.symbol, BookSync("binance", msg.symbol, "range", None, True))
            out.append(_exact(sync.on_message(msg)))
    out.append(
        _exact(
            {symbol: (s.book.bid_levels(), s.book.ask_levels(), s.counters) for symbol, s in syncs.items()}
        )
    )
    return out


@pytest.mark.parametrize(("ws", "http"), _RECORDINGS)
def test_every_recorded_frame_gives_the_same_output_through_c_and_python(
    fixtures_dir: Path, ws: str, http: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = fixtures_dir / "cex" / "binance"
    assert fast_decimals()
    calls = 0

    def counting(frame: str | bytes) -> dict[str, Any] | None:
        nonlocal calls
        made = book_json(frame)
        calls += made is not None
        return made

    monkeypatch.setattr(binance_module, "_book_json", counting)
    fast = _replay(folder, ws, http)
    assert calls == len(_events(folder, ws, http))  # every recorded frame took the C reader
    monkeypatch.setattr(binance_module, "_book_json", None)
    general = _replay(folder, ws, http)
    monkeypatch.setattr(book_module, "_row_levels", None)  # and without any of the extension's level making
    python = _replay(folder, ws, http)
    assert fast == general == python
    assert sum("BookDelta(" in line for line in fast) > 100  # the replay did publish deltas


def _as_general(value: Any) -> Any:
    """orjson's decoding with each [str, str] side made levels as ``row_levels`` makes them: what
    ``book_json`` must give for a frame it reads."""
    if isinstance(value, dict):
        return {k: _as_general(v) for k, v in value.items()}
    if isinstance(value, list):
        if all(isinstance(row, list) and len(row) == 2 and all(type(t) is str for t in row) for row in value):
            return _row_levels_python(value, None)
        return [_as_general(v) for v in value]
    return value


_CASES = [
    b'{"lastUpdateId":5,"bids":[["1.10","2"]],"asks":[]}',
    b' \n{ "a" : [ [ "0.1" , "2.000" ] , ["3","4"] ] , "b" : true , "c" : false , "d" : null } \r\t',
    b'{"e":"depthUpdate","E":-12,"U":0,"u":999999999999999999,"b":[],"a":[]}',
    b'{"a":1.5}',  # a float: declined
    b'{"a":1e5}',
    b'{"a":01}',  # not JSON
    b'{"a":-0}',
    b'{"a":1234567890123456789}',  # 19 digits: declined
    b'{"a":123456789012345678901234567890123456789012345678901234567890}',
    b'{"a":-999999999999999999}',
    b'{"a":"x\\u0000y"}',  # an escape: declined
    b'{"a":"\xc3\xa9"}',  # non-ASCII: declined
    b'{"a":[1,2]}',  # not a side
    b'{"a":[["1","2","3"]]}',
    b'{"a":[["1E-8","2"]]}',  # not a plain decimal: declined (Decimal(text) takes it)
    b'{"a":[["NaN","2"]]}',
    b'{"a":[["1",2]]}',
    b'{"a":{"b":{"c":[["1","2"]]}}}',
    b'{"a":1,}',
    b'{"a":1',
    b'{"a":1}x',
    b"[1]",
    b"",
    b'{"a":"b"}{"c":1}',
    b'{"a":[["1","2"],]}',
    b'{"a":[["-0.000","12345678901234567890.123456789012345678"]]}',
    b'{"a":[["1","123456789012345678901234567890123456789"]]}',  # 39 digits: declined
    b'{"a":tru}',
]


@pytest.mark.parametrize("frame", _CASES)
def test_a_frame_is_read_exactly_or_declined(frame: bytes) -> None:
    _check(frame)
    if frame.isascii():
        _check(frame.decode())


def _check(frame: str | bytes) -> None:
    made = book_json(frame)
    try:
        general = _as_general(orjson.loads(frame))
    except (orjson.JSONDecodeError, ArithmeticError, ValueError):
        assert made is None, frame  # what the general path refuses, C never reads
        return
    if made is not None:
        assert _exact(made) == _exact(general), frame
        for levels in (v for v in made.values() if isinstance(v, list)):
            assert all(type(p) is Decimal and type(q) is Decimal for p, q in levels)


def test_mutated_recorded_frames_are_read_exactly_or_declined(fixtures_dir: Path) -> None:
    """Random one-byte deletions, insertions and replacements of recorded frames (JSON-significant bytes
    mostly): never a different value than the general path's, never a frame the general path refuses."""
    folder = fixtures_dir / "cex" / "binance"
    frames = [payload.encode() for _, payload in _events(folder, *_RECORDINGS[0])][:120]
    rng = random.Random(13)
    alphabet = b'{}[],:"\\ 0123456789.-eE+tfnu\x00\xff'
    read = 0
    for _ in range(6_000):
        frame = bytearray(rng.choice(frames))
        at = rng.randrange(len(frame))
        op = rng.randrange(3)
        if op == 0:
            del frame[at]
        elif op == 1:
            frame.insert(at, rng.choice(alphabet))
        else:
            frame[at] = rng.choice(alphabet)
        _check(bytes(frame))
        read += book_json(bytes(frame)) is not None
    assert read > 1_000  # many mutations leave valid frames (a digit for a digit): those were compared


def test_book_json_leaves_other_types_to_the_general_decoder() -> None:
    assert book_json(bytearray(b"{}")) is None  # type: ignore[arg-type]
    assert book_json(memoryview(b"{}")) is None  # type: ignore[arg-type]
    assert book_json(None) is None  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        book_json()  # type: ignore[call-arg]
    body = b'{"lastUpdateId":1,"bids":[["1.0","2"]],"asks":[]}'
    through_view = Binance().parse_snapshot("X-Y", memoryview(body), 0)  # type: ignore[arg-type]
    assert _exact(through_view) == _exact(Binance().parse_snapshot("X-Y", body, 0))
    assert book_json("{}") == {}
    assert book_json('{"a":"é"}') is None  # non-ASCII text: the general decoder


# --- Kraken v2: book frames with {"price", "qty"} levels (JSON numbers) -------------------------------------


def _kraken_replay(frames: list[str], instrument: str) -> list[str]:
    exchange = Kraken(depth=1000)
    exchange.parse(instrument, 0)
    syncs: dict[str, BookSync] = {}
    out: list[str] = []
    for frame in frames:
        parsed = exchange.parse(frame, 7)
        out.append(_exact(parsed))
        for msg in parsed.books:
            sync = syncs.setdefault(
                msg.symbol, BookSync("kraken", msg.symbol, exchange.rule, exchange.verify, False, 1000)
            )
            out.append(_exact(sync.on_message(msg)))
    failures = sum(s.counters.checksum_failures for s in syncs.values())
    out.append(f"checksum failures {failures}")
    return out


def test_every_kraken_book_frame_gives_the_same_output_through_c_and_the_typed_decoder(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The v2 frames built from the 2021 v1 recording (``devnet.exchanges.kraken_v2``; 472 checksums)."""
    recorded = kraken_v2.from_v1(fixtures_dir / "cex" / "kraken" / "KRAKEN.ws.50.0.first500lines")
    frames, instrument = recorded.frames, recorded.instrument_frame()
    read = [book_json(f, "price", "qty") for f in frames]
    assert all(r is not None for r in read)  # every book frame took the C reader
    fast = _kraken_replay(frames, instrument)
    monkeypatch.setattr(kraken_module, "_book_json", None)
    typed = _kraken_replay(frames, instrument)
    monkeypatch.setattr(kraken_module, "_pairs", kraken_module._pairs_python)
    monkeypatch.setattr(kraken_module, "_BOOK_PREFIX", "not a prefix")  # the general (stdlib json) path
    general = _kraken_replay(frames, instrument)
    assert fast == typed == general
    assert fast[-1] == "checksum failures 0"
    assert sum("BookDelta(" in line for line in fast) == 472  # every update frame published its deltas


def _kraken_general(frame: str) -> str:
    """What Kraken's parse gives without ``book_json`` (its typed decoder, else its general path)."""
    try:
        parsed = _KRAKEN_PLAIN.parse(frame, 7)
    except Exception as exc:  # compared between the paths, not swallowed
        return f"{type(exc).__name__}"
    return _exact(parsed)


_KRAKEN_PLAIN = Kraken()


def test_mutated_kraken_frames_parse_the_same_with_and_without_c(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = kraken_v2.from_v1(fixtures_dir / "cex" / "kraken" / "KRAKEN.ws.50.0.first500lines")
    frames = recorded.frames[:150]
    rng = random.Random(17)
    alphabet = '{}[],:"\\ 0123456789.-tfnu\x00é'  # no exponents: int(Decimal('1E+999999999')) takes minutes
    fast_parser = Kraken()
    read = 0
    for _ in range(4_000):
        frame = list(rng.choice(frames))
        at = rng.randrange(len(frame))
        op = rng.randrange(3)
        if op == 0:
            del frame[at]
        elif op == 1:
            frame.insert(at, rng.choice(alphabet))
        else:
            frame[at] = rng.choice(alphabet)
        text = "".join(frame)
        try:
            fast = _exact(fast_parser.parse(text, 7))
        except Exception as exc:  # compared between the paths, not swallowed
            fast = f"{type(exc).__name__}"
        with monkeypatch.context() as patched:
            patched.setattr(kraken_module, "_book_json", None)
            assert fast == _kraken_general(text), text
        read += book_json(text, "price", "qty") is not None
    assert read > 1_000


def test_kraken_level_numbers_are_read_exactly_or_declined() -> None:
    def side(levels: str) -> list[Any] | None:
        made = book_json('{"bids":' + levels + "}", "price", "qty")
        return None if made is None else made["bids"]

    assert _exact(side('[{"price":45283.5,"qty":0.10000000},{"price":7,"qty":0}]')) == _exact(
        [(Decimal("45283.5"), Decimal("0.10000000")), (Decimal(7), Decimal(0))]
    )
    assert _exact(side('[{"price":-0.0,"qty":1}]')) == _exact([(Decimal("-0.0"), Decimal(1))])
    declined = [
        '[{"price":1e5,"qty":1}]',  # an exponent: Decimal(text) keeps it, the typed decoder decides
        '[{"price":-0,"qty":1}]',  # an int 0: Decimal(0) has no sign
        '[{"price":01,"qty":1}]',  # not JSON
        '[{"price":1.,"qty":1}]',
        '[["1","2"]]',  # rows are not read in this mode
        '[{"price":1,"qty":1},{"a":1}]',  # a mix
    ]
    for levels in declined:
        assert side(levels) is None, levels
    assert side('[{"qty":1,"price":2}]') == [{"qty": 1, "price": 2}]  # not a level object: an object
    with pytest.raises(TypeError):
        book_json("{}", "price", 3)  # type: ignore[arg-type]
