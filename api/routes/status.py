"""``GET /v1/status``: the node's figures in one small JSON document, for the dashboard (``api/static``)
and for people who would rather not parse Prometheus text.

Where each figure comes from:

- Postgres (so a separate ``serve`` process sees what the follower wrote): the indexed head, blocks
  indexed, reorgs recorded (and the last one), the CEX markets that have stored trades, and each
  market's book resyncs in the last hour (``cex_book_events`` rows of kind ``resync``);
- this process: websocket clients (the hub's), the node's head (asked with a one-second timeout, as
  ``/ready`` does) and how often that call failed (``dexnode_api_rpc_errors`` in ``api/metrics.py``);
- sources registered in process by whoever composes the node (``register_status_source``): ``dexnode
  run`` can add its follower's RPC errors or its feeds' counters; a registered figure is added to (a
  number) or replaces (anything else) the one computed here. A figure nobody can know here is null.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from api.deps import MetricsDep, PoolDep, StateDep
from api.errors import RESPONSES, reject_unknown_params

log = logging.getLogger("dexnode.api.status")

router = APIRouter(
    tags=["operations"],
    dependencies=[Depends(reject_unknown_params)],
    responses={**RESPONSES, 503: {"description": "the database does not answer"}},
)

NODE_TIMEOUT = 1.0
DB_TIMEOUT = 2.0
MAX_MARKETS = 50  # distinct (exchange, symbol) read by an index skip scan, one query each
RESYNC_WINDOW_SECONDS = 3600
LIVE_MARKET_SECONDS = 600  # a market whose newest trade is older than this is shown as idle

StatusSource = Callable[[], dict[str, Any]]


def register_status_source(app: FastAPI, name: str, source: StatusSource) -> None:
    """Add figures to ``/v1/status`` from a component running in this process (called on each request;
    it must be cheap and must not block). Numbers are added to the computed figure of the same name."""
    sources: dict[str, StatusSource] = getattr(app.state, "status_sources", None) or {}
    sources[name] = source
    app.state.status_sources = sources


async def _markets(conn: Any, since_us: int) -> list[dict[str, Any]]:
    """CEX markets with stored trades: a skip scan over ``ix_cex_trades_time`` (exchange, symbol, time),
    then per market its newest trade time and its resyncs since ``since_us``."""
    markets: list[dict[str, Any]] = []
    last: tuple[str, str] = ("", "")
    for _ in range(MAX_MARKETS):
        row = await conn.fetchrow(
            "SELECT exchange, symbol FROM cex_trades WHERE (exchange, symbol) > ($1, $2)"
            " ORDER BY exchange, symbol LIMIT 1",
            *last,
        )
        if row is None:
            break
        last = (row["exchange"], row["symbol"])
        newest = await conn.fetchval(
            "SELECT max(atom_timestamp) FROM cex_trades WHERE exchange = $1 AND symbol = $2", *last
        )
        resyncs = await conn.fetchval(
            "SELECT count(*) FROM cex_book_events WHERE exchange = $1 AND symbol = $2"
            " AND atom_timestamp >= $3 AND kind = 'resync'",
            *last,
            since_us,
        )
        markets.append(
            {"exchange": last[0], "symbol": last[1], "last_trade_us": newest, "resyncs_last_hour": resyncs}
        )
    return markets


async def _database_figures(pool: Any) -> dict[str, Any]:
    now = time.time()
    async with pool.acquire() as conn:
        head = await conn.fetchrow("SELECT number, hash, timestamp FROM blocks ORDER BY number DESC LIMIT 1")
        blocks = await conn.fetchval("SELECT count(*) FROM blocks")
        reorgs = await conn.fetchval("SELECT count(*) FROM reorgs")
        last_reorg = await conn.fetchrow(
            "SELECT depth, common_ancestor_number FROM reorgs ORDER BY id DESC LIMIT 1"
        )
        markets = await _markets(conn, int((now - RESYNC_WINDOW_SECONDS) * 1_000_000))
    for market in markets:
        newest = market["last_trade_us"]
        market["live"] = newest is not None and now - newest / 1_000_000 <= LIVE_MARKET_SECONDS
    return {
        "head": None
        if head is None
        else {"number": head["number"], "hash": head["hash"], "timestamp": head["timestamp"]},
        "lag_seconds": None if head is None else max(0, int(now) - int(head["timestamp"])),
        "blocks_indexed": blocks,
        "reorgs": reorgs,
        "last_reorg": None
        if last_reorg is None
        else {"depth": last_reorg["depth"], "common_ancestor": last_reorg["common_ancestor_number"]},
        "markets": markets,
        "feed_resyncs": sum(m["resyncs_last_hour"] for m in markets) if markets else None,
    }


def _merge(body: dict[str, Any], sources: dict[str, StatusSource]) -> None:
    for name, source in sources.items():
        try:
            figures = source()
        except Exception:  # a broken source must not take the status page down; say which one
            log.exception("status source %s failed", name)
            body.setdefault("source_errors", []).append(name)
            continue
        for key, value in figures.items():
            present = body.get(key)
            numeric = isinstance(value, int) and not isinstance(value, bool)
            if numeric and isinstance(present, int) and not isinstance(present, bool):
                body[key] = present + value
            else:
                body[key] = value


@router.get("/status", response_model=None)
async def status(request: Request, pool: PoolDep, state: StateDep, metrics: MetricsDep) -> JSONResponse:
    """The node at a glance: indexed head, lag in blocks and seconds, reorgs, RPC errors, CEX markets and
    their book resyncs, websocket clients. 503 when the database does not answer."""
    try:
        body = await asyncio.wait_for(_database_figures(pool), DB_TIMEOUT)
    except Exception as exc:  # refused, timed out, missing table: the page shows it, the API stays up
        return JSONResponse({"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"}, 503)
    node_head: int | None = None
    try:
        node_head = await asyncio.wait_for(request.app.state.rpc.block_number(), NODE_TIMEOUT)
    except Exception:  # counted: the dashboard shows RPC errors; serving goes on without the node
        metrics.rpc_errors.inc()
    head = body["head"]
    body = {
        "status": "ok",
        **body,
        "node_head": node_head,
        "lag_blocks": None if node_head is None or head is None else max(0, node_head - head["number"]),
        "rpc_errors": int(metrics.registry.get_sample_value("dexnode_api_rpc_errors_total") or 0),
        "ws_clients": None if state.hub is None else len(state.hub.clients),
        "finalized": None if state.hub is None else state.hub.finalized,
        "confirmations": state.settings.confirmations,
        "time": int(time.time()),
    }
    _merge(body, getattr(request.app.state, "status_sources", None) or {})
    return JSONResponse(body)
