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
    confirmations = request.app.state.api.settings.confirmations
    body["archive"] = await _archive_lag(pool, None if row is None else row["number"], confirmations)
    return JSONResponse(body)


async def _archive_lag(pool: Any, head: int | None, confirmations: int) -> dict[str, dict[str, int]]:
    """How far the Parquet archive (``dexnode archive``) is behind, per stream, from the progress the
    archiver keeps in ``cursors`` (``archive:chain/<name>``: last archived block; ``archive:cex/<exchange>``:
    last archived minute): blocks behind the confirmed watermark, minutes behind the last closed one.
    Empty when no archiver has run (archive.archiver.archive_lag computes the same for the CLI)."""
    try:
        rows = await asyncio.wait_for(
            pool.fetch(
                "SELECT stream, block_number FROM cursors WHERE stream LIKE 'archive:%' ORDER BY stream"
            ),
            2.0,
        )
    except Exception:  # readiness is about the database answering, checked above
        return {}
    lag: dict[str, dict[str, int]] = {}
    for r in rows:
        name, value = r["stream"].removeprefix("archive:"), int(r["block_number"])
        if name.startswith("chain/"):
            watermark = value if head is None else head - confirmations
            lag[name] = {"last_block": value, "lag_blocks": max(0, watermark - value)}
        else:
            lag[name] = {"last_minute": value, "lag_minutes": max(0, int(time.time()) // 60 - 1 - value)}
    return lag


@router.get("/metrics", response_class=Response)
async def metrics(pool: PoolDep, api_metrics: MetricsDep) -> Response:
    """Prometheus text format: blocks indexed, head and lag, reorgs, request latency per route."""
    await api_metrics.refresh(pool)
    return Response(api_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
