"""SIGKILL the real ``dexnode follow`` process at random points, again and again, while the chain
grows and reorgs: after the last restart the database is exactly the canonical chain."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess

import pytest

from core.database import DatabaseInfo
from indexer.chain.rpc import RpcClient
from tests.chain_check import assert_db_is_canonical, mine, reorg, send_transfers, wait_for_tip
from tests.conftest import dexnode_bin

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def start_follower(anvil: str, dsn: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    args = [
        dexnode_bin(), "follow", "--rpc-http", anvil, "--rpc-ws", anvil.replace("http", "ws"),
        "--database-url", dsn, "--from-block", "0", "--quiet", "--silence-timeout", "2",
    ]  # fmt: skip
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_sigkill_twenty_times_no_gap_no_duplicate_no_orphan(
    anvil: str, clean_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    rng = random.Random(20261121)
    kills = 0
    async with RpcClient(anvil) as rpc:
        await rpc.call("evm_setAutomine", [False])
        for round_ in range(22):
            proc = start_follower(anvil, clean_db.dsn, cli_env)
            try:
                for step in range(rng.randint(1, 4)):
                    await send_transfers(rpc, rng.randint(0, 4), salt=round_ * 10 + step)
                    await mine(rpc, rng.randint(1, 2))
                    if rng.random() < 0.25 and await rpc.block_number() > 4:
                        await reorg(rpc, rng.randint(1, 3), rng.randint(0, 3), salt=round_ * 10 + step)
                    await asyncio.sleep(rng.uniform(0.05, 0.6))
            finally:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    kills += 1
                _, err = proc.communicate(timeout=30)
                assert b"Traceback" not in err, err.decode()
        proc = start_follower(anvil, clean_db.dsn, cli_env)
        try:
            await wait_for_tip(clean_db.dsn, rpc, timeout=120)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        counts = await assert_db_is_canonical(clean_db.dsn, rpc, 0)
    assert kills >= 20
    assert counts["blocks"] > 30 and counts["transactions"] > 40
