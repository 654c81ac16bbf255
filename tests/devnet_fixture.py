"""Devnet fixtures, loaded through ``pytest_plugins`` in ``tests/conftest.py``.

- ``devnet`` (session): the seed-1 devnet with 300 blocks of activity, shared by every test. Read it,
  index it, add ``devnet.activity(...)`` if you must, but do not reorg it.
- ``fresh_devnet``: an anvil of its own holding the same chain, to reorg or mutate freely.
- ``devnet_factory``: ``make(seed=..., blocks=..., rate=..., cached=True, headroom=16)`` for other shapes;
  ``cached=False`` generates from scratch.

Each is an ``devnet.Devnet``: ``rpc_http``, ``rpc_ws``, ``manifest`` (dict), ``rpc`` (a JSON-RPC
client), ``activity(blocks, rate)``, ``reorg(depth)``, ``head()``.

Cached devnets are anvil state dumps in ``.dexnode-test-cache/`` keyed by seed, size and the devnet's
source, so a session after the first starts in well under a second. A load brings back every block,
transaction, receipt and log, but per-block state only from ``devnet.loaded_at`` on (``headroom`` seeded
blocks are mined after the load): ``eth_call``/``eth_getBalance`` at an older block number fails, and
reorgs deeper than ``headroom`` are refused. Use ``devnet_factory(cached=False)`` when a test needs
state at old blocks; ``DEXNODE_TEST_DEVNET_CACHE=0`` turns the cache off everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devnet import Devnet
from devnet.cache import DevnetCache

DEVNET_SEED = 1
DEVNET_BLOCKS = 300
DEVNET_RATE = 6.0
REORG_HEADROOM = 16

DevnetFactory = Callable[..., Devnet]


def _cache_root(pytestconfig: pytest.Config) -> Path:
    return Path(pytestconfig.rootpath) / ".dexnode-test-cache"


def _cache_enabled() -> bool:
    return os.environ.get("DEXNODE_TEST_DEVNET_CACHE", "1") != "0"


@pytest.fixture(scope="session")
def devnet_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the anvil logs of this session's devnets go."""
    return tmp_path_factory.mktemp("anvil-logs")


def load_devnet(pytestconfig: pytest.Config, devnet_logs: Path) -> Devnet:
    """An anvil of the caller's own holding the seed-1 chain (from the cache), with ``REORG_HEADROOM``
    blocks to reorg; the caller stops it. For module-scoped fixtures that reorg it."""
    cache = DevnetCache(
        _cache_root(pytestconfig), devnet_logs, DEVNET_SEED, DEVNET_BLOCKS, DEVNET_RATE, _cache_enabled()
    )
    return cache.load(headroom=REORG_HEADROOM)


@pytest.fixture(scope="session")
def devnet(pytestconfig: pytest.Config, devnet_logs: Path) -> Iterator[Devnet]:
    node = load_devnet(pytestconfig, devnet_logs)
    yield node
    node.stop()


@pytest.fixture
def devnet_factory(pytestconfig: pytest.Config, devnet_logs: Path) -> Iterator[DevnetFactory]:
    started: list[Devnet] = []

    def make(
        *,
        seed: int = DEVNET_SEED,
        blocks: int = DEVNET_BLOCKS,
        rate: float = DEVNET_RATE,
        cached: bool = True,
        headroom: int = REORG_HEADROOM,
    ) -> Devnet:
        cache = DevnetCache(
            _cache_root(pytestconfig), devnet_logs, seed, blocks, rate, cached and _cache_enabled()
        )
        node = cache.load(headroom=headroom)
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


@pytest.fixture
def fresh_devnet(devnet_factory: DevnetFactory) -> Devnet:
    return devnet_factory()
