"""A local JSON-RPC node that replays recorded answers, with injectable faults.

A real HTTP/1.1 server (``asyncio.start_server`` on 127.0.0.1, a free port, keep-alive) so the
client under test runs its real transport. Answers come from fixture folders by the file-naming
rule of ``../shared/fixtures/ethereum-etl/PROVENANCE.md``:
``web3_response.<method>_<params joined by "_">.json`` (scalars lower-cased; dicts as sorted
``key_value`` pairs; lists flattened), or from results set in code (``set_result``). Batches are
answered entry by entry. A request with no recorded answer gets a JSON-RPC error, never a guess.

Faults (``Fault``), each applied to the next ``times`` matching requests or calls:
``http`` (any status, optional ``Retry-After``), ``timeout`` (answer only after ``delay`` seconds),
``null`` (result null: a lagging node), ``error`` (a JSON-RPC error object for that call).
``max_batch`` makes it refuse larger batches the way geth does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
ETL = FIXTURES / "ethereum-etl"

_REASONS = {200: "OK", 413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error"}


def param_text(value: Any) -> str:
    if isinstance(value, dict):
        return "_".join(f"{k}_{param_text(value[k])}" for k in sorted(value))
    if isinstance(value, list):
        return "_".join(param_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower()


def request_key(method: str, params: list[Any]) -> str:
    """``<method>_<params>``: the file name without ``web3_response.`` and ``.json``."""
    return f"{method}_{'_'.join(param_text(p) for p in params)}"


@dataclass
class Fault:
    kind: str  # "http" | "timeout" | "null" | "error"
    method: str | None = None  # None: any method
    match: str | None = None  # a substring the request key must contain
    times: int = 1
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0
    error: dict[str, Any] | None = None

    def matches(self, method: str, key: str) -> bool:
        return (
            self.times > 0
            and (self.method is None or self.method == method)
            and (self.match is None or self.match in key)
        )


@dataclass
class ReplayServer:
    folders: tuple[Path, ...]
    max_batch: int | None = None
    reverse_batches: bool = False  # answer batches in reverse order: clients must match by id
    faults: list[Fault] = field(default_factory=list)
    requests: list[list[str]] = field(default_factory=list)  # methods of each HTTP request
    connections: int = 0
    _results: dict[str, Any] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    url: str = ""

    def set_result(self, method: str, params: list[Any], result: Any) -> None:
        self._results[request_key(method, params)] = result

    def count(self, method: str) -> int:
        return sum(methods.count(method) for methods in self.requests)

    async def __aenter__(self) -> ReplayServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    # -- answers -------------------------------------------------------------------------------

    def _take(self, kinds: tuple[str, ...], method: str, key: str) -> Fault | None:
        for fault in self.faults:
            if fault.kind in kinds and fault.matches(method, key):
                fault.times -= 1
                return fault
        return None

    def _answer(self, call: dict[str, Any]) -> dict[str, Any]:
        method, params = call.get("method", ""), call.get("params", [])
        key = request_key(method, params)
        envelope: dict[str, Any] = {"jsonrpc": "2.0", "id": call.get("id")}
        fault = self._take(("null", "error"), method, key)
        if fault is not None and fault.kind == "null":
            return envelope | {"result": None}
        if fault is not None:
            return envelope | {"error": fault.error or {"code": -32603, "message": "internal error"}}
        if key in self._results:
            return envelope | {"result": self._results[key]}
        for folder in self.folders:
            path = folder / f"web3_response.{key}.json"
            if path.is_file():
                recorded = json.loads(path.read_text())
                if "error" in recorded:
                    return envelope | {"error": recorded["error"]}
                return envelope | {"result": recorded.get("result")}
        return envelope | {
            "error": {"code": -32600, "message": f"invalid request: nothing recorded for {key}"}
        }

    def _respond(self, body: bytes) -> tuple[int, dict[str, str], bytes, float]:
        request = json.loads(body)
        calls = request if isinstance(request, list) else [request]
        self.requests.append([c.get("method", "") for c in calls])
        keys = [(c.get("method", ""), request_key(c.get("method", ""), c.get("params", []))) for c in calls]
        delay = 0.0
        for method, key in keys:
            fault = self._take(("http", "timeout"), method, key)
            if fault is None:
                continue
            if fault.kind == "timeout":
                delay = fault.delay
                break
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            return fault.status, headers, b"upstream says no", 0.0
        if isinstance(request, list) and self.max_batch is not None and len(request) > self.max_batch:
            refusal = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch too large"}}
            return 200, {}, json.dumps(refusal).encode(), delay
        answers = [self._answer(c) for c in calls]
        if self.reverse_batches:
            answers.reverse()
        payload = answers if isinstance(request, list) else answers[0]
        return 200, {}, json.dumps(payload).encode(), delay

    # -- HTTP/1.1 --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {}
                for line in head[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, extra, payload, delay = self._respond(body)
                if delay:
                    await asyncio.sleep(delay)
                lines = [
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                    "content-type: application/json",
                    f"content-length: {len(payload)}",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
