"""Prometheus metrics of one API process, in a registry of its own (never the global one, so two apps
in one process, as in tests, do not collide).

Chain figures (blocks indexed, head lag, reorgs) are read from Postgres when ``/metrics`` is scraped;
request latency is observed per route template (``/v1/blocks/{number}``, not each number). Other parts
of the API add their own collectors to ``ApiMetrics.registry`` (the websocket's client gauge).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from indexer.chain.rpc import RpcStats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _RpcCollector(Collector):
    """The counters of RPC clients running in this process (``dexnode run``: the follower's, the
    backfill's), read from their ``RpcStats`` at each scrape: ``dexnode_rpc_errors_total`` by source
    and kind, ``dexnode_rpc_calls_total``, ``dexnode_rpc_retries_total``. A separate ``serve`` has no
    RPC client of the indexer and exports none of them (docs/troubleshooting.md)."""

    def __init__(self) -> None:
        self.sources: dict[str, RpcStats] = {}

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "dexnode_rpc_errors",
            "failed node calls by kind (timeout, connection, http_429, jsonrpc_<code>, ...), retried or not",
            labels=("source", "kind"),
        )
        calls = CounterMetricFamily(
            "dexnode_rpc_calls", "JSON-RPC calls sent to the node", labels=("source",)
        )
        retries = CounterMetricFamily(
            "dexnode_rpc_retries", "backoff sleeps before a resend", labels=("source",)
        )
        for source, stats in sorted(self.sources.items()):
            calls.add_metric([source], stats.calls)
            retries.add_metric([source], stats.retries)
            for kind, count in sorted(stats.errors.items()):
                errors.add_metric([source, kind], count)
        yield from (errors, calls, retries)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._rpc = _RpcCollector()
        self.registry.register(self._rpc)
        self.request_seconds = Histogram(
            "dexnode_api_request_seconds",
            "API request latency by route template and method",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.responses = Counter(
            "dexnode_api_responses",
            "API responses by route template and status class",
            ("route", "status"),
            registry=self.registry,
        )
        self.blocks_indexed = Gauge(
            "dexnode_blocks_indexed", "blocks stored in Postgres", registry=self.registry
        )
        self.head_number = Gauge(
            "dexnode_indexed_head_number", "number of the newest indexed block", registry=self.registry
        )
        self.head_lag_seconds = Gauge(
            "dexnode_head_lag_seconds",
            "seconds between now and the newest indexed block's timestamp",
            registry=self.registry,
        )
        self.reorgs = Gauge("dexnode_reorgs", "reorgs recorded in the reorgs table", registry=self.registry)
        self.rpc_errors = Counter(
            "dexnode_api_rpc_errors",
            "node calls of this API process that failed or timed out (GET /v1/status asks the node's head)",
            registry=self.registry,
        )

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read the chain figures from Postgres (on each scrape: a count, a max, one row)."""
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM blocks) AS blocks,"
                " (SELECT count(*) FROM reorgs) AS reorgs,"
                " number, timestamp FROM blocks ORDER BY number DESC LIMIT 1"
            )
        if row is None:
            self.blocks_indexed.set(0)
            return
        self.blocks_indexed.set(row["blocks"])
        self.reorgs.set(row["reorgs"])
        self.head_number.set(row["number"])
        self.head_lag_seconds.set(max(0.0, time.time() - row["timestamp"]))

    def watch_rpc(self, source: str, stats: RpcStats) -> None:
        """Export an in-process RPC client's counters (``RpcClient.stats``) under ``source``."""
        self._rpc.sources[source] = stats

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
