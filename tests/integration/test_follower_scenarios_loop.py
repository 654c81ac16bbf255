"""The follower run as a realtime command runs it (``cli.common.run_async(..., realtime=True)``: on
uvloop), in its own process against a scripted node (HTTP + websocket heads), stopped by
SIGTERM or Ctrl-C while blocks arrive: it exits as a command does, and what it stored is exactly the
scripted chain up to its cursor (a block in flight is written whole or not at all).
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import sys

import asyncpg
import pytest

from core.database import DatabaseInfo
from indexer.pipeline.pipeline import FOLLOW_STREAM
from tests.integration.follower_scenarios import assert_db_is_chain, scripted

pytestmark = pytest.mark.integration

FOLLOW = """
import asyncio, sys
from cli.common import run_async
from cli.follow import follow
from core.settings import build_settings

async def main() -> None:
    print(type(asyncio.get_running_loop()).__module__, flush=True)
    settings = build_settings(rpc_http=sys.argv[1], rpc_ws=sys.argv[2], database_url=sys.argv[3])
    await follow(settings, from_block=None, quiet=True, silence_timeout=60.0)

try:
    run_async(main(), realtime=True)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_signal_stops_the_realtime_follower_with_nothing_half_stored(
    clean_db: DatabaseInfo, cli_env: dict[str, str], sig: signal.Signals, code: int
) -> None:
    uvloop = importlib.util.find_spec("uvloop") is not None
    async with scripted(5) as node:
        args = [sys.executable, "-c", FOLLOW, node.http_url, node.ws_url, clean_db.dsn]
        proc = await asyncio.create_subprocess_exec(
            *args, env=cli_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            loop_module = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode().strip()
            conn = await asyncpg.connect(clean_db.dsn)
            try:
                for _ in range(3):  # blocks arrive over the websocket; signalled right after a new one
                    await _until_cursor(conn, node.chain.head["hash"], proc)
                    await node.mine(1)
                proc.send_signal(sig)
                _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
                number = await conn.fetchval(
                    "SELECT block_number FROM cursors WHERE stream = $1", FOLLOW_STREAM
                )
            finally:
                await conn.close()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == code, err.decode()
        assert loop_module == ("uvloop" if uvloop else "asyncio.unix_events")
        assert number in (7, 8)  # block 8, mined just before the signal, stored whole or not at all
        await assert_db_is_chain(clean_db.dsn, node.chain, range(5, number + 1))


async def _until_cursor(conn: asyncpg.Connection, want: str, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if await conn.fetchval("SELECT block_hash FROM cursors WHERE stream = $1", FOLLOW_STREAM) == want:
            return
        assert proc.returncode is None, "the follower exited"
        await asyncio.sleep(0.05)
    raise AssertionError(f"the stored cursor never reached {want}")
