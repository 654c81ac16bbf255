"""A closed-loop HTTP/1.1 load generator cheap enough to share two cores with the server it measures.

httpx spends more CPU per request than the API server does (connection pool bookkeeping, header
models, its async stack), so on a two-core machine it took the cores the server needed. This one
keeps ``clients`` keep-alive connections, each sending its next request when the previous answer has
arrived (closed loop), on a ``asyncio.Protocol`` per connection: the request is one prepared bytes
write, the answer is framed by its ``Content-Length`` (the API always sends one) and only the status
line is parsed. ``Load.run`` returns the latencies of the 200 answers, the count of the others and
what this process spent (CPU seconds), so a benchmark can print the load generator's share.

It is a measuring tool, not a general client: no chunked bodies, no redirects, no TLS.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

Request = Callable[[int], tuple[str, str, Any]]  # i -> (method, path, json body or None)


def encode(method: str, path: str, body: Any, host: str) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    payload = orjson.dumps(body)
    head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _header(head: bytes, name: bytes) -> str:
    """A header's value from a lower-cased head ending in CRLF, or ""."""
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return ""
    start = at + len(name) + 3
    return head[start : head.index(b"\r\n", start)].strip().decode("latin-1")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: ``ask`` sends a request and waits for its whole answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.expect = -1  # bytes of the answer (head + body) once its head is in, else -1
        self.body_at = 0
        self.status = 0
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: Exception | None = None
        self.worker = ""  # the server's X-Dexnode-Worker of this connection (a connection stays on one)
        self.answered_at = 0.0  # perf_counter() when the last answer was complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not asyncio's class

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("closed by the server")
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.expect < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower() + b"\r\n"
            self.status = int(head[9:12])
            if not self.worker:
                self.worker = _header(head, b"x-dexnode-worker") or "-"
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail(ValueError("answer without Content-Length"))
                return
            self.body_at = end + 4
            self.expect = self.body_at + int(head[at + 17 : head.index(b"\r\n", at + 2)])
        if len(self.buffer) >= self.expect and self.answer is not None:
            body = bytes(self.buffer[self.body_at : self.expect])
            del self.buffer[: self.expect]
            self.expect = -1
            self.answered_at = time.perf_counter()
            if not self.answer.done():
                self.answer.set_result((self.status, body))

    def _fail(self, exc: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    async def ask(self, request: bytes) -> tuple[int, bytes]:
        if self.lost is not None or self.transport is None:
            raise ConnectionError("connection lost")
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.answer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Sample:
    """One successful answer: when it was sent (perf_counter seconds), when its last byte was read
    (``data_received``) and when its client task resumed (what ``latencies`` counts: the difference
    is this process's own delay), on which connection and which server worker answered."""

    sent: float
    received: float
    resumed: float
    slot: int
    worker: str


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, of the successful answers
    samples: list[Sample] = field(default_factory=list)  # the same answers, with their coordinates
    failures: int = 0  # a status other than 200, a GraphQL error, a lost connection, a timeout
    wall: float = 0.0
    cpu: float = 0.0  # this process's CPU seconds over the run


class Load:
    """``clients`` keep-alive connections to ``host:port``; reopened when the server closes one."""

    def __init__(self, host: str, port: int, clients: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.clients, self.timeout = host, port, clients, timeout
        self.connections: list[_Connection | None] = [None] * clients

    async def _connection(self, slot: int) -> _Connection:
        conn = self.connections[slot]
        if conn is None or conn.lost is not None:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
            self.connections[slot] = conn
        return conn

    async def run(self, request: Request, total: int) -> Result:
        result = Result()
        counter = iter(range(total))
        host = f"{self.host}:{self.port}"

        async def client(slot: int) -> None:
            for i in counter:
                method, path, body = request(i)
                data = encode(method, path, body, host)
                started = time.perf_counter()
                try:
                    conn = await self._connection(slot)
                    status, answer = await asyncio.wait_for(conn.ask(data), self.timeout)
                except (OSError, ValueError, TimeoutError):
                    result.failures += 1
                    self.connections[slot] = None
                    continue
                if status != 200 or b'"errors"' in answer[:20]:
                    result.failures += 1
                    continue
                resumed = time.perf_counter()
                result.latencies.append(resumed - started)
                result.samples.append(Sample(started, conn.answered_at, resumed, slot, conn.worker))

        cpu, started = cpu_seconds_self(), time.perf_counter()
        await asyncio.gather(*(client(slot) for slot in range(self.clients)))
        result.wall, result.cpu = time.perf_counter() - started, cpu_seconds_self() - cpu
        return result

    def close(self) -> None:
        for conn in self.connections:
            if conn is not None:
                conn.close()
        self.connections = [None] * self.clients
