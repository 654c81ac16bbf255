"""A fault-injecting JSON-RPC proxy in front of a real node (the devnet's anvil), for tests.

A real HTTP/1.1 server (``asyncio.start_server`` on 127.0.0.1, a free port, keep-alive) that forwards
every request to the node unchanged, except the ``eth_call`` s a ``CallFault`` picks: the first
``tries`` times each distinct call (target, calldata, block) is seen, the proxy answers for the node
the way overloaded providers do, instead of forwarding it:

- ``"http429"``: the whole HTTP request gets ``429 Too Many Requests`` (Infura, Alchemy);
- ``"limit"``: that call's entry gets the JSON-RPC error ``-32005 limit exceeded`` (EIP-1474), the
  other entries of the batch are the node's real answers;
- ``"timeout"``: the response comes only after ``delay`` seconds (longer than the client's timeout).

``injected`` counts the faults by kind and selector, so a test can prove the faults really happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

_REASONS = {200: "OK", 429: "Too Many Requests"}
LIMIT_EXCEEDED = {"code": -32005, "message": "limit exceeded", "data": {"rate": {"backoff_seconds": 0}}}


@dataclass
class CallFault:
    kind: str  # "http429" | "limit" | "timeout"
    selectors: frozenset[str]  # 4-byte selectors ("0x0dfe1681") of the eth_calls to fail
    tries: int  # fail the first ``tries`` sightings of each distinct call
    delay: float = 2.0  # "timeout": seconds before answering


def _call_key(call: dict[str, Any]) -> tuple[str, str, str] | None:
    if call.get("method") != "eth_call":
        return None
    params = call.get("params") or []
    tx = params[0] if params and isinstance(params[0], dict) else {}
    block = params[1] if len(params) > 1 else "latest"
    return str(tx.get("to", "")).lower(), str(tx.get("data") or tx.get("input") or ""), json.dumps(block)


@dataclass
class FaultyRpc:
    upstream: str
    faults: list[CallFault] = field(default_factory=list)
    seen: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    injected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, selector) -> count
    eth_calls: list[tuple[str, str, str]] = field(default_factory=list)  # every eth_call asked
    url: str = ""
    _server: asyncio.Server | None = None
    _http: httpx.AsyncClient | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def __aenter__(self) -> FaultyRpc:
        self._http = httpx.AsyncClient(timeout=60.0)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._http is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()
        await self._http.aclose()

    def _fault_for(self, call: dict[str, Any]) -> CallFault | None:
        """The fault this call gets now (counting the sighting), or None to forward it."""
        key = _call_key(call)
        if key is None:
            return None
        self.eth_calls.append(key)
        sightings = self.seen[key]
        self.seen[key] += 1
        selector = key[1][:10]
        for fault in self.faults:
            if selector in fault.selectors and sightings < fault.tries:
                self.injected[(fault.kind, selector)] += 1
                return fault
        return None

    async def _respond(self, body: bytes) -> tuple[int, bytes]:
        request = json.loads(body)
        calls = request if isinstance(request, list) else [request]
        faults = [self._fault_for(c) for c in calls]
        if any(f is not None and f.kind == "http429" for f in faults):
            return 429, b'{"jsonrpc":"2.0","id":null,"error":{"code":429,"message":"Too Many Requests"}}'
        delay = max((f.delay for f in faults if f is not None and f.kind == "timeout"), default=0.0)
        if delay:
            await asyncio.sleep(delay)  # the client has given up by now; its answer is never read
        forward = [c for c, f in zip(calls, faults, strict=True) if f is None]
        answers: dict[Any, Any] = {}
        if forward:
            assert self._http is not None
            reply = await self._http.post(self.upstream, json=forward)
            for entry in reply.json():
                answers[entry.get("id")] = entry
        out = []
        for call, fault in zip(calls, faults, strict=True):
            if fault is None:
                out.append(answers[call.get("id")])
            else:
                out.append({"jsonrpc": "2.0", "id": call.get("id"), "error": LIMIT_EXCEEDED})
        payload = out if isinstance(request, list) else out[0]
        return 200, json.dumps(payload).encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {}
                for line in head[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload = await self._respond(body)
                lines = [
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                    "content-type: application/json",
                    f"content-length: {len(payload)}",
                ]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
