"""Websocket fan-out: one block to 500 subscribers, delivery delay p50/p99 against the 100 ms target.

The API's real ``/ws`` endpoint (``api.ws.router`` and its hub) is served by uvicorn in this process;
500 websocket clients run in a separate process (so their parsing does not share the server's loop),
each subscribed to ``blocks``. The server publishes ``--blocks`` blocks ``--interval`` apart; a
delivery's delay is the client's receipt time minus the publish time, both ``time.monotonic()``
(CLOCK_MONOTONIC, one clock for every process on the machine).

    .venv/bin/python bench/api_ws.py [--clients 500] [--blocks 40] [--interval 0.2] [--no-deflate]
                                     [--loop uvloop|asyncio]

Both processes run on uvloop's event loop, as ``serve`` does (``--loop asyncio``: Python's own).

The server runs the websocket transport ``serve`` runs (``api.ws_transport``): each message is encoded
and compressed once and the same frame bytes go to every client (``api.stream.frames``), and a client's
queued messages (a block, its finality watermark) leave in one socket write. Most of the server's time is
then the kernel's: one socket send per client per block (loopback sends do the receiving side's TCP work
too). An older checkout without that transport runs uvicorn's own (one encoding and, with
permessage-deflate, one compression per message per client), so old and new can be alternated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_P99_MS = 100.0
HASH = "0x" + "ab" * 32


def _block(number: int) -> Any:
    from records import Block

    parent = "0x" + f"{number - 1:064x}" if number else HASH
    return Block(number, "0x" + f"{number:064x}", parent, None, None, "0x" + "00" * 256, None, None, None,
                 "0x" + "11" * 20, 0, None, "0x", 1000, 30_000_000, 12_000_000, 10**9, 1_700_000_000 + number,
                 150)  # fmt: skip


class NoHistory:
    """Live-only subscribers never read history (also the websocket frame tests' history)."""

    async def tip(self) -> Any:
        return None

    async def read(self, first: int, last: int, channel: str) -> list[Any]:
        return []

    async def canonical(self, numbers: list[int]) -> dict[int, str]:
        return {}

    async def rejoin(self, cursor: Any) -> Any:
        return None


async def clients(url: str, count: int, blocks: int) -> None:
    """Client process: ``count`` connections, each subscribed to blocks; prints receipt times."""
    from websockets.asyncio.client import connect

    received: list[tuple[int, float]] = []
    ready = 0
    all_ready = asyncio.Event()

    async def one() -> None:
        nonlocal ready
        async with connect(url, max_queue=None) as ws:
            await ws.send('{"op":"subscribe","channel":"blocks"}')
            while True:
                doc = orjson.loads(await ws.recv())
                if doc.get("event") == "live":
                    ready += 1
                    if ready == count:
                        all_ready.set()
                elif doc.get("type") == "block":
                    received.append((doc["data"]["number"], time.monotonic()))
                    if doc["data"]["number"] == blocks - 1:
                        return

    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(0.002)  # do not flood the accept queue
    await all_ready.wait()
    print("ready", flush=True)
    cpu0 = time.process_time()
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu0  # the clients' own share: frames read, inflated, parsed
    sys.stdout.write(orjson.dumps({"received": received, "cpu": cpu}).decode() + "\n")
    sys.stdout.flush()


@contextlib.asynccontextmanager
async def server(port: int, hub: Any, deflate: bool) -> AsyncIterator[None]:
    import uvicorn
    from fastapi import FastAPI

    from api import ws
    from api.deps import ApiState
    from api.metrics import ApiMetrics
    from core.settings import build_settings

    settings = build_settings(ws_max_connections=10_000, ws_connections_per_client=10_000)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.api = ApiState(settings=settings, pool=None, metrics=ApiMetrics(), hub=hub)  # type: ignore[arg-type]
        yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(ws.router)
    try:  # the transport serve runs (shared frames); an older checkout has none: uvicorn's own
        from api.ws_transport import uvicorn_options

        options = uvicorn_options(compression=deflate)
    except ImportError:
        options = {"ws_per_message_deflate": deflate}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", backlog=2048, **options)
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        srv.should_exit = True
        await task


async def run(count: int, blocks: int, interval: float, deflate: bool, loop: str) -> None:
    from api.stream.hub import Hub, Limits

    hub = Hub(NoHistory(), confirmations=12, limits=Limits(max_subscriptions=20))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with server(port, hub, deflate):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client-of", f"ws://127.0.0.1:{port}/ws",
            "--clients", str(count), "--blocks", str(blocks), "--loop", loop,
            stdout=subprocess.PIPE,
            limit=1 << 26,
        )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert line.strip() == b"ready", line
        published: dict[int, float] = {}
        cpu0 = time.process_time()
        for n in range(blocks):
            published[n] = time.monotonic()
            hub.publish_blocks([_block(n)], {})
            await asyncio.sleep(interval)
        result = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 120))
        received, client_cpu = result["received"], result["cpu"]
        cpu = time.process_time() - cpu0
        await proc.wait()
    delays = sorted((t - published[n]) * 1000 for n, t in received)
    assert len(delays) == count * blocks, f"{len(delays)} deliveries, expected {count * blocks}"
    p50 = statistics.median(delays)
    p99 = delays[int(len(delays) * 0.99) - 1]
    compression = "permessage-deflate on" if deflate else "no compression"
    print(
        f"fan-out of a block to {count} subscribers, {blocks} blocks, {len(delays)} deliveries,"
        f" {compression},"
        f" {loop} loop"
    )
    print(f"  delivery delay p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {delays[-1]:.1f} ms")
    print(f"  p99 / target ({TARGET_P99_MS:.0f} ms) = {p99 / TARGET_P99_MS:.2f}x")
    per_delivery = cpu / len(delays) * 1e6
    print(
        f"  server CPU {cpu / blocks * 1000:.1f} ms per block fanned out ({per_delivery:.0f} µs per delivery)"
    )
    per_client = client_cpu / len(delays) * 1e6
    print(f"  client process CPU {per_client:.0f} µs per delivery (all {count} clients in one process)")
    hub_ms = await hub_alone(count, blocks)
    print(
        f"  the hub alone (into the {count} queues, no sockets): {hub_ms:.2f} ms per block"
        f" = {hub_ms / (cpu / blocks * 1000):.2f}x of the server's CPU per block"
    )


async def hub_alone(count: int, blocks: int) -> float:
    """The hub's own share, measured in the same run: publishing into ``count`` subscribed clients'
    queues (what happens before any socket is written), ms per block."""
    from api.stream.hub import Hub, Limits
    from api.stream.protocol import parse

    hub = Hub(NoHistory(), confirmations=12, limits=Limits(queue_messages=blocks * 4))
    subscribers = [hub.connect(str(i)) for i in range(count)]
    for c in subscribers:
        c.subscribe(parse('{"op":"subscribe","channel":"blocks"}', 1))  # type: ignore[arg-type]
    started = time.perf_counter()
    for n in range(blocks):
        hub.publish_blocks([_block(n)], {})
    elapsed = time.perf_counter() - started
    assert all(c.queue.qsize() >= blocks for c in subscribers)
    return elapsed / blocks * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="serve without permessage-deflate (on by default, as in serve)",
    )
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--client-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    runner: Any = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    if args.client_of:
        runner(clients(args.client_of, args.clients, args.blocks))
    else:
        runner(run(args.clients, args.blocks, args.interval, not args.no_deflate, args.loop))


if __name__ == "__main__":
    main()
