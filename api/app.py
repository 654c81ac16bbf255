"""The FastAPI app: ``create_app(settings)`` composes the REST routes, GraphQL, the websocket router,
health and metrics around one ``api.deps.ApiState``.

Without a ``pool`` the app opens the database itself on startup (``core.database.open_database``, the
embedded PostgreSQL when no URL is set) and closes it on shutdown; tests and ``dexnode serve`` running
beside the follower pass their own.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import FastAPI

from api import ws
from api.auth import AccessControl, AccessMiddleware
from api.deps import ApiState
from api.errors import install_error_handlers
from api.fastpath import FastPath, FastPathStats
from api.graph.schema import graphql_router
from api.metrics import ApiMetrics
from api.query import reset_connection
from api.routes import blocks, dashboard, dex, health, status, tokens, transactions
from api.routes import cex as cex_routes
from api.routes import sql as sql_route
from core.database import open_database
from core.settings import Settings
from indexer.chain.rpc import RpcClient

POOL_SIZE = 20
VERSION = "0.1.0"


class _RouteTimer:
    """ASGI middleware: each HTTP request's latency by route template (the router writes the matched
    route into the shared scope), so ``/v1/blocks/{number}`` is one series, not one per number."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # the labelled children, looked up once per (route, method/status): ``labels()`` takes a lock
        # and validates its arguments on every call
        self._timers: dict[tuple[str, str], Any] = {}
        self._counters: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            if route is not None and scope["path"].startswith("/v1/"):
                template = "/v1" + template  # a router's routes are stored without its prefix
            self._timer(template, scope["method"]).observe(time.perf_counter() - started)
            self._counter(template, status[0] // 100).inc()

    def _timer(self, template: str, method: str) -> Any:
        key = (template, method)
        timer = self._timers.get(key)
        if timer is None:
            timer = self._timers[key] = self.metrics.request_seconds.labels(template, method)
        return timer

    def _counter(self, template: str, status_class: int) -> Any:
        key = (template, status_class)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.responses.labels(template, f"{status_class}xx")
        return counter


# FastAPI >= 0.16x looks for OpenTelemetry providers on every request (5-10 us, a twentieth of
# /v1/blocks/latest's CPU); dexnode exports its own Prometheus metrics, so that is off where FastAPI has it
_NO_OTEL: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)


def _api_state(scope: dict[str, Any]) -> ApiState:
    state: ApiState = scope["app"].state.api
    return state


def create_app(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    hub: Any = None,
    books: Any = None,
    fast_path: bool = True,
) -> FastAPI:
    """``books``: an ``api.routes.cex.LiveBooks`` (the CLI passes ``cex.pipeline.FeedBooks`` of the feeds
    it runs) so ``/v1/cex/books`` answers the live book; without it books are rebuilt from storage.
    ``fast_path=False``: every request through FastAPI (``api/fastpath.py``; tests compare the two)."""
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            own_pool = pool
            if own_pool is None:
                db = await stack.enter_async_context(open_database(settings))
                own_pool = await asyncpg.create_pool(
                    db.dsn, min_size=1, max_size=POOL_SIZE, reset=reset_connection
                )
                stack.push_async_callback(own_pool.close)
            app.state.api = ApiState(settings=settings, pool=own_pool, metrics=metrics, hub=hub, books=books)
            app.state.rpc = await stack.enter_async_context(
                RpcClient(settings.rpc_http, timeout=2.0, max_response_bytes=settings.rpc_max_response_bytes)
            )
            yield

    app = FastAPI(
        title="dexnode API",
        version=VERSION,
        description="Blocks, transactions, logs, token transfers, tokens, pools, DEX trades, liquidity and"
        " candles indexed by dexnode: REST under /v1 (keyset cursors pinned to the indexed head),"
        " GraphQL at /graphql, a live websocket at /ws. See docs/api.md.",
        lifespan=lifespan,
        **_NO_OTEL,
    )
    install_error_handlers(app)
    app.state.metrics = metrics  # dexnode run: app.state.metrics.watch_rpc("follow", client.stats)
    app.include_router(health.router)
    for module in (blocks, transactions, tokens, dex, status):
        app.include_router(module.router, prefix="/v1")
    app.include_router(sql_route.router, prefix="/v1")  # POST /v1/sql, off unless enabled
    app.include_router(cex_routes.router, prefix="/v1")  # /v1/cex/...: exchange data (docs/api.md)
    app.include_router(graphql_router(), prefix="/graphql", include_in_schema=False)
    app.include_router(ws.router)
    dashboard.mount(app)  # the page at / and its files under /static (docs/dashboard.md)
    # innermost: the chain routes' GETs parsed without FastAPI's per-request machinery (api/fastpath.py)
    app.state.fast_path = FastPathStats()
    if fast_path:
        hot = (blocks.router, transactions.router, tokens.router, dex.router)
        app.add_middleware(FastPath, routers=hot, prefix="/v1", state=_api_state, stats=app.state.fast_path)
    app.add_middleware(_RouteTimer, metrics=metrics)
    app.state.access = AccessControl.from_settings(settings)  # api/auth.py: API keys, rate limits, ws caps
    app.add_middleware(AccessMiddleware, access=app.state.access)
    return app
