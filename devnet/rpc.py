"""The devnet's JSON-RPC: a thin synchronous wrapper around the product's wire code
(``indexer.chain.rpc_wire.request_body`` / ``results_of``, errors mapped by ``map_rpc_error``), for driving
anvil over one keep-alive connection. Synchronous because the devnet's setup, miner and activity run in
plain threads; no retries: anvil is local, and a failure there is a setup error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from core.errors import FatalError
from indexer.chain.rpc_wire import request_body, results_of


class DevnetError(FatalError):
    """Something the devnet cannot recover from (anvil missing, port taken, a setup transaction failed)."""


class RpcError(DevnetError):
    def __init__(self, method: str, error: Exception) -> None:
        super().__init__(str(error))
        self.method = method
        self.error = error


class Rpc:
    """JSON-RPC over HTTP to one node. Not thread-safe; one per thread."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout, headers={"content-type": "application/json"})
        self._next_id = 1

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Rpc:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, method: str, *params: Any) -> Any:
        return self._send([(method, params)])[0]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], chunk: int = 200) -> list[Any]:
        """Results in the order of ``calls``; the first error raises."""
        results: list[Any] = []
        for start in range(0, len(calls), chunk):
            results += self._send(calls[start : start + chunk])
        return results

    def eth_call(self, to: str, data: str, block: str = "latest") -> str:
        result: str = self.call("eth_call", {"to": to, "data": data}, block)
        return result

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def _send(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        if not calls:
            return []
        first_id = self._next_id
        self._next_id += len(calls)
        label = calls[0][0] if len(calls) == 1 else f"batch of {len(calls)} ({calls[0][0]}, …)"
        try:
            response = self._client.post(self.url, content=request_body(calls, first_id))
        except httpx.HTTPError as exc:
            raise DevnetError(f"cannot reach the devnet node at {self.url}: {exc}") from None
        if response.status_code != 200:
            raise DevnetError(f"{self.url} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            outcomes = results_of(orjson.loads(response.content), calls, first_id, label)
        except FatalError as exc:  # the request as a whole was refused
            raise RpcError(label, exc) from None
        for (method, _), outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, Exception):
                raise RpcError(method, outcome)
        return outcomes


def is_alive(url: str, timeout: float = 1.0) -> bool:
    """True when a JSON-RPC node answers at ``url``."""
    try:
        response = httpx.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        )
        return response.status_code == 200 and "result" in response.json()
    except (httpx.HTTPError, ValueError):
        return False
