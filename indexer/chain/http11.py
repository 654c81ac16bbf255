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
import ipaddress
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator

import httpx

from indexer.chain.http11_read import Connection, ResponseTooLarge, read_response

__all__ = ["Http11Transport", "ResponseTooLarge"]
_ENCODED_PIECE = 64 * 1024  # a compressed body is handed to httpx's decoder in pieces of this size


class Http11Transport(httpx.AsyncBaseTransport):
    """httpx transport: plain ``http://`` over lean keep-alive connections, anything else through
    httpx's ``AsyncHTTPTransport`` (same ``max_connections``).

    ``max_response_bytes``: a plain ``http://`` response longer than this (as sent, heads included) raises
    ``ResponseTooLarge`` as it is read, and its connection is closed; None: no limit. Responses through
    httpx's transports are streamed: their reader counts them (``RpcClient`` does)."""

    def __init__(
        self,
        *,
        max_connections: int = 32,
        keepalive_expiry: float = 60.0,
        trust_env: bool = False,
        max_response_bytes: int | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.max_response_bytes = max_response_bytes
        self._idle: dict[tuple[str, int], deque[Connection]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._other: httpx.AsyncHTTPTransport | None = None
        # trust_env: HTTP_PROXY/HTTPS_PROXY/ALL_PROXY minus NO_PROXY, read once as httpx's client
        # does; a client given a transport no longer routes by them itself (RpcClient's did before)
        self._proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._no_proxy = NoProxy(self._proxies.get("no", ""))
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
        conn: Connection,
        host: str,
        port: int,
        request: httpx.Request,
        data: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        conn.answered = False
        try:
            await conn.write(data, timeouts.get("write"))
            status, reason, headers, body, keep = await read_response(
                conn, timeouts.get("read"), request.method == "HEAD", self.max_response_bytes
            )
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError):
                raise httpx.ReadError(repr(exc)) from exc
            raise
        if keep and not self._closed:
            conn.idle_since = time.monotonic()
            conn.parked = True
            self._idle.setdefault((host, port), deque()).append(conn)
        else:
            conn.close()
        encoded = any(n.lower() == b"content-encoding" and v.lower() != b"identity" for n, v in headers)
        return httpx.Response(
            status,
            headers=headers,
            stream=_Body(body, _ENCODED_PIECE if encoded else None),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _limits(self) -> httpx.Limits:
        return httpx.Limits(max_connections=self.max_connections, keepalive_expiry=self.keepalive_expiry)

    def _proxy_for(self, url: httpx.URL) -> str | None:
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if not proxy:
            return None
        if self._no_proxy.bypasses(url.host, url.port or (443 if url.scheme == "https" else 80)):
            return None
        return proxy if "://" in proxy else "http://" + proxy

    def _reuse(self, key: tuple[str, int]) -> Connection | None:
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
                conn.parked = False
                return conn
            conn.close()
        return None

    @staticmethod
    async def _connect(host: str, port: int, timeout: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, conn = await loop.create_connection(Connection, host, port)
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


class NoProxy:
    """``NO_PROXY``, one rule for every scheme: ``*`` (anywhere in the list) bypasses every proxy; an
    address or a network (``10.0.0.0/8``, ``127.0.0.1``, ``fd00::/8``, ``[::1]``) the addresses in it, as
    curl (7.86+) and Go apply it; a name itself and its subdomains (``.example.org`` too), as urllib.
    Neither urllib nor httpx (0.28.1) reads a network as one: urllib matches ``10.0.0.0/8`` as a name
    (nothing), httpx as the one host ``10.0.0.0``; so a node at ``10.1.2.3`` went through the proxy.
    An entry with a port (``node:8545``, ``10.0.0.1:8545``, ``[::1]:8545``) holds that port only, as
    urllib (given the URL's port), httpx and Go read it."""

    def __init__(self, entries: str) -> None:
        self.everything = False
        self.networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]] = []
        names = []
        for entry in (e.strip() for e in entries.split(",")):
            if entry == "*":
                self.everything = True
            elif entry:
                host, port = _split_port(entry)
                try:
                    self.networks.append(
                        (ipaddress.ip_network(host.replace("[", "").replace("]", ""), strict=False), port)
                    )
                except ValueError:
                    names.append(entry)
        self.name_rules = {"no": ",".join(names)} if names else {}  # urllib's form

    def bypasses(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            address = None
        if address is not None and any(
            address in network and entry_port in (None, port) for network, entry_port in self.networks
        ):
            return True
        # names as urllib matches them, given host:port (an entry with a port matches that port only)
        by_name = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed
        return bool(self.name_rules) and bool(by_name(f"{host}:{port}", self.name_rules))


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port`` or ``[v6]:port`` → (host, port); anything else (``::1``, ``fd00::/8``) has no port."""
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and (":" not in host or (host.startswith("[") and host.endswith("]"))):
        return host, int(port)
    return entry, None


class _Body(httpx.AsyncByteStream):
    """A body handed over once and then let go: httpx keeps a response in a reference cycle (response,
    stream, request) that only the cyclic collector frees, which the backfill runs rarely; a body the
    stream still held would stay in memory that long (+65 MB peak RSS on the devnet).

    A compressed body goes in pieces of ``piece`` bytes: httpx decodes each piece as it is handed over,
    so a reader counting the decoded bytes (``RpcClient``) stops a small body that inflates to gigabytes
    after one piece, rather than after all of it was inflated at once."""

    def __init__(self, body: bytes, piece: int | None = None) -> None:
        self._body: bytes | None = body
        self._piece = piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body, self._body = self._body, None
        if body is None:
            raise httpx.StreamConsumed()
        if self._piece is None:
            yield body
            return
        for start in range(0, len(body), self._piece):
            yield body[start : start + self._piece]


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
