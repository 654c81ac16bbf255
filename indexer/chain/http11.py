"""A lean HTTP/1.1 transport for httpx: keep-alive connections over asyncio, a response read whole.

Why: the backfill reads ~50 MB of JSON per 1,000 devnet blocks, and httpcore hands a body over in
socket-sized pieces, each through h11's event machinery, anyio's stream (``sniffio`` looked up each
time) and httpx's iterators: 0.6–0.9 CPU-s of the 2,011-block devnet's fetch (load ~10), more than
parsing that JSON costs. Here an ``asyncio.Protocol`` keeps what arrives as a list of pieces and wakes
the reader only when the bytes it needs (the head, then the whole body by ``Content-Length``) are
there: one wake-up and one join per response in the common case. (One growing ``bytearray`` instead
cost +70 MB peak RSS on the devnet's backfill: its reallocations of multi-MB buffers.)

Only ``http://`` goes this way (a node beside the indexer, where CPU is what limits a backfill).
``https://`` is handed to httpx's own transport (TLS, HTTP/2 would be its business), and so is
a node behind a proxy from the environment (``trust_env``, as ``RpcClient`` asks: httpx's client
stops reading the environment once it is given a transport). The client above is unchanged: httpx
still builds the request (headers, auth from the URL, ``Accept-Encoding``), decodes
``Content-Encoding``, and raises the same exception classes, which ``RpcClient`` maps to retryable
or fatal errors: ``ConnectTimeout``/``ReadTimeout``/``WriteTimeout``/``PoolTimeout`` (timeouts as
httpx counts them: connect, each wait for bytes, each wait to write, waiting for a free connection)
and ``ConnectError``/``ReadError``/``WriteError``/
``RemoteProtocolError`` (all ``httpx.TransportError``).

A connection is reused only after a complete response that did not ask to close it; an idle one
that the server closed is noticed (``connection_lost``) and dropped, never written to. One the server
closes just as a request goes out on it (no byte answered) has that request sent once more on a new
connection; anything else that fails is raised for the caller's retries.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx

_HEAD_END = b"\r\n\r\n"
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_MAX_HEAD = 64 * 1024  # bytes of status line + headers before the answer is refused


class _Connection(asyncio.Protocol):
    """One socket: what arrived (``pieces``, ``size`` bytes), and a waiter woken when ``need`` bytes are
    there."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self.need = 0  # wake the waiter once size >= need
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.answered = False  # any byte received since the request was sent
        self._can_write: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.answered = True
        self.pieces.append(data)
        self.size += len(data)
        if self.waiter is not None and self.size >= self.need:
            self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def write(self, data: bytes, timeout: float | None) -> None:
        assert self.transport is not None
        if self.closed:
            raise httpx.WriteError("connection closed by the server")
        self.transport.write(data)
        if self._can_write is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._can_write
            except TimeoutError:
                raise httpx.WriteTimeout("timed out writing the request") from None
            if self.closed:
                raise httpx.WriteError(f"connection lost while writing: {self.error!r}")

    async def fill(self, need: int, timeout: float | None) -> bool:
        """Wait until ``need`` bytes are there (→ True) or the connection closed (→ False);
        ``timeout`` bounds each wait for more bytes, as httpx's read timeout does."""
        while self.size < need:
            if self.closed:
                return False
            self.need = need
            before = self.size
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self.waiter
            except TimeoutError:
                if self.size == before:
                    raise httpx.ReadTimeout("timed out reading the response") from None
            finally:
                self.waiter = None
        return True

    async def fill_more(self, timeout: float | None) -> bool:
        """Wait for any more bytes (→ True) or the close (→ False)."""
        return await self.fill(self.size + 1, timeout)

    def front(self, n: int) -> bytes:
        """The first piece, made to hold at least ``n`` bytes (or all there is) by joining only as many
        pieces as that takes."""
        pieces = self.pieces
        if not pieces:
            return b""
        if len(pieces[0]) < n and len(pieces) > 1:
            total = k = 0
            while k < len(pieces) and total < n:
                total += len(pieces[k])
                k += 1
            pieces[:k] = [b"".join(pieces[:k])]
        return pieces[0]

    def find(self, separator: bytes) -> int:
        """Where ``separator`` starts within the first ``_MAX_HEAD`` bytes or so, or -1."""
        return self.front(min(self.size, _MAX_HEAD + len(separator))).find(separator)

    def take(self, length: int) -> bytes:
        """The first ``length`` bytes (or all there is), removed."""
        if length <= 0 or not self.pieces:  # an empty body: nothing to remove (and no piece to drop)
            return b""
        data = self.front(length)
        if len(data) <= length:
            del self.pieces[0]
            self.size -= len(data)
            return data
        self.pieces[0] = data[length:]
        self.size -= length
        return data[:length]

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def _read_response(
    conn: _Connection, timeout: float | None, head_request: bool = False
) -> tuple[int, bytes, list[Any], bytes, bool]:
    """(status, reason, headers, body, reusable) of the next response on ``conn`` (1xx skipped); the
    answer to a HEAD request (``head_request``) has no body, whatever its Content-Length says."""
    while True:
        end = conn.find(_HEAD_END)
        while end < 0:
            if conn.size > _MAX_HEAD:
                raise httpx.RemoteProtocolError("response head too large")
            if not await conn.fill_more(timeout):
                raise httpx.RemoteProtocolError("server disconnected without sending a response")
            end = conn.find(_HEAD_END)
        head = conn.take(end + 4)[:-4]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:100]!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else b""
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise httpx.RemoteProtocolError(f"malformed header line {line[:100]!r}")
            headers.append((name, value.strip()))
        if 100 <= status < 200:
            continue  # 100 Continue, 103 Early Hints: the answer follows
        break
    fields = {n.lower(): v for n, v in headers}
    keep = parts[0] == b"HTTP/1.1" and b"close" not in fields.get(b"connection", b"").lower()
    if status in (204, 304) or head_request:
        return status, reason, headers, b"", keep
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        body = await _read_chunked(conn, timeout)
    elif b"content-length" in fields:
        length = _content_length(headers)
        if not await conn.fill(length, timeout):
            raise httpx.RemoteProtocolError(f"server disconnected after {conn.size} of {length} body bytes")
        body = conn.take(length)
    else:  # the body runs to the close
        while await conn.fill_more(timeout):
            pass
        body, keep = conn.take(conn.size), False
    return status, reason, headers, body, keep and not conn.closed


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The body's length; repeated fields (or a list in one) must agree, as h11 requires: which one
    frames the body is otherwise a guess, and a wrong guess reads the next answer's bytes."""
    values = {
        v.strip() for name, value in headers if name.lower() == b"content-length" for v in value.split(b",")
    }
    value = values.pop()
    if values:
        raise httpx.RemoteProtocolError("conflicting Content-Length headers")
    if not value.isdigit():
        raise httpx.RemoteProtocolError(f"bad Content-Length {value[:40]!r}")
    return int(value)


async def _read_chunked(conn: _Connection, timeout: float | None) -> bytes:
    out: list[bytes] = []
    while True:
        line = await _line(conn, timeout, "bad or incomplete chunk size line")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(_HEX_DIGITS) or len(size_text) > 16:
            # int(x, 16) alone also takes '0x', '+', '-' and '_' (a negative size unsettled the buffer)
            raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:40]!r}")
        size = int(size_text, 16)
        if size == 0:  # trailers, then an empty line
            while await _line(conn, timeout, "incomplete chunked trailer"):
                pass
            return b"".join(out)
        if not await conn.fill(size + 2, timeout):
            raise httpx.RemoteProtocolError("server disconnected inside a chunk")
        chunk = conn.take(size + 2)
        if chunk[size:] != b"\r\n":
            raise httpx.RemoteProtocolError("chunk not followed by CRLF")
        out.append(chunk[:size])


async def _line(conn: _Connection, timeout: float | None, error: str) -> bytes:
    """The next CRLF-ended line, without its CRLF."""
    end = conn.find(b"\r\n")
    while end < 0:
        if conn.size > _MAX_HEAD or not await conn.fill_more(timeout):
            raise httpx.RemoteProtocolError(error)
        end = conn.find(b"\r\n")
    return conn.take(end + 2)[:-2]


class Http11Transport(httpx.AsyncBaseTransport):
    """httpx transport: plain ``http://`` over lean keep-alive connections, anything else through
    httpx's ``AsyncHTTPTransport`` (same ``max_connections``)."""

    def __init__(
        self, *, max_connections: int = 32, keepalive_expiry: float = 60.0, trust_env: bool = False
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._other: httpx.AsyncHTTPTransport | None = None
        # trust_env: HTTP_PROXY/HTTPS_PROXY/ALL_PROXY minus NO_PROXY, read once as httpx's client
        # does; a client given a transport no longer routes by them itself (RpcClient's did before)
        self._proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._proxied: dict[str, httpx.AsyncHTTPTransport] = {}
        self._closed = False  # by aclose(): a response completed later does not park its connection

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._proxies and (proxy := self._proxy_for(request.url)) is not None:
            if proxy not in self._proxied:
                self._proxied[proxy] = httpx.AsyncHTTPTransport(proxy=proxy, limits=self._limits())
            return await self._proxied[proxy].handle_async_request(request)
        if request.url.scheme != "http":
            if self._other is None:
                self._other = httpx.AsyncHTTPTransport(limits=self._limits())
            return await self._other.handle_async_request(request)
        if not isinstance(request.stream, httpx.ByteStream):
            await request.aread()
        timeouts = request.extensions.get("timeout", {})
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free connection in time") from None
        try:
            return await self._exchange(request, timeouts)
        finally:
            self._slots.release()

    async def _exchange(self, request: httpx.Request, timeouts: dict[str, float | None]) -> httpx.Response:
        host, port = request.url.host, request.url.port or 80
        data = _request_bytes(request)
        conn = self._reuse((host, port))
        if conn is not None:
            try:
                return await self._send(conn, host, port, request, data, timeouts)
            except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
                if conn.answered or not conn.closed:
                    raise
                # The stale keep-alive race: the server closed this idle connection (its own idle
                # timeout) as the request went out, and nothing came back. Once more on a new one,
                # as browsers and urllib3 do, rather than fail the request for a routine close.
        conn = await self._connect(host, port, timeouts.get("connect"))
        return await self._send(conn, host, port, request, data, timeouts)

    async def _send(
        self,
        conn: _Connection,
        host: str,
        port: int,
        request: httpx.Request,
        data: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        conn.answered = False
        try:
            await conn.write(data, timeouts.get("write"))
            status, reason, headers, body, keep = await _read_response(
                conn, timeouts.get("read"), request.method == "HEAD"
            )
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError):
                raise httpx.ReadError(repr(exc)) from exc
            raise
        if keep and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.setdefault((host, port), deque()).append(conn)
        else:
            conn.close()
        return httpx.Response(
            status,
            headers=headers,
            stream=_Body(body),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _limits(self) -> httpx.Limits:
        return httpx.Limits(max_connections=self.max_connections, keepalive_expiry=self.keepalive_expiry)

    def _proxy_for(self, url: httpx.URL) -> str | None:
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if not proxy:
            return None
        # NO_PROXY as urllib (and so httpx's environment reading) applies it; not in typeshed's stubs
        if urllib.request.proxy_bypass_environment(url.host, self._proxies):  # type: ignore[attr-defined]
            return None
        return proxy if "://" in proxy else "http://" + proxy

    def _reuse(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be closed by the server
            if (
                not conn.closed
                and not conn.size
                and now - conn.idle_since < self.keepalive_expiry
                # closed by the loop (a socket error), connection_lost not yet called
                and not (conn.transport is not None and conn.transport.is_closing())
            ):
                return conn
            conn.close()
        return None

    @staticmethod
    async def _connect(host: str, port: int, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, conn = await loop.create_connection(_Connection, host, port)
            # uvloop returns before it has called connection_made (the follower runs on uvloop)
            conn.transport = transport
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        return conn

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for other in [self._other, *self._proxied.values()]:
            if other is not None:
                await other.aclose()


class _Body(httpx.AsyncByteStream):
    """A body handed over once and then let go: httpx keeps a response in a reference cycle (response,
    stream, request) that only the cyclic collector frees, which the backfill runs rarely; a body the
    stream still held would stay in memory that long (+65 MB peak RSS on the devnet)."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body, self._body = self._body, None
        if body is None:
            raise httpx.StreamConsumed()
        yield body


def _request_bytes(request: httpx.Request) -> bytes:
    body = request.content  # the client's request is built from bytes: read already
    target = request.url.raw_path
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    # a streamed body (httpx said Transfer-Encoding: chunked) was read whole: it goes by length alone
    fields = [
        (n, v) for n, v in request.headers.raw if n.lower() not in (b"transfer-encoding", b"content-length")
    ]
    lines.extend(name + b": " + value for name, value in fields)
    for line in lines:
        if b"\r" in line or b"\n" in line or b"\0" in line:  # h11 refuses them too
            # the field's name only: its value (or the target) may be a key
            name = line.partition(b":")[0][:40] if line is not lines[0] else b"request line"
            raise httpx.LocalProtocolError(f"CR, LF or NUL in the request head ({name.decode('latin-1')})")
    lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
