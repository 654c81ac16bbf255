"""``dexnode replay``: one playback per websocket connection, against a live ``/ws`` session recorded
during the same run.

One devnet run (followed into Postgres, with a real reorg) and one OKX feed (recorded frames through the
local OKX server into ``CexStore``), while a client of the live API records every message it is sent on
blocks, DEX trades, CEX trades and the CEX book. Then two replay servers: one over the archive of that run
(and Postgres past the archive's last chain minute), one over an empty archive (everything from Postgres).
Truth: the recorded live messages, cut by event time (blocks by timestamp, exchange messages by
``atom_timestamp``, a book's messages at the first one received at or after the start); a book at the
start is rebuilt here from the live book messages before the cut, not by the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect

from api.app import create_app
from api.stream.history import Playback
from archive.archiver import Archiver
from archive.layout import Stream, Target
from cex.store import CexStore
from cex.sync import Resync
from cli.archive import run_replay
from core.database import DatabaseInfo
from core.settings import build_settings
from records import Record
from records.cex import BookDelta, BookSnapshot
from tests.api_check import served
from tests.archive_helpers import okx_records, truncate_all
from tests.conftest import free_port
from tests.integration.test_archive import CHAIN, CONFIRMATIONS, LATER, _follow_with_reorg

pytestmark = pytest.mark.integration

CHAIN_SUBS = [
    {"op": "subscribe", "id": "blocks", "channel": "blocks", "finality": "confirmed"},
    {"op": "subscribe", "id": "trades", "channel": "dex_trades", "finality": "confirmed"},
]
CEX_SUBS = [
    {"op": "subscribe", "id": "cex", "channel": "cex_trades", "exchange": "okx"},
    {"op": "subscribe", "id": "book", "channel": "cex_book", "exchange": "okx"},
]
ALL_SUBS = CHAIN_SUBS + CEX_SUBS


@dataclass
class Recorded:
    dsn: str
    tmp: Path
    orphaned: list[str]
    live: list[dict[str, Any]]  # every message the live client got, in order
    archive: Target


async def _record(
    url: str, subs: list[dict[str, Any]], into: list[dict[str, Any]], subscribed: asyncio.Event
) -> None:
    async with ws_connect(url, max_size=None) as ws:
        for sub in subs:
            await ws.send(orjson.dumps(sub).decode())
        async for text in ws:
            message = orjson.loads(text)
            into.append(message)
            if sum(m.get("event") == "live" for m in into) == len(subs):
                subscribed.set()


def _data(messages: list[dict[str, Any]], sid: str) -> list[dict[str, Any]]:
    """One subscription's data messages (records, snapshots, resyncs), in the order received."""
    return [m for m in messages if m.get("id") == sid and "data" in m and m.get("type") != "finalized"]


async def _live_session(
    dsn: str, subs: list[dict[str, Any]], write: Callable[[], Awaitable[Any]], sent: dict[str, int]
) -> list[dict[str, Any]]:
    """Every message a client of the live API subscribed to ``subs`` is sent while ``write`` runs, and
    after it until each subscription of ``sent`` has had that many data messages."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    live: list[dict[str, Any]] = []
    try:
        settings = build_settings(database_url=dsn, confirmations=CONFIRMATIONS)
        async with served(create_app(settings, pool=pool)) as base:
            subscribed = asyncio.Event()
            recorder = asyncio.create_task(
                _record(base.replace("http", "ws") + "/ws", subs, live, subscribed)
            )
            await asyncio.wait_for(subscribed.wait(), 30)
            await write()
            for _ in range(1500):
                if all(len(_data(live, sid)) >= n for sid, n in sent.items()):
                    break
                await asyncio.sleep(0.02)
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
    finally:
        await pool.close()
    return live


async def _store(dsn: str, items: list[Record | Resync]) -> dict[str, int]:
    """Written by ``CexStore`` (announced to the live API by NOTIFY); the rows each CEX table holds now."""
    store = await CexStore.connect(dsn)
    try:
        await store.write(items)
        return {
            "cex": await store.pool.fetchval("SELECT count(*) FROM cex_trades"),
            "book": await store.pool.fetchval("SELECT count(*) FROM cex_book_events"),
        }
    finally:
        await store.close()


@pytest.fixture(scope="module")
async def recorded(
    migrated_db: DatabaseInfo, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> AsyncIterator[Recorded]:
    dsn = migrated_db.dsn
    await truncate_all(dsn)
    tmp = tmp_path_factory.mktemp("replay")
    orphaned: list[str] = []
    stored: dict[str, int] = {}

    async def run() -> None:
        orphaned.extend(
            await _follow_with_reorg(dsn, tmp, Path(pytestconfig.rootpath) / ".dexnode-test-cache")
        )
        stored.update(await _store(dsn, await okx_records()))

    live = await _live_session(dsn, ALL_SUBS, run, stored)
    assert len(_data(live, "book")) == stored["book"] > 0 and len(_data(live, "cex")) == stored["cex"] > 0
    archive = Target(str(tmp / "archive"))
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await Archiver(pool, archive, chain=CHAIN, confirmations=CONFIRMATIONS, cex_grace_seconds=0,
                       clock=lambda: LATER).archive_ready()  # fmt: skip
    finally:
        await pool.close()
    yield Recorded(dsn, tmp, orphaned, live, archive)


@dataclass
class Server:
    url: str
    stop: asyncio.Event
    task: asyncio.Task[Any]


@contextlib.asynccontextmanager
async def _replay_server(run: Recorded, archive: str) -> AsyncIterator[Server]:
    port = free_port()
    settings = build_settings(database_url=run.dsn, confirmations=CONFIRMATIONS, archive_url=archive,
                              api_port=port, chain=CHAIN)  # fmt: skip
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_replay(settings, Playback(None, None), announce=lambda _: ready.set(), stop=stop)
    )
    await asyncio.wait_for(ready.wait(), 60)
    try:
        yield Server(f"ws://127.0.0.1:{port}/ws", stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@dataclass
class Got:
    messages: list[dict[str, Any]]
    close_code: int | None


async def _client(url: str, subs: list[dict[str, Any]], *, leave_after: int | None = None) -> Got:
    """Subscribe, then read until the server closes (or leave after ``leave_after`` data messages)."""
    got: list[dict[str, Any]] = []
    query = f"&subscriptions={len(subs)}"
    async with ws_connect(url + query, max_size=None) as ws:
        for sub in subs:
            await ws.send(orjson.dumps(sub).decode())
        async for text in ws:
            got.append(orjson.loads(text))
            if leave_after is not None and _count(got) >= leave_after:
                break
    return Got(got, ws.close_code)


def _count(messages: list[dict[str, Any]]) -> int:
    return sum("data" in m and m.get("type") != "finalized" for m in messages)


# -- truth: the live session cut at a range ----------------------------------------------------------


def _chain_cut(
    live: list[dict[str, Any]], sid: str, field: str, first_s: int, end_s: int
) -> list[dict[str, Any]]:
    return [m for m in _data(live, sid) if first_s <= m["data"][field] < end_s]


def _book_cut(live: list[dict[str, Any]], sid: str, first_us: int, end_us: int) -> tuple[int, int]:
    """Where a time range starts and ends in a CEX subscription's live messages: the first message
    received at or after each moment (a resync, which has no time, goes with the messages before it)."""
    data = _data(live, sid)
    times = [m["data"].get("atom_timestamp") for m in data]
    start = next((i for i, t in enumerate(times) if t is not None and t >= first_us), len(data))
    end = next((i for i, t in enumerate(times) if t is not None and t >= end_us), len(data))
    return start, end


def _books_before(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each symbol's book after these live cex_book messages, folded here: a snapshot replaces it, a
    delta sets or removes a level, a resync makes it invalid; sequence and times of the last event."""
    books: dict[str, dict[str, Any]] = {}
    for m in messages:
        d = m["data"]
        book = books.setdefault(d["symbol"], {"valid": False})
        if m["type"] == "resync":
            books[d["symbol"]] = {"valid": False}
            continue
        if m["type"] == "book_snapshot":
            book.update(valid=True, bids={Decimal(p): Decimal(s) for p, s in d["bids"]},
                        asks={Decimal(p): Decimal(s) for p, s in d["asks"]})  # fmt: skip
        elif book["valid"]:
            side = book["bids"] if d["side"] == "bid" else book["asks"]
            if Decimal(d["size"]):
                side[Decimal(d["price"])] = Decimal(d["size"])
            else:
                side.pop(Decimal(d["price"]), None)
        if d["sequence"] is not None:
            book["sequence"] = d["sequence"]
        book["event_timestamp"], book["atom_timestamp"] = d["event_timestamp"], d["atom_timestamp"]
    return books


def _levels(levels: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(s)) for p, s in levels]


def _assert_cex_equals_live(run: Recorded, got: list[dict[str, Any]], first_us: int, end_us: int) -> None:
    start, end = _book_cut(run.live, "cex", first_us, end_us)
    trades = _data(run.live, "cex")[start:end]
    assert trades and _data(got, "cex") == trades
    live_book = _data(run.live, "book")
    start, end = _book_cut(run.live, "book", first_us, end_us)
    expected = _books_before(live_book[:start])
    replayed = _data(got, "book")
    # first the books at the start (one message per book, by symbol), then the live messages of the range
    opening, rest = replayed[: len(expected)], replayed[len(expected) :]
    assert [m["data"]["symbol"] for m in opening] == sorted(expected)
    for m in opening:
        book = expected[m["data"]["symbol"]]
        if not book["valid"]:
            assert m["type"] == "resync" and m["data"]["valid"] is False
            continue
        d = m["data"]
        assert (m["channel"], m["type"], m["version"], d["exchange"], d["valid"]) == (
            "cex_book",
            "book_snapshot",
            1,
            "okx",
            True,
        )
        assert _levels(d["bids"]) == sorted(book["bids"].items(), reverse=True)
        assert _levels(d["asks"]) == sorted(book["asks"].items())
        assert (d["sequence"], d["event_timestamp"], d["atom_timestamp"]) == (
            book.get("sequence"), book["event_timestamp"], book["atom_timestamp"])  # fmt: skip
    assert rest == live_book[start:end] and any(m["type"] == "book_delta" for m in rest)


def _middle(values: list[int]) -> tuple[int, int]:
    """A range over the middle third of these (sorted) times."""
    n = len(values)
    return values[n // 3], values[2 * n // 3]


# -- tests -------------------------------------------------------------------------------------------


async def test_each_connection_gets_its_own_range_while_another_leaves(recorded: Recorded) -> None:
    """Three clients of one replay server at once: a chain range, a CEX range at its own speed (books
    first, then deltas), and one that leaves after a few messages; each stream is the live session's
    for its range, message for message, and the two that stayed are closed normally (1000)."""
    run = recorded
    block_times = sorted(m["data"]["timestamp"] for m in _data(run.live, "blocks"))
    chain_first, chain_end = _middle(block_times)
    cex_times = sorted(
        m["data"]["atom_timestamp"] for m in _data(run.live, "book") if "atom_timestamp" in m["data"]
    )
    cex_first, cex_end = _middle(cex_times)
    speed = max((cex_end - cex_first) / 1e6 / 2, 0.001)  # about two seconds of playback
    async with _replay_server(run, run.archive.url) as server:
        chain, cex, leaver = await asyncio.gather(
            _client(f"{server.url}?from={chain_first}&to={chain_end}", CHAIN_SUBS),
            _client(
                f"{server.url}?from={cex_first / 1e6:.6f}&to={cex_end / 1e6:.6f}&speed={speed}", CEX_SUBS
            ),
            _client(f"{server.url}?from=0&to={LATER}", ALL_SUBS, leave_after=5),
        )
    assert chain.close_code == cex.close_code == 1000
    for sid, field in (("blocks", "timestamp"), ("trades", "block_time")):
        expected = _chain_cut(run.live, sid, field, chain_first, chain_end)
        assert expected and _data(chain.messages, sid) == expected, sid
    assert not _data(chain.messages, "cex")
    _assert_cex_equals_live(run, cex.messages, cex_first, cex_end)
    assert len(_data(leaver.messages, "blocks")) == 5 == _count(leaver.messages)
    assert _data(leaver.messages, "blocks") == _data(run.live, "blocks")[:5]


async def test_whole_run_replays_as_the_live_session(recorded: Recorded) -> None:
    """The whole run (archived minutes, then stored blocks past the archive) equals the live session on
    every subscription; no orphaned block, every confirmed block in order."""
    run = recorded
    async with _replay_server(run, run.archive.url) as server:
        got = await _client(f"{server.url}?from=0&to={LATER}", ALL_SUBS)
    assert got.close_code == 1000
    for sid in ("blocks", "trades", "cex", "book"):
        assert _data(got.messages, sid) == _data(run.live, sid), sid
    conn = await asyncpg.connect(run.dsn)
    try:
        head = await conn.fetchval("SELECT max(number) FROM blocks")
    finally:
        await conn.close()
    numbers = [m["data"]["number"] for m in _data(got.messages, "blocks")]
    assert numbers == list(range(0, head - CONFIRMATIONS + 1))
    assert not set(run.orphaned) & {m["data"]["hash"] for m in _data(got.messages, "blocks")}


async def test_past_the_archive_books_and_rows_come_from_postgres(recorded: Recorded) -> None:
    """Over an empty archive everything is read from Postgres: the books at the start rebuilt there,
    then the range's rows, as the live session had them."""
    run = recorded
    cex_times = sorted(
        m["data"]["atom_timestamp"] for m in _data(run.live, "book") if "atom_timestamp" in m["data"]
    )
    first, end = _middle(cex_times)
    async with _replay_server(run, str(run.tmp / "empty")) as server:
        got = await _client(f"{server.url}?from={first / 1e6:.6f}&to={end / 1e6:.6f}", CEX_SUBS)
    assert got.close_code == 1000
    _assert_cex_equals_live(run, got.messages, first, end)


BAD_QUERIES = [
    ("", "give the range"),
    ("?from=10&to=5", "after 'from'"),
    ("?from=x&to=5", "from:"),
    ("?from=0&to=5&speed=-1", "speed"),
    ("?from=0&to=5&kinds=nope", "kinds"),
    ("?from=0&to=5&color=1", "unknown query"),
]


async def test_a_bad_range_is_a_clear_error(recorded: Recorded) -> None:
    async with _replay_server(recorded, recorded.archive.url) as server:
        for query, text in BAD_QUERIES:
            async with ws_connect(server.url + query) as ws:
                message = orjson.loads(await ws.recv())
                with contextlib.suppress(Exception):
                    await ws.recv()
            assert message["event"] == "error" and text in message["message"], query
            assert ws.close_code == 1008


@pytest.mark.parametrize("source", ["postgres", "archive"])
async def test_a_resync_replays_as_the_live_resync(recorded: Recorded, source: str) -> None:
    """A book found wrong, then rebuilt from a REST snapshot whose buffered delta was received before it:
    stored by ``CexStore`` while a live client listens, replayed as the live client got it (the resync
    where it was published, not at the later moment it was written; the buffered delta after the
    snapshot): from Postgres, and from the archive alone (archived, then the exchange's rows deleted from
    Postgres, so only the archive's ``book_resync`` file can bring the resync back)."""
    run = recorded
    at = int(time.time()) // 60 * 60_000_000 + 10_000_000  # a minute's 10th second: all in one minute
    ex, sym = f"replaytest-{source}", "ETH-USDT"
    items: list[Record | Resync] = [
        BookSnapshot(ex, sym, ((D("100"), D("1")),), ((D("101"), D("2")),), 10, None, at),
        BookDelta(ex, sym, "bid", D("100"), D("3"), None, 11, None, at + 1_000),
        Resync(ex, sym, "gap", 11),
        BookSnapshot(ex, sym, ((D("99"), D("5")),), ((D("102"), D("1")),), 20, None, at + 2_000),
        BookDelta(ex, sym, "ask", D("102"), D("0"), None, 21, None, at + 1_500),  # buffered: before it
        BookDelta(ex, sym, "ask", D("103"), D("4"), None, 22, None, at + 3_000),
    ]
    subs = [{"op": "subscribe", "id": "book", "channel": "cex_book", "exchange": ex}]

    async def write() -> None:
        await _store(run.dsn, items)

    live = await _live_session(run.dsn, subs, write, {"book": len(items)})
    expected = _data(live, "book")
    assert [m["type"] for m in expected] == ["book_snapshot", "book_delta", "resync", "book_snapshot"] + [
        "book_delta"
    ] * 2
    assert expected[2]["data"]["reason"] == "gap"
    archive = run.tmp / f"resync-{source}"
    if source == "archive":
        pool = await asyncpg.create_pool(run.dsn, min_size=1, max_size=2)
        try:
            target = Target(str(archive))
            await Archiver(pool, target, chain=CHAIN, confirmations=CONFIRMATIONS, cex_grace_seconds=0,
                           clock=lambda: time.time() + 120).archive_cex()  # fmt: skip
            entry = target.bucket(Stream("cex", ex), at // 60_000_000)
            assert entry is not None and "book_resync" in {f.type for f in entry.files}
            deleted = await pool.execute("DELETE FROM cex_book_events WHERE exchange = $1", ex)
            assert deleted == f"DELETE {len(items)}"
        finally:
            await pool.close()
    async with _replay_server(run, str(archive)) as server:
        got = await _client(
            f"{server.url}?from={(at - 1_000_000) / 1e6:.6f}&to={(at + 5_000_000) / 1e6:.6f}", subs
        )
        # from between the resync and the snapshot that ended it: the book starts invalid, as the live
        # hub sends a book it holds invalid to a new subscriber (no reason, no sequence)
        mid = await _client(
            f"{server.url}?from={(at + 1_500) / 1e6:.6f}&to={(at + 5_000_000) / 1e6:.6f}", subs
        )
    assert got.close_code == 1000
    assert _data(got.messages, "book") == expected
    invalid = {**expected[2], "data": {**expected[2]["data"], "reason": None, "sequence": None}}
    assert mid.close_code == 1000
    assert _data(mid.messages, "book") == [invalid, *expected[3:]]
