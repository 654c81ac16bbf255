"""Liveness, readiness and Prometheus metrics (outside ``/v1``: operators' routes, not data)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import MetricsDep, PoolDep
from api.errors import RESPONSES, reject_unknown_params

router = APIRouter(
    tags=["operations"],
    dependencies=[Depends(reject_unknown_params)],
    responses={400: RESPONSES[400], 503: {"description": "the database does not answer"}},
)

NODE_TIMEOUT = 1.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers (no database call)."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(request: Request, pool: PoolDep) -> JSONResponse:
    """Readiness: the database answers; the indexed head and how far it lags, in seconds behind its
    timestamp and in blocks behind the node (null when the node does not answer within a second)."""
    try:
        row = await asyncio.wait_for(
            pool.fetchrow("SELECT number, hash, timestamp FROM blocks ORDER BY number DESC LIMIT 1"), 2.0
        )
    except Exception as exc:  # any database failure (refused, timeout, auth) means not ready
        return JSONResponse({"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"}, 503)
    body: dict[str, Any] = {"status": "ok", "database": "ok", "head": None, "lag_seconds": None}
    node_head: int | None = None
    try:
        node_head = await asyncio.wait_for(request.app.state.rpc.block_number(), NODE_TIMEOUT)
    except Exception:  # the node is optional for serving: readiness is about the database
        node_head = None
    body["node_head"] = node_head
    if row is not None:
        body["head"] = {"number": row["number"], "hash": row["hash"], "timestamp": row["timestamp"]}
        body["lag_seconds"] = max(0, int(time.time()) - int(row["timestamp"]))
    body["lag_blocks"] = None if node_head is None or row is None else max(0, node_head - row["number"])
    return JSONResponse(body)


@router.get("/metrics", response_class=Response)
async def metrics(pool: PoolDep, api_metrics: MetricsDep) -> Response:
    """Prometheus text format: blocks indexed, head and lag, reorgs, request latency per route."""
    await api_metrics.refresh(pool)
    return Response(api_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
