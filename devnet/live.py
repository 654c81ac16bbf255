"""A devnet that keeps going: a block of seeded activity every ~``block_interval`` seconds and, now and
then, a reorg of depth 1-3, until stopped — the chain ``dexnode demo`` indexes live.

The devnet's RPC client is synchronous, so the loop runs in its own thread (``start()``/``stop()``);
only that thread talks to the devnet while it runs. Every block and every reorg is drawn from one seeded
``random.Random``: the same seed on the same starting chain gives the same transactions and the same reorg
depths (when they happen follows the clock). Block timestamps follow the wall clock (the generated history
runs 12 s apart from 2023), so live DEX trades sit next to the live CEX trades in time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from devnet.devnet import Devnet, ReorgResult
from devnet.rpc import DevnetError
from devnet.singletons import BalancerV2, UniswapV4

log = logging.getLogger("dexnode.devnet.live")


@dataclass(frozen=True)
class LiveOptions:
    block_interval: float = 1.5  # seconds between blocks
    rate: float = 4.0  # transactions per block, on average
    reorg_every: tuple[float, float] = (30.0, 60.0)  # seconds between reorgs, drawn uniformly; (0, 0): none
    reorg_depth: tuple[int, int] = (1, 3)
    seed: int = 1
    singleton_every: int = 3  # with ``Singletons``: every Nth block is one Uniswap v4 or Balancer swap

    def __post_init__(self) -> None:
        if self.block_interval <= 0:
            raise DevnetError(f"block interval must be positive, got {self.block_interval}")
        low, high = self.reorg_depth
        if not 1 <= low <= high:
            raise DevnetError(f"reorg depth range must be 1 <= low <= high, got {self.reorg_depth}")
        if not 0 <= self.reorg_every[0] <= self.reorg_every[1]:
            raise DevnetError(f"reorg interval must be 0 <= low <= high, got {self.reorg_every}")

    @property
    def reorgs(self) -> bool:
        return self.reorg_every[1] > 0


class Singletons:
    """Uniswap v4 (a PoolManager with two ERC-20 pools) and Balancer v2 (a Vault with two weighted pools)
    deployed on the devnet by ``devnet.singletons`` with their seeded first activity (~70 one-transaction
    blocks, under a second here), then one swap at a time: the v4 pools' price and the Balancer pools'
    balances walk with the swaps' seeded directions and sizes."""

    def __init__(self, devnet: Devnet) -> None:
        self.rpc = devnet.rpc
        self.rpc.call("evm_setAutomine", False)  # the Sender mines each of its transactions itself
        try:
            self.v4 = UniswapV4(self.rpc)
            self.v4.activity()
            self.balancer = BalancerV2(self.rpc)
            self.balancer.activity()
        finally:
            self.rpc.call("evm_setAutomine", True)

    def plugin_settings(self) -> dict[str, str]:
        """The indexer's settings for them (DEXNODE_UNISWAP_V4_POOL_MANAGERS, DEXNODE_BALANCER_V2_VAULTS)."""
        return {
            "uniswap_v4_pool_managers": f"{self.v4.manager}=uniswap-v4",
            "balancer_v2_vaults": f"{self.balancer.vault}=balancer-v2",
        }

    def swap(self, rng: random.Random) -> None:
        """One swap in a block of its own: v4 (an ERC-20 pool; the native-ETH one would leave the router
        the unsettled ETH each time) or Balancer, exact input, either direction."""
        self.rpc.call("evm_setAutomine", False)
        try:
            if rng.random() < 0.5:
                key = rng.choice([self.v4.keys[0], self.v4.keys[2]])
                self.v4.swap(key, rng.random() < 0.5, -(10**16) * rng.randint(1, 50))
            else:
                aaa, usdx, _ = self.balancer.tokens
                if rng.random() < 0.5:
                    self.balancer.swap(0, aaa, usdx, 10**18 * rng.randint(1, 50))
                else:
                    self.balancer.swap(0, usdx, aaa, 10**6 * rng.randint(1, 50))
        finally:
            self.rpc.call("evm_setAutomine", True)


@dataclass
class LiveStats:
    blocks: int = 0  # blocks mined (activity, or one singleton swap)
    reorgs: list[ReorgResult] = field(default_factory=list)
    errors: int = 0
    last_error: str | None = None


class LiveDevnet:
    """Drives ``devnet`` from a background thread: ``start()``, then ``stop()`` (idempotent)."""

    def __init__(
        self,
        devnet: Devnet,
        options: LiveOptions | None = None,
        *,
        singletons: Singletons | None = None,
        on_reorg: Callable[[ReorgResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.devnet = devnet
        self.singletons = singletons
        self.options = options or LiveOptions()
        self.on_reorg = on_reorg
        self.clock = clock
        self.stats = LiveStats()
        self.rng = random.Random(self.options.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LiveDevnet:
        # Blocks from here on carry the wall-clock time (one second apart at least), not +12 s each.
        self.devnet.rpc.call("anvil_removeBlockTimestampInterval")
        self._thread = threading.Thread(target=self._run, name="devnet-live", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _next_reorg(self, now: float) -> float | None:
        if not self.options.reorgs:
            return None
        return now + self.rng.uniform(*self.options.reorg_every)

    def _run(self) -> None:
        opts = self.options
        next_block = self.clock()
        next_reorg = self._next_reorg(next_block)
        while not self._stop.is_set():
            try:
                self.block()
                if next_reorg is not None and self.clock() >= next_reorg:
                    self.reorg(self.rng.randint(*opts.reorg_depth))
                    next_reorg = self._next_reorg(self.clock())
            except Exception as exc:  # anvil restarting or gone: count, log, keep the pace
                if self._stop.is_set():
                    break
                self.stats.errors += 1
                self.stats.last_error = str(exc)
                log.warning("live devnet: %s", exc)
            next_block += opts.block_interval
            self._stop.wait(max(0.0, next_block - self.clock()))
            next_block = max(next_block, self.clock() - opts.block_interval)  # no burst after a stall

    def block(self) -> None:
        """Mine one block at the wall-clock time: seeded activity, or every ``singleton_every``th block
        (with ``singletons``) one Uniswap v4 or Balancer swap."""
        rpc = self.devnet.rpc
        last = int(rpc.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
        rpc.call("evm_setNextBlockTimestamp", hex(max(int(time.time()), last + 1)))
        seed = self.rng.randrange(2**32)
        every = self.options.singleton_every
        if self.singletons is not None and every > 0 and self.stats.blocks % every == every - 1:
            self.singletons.swap(random.Random(seed))
        else:
            self.devnet.activity(1, self.options.rate, seed=seed)
        self.stats.blocks += 1

    def reorg(self, depth: int) -> ReorgResult:
        result = self.devnet.reorg(depth, seed=self.rng.randrange(2**32))
        self.stats.reorgs.append(result)
        log.info(
            "live devnet: reorg of depth %d above block %d (new head %s)",
            depth,
            result.common_ancestor,
            result.new_hashes[-1],
        )
        if self.on_reorg is not None:
            self.on_reorg(result)
        return result
