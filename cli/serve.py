"""``dexnode serve``: the REST, GraphQL and websocket API (``api.app.create_app``) on uvicorn.

It only reads the database (run ``dexnode db upgrade`` or ``dexnode follow`` first): several
``serve`` processes can stand behind a load balancer beside one follower.

``--workers N`` (N > 1) runs N worker processes on one port, for more than one core: each binds the
port with ``SO_REUSEPORT`` (the kernel spreads new connections over them) and builds its own app —
its own database pool, its own ``LISTEN/NOTIFY`` listener feeding its own websocket hub — exactly as
N separate ``serve`` processes behind a balancer would. The parent resolves the database once (it
keeps the embedded PostgreSQL up for them), hands each worker the settings (pickled by
``multiprocessing``, so flags reach them, not only ``DEXNODE_*``), and stops them all on Ctrl-C or
SIGTERM; if one dies, it stops the others and fails. Answers carry ``X-Dexnode-Worker: <i>``.
Metrics are per worker: scrape each, or sum them (docs/troubleshooting.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
from typing import Any

import uvicorn
import uvloop

from api.app import create_app
from api.ws_transport import uvicorn_options
from cli.common import configure_logging
from core.database import open_database
from core.errors import ConfigError, DexnodeError
from core.redact import mask_urls_in
from core.settings import Settings, build_settings

log = logging.getLogger("dexnode.serve")
WORKER_HEADER = "x-dexnode-worker"
_STOP_SECONDS = 10.0


def _config(app: Any, settings: Settings, worker: int | None = None) -> uvicorn.Config:
    """``worker``: its index, in an ``X-Dexnode-Worker`` header on every HTTP answer and websocket
    handshake (uvicorn adds it as it writes the head: no middleware wrapping each response)."""
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=True,
        headers=[] if worker is None else [(WORKER_HEADER, str(worker))],
        **uvicorn_options(compression=True),  # /ws: one shared frame per message (docs/api.md)
    )


async def serve(settings: Settings, *, workers: int = 1) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    if settings.api_live_source == "kafka" and not settings.kafka_bootstrap_servers:
        raise ConfigError("--live-source kafka needs a broker: DEXNODE_KAFKA_BOOTSTRAP_SERVERS")
    if workers == 1:
        log.info(
            "API on http://%s:%s (docs at /docs, GraphQL at /graphql)", settings.api_host, settings.api_port
        )
        app = create_app(settings)
        _collect_less()
        await _serve_until_signalled(uvicorn.Server(_config(app, settings)))
        return
    # bound (not listening) with SO_REUSEPORT: the port is checked free of other servers before
    # anything starts, and no connection is ever queued here
    probe = _listening_socket(settings.api_host, settings.api_port, reuse_port=True)
    try:
        async with open_database(settings) as db:
            values = settings.model_dump()
            values["database_url"] = db.dsn  # the embedded server, started once, stays up for the workers
            await _supervise(values, settings, workers)
    finally:
        probe.close()


async def _serve_until_signalled(server: uvicorn.Server) -> None:
    """One in-process server: uvicorn catches SIGINT/SIGTERM itself and stops gracefully (the requests
    in flight are answered, then the app's lifespan closes the pool and the embedded Postgres). The
    command's own SIGTERM handler (``run_async``: cancel the command) would fire too, since both see
    the signal, and cancel those requests mid-query: a ``CancelledError`` traceback per request. Here it
    only notes the signal; the command still ends as a terminated one (exit 143)."""
    loop = asyncio.get_running_loop()
    terminated: list[bool] = []
    loop.add_signal_handler(signal.SIGTERM, terminated.append, True)
    await server.serve()
    if terminated:
        raise asyncio.CancelledError


def _collect_less() -> None:
    """Garbage collection for a server process: what start-up built (the imports, the app and its
    schemas: most of the heap) is frozen out of every collection, and the youngest generation is
    collected every 50,000 allocations instead of 700. A page of 100 trades allocates ~250 tracked
    objects and 50 requests in flight keep theirs alive across collections, so with the defaults the
    collector kept rescanning them and then the whole heap: 15% of a worker's CPU under bench/api.py's
    load (perf), none of it finding garbage (a request's objects hold no cycles)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


def _listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror} (is another process on it?)"
        ) from None
    return sock


def _worker(values: dict[str, Any], index: int) -> None:
    """A worker process's main: its own settings, app, pool, listener and uvicorn server. Errors end
    it with one ``dexnode:`` line, as every command does; the parent then stops the others."""
    try:
        settings = build_settings(**values)
        configure_logging(settings.log_level)
        sock = _listening_socket(settings.api_host, settings.api_port, reuse_port=True)
        sock.listen(2048)
        app = create_app(settings)
        _collect_less()
        # uvloop: the event loop and socket transports in C (less CPU per request than asyncio's)
        uvloop.run(uvicorn.Server(_config(app, settings, index)).serve(sockets=[sock]))
    except DexnodeError as exc:
        print(f"dexnode: serve worker {index}: {mask_urls_in(str(exc))}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        pass


async def _supervise(values: dict[str, Any], settings: Settings, workers: int) -> None:
    spawn = multiprocessing.get_context("spawn")
    processes = [
        spawn.Process(target=_worker, args=(values, i), name=f"dexnode-serve-{i}") for i in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        log.info(
            "API on http://%s:%s with %d workers (docs at /docs, GraphQL at /graphql)",
            settings.api_host,
            settings.api_port,
            workers,
        )
        # until one exits (a thread waits on their sentinels; the finally below ends the wait on cancel)
        await asyncio.to_thread(multiprocessing.connection.wait, [p.sentinel for p in processes])
        dead = next(p for p in processes if not p.is_alive())
        raise DexnodeError(f"serve worker {dead.name} exited with code {dead.exitcode}; stopping the others")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process in processes:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(process.join, _STOP_SECONDS)
            if process.is_alive():
                process.kill()
