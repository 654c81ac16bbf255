"""What every route shares, as FastAPI dependencies: the settings, the asyncpg pool, the metrics and
the live-event hub, all held by one ``ApiState`` on ``app.state.api`` (set by ``api.app.create_app``).

The dependencies take an ``HTTPConnection`` (the base of ``Request`` and ``WebSocket``), so the same
ones serve REST, GraphQL and the websocket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Depends
from starlette.requests import HTTPConnection

from api.metrics import ApiMetrics
from core.settings import Settings


@dataclass
class ApiState:
    settings: Settings
    pool: asyncpg.Pool
    metrics: ApiMetrics
    hub: Any = None  # the live-event hub the websocket endpoint subscribes to (api/ws.py)
    books: Any = None  # live order books of feeds in this process (api.routes.cex.LiveBooks), or None


def get_state(conn: HTTPConnection) -> ApiState:
    state: ApiState = conn.app.state.api
    return state


def get_pool(conn: HTTPConnection) -> asyncpg.Pool:
    return get_state(conn).pool


def get_settings(conn: HTTPConnection) -> Settings:
    return get_state(conn).settings


def get_metrics(conn: HTTPConnection) -> ApiMetrics:
    return get_state(conn).metrics


# FastAPI runs a plain ``def`` dependency in a worker thread: these run inline (a thread hop per
# dependency per request showed as a third of a list's CPU time in a profile)
async def _state(conn: HTTPConnection) -> ApiState:
    return get_state(conn)


async def _pool(conn: HTTPConnection) -> asyncpg.Pool:
    return get_pool(conn)


async def _settings(conn: HTTPConnection) -> Settings:
    return get_settings(conn)


async def _metrics(conn: HTTPConnection) -> ApiMetrics:
    return get_metrics(conn)


StateDep = Annotated[ApiState, Depends(_state)]
PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
SettingsDep = Annotated[Settings, Depends(_settings)]
MetricsDep = Annotated[ApiMetrics, Depends(_metrics)]
