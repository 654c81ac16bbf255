"""Head hints: ``newHeads`` over the node's websocket, with polling when it is lost, silent or absent.

``HeadStream`` is an async iterator of ``Head``. It yields a polled head at once on start (so a
restarted node catches up without waiting for the next block), then websocket heads; it polls once
more when a subscription is confirmed, since heads announced before that reached nobody. While the
websocket is not subscribed (down, refused, or no websocket URL at all) it polls the latest block at
the chain's block time, measured from recent block timestamps (median gap, bounded; 12 s when it
cannot be measured). When a subscribed websocket drops, or sends nothing for ``silence_timeout``
seconds (a socket that accepts but never speaks), it reconnects with jittered backoff and polls
meanwhile, so the follower is never stuck and — with its gap fill — never skips a block.

A malformed websocket message (not JSON, another shape, a number that is not hex) is logged,
counted in ``malformed`` and skipped; it never ends the stream. URLs are masked in every log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import websockets

from core.errors import DexnodeError, RetryableError
from core.redact import mask_url, mask_urls_in
from core.retry import RetryPolicy
from indexer.chain.rpc import RpcClient

log = logging.getLogger("dexnode.heads")

DEFAULT_BLOCK_TIME = 12.0


@dataclass(frozen=True, slots=True)
class Head:
    number: int
    hash: str | None
    seen_at: float  # time.perf_counter() when dexnode learned of it


class MalformedHead(ValueError):
    pass


def parse_head(raw: str | bytes) -> Head | None:
    """A ``newHeads`` notification → ``Head``; None for other well-formed messages (subscription
    confirmations); raises ``MalformedHead`` for anything else."""
    try:
        message: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedHead(f"not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise MalformedHead(f"a JSON {type(message).__name__}, not an object")
    if "id" in message and "method" not in message:
        if message.get("error") is not None:
            raise ConnectionRefusedError(f"eth_subscribe refused: {message['error']}")
        return None
    params = message.get("params")
    result = params.get("result") if isinstance(params, dict) else None
    if not isinstance(result, dict):
        raise MalformedHead("no params.result object")
    number, block_hash = result.get("number"), result.get("hash")
    try:
        parsed = int(number, 16) if isinstance(number, str) and number.startswith("0x") else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise MalformedHead(f"block number {str(number)[:20]!r} is not a hex quantity")
    if block_hash is not None and not (isinstance(block_hash, str) and len(block_hash) == 66):
        raise MalformedHead(f"block hash {str(block_hash)[:20]!r} is not a 32-byte hex string")
    return Head(parsed, block_hash.lower() if block_hash else None, time.perf_counter())


class HeadStream:
    def __init__(
        self,
        ws_url: str | None,
        rpc: RpcClient,
        *,
        silence_timeout: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        min_poll_interval: float = 1.0,
        max_poll_interval: float = 15.0,
    ) -> None:
        """``ws_url`` None: no websocket, heads are polled at the block time."""
        self.ws_url = ws_url
        self.rpc = rpc
        self.silence_timeout = silence_timeout
        # reconnecting: for ever, from 2 x backoff_base doubling up to backoff_max, jittered
        self.reconnect_retry = RetryPolicy(attempts=0, base_delay=2 * backoff_base, max_delay=backoff_max)
        self.min_poll_interval = min_poll_interval
        self.max_poll_interval = max_poll_interval
        self.block_time: float | None = None  # measured on first need
        self.reconnects = 0
        self.polls = 0
        self.malformed = 0
        self.connected = False  # the websocket is open
        self.subscribed = False  # ... and its subscription confirmed
        self._queue: asyncio.Queue[Head] = asyncio.Queue()
        self._reconnect = asyncio.Event()
        self._last_polled: tuple[int, str | None] | None = None

    async def __aiter__(self) -> AsyncIterator[Head]:
        task = None
        if self.ws_url is not None:
            task = asyncio.create_task(self._ws_loop(), name="dexnode-newheads")
        else:
            log.info("no websocket URL: polling the head at the block time")
        try:
            head = await self._poll()
            if head is not None:
                yield head
            last_heard = time.perf_counter()
            while True:
                # waits no longer than a block time, so a websocket that drops is noticed within one
                timeout = await self._poll_interval()
                if self.subscribed:
                    timeout = min(timeout, self.silence_timeout)
                try:
                    # not wait_for: Python 3.11's drops a cancellation that arrives as a head does
                    async with asyncio.timeout(timeout):
                        head = await self._queue.get()
                except TimeoutError:
                    silent = time.perf_counter() - last_heard >= self.silence_timeout
                    if self.connected and silent:
                        log.warning(
                            "no new head for %.0fs: reconnecting the websocket and polling",
                            self.silence_timeout,
                        )
                        self._reconnect.set()
                        last_heard = time.perf_counter()
                    elif self.subscribed:
                        continue  # a quiet moment on a live subscription: nothing to poll yet
                    polled = await self._poll(only_new=True)
                    if polled is not None:
                        yield polled
                    continue
                last_heard = time.perf_counter()
                while not self._queue.empty():  # a backlog: the newest head is enough, gaps get filled
                    head = self._queue.get_nowait()
                yield head
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _poll(self, *, only_new: bool = False) -> Head | None:
        self.polls += 1
        try:
            block = await self.rpc.get_block_by_number("latest", full_txs=False)
            head = Head(int(block["number"], 16), block["hash"].lower(), time.perf_counter())
        except RetryableError as exc:
            log.warning("polling the head failed: %s", mask_urls_in(str(exc)))
            return None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("polling the head: malformed latest block (%s)", exc)
            return None
        key = (head.number, head.hash)
        if only_new and key == self._last_polled:
            return None
        self._last_polled = key
        return head

    async def _poll_interval(self) -> float:
        if self.block_time is None:
            self.block_time = await self.measure_block_time()
        return min(self.max_poll_interval, max(self.min_poll_interval, self.block_time))

    async def measure_block_time(self, samples: int = 10) -> float:
        """Median gap between the timestamps of the latest ``samples`` + 1 blocks (12 s if unknown)."""
        try:
            head = await self.rpc.block_number()
            numbers = list(range(max(0, head - samples), head + 1))
            blocks = await self.rpc.get_blocks(numbers, full_txs=False)
            stamps = [int(b["timestamp"], 16) for b in blocks]
            gaps = [b - a for a, b in itertools.pairwise(stamps) if b >= a]
        except (DexnodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("cannot measure the block time (%s): polling every %.0fs", exc, DEFAULT_BLOCK_TIME)
            return DEFAULT_BLOCK_TIME
        block_time = float(statistics.median(gaps)) if gaps else DEFAULT_BLOCK_TIME
        log.info(
            "block time %.1fs: polling the head at that pace while no websocket is subscribed", block_time
        )
        return block_time

    async def _ws_loop(self) -> None:
        assert self.ws_url is not None
        failures = 0
        while True:
            try:
                await self._subscribe_and_read(self.ws_url)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the socket: log, back off, reconnect; never die
                failures += 1
                delay = self.reconnect_retry.delay(failures, None)
                log.warning(
                    "newHeads websocket %s: %s; reconnecting in %.1fs (polling meanwhile)",
                    mask_url(self.ws_url),
                    mask_urls_in(f"{type(exc).__name__}: {exc}"),
                    delay,
                )
                self.reconnects += 1
                self._reconnect.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._reconnect.wait()
            finally:
                self.connected = self.subscribed = False

    async def _subscribe_and_read(self, url: str) -> None:
        async with websockets.connect(url, open_timeout=10, max_size=2**24) as ws:
            await ws.send(
                orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]})
            )
            self._reconnect.clear()
            self.connected = True
            reader = asyncio.ensure_future(ws.recv())
            waiter = asyncio.ensure_future(self._reconnect.wait())
            try:
                while True:
                    done, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    if waiter in done:
                        self.reconnects += 1
                        return  # silence: the consumer asked for a fresh connection
                    raw = reader.result()
                    reader = asyncio.ensure_future(ws.recv())
                    try:
                        head = parse_head(raw)
                    except MalformedHead as exc:
                        self.malformed += 1
                        log.warning(
                            "malformed newHeads message skipped (%s): %r", exc, mask_urls_in(str(raw)[:200])
                        )
                        continue
                    confirmed_now = not self.subscribed
                    self.subscribed = True  # a confirmation or a head: the subscription works
                    if head is None and confirmed_now:
                        # blocks mined between the last poll and this confirmation were announced to
                        # nobody: without this poll the follower would wait for the next block (or the
                        # silence timeout on a quiet chain) to learn of them
                        head = await self._poll(only_new=True)
                    if head is not None:
                        await self._queue.put(head)
            finally:
                reader.cancel()
                waiter.cancel()
