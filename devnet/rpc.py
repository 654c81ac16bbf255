"""A small synchronous JSON-RPC client for driving anvil: plain calls and batches over one keep-alive
connection. The devnet sends thousands of requests; web3.py's middleware stack is too slow for that."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from core.errors import FatalError


class DevnetError(FatalError):
    """Something the devnet cannot recover from (anvil missing, port taken, a setup transaction failed)."""


class RpcError(DevnetError):
    def __init__(self, method: str, error: Any) -> None:
        message = error.get("message", error) if isinstance(error, dict) else error
        super().__init__(f"{method}: {message}")
        self.method = method
        self.error = error


class Rpc:
    """JSON-RPC over HTTP to one node. Not thread-safe; one per thread."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout, headers={"content-type": "application/json"})
        self._next_id = 0

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Rpc:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, method: str, *params: Any) -> Any:
        self._next_id += 1
        body = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": list(params)}
        reply = orjson.loads(self._post(body))
        if "error" in reply:
            raise RpcError(method, reply["error"])
        return reply["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], chunk: int = 200) -> list[Any]:
        """Results in the order of ``calls``; the first error raises."""
        results: list[Any] = []
        for start in range(0, len(calls), chunk):
            part = calls[start : start + chunk]
            body = []
            for method, params in part:
                self._next_id += 1
                body.append({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": list(params)})
            first_id = self._next_id - len(body) + 1
            replies = orjson.loads(self._post(body)) if body else []
            by_id = {r.get("id"): r for r in replies}
            for offset, (method, _) in enumerate(part):
                reply = by_id.get(first_id + offset)
                if reply is None:
                    raise RpcError(method, "no reply in batch")
                if "error" in reply:
                    raise RpcError(method, reply["error"])
                results.append(reply["result"])
        return results

    def eth_call(self, to: str, data: str, block: str = "latest") -> str:
        result: str = self.call("eth_call", {"to": to, "data": data}, block)
        return result

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def _post(self, body: Any) -> bytes:
        try:
            response = self._client.post(self.url, content=orjson.dumps(body))
        except httpx.HTTPError as exc:
            raise DevnetError(f"cannot reach the devnet node at {self.url}: {exc}") from None
        if response.status_code != 200:
            raise DevnetError(f"{self.url} answered HTTP {response.status_code}: {response.text[:200]}")
        return response.content


def is_alive(url: str, timeout: float = 1.0) -> bool:
    """True when a JSON-RPC node answers at ``url``."""
    try:
        response = httpx.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        )
        return response.status_code == 200 and "result" in response.json()
    except (httpx.HTTPError, ValueError):
        return False
