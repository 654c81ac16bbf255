"""A book price beyond a double (above ~1.8e308, the search key C's ``apply_side`` compares would be
infinite) is refused the same way with and without ``cex/_speedups.c``: ``ArithmeticError`` where the level
would enter the book, which the feed counts as a malformed message and answers with a resync; the book is
rebuilt from the next snapshot. Before, C refused it in an update while Python took it, and a snapshot
loaded it on both paths, after which each C search reaching the level failed (no finite key to compare).
Frames constructed in OKX v5's ``books`` shape (checksum 0: not checked, as OKX sends since 2026-06-23).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

import cex.book as book_module
import cex.exchanges.binance as binance_module
from cex.book import L2Book
from cex.exchanges.binance import Binance
from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.sync import Resync

pytestmark = pytest.mark.unit

# the double nearest above DBL_MAX's half-way point: 2**1024 - 2**970 rounds (to even) to inf
HALFWAY = 2**1024 - 2**970


def _books(action: str, seq: int, prev: int, bids: list[list[str]], asks: list[list[str]]) -> str:
    item = {"asks": [[p, s, "0", "1"] for p, s in asks], "bids": [[p, s, "0", "1"] for p, s in bids],
            "ts": str(1_700_000_000_000 + seq), "checksum": 0, "prevSeqId": prev, "seqId": seq}  # fmt: skip
    return orjson.dumps(
        {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": action, "data": [item]}
    ).decode()


class _Socket:
    """Where the feed sends its resubscribe frames (the frames under test come in through ``on_frame``)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, frame: str) -> None:
        self.sent.append(frame)


def _feed(frames: list[str]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        feed = FeedHandler(Okx(), ["BTC-USDT"], ["book"])
        conn, ws = feed.conns[0], _Socket()
        for frame in frames:
            await feed.on_frame(conn, ws, frame)
        book = feed.sync("BTC-USDT", conn.index).book
        published: list[Any] = [feed.queue.get_nowait() for _ in range(feed.queue.qsize())]
        return {
            "published": [
                repr(replace(p, atom_timestamp=0) if hasattr(p, "atom_timestamp") else p) for p in published
            ],
            "resyncs": [p.reason for p in published if isinstance(p, Resync)],
            "malformed": conn.counters.malformed,
            "book": (book.valid, book.bid_levels(), book.ask_levels()),
            "resubscribed": len(ws.sent),
        }

    return asyncio.run(run())


def _both_paths(frames: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The frames through the feed with C, then without (the book's Python loop, sort and level making);
    the two must agree."""
    with_c = _feed(frames)
    with monkeypatch.context() as patched:
        for name in ("_apply_side", "_row_levels", "_ordered_side"):
            patched.setattr(book_module, name, None)
        python = _feed(frames)
    assert with_c == python
    return with_c


SNAPSHOT = _books("snapshot", 10, -1, [["100", "1"]], [["101", "1"], ["103", "1"]])
REBUILT = _books("snapshot", 20, -1, [["99", "4"]], [["104", "5"]])


@pytest.mark.parametrize("huge", ["2E+308", "-1E+400", str(HALFWAY), "1" + "0" * 400])
def test_an_update_with_a_price_beyond_a_double_is_a_counted_skip_with_and_without_c(
    huge: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = [
        SNAPSHOT,
        _books("update", 11, 10, [], [["102", "2"], [huge, "1"]]),  # 102 applied, then the refusal
        _books("update", 12, 11, [], [["105", "1"]]),  # the book is being rebuilt: not applied
        REBUILT,
    ]
    out = _both_paths(frames, monkeypatch)
    assert out["malformed"] == 1 and out["resyncs"] == ["malformed"] and out["resubscribed"] == 2
    assert out["book"] == (True, [(Decimal("99"), Decimal("4"))], [(Decimal("104"), Decimal("5"))])
    assert not any(huge in p or "105" in p for p in out["published"])


def test_a_snapshot_with_a_price_beyond_a_double_is_refused_with_and_without_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """C makes a snapshot level's key on first use: the huge level loaded, then every search reaching it
    failed (C) or found its place (Python). Refused at the snapshot now, the book left unpublished."""
    frames = [
        _books("snapshot", 10, -1, [["100", "1"]], [["101", "1"], ["2E+308", "1"]]),
        _books("update", 11, 10, [], [["102", "2"]]),
        REBUILT,
        _books("update", 21, 20, [], [["106", "3"]]),
    ]
    out = _both_paths(frames, monkeypatch)
    assert out["malformed"] == 1 and out["resyncs"] == ["malformed"]
    assert out["book"] == (
        True,
        [(Decimal("99"), Decimal("4"))],
        [(Decimal("104"), Decimal("5")), (Decimal("106"), Decimal("3"))],
    )
    assert not any("2E+308" in p for p in out["published"])


def test_the_largest_price_with_a_finite_double_is_kept_with_and_without_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    below = str(HALFWAY - 1)  # rounds down to DBL_MAX: a finite key
    frames = [SNAPSHOT, _books("update", 11, 10, [], [[below, "1"], ["102", "2"]])]
    out = _both_paths(frames, monkeypatch)
    assert out["malformed"] == 0 and out["resyncs"] == []
    assert out["book"][2] == [
        (Decimal(p), Decimal(s)) for p, s in (("101", "1"), ("102", "2"), ("103", "1"), (below, "1"))
    ]
    assert sum(isinstance(p, str) and "BookDelta(" in p for p in out["published"]) == 2


def test_l2book_refuses_the_level_and_keeps_the_ones_before_it_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def apply() -> tuple[list[Any], list[Any], str]:
        book = L2Book()
        book.load([(Decimal(1), Decimal(1))], [(Decimal(3), Decimal(1))])
        with pytest.raises(ArithmeticError) as refused:
            book.update(
                [(Decimal(2), Decimal(5)), (Decimal("-2E+308"), Decimal(1))], [(Decimal(4), Decimal(1))]
            )
        with pytest.raises(ArithmeticError):
            book.load([(Decimal("NaN"), Decimal(1))], [])  # one level: no comparison would catch it
        return book.bid_levels(), book.ask_levels(), str(refused.value)

    with_c = apply()
    monkeypatch.setattr(book_module, "_apply_side", None)
    monkeypatch.setattr(book_module, "_ordered_side", None)
    assert apply() == with_c
    # the bid before the refused one applied, the asks not reached (bids go first on both paths); the
    # refused load left the book as it was
    assert with_c == (
        [(Decimal(2), Decimal(5)), (Decimal(1), Decimal(1))],
        [(Decimal(3), Decimal(1))],
        "not a finite price: Decimal('-2E+308')",
    )


async def _serve_snapshot(body: bytes) -> tuple[asyncio.Server, str]:
    """A local HTTP server answering every request with ``body`` (the REST depth snapshot)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _fetch_snapshot(body: bytes) -> tuple[list[str], bool]:
    async def run() -> tuple[list[str], bool]:
        server, url = await _serve_snapshot(body)
        try:
            feed = FeedHandler(Binance(rest_url=url), ["NKN-USDT"], ["book"], http=httpx.AsyncClient())
            sync = feed.sync("NKN-USDT")
            feed._fetching.add(sync.symbol)
            await feed._fetch(sync)  # raised the ArithmeticError out of the fetch task before
            assert feed.http is not None
            await feed.http.aclose()
        finally:
            server.close()
            await server.wait_closed()
        published = [feed.queue.get_nowait() for _ in range(feed.queue.qsize())]
        return [p.reason if isinstance(p, Resync) else type(p).__name__ for p in published], sync.book.valid

    return asyncio.run(run())


def test_a_rest_snapshot_with_a_price_beyond_a_double_is_a_resync_not_a_failed_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = b'{"lastUpdateId":5,"bids":[["0.35","1"]],"asks":[["0.36","2"],["1E+400","3"]]}'
    with_c = _fetch_snapshot(body)
    monkeypatch.setattr(binance_module, "_book_json", None)
    for name in ("_apply_side", "_row_levels", "_ordered_side"):
        monkeypatch.setattr(book_module, name, None)
    assert _fetch_snapshot(body) == with_c == (["malformed"], False)
    assert _fetch_snapshot(body.replace(b"1E+400", b"0.37")) == (["BookSnapshot"], True)
