"""How hard the backfill pushes the node: adaptive concurrency and batch size, and a requests/s cap.

``AdaptiveLoad`` is additive-increase / multiplicative-decrease on two knobs, decided after each
chunk: any retry the RPC client had to take since the last decision (HTTP 429, 5xx, timeouts,
JSON-RPC rate-limit errors: ``RpcStats.retries``) halves the concurrent chunks and the JSON-RPC
batch size, at most once per ``cooldown`` seconds (the requests in flight were sent under the old
load); ``grow_after`` healthy chunks in a row add one chunk of concurrency and double the batch
size, up to the configured maxima. A node that refuses a batch for its size makes ``RpcClient``
shrink ``max_batch_size`` itself; that size becomes a ceiling the controller never grows past.

``RateLimitedTransport`` wraps the RPC client's transport (``indexer.chain.http11``) with a token
bucket, so ``--max-rps`` holds for every HTTP request the client sends (one JSON-RPC batch is one
request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from core.retry import RetryPolicy
from indexer.chain.http11 import Http11Transport

log = logging.getLogger("dexnode.backfill")


@dataclass
class AdaptiveLoad:
    max_workers: int
    max_batch: int
    grow_after: int = 3  # healthy chunks in a row before growing
    cooldown: float = 1.0  # seconds between two back-offs
    workers: int = field(init=False)
    batch: int = field(init=False)
    node_cap: int | None = None  # the largest batch the node accepted after refusing one
    backoffs: int = 0
    _healthy: int = 0
    _seen_retries: int = 0
    _last_backoff: float = float("-inf")

    def __post_init__(self) -> None:
        if self.max_workers < 1 or self.max_batch < 1:
            raise ValueError("workers and batch size must be at least 1")
        self.workers = self.max_workers
        self.batch = self.max_batch

    @property
    def batch_ceiling(self) -> int:
        return min(self.max_batch, self.node_cap) if self.node_cap is not None else self.max_batch

    def chunk_done(self, *, retries: int, client_batch: int, now: float | None = None) -> None:
        """Decide after a chunk: ``retries`` is the client's running retry count, ``client_batch``
        its current ``max_batch_size`` (lower than ``batch`` when the node refused a size)."""
        now = time.monotonic() if now is None else now
        if client_batch < self.batch:
            self.node_cap = client_batch if self.node_cap is None else min(self.node_cap, client_batch)
            self.batch = client_batch
            log.info("the node caps JSON-RPC batches: at most %d calls per batch from now on", client_batch)
        overloaded = retries > self._seen_retries
        self._seen_retries = retries
        if overloaded:
            self._healthy = 0
            if now - self._last_backoff < self.cooldown:
                return
            self._last_backoff = now
            before = (self.workers, self.batch)
            self.workers = max(1, self.workers // 2)
            self.batch = max(1, self.batch // 2)
            self.backoffs += 1
            log.warning(
                "node under pressure (retries): backing off from %d to %d concurrent chunks, batch %d to %d",
                before[0],
                self.workers,
                before[1],
                self.batch,
            )
            return
        self._healthy += 1
        if self._healthy < self.grow_after:
            return
        self._healthy = 0
        grown = (min(self.max_workers, self.workers + 1), min(self.batch_ceiling, self.batch * 2))
        if grown != (self.workers, self.batch):
            self.workers, self.batch = grown
            log.info("node healthy: %d concurrent chunks, batch %d", self.workers, self.batch)

    def node_failed(self, *, now: float | None = None) -> bool:
        """A chunk failed with a retryable error that outlived the client's retries (the node is down
        or refusing us): back off like on retries, at most once per ``cooldown``; → backed off."""
        now = time.monotonic() if now is None else now
        self._healthy = 0
        if now - self._last_backoff < self.cooldown or (self.workers, self.batch) == (1, 1):
            return False
        self._last_backoff = now
        self.workers = max(1, self.workers // 2)
        self.batch = max(1, self.batch // 2)
        self.backoffs += 1
        return True


# How a backfill waits out a node that is down: a chunk whose fetch (or enrichment) fails with a
# retryable error after the client's own retries is tried again for as long as it takes (the node
# comes back, or the user stops the run), up to 30 s apart or a server's Retry-After up to 10
# minutes; a line is logged at most every NODE_DOWN_LOG_EVERY seconds meanwhile.
NODE_DOWN = RetryPolicy(attempts=0, base_delay=1.0, max_delay=30.0, max_retry_after=600.0)
NODE_DOWN_LOG_EVERY = 30.0


class Slots:
    """A semaphore whose size follows ``AdaptiveLoad.workers``."""

    def __init__(self, load: AdaptiveLoad) -> None:
        self.load = load
        self.active = 0
        self._cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.active < self.load.workers)
            self.active += 1

    async def release(self) -> None:
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()


class MemoryBudget:
    """Bytes of node answers a backfill holds at once, and the chunk size that keeps them in budget.

    A chunk's cost is its block count times the bytes a block's answers take (``eth_getBlockByNumber``
    with full transactions plus ``eth_getBlockReceipts``, measured on the JSON as fetched) times
    ``expansion``, the factor from JSON bytes to what the parsed answers and the extracted records
    take in Python until the chunk is written. A worker reserves a chunk's cost before it fetches
    and releases it when the chunk is written; it waits while the reservations in flight plus its
    own would exceed ``limit``. Two exceptions keep the backfill moving: a chunk is always granted
    when nothing else is reserved, and the chunk whose turn it is to be enriched (the lowest not
    yet enriched; the later ones wait for it while holding their reservations) is granted too, so
    the most ever reserved is ``limit`` plus one chunk. The backfill measures one block alone
    before it sizes any chunk.
    """

    def __init__(self, limit_bytes: int, *, expansion: float = 4.0) -> None:
        if limit_bytes < 1:
            raise ValueError("the memory budget must be positive")
        self.limit = limit_bytes
        self.expansion = expansion
        self.block_bytes: float | None = None  # response bytes per block, weighted towards the largest
        self.in_use = 0
        self.peak = 0  # most bytes ever reserved at once
        self._cond = asyncio.Condition()

    @property
    def measured(self) -> bool:
        return self.block_bytes is not None

    def cost(self, blocks: int) -> int:
        assert self.block_bytes is not None
        return int(blocks * self.block_bytes * self.expansion)

    def chunk_blocks(self, max_blocks: int, holders: int) -> int:
        """Blocks per chunk so that ``holders`` chunks in flight stay within the limit (at least 1)."""
        per_chunk = self.limit / max(1, holders)
        return max(1, min(max_blocks, int(per_chunk // max(1.0, self.cost(1)))))

    def observe(self, blocks: int, response_bytes: int) -> None:
        """A fetched batch's size: a larger block raises the estimate at once, smaller lower it slowly."""
        sample = response_bytes / max(1, blocks)
        old = self.block_bytes
        self.block_bytes = sample if old is None else max(sample, 0.8 * old + 0.2 * sample)

    async def reserve(self, nbytes: int, is_next: Callable[[], bool] = lambda: False) -> None:
        """Wait until ``nbytes`` fit (or nothing is reserved, or ``is_next()``), then hold them."""
        async with self._cond:
            await self._cond.wait_for(
                lambda: self.in_use + nbytes <= self.limit or self.in_use == 0 or is_next()
            )
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)

    async def release(self, nbytes: int) -> None:
        async with self._cond:
            self.in_use -= nbytes
            self._cond.notify_all()

    async def poke(self) -> None:
        """Re-check waiting reservations (the enrichment turn moved)."""
        async with self._cond:
            self._cond.notify_all()


class TokenBucket:
    """``rate`` acquisitions per second, evenly spaced (burst of one)."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + 1.0 / self.rate
            if wait > 0:
                await asyncio.sleep(wait)


class RateLimitedTransport(httpx.AsyncBaseTransport):
    """httpx transport that spaces requests to at most ``max_rps`` per second (None: no limit);
    ``max_response_bytes``: ``Http11Transport``'s."""

    def __init__(
        self, max_rps: float | None = None, *, connections: int = 32, max_response_bytes: int | None = None
    ) -> None:
        self.inner = Http11Transport(max_connections=connections, max_response_bytes=max_response_bytes)
        self.bucket = TokenBucket(max_rps) if max_rps else None
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.bucket is not None:
            await self.bucket.acquire()
        self.requests += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
