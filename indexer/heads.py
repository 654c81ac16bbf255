"""Head hints: ``newHeads`` over the node's websocket, with polling when it is lost or silent.

``HeadStream`` is an async iterator of ``Head``. It yields a polled head at once on start (so a
restarted node catches up without waiting for the next block), then websocket heads. When the
websocket drops, or sends nothing for ``silence_timeout`` seconds (a socket that accepts but
never speaks), it reconnects with jittered backoff and polls the latest block meanwhile, so the
follower is never stuck and — with its gap fill — never skips a block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import websockets

from indexer.errors import RetryableError
from indexer.rpc import RpcClient

log = logging.getLogger("dexnode.heads")


@dataclass(frozen=True, slots=True)
class Head:
    number: int
    hash: str | None
    seen_at: float  # time.perf_counter() when dexnode learned of it


class HeadStream:
    def __init__(
        self,
        ws_url: str,
        rpc: RpcClient,
        *,
        silence_timeout: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.ws_url = ws_url
        self.rpc = rpc
        self.silence_timeout = silence_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.reconnects = 0
        self.polls = 0
        self._queue: asyncio.Queue[Head] = asyncio.Queue()
        self._reconnect = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[Head]:
        task = asyncio.create_task(self._ws_loop(), name="dexnode-newheads")
        try:
            head = await self._poll()
            if head is not None:
                yield head
            while True:
                try:
                    head = await asyncio.wait_for(self._queue.get(), timeout=self.silence_timeout)
                except TimeoutError:
                    log.warning(
                        "no new head for %.0fs: reconnecting the websocket and polling", self.silence_timeout
                    )
                    self._reconnect.set()
                    polled = await self._poll()
                    if polled is not None:
                        yield polled
                    continue
                while not self._queue.empty():  # a backlog: the newest head is enough, gaps get filled
                    head = self._queue.get_nowait()
                yield head
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> Head | None:
        self.polls += 1
        try:
            block = await self.rpc.get_block_by_number("latest", full_txs=False)
        except RetryableError as exc:
            log.warning("polling the head failed: %s", exc)
            return None
        return Head(int(block["number"], 16), block["hash"].lower(), time.perf_counter())

    async def _ws_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self._subscribe_and_read()
                failures = 0
            except (OSError, websockets.WebSocketException, TimeoutError, ValueError) as exc:
                failures += 1
                delay = min(self.backoff_max, self.backoff_base * 2 ** min(failures, 10))
                delay *= 0.5 + random.random() / 2
                log.warning("newHeads websocket %s: %s; reconnecting in %.1fs", self.ws_url, exc, delay)
                self.reconnects += 1
                self._reconnect.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reconnect.wait(), timeout=delay)

    async def _subscribe_and_read(self) -> None:
        async with websockets.connect(self.ws_url, open_timeout=10, max_size=2**24) as ws:
            await ws.send(
                orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]})
            )
            self._reconnect.clear()
            reader = asyncio.ensure_future(ws.recv())
            waiter = asyncio.ensure_future(self._reconnect.wait())
            try:
                while True:
                    done, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    if waiter in done:
                        self.reconnects += 1
                        return  # silence: the consumer asked for a fresh connection
                    message = orjson.loads(reader.result())
                    reader = asyncio.ensure_future(ws.recv())
                    if message.get("id") == 1:
                        if "error" in message:
                            raise ValueError(f"eth_subscribe refused: {message['error']}")
                        continue
                    result = (message.get("params") or {}).get("result")
                    if isinstance(result, dict) and "number" in result:
                        await self._queue.put(
                            Head(int(result["number"], 16), str(result.get("hash", "")).lower() or None,
                                 time.perf_counter())
                        )  # fmt: skip
            finally:
                reader.cancel()
                waiter.cancel()
