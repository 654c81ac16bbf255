"""``dexnode replay`` stopped by SIGTERM with websocket clients connected: one in the middle of its playback,
one waiting for its subscriptions, one that never subscribed. The command must stop as ``serve`` does:
each client closed by the server, no traceback (before: uvicorn's lifespan and the cancelled server each
printed one), exit 143 and ``dexnode: terminated``, and the embedded PostgreSQL it started stopped."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from core.database import open_database
from core.settings import build_settings
from indexer.chain.extract import extract_receipts_only
from indexer.pipeline.pipeline import batch_of
from migrations import runner
from sinks.postgres import PostgresSink
from tests.conftest import dexnode_bin, free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fixtures_dir")]

HELIOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mainnet-block-21925176-helios"
GAP_SECONDS = 600  # between the two blocks: at --speed 1 the playback is mid-way for ten minutes


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # outside pytest's 0700 basetemp: as root, pgserver runs PostgreSQL as an unprivileged user
    root = Path(tempfile.mkdtemp(prefix="dexnode-test-replay-stop-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _store_two_blocks(data_dir: Path) -> dict[str, Any]:
    """The real mainnet block with its receipts, then an empty child ``GAP_SECONDS`` later (its hash made
    up: only its time matters here), in the embedded database of ``data_dir``; the real header."""
    header = json.loads((HELIOS / "block.json").read_text())
    receipts = json.loads((HELIOS / "receipts.json").read_text())
    child = {**header, "number": hex(int(header["number"], 16) + 1), "parentHash": header["hash"],
             "hash": "0x" + "ab" * 32, "timestamp": hex(int(header["timestamp"], 16) + GAP_SECONDS),
             "transactions": [], "gasUsed": "0x0"}  # fmt: skip
    async with open_database(build_settings(data_dir=data_dir)) as db:
        await runner.upgrade(db.sqlalchemy_url)
        sink = await PostgresSink.connect(db.dsn)
        try:
            blocks = [extract_receipts_only(header, receipts), extract_receipts_only(child, [])]
            await sink.write(batch_of("backfill", blocks))
        finally:
            await sink.pool.close()
    return header


async def _messages_until_closed(ws: ClientConnection, into: list[dict[str, Any]]) -> int | None:
    try:
        async for text in ws:
            into.append(json.loads(text))
    except ConnectionClosed:
        pass
    return ws.close_code


def _postmaster_running(data_dir: Path) -> bool:
    return (data_dir / "postgres" / "postmaster.pid").exists()


async def test_sigterm_with_clients_connected_stops_cleanly_and_exits_143(data_dir: Path) -> None:
    header = await _store_two_blocks(data_dir)
    assert not _postmaster_running(data_dir)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXNODE_")}
    env.update(DEXNODE_DATA_DIR=str(data_dir), DEXNODE_CONFIRMATIONS="0")
    proc = await asyncio.create_subprocess_exec(
        *(dexnode_bin(), "replay", "--port", str(port), "--from", "2020-01-01", "--to", "2030-01-01"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        announced = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert announced.startswith(b"replay on ws://"), announced
        assert _postmaster_running(data_dir)
        url = f"ws://127.0.0.1:{port}/ws"
        subscribe = json.dumps({"op": "subscribe", "id": "b", "channel": "blocks", "finality": "confirmed"})
        playing = await ws_connect(url + "?speed=1&subscriptions=1")
        waiting = await ws_connect(url + "?subscriptions=2")  # one subscribe of two: not started
        silent = await ws_connect(url)
        await playing.send(subscribe)
        await waiting.send(subscribe)
        got: dict[str, list[dict[str, Any]]] = {"playing": [], "waiting": [], "silent": []}
        readers = {
            name: asyncio.create_task(_messages_until_closed(ws, got[name]))
            for name, ws in (("playing", playing), ("waiting", waiting), ("silent", silent))
        }
        for _ in range(600):  # the first block played: the playback now waits GAP_SECONDS for the next
            if any(m.get("data", {}).get("hash") == header["hash"] for m in got["playing"]):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the first block was not played: {got['playing']}")
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        codes = {name: await asyncio.wait_for(task, 10) for name, task in readers.items()}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = err.decode(errors="replace")
    assert proc.returncode == 143, text
    assert "Traceback" not in text and "CancelledError" not in text, text
    assert text.rstrip().endswith("dexnode: terminated"), text
    # every client was told by a close frame (1001 going away or 1012 service restart), not cut off (1006)
    assert all(code in (1001, 1012) for code in codes.values()), codes
    played = [m["data"]["hash"] for m in got["playing"] if "data" in m and m.get("type") != "finalized"]
    assert played == [header["hash"]], got["playing"]  # stopped mid-way, before the second block
    assert not _postmaster_running(data_dir), "the embedded PostgreSQL was left running"
