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


def get_state(conn: HTTPConnection) -> ApiState:
    state: ApiState = conn.app.state.api
    return state


def get_pool(conn: HTTPConnection) -> asyncpg.Pool:
    return get_state(conn).pool


def get_settings(conn: HTTPConnection) -> Settings:
    return get_state(conn).settings


def get_metrics(conn: HTTPConnection) -> ApiMetrics:
    return get_state(conn).metrics


StateDep = Annotated[ApiState, Depends(get_state)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
