"""``dexnode serve`` (one process) stopped by SIGTERM while a request is in flight: the request is
answered, the command ends as a terminated one (143) with no traceback. Before, both uvicorn's own
signal handling and the command's cancel-on-SIGTERM saw the signal, and the cancel cut the request
off mid-query: a ``CancelledError`` traceback per request in flight and no answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import httpx
import pytest

from indexer.chain.extract import extract_receipts_only
from indexer.pipeline.pipeline import batch_of
from sinks.postgres import PostgresSink
from tests.api_check import own_database
from tests.conftest import dexnode_bin, free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fixtures_dir")]

HELIOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mainnet-block-21925176-helios"


async def _waiting_on_lock(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
    )


async def test_sigterm_answers_the_request_in_flight_then_exits_143(
    pg_server: tuple[str, bool], cli_env: dict[str, str]
) -> None:
    header = json.loads((HELIOS / "block.json").read_text())
    receipts = json.loads((HELIOS / "receipts.json").read_text())
    async with own_database(pg_server, "dexnode_serve_stop") as db:
        sink = await PostgresSink.connect(db.dsn)
        try:
            await sink.write(batch_of("backfill", [extract_receipts_only(header, receipts)]))
        finally:
            await sink.pool.close()
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            *(dexnode_bin(), "serve", "--port", str(port), "--database-url", db.dsn),
            env=cli_env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        locker = await asyncpg.connect(db.dsn)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                for _ in range(1200):
                    try:
                        if (await client.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.returncode is None, "dexnode serve exited"
                    await asyncio.sleep(0.1)
                # the request in flight: its read waits on a lock this test holds
                lock = locker.transaction()
                await lock.start()
                await locker.execute("LOCK TABLE blocks IN ACCESS EXCLUSIVE MODE")
                request = asyncio.create_task(client.get("/v1/blocks/latest"))
                for _ in range(600):
                    if await _waiting_on_lock(locker):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the request never reached the database")
                proc.terminate()
                await asyncio.sleep(1.0)  # the signal handled while the request still waits
                assert not request.done()
                await lock.rollback()
                answer = await asyncio.wait_for(request, 30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["data"]["hash"] == header["hash"]
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await locker.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 143, err
    assert b"Traceback" not in err and b"CancelledError" not in err, err.decode(errors="replace")
    assert b"dexnode: terminated" in err
