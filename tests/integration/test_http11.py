"""``indexer.chain.http11.Http11Transport`` under httpx against a real socket server on loopback that
answers each request with scripted raw bytes: bodies by length, chunked and to the close, keep-alive
reuse, servers that close, truncate, stall or answer garbage. What the transport must give is what
httpx's own transport gives: the same body, or an ``httpx.TransportError`` that ``RpcClient`` retries."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
import uvloop

from indexer.chain.http11 import Http11Transport
from indexer.chain.rpc import RetryPolicy, RpcClient
from tests.loopback_http import read_request

pytestmark = pytest.mark.integration

Answer = Callable[[int, bytes], bytes | None]  # (request number, request bytes) -> raw response; None: stall


@dataclass
class Scripted:
    answer: Answer
    close_after: bool = False  # close the connection after each answer
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head, body = await read_request(reader)
                self.requests.append(head + body)
                raw = self.answer(len(self.requests), head + body)
                if raw is None:
                    await asyncio.sleep(30)
                    return
                writer.write(raw)
                await writer.drain()
                if self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Scripted]]]:
    started: list[asyncio.Server] = []

    async def make(answer: Answer, *, close_after: bool = False) -> Scripted:
        scripted = Scripted(answer, close_after)
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        started.append(server)
        scripted.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/rpc?key=k"
        return scripted

    yield make
    for server in started:
        server.close()


def ok(body: bytes, *extra: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), b"".join(e + b"\r\n" for e in extra))
        + body
    )


async def post(client: httpx.AsyncClient, url: str, body: bytes = b'{"x":1}') -> httpx.Response:
    response = await client.post(url, content=body, headers={"content-type": "application/json"})
    await response.aread()
    return response


def lean(timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Http11Transport(), timeout=timeout)


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given(serve) -> None:
    server = await serve(lambda n, _: ok(b'{"n":%d}' % n))
    transport = Http11Transport()
    async with httpx.AsyncClient(transport=transport) as client:
        for n in (1, 2, 3):
            response = await client.post(server.url, content=b'{"id":%d}' % n)
            assert response.status_code == 200
            assert response.json() == {"n": n}
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /rpc?key=k HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in first.lower()
    assert b"\r\ncontent-length: 8\r\n" in first.lower()
    assert first.endswith(b'\r\n\r\n{"id":1}')


async def test_chunked_body_with_extensions_and_trailers(serve) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;name=x\r\n{"a"\r\n6\r\n:[1,2]\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    server = await serve(lambda n, _: raw)
    async with lean() as client:
        for _ in range(2):
            response = await post(client, server.url)
            assert response.json() == {"a": [1, 2]}
    assert server.connections == 1  # the connection stays usable after a chunked body


async def test_chunked_with_a_content_length_too_is_read_chunked_and_the_connection_not_reused(serve) -> None:
    """Transfer-Encoding wins over Content-Length (RFC 9112 6.3); an answer framed both ways is a sign of
    a server or proxy that frames two ways, so its connection is closed rather than read from again."""
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'9\r\n{"n":"a"}\r\n0\r\n\r\n'
    )
    server = await serve(lambda n, _: raw)
    async with lean() as client:
        for _ in range(2):
            assert (await post(client, server.url)).json() == {"n": "a"}
    assert server.connections == 2


async def test_body_to_the_close_and_connection_close_are_not_reused(serve) -> None:
    server = await serve(lambda n, _: b"HTTP/1.0 200 OK\r\n\r\n" + b'{"n":%d}' % n, close_after=True)
    closing = await serve(lambda n, _: ok(b"{}", b"Connection: close"))
    async with lean() as client:
        assert (await post(client, server.url)).json() == {"n": 1}
        assert (await post(client, server.url)).json() == {"n": 2}
        await post(client, closing.url)
        await post(client, closing.url)
    assert server.connections == 2
    assert closing.connections == 2


async def test_an_idle_connection_the_server_closed_is_not_written_to(serve) -> None:
    server = await serve(lambda n, _: ok(b'{"n":%d}' % n), close_after=True)  # keep-alive said, then closed
    async with lean() as client:
        assert (await post(client, server.url)).json() == {"n": 1}
        await asyncio.sleep(0.05)  # the close reaches the client
        assert (await post(client, server.url)).json() == {"n": 2}
    assert server.connections == 2


async def test_informational_answer_then_the_response(serve) -> None:
    server = await serve(lambda n, _: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"[1]"))
    async with lean() as client:
        assert (await post(client, server.url)).json() == [1]


async def test_gzip_body_is_decoded_by_httpx_and_headers_kept(serve) -> None:
    doc = {"jsonrpc": "2.0", "id": 1, "result": "0x" + "ab" * 5000}
    packed = gzip.compress(orjson.dumps(doc))
    server = await serve(lambda n, _: ok(packed, b"Content-Encoding: gzip", b"Retry-After: 7"))
    async with lean() as client:
        response = await post(client, server.url)
    assert response.json() == doc
    assert response.headers["retry-after"] == "7"
    assert b"accept-encoding: gzip" in server.requests[0].lower()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10,  # truncated body
        b"SMTP ready\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\n bad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"",  # closed without an answer
    ],
)
async def test_broken_answers_are_transport_errors(serve, raw: bytes) -> None:
    server = await serve(lambda n, _: raw, close_after=True)
    async with lean() as client:
        with pytest.raises(httpx.TransportError):
            await post(client, server.url)


async def test_read_timeout_and_connection_refused(serve) -> None:
    stalled = await serve(lambda n, _: None)
    async with lean(timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await post(client, stalled.url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    async with lean() as client:
        with pytest.raises(httpx.ConnectError):
            await post(client, f"http://127.0.0.1:{port}/")


async def test_rpc_client_retries_a_truncated_answer_over_this_transport(serve) -> None:
    answer = b'{"jsonrpc":"2.0","id":1,"result":"0x10"}'
    server = await serve(
        lambda n, _: b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{" if n == 1 else ok(answer),
        close_after=True,
    )
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    async with RpcClient(server.url, retry=RetryPolicy(attempts=3, base_delay=0.1), sleep=sleep) as rpc:
        assert await rpc.block_number() == 16
        assert rpc.stats.errors == {"connection": 1}
    assert len(delays) == 1 and server.connections == 2


def test_on_uvloop_the_event_loop_of_the_follower() -> None:
    """uvloop calls ``connection_made`` after ``create_connection`` has returned, unlike asyncio."""

    async def exchange() -> tuple[list[object], int]:
        scripted = Scripted(lambda n, _: ok(b'{"n":%d}' % n))
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        try:
            async with lean() as client:
                got = [(await post(client, url)).json() for _ in range(3)]
        finally:
            server.close()
        return got, scripted.connections

    assert uvloop.run(exchange()) == ([{"n": 1}, {"n": 2}, {"n": 3}], 1)


async def test_large_bodies_by_length_and_in_many_chunks_arrive_whole(serve) -> None:
    doc = orjson.dumps([{"i": i, "data": "0x" + f"{i:064x}" * 8} for i in range(20_000)])  # ~11 MB
    chunks = [doc[i : i + 997] for i in range(0, len(doc), 997)]
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        + b"0\r\n\r\n"
    )
    server = await serve(lambda n, _: ok(doc) if n % 2 else chunked)
    async with lean() as client:
        for _ in range(4):
            assert (await post(client, server.url)).content == doc
    assert server.connections == 1


@pytest.mark.parametrize(
    ("raw", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),  # an empty body by length
        (b"HTTP/1.0 200 OK\r\n\r\n", False),  # an empty body to the close
    ],
)
async def test_an_empty_body_is_an_empty_response(serve, raw: bytes, reused: bool) -> None:
    server = await serve(lambda n, _: raw, close_after=not reused)
    async with lean() as client:
        for _ in range(2):
            response = await post(client, server.url)
            assert (response.status_code, response.content) == (200, b"")
    assert server.connections == (1 if reused else 2)


async def test_rpc_client_retries_a_429_without_a_body(serve) -> None:
    answer = b'{"jsonrpc":"2.0","id":1,"result":"0x10"}'
    server = await serve(
        lambda n, _: b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n" if n == 1 else ok(answer)
    )
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    async with RpcClient(server.url, retry=RetryPolicy(attempts=3, base_delay=0.1), sleep=sleep) as rpc:
        assert await rpc.block_number() == 16
        assert rpc.stats.errors == {"http_429": 1}
    assert len(delays) == 1 and server.connections == 1


@pytest.mark.parametrize(
    "lengths",
    [
        b"Content-Length: 2\r\nContent-Length: 7\r\n",  # which one frames the body: refused, as h11 does
        b"Content-Length: 2, 7\r\n",
    ],
)
async def test_conflicting_content_lengths_are_refused(serve, lengths: bytes) -> None:
    server = await serve(lambda n, _: b"HTTP/1.1 200 OK\r\n" + lengths + b"\r\n{}12345", close_after=True)
    async with lean() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, server.url)


async def test_a_repeated_equal_content_length_is_one(serve) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2, 2\r\n\r\n{}"
    server = await serve(lambda n, _: raw)
    async with lean() as client:
        for _ in range(2):
            assert (await post(client, server.url)).content == b"{}"
    assert server.connections == 1


async def test_a_head_answer_has_no_body_whatever_its_content_length(serve) -> None:
    server = await serve(lambda n, _: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    async with lean(timeout=2.0) as client:
        for _ in range(2):
            response = await client.head(server.url)
            assert (response.status_code, response.content) == (200, b"")
            assert response.headers["content-length"] == "5"
    assert server.connections == 1


async def test_a_reused_connection_closed_as_the_request_arrives_is_sent_again_on_a_new_one(serve) -> None:
    """The stale keep-alive race: the server closes the idle connection while the request is on its
    way. No answer, no hang, no error: the request goes once more, on a new connection."""

    def answer(n: int, request: bytes) -> bytes:
        if n == 2:
            raise ConnectionResetError  # the handler closes the connection without answering
        call = orjson.loads(request.partition(b"\r\n\r\n")[2])
        return ok(orjson.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x10"}))

    server = await serve(answer)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    async with RpcClient(server.url, retry=RetryPolicy(attempts=3, base_delay=0.1), sleep=sleep) as rpc:
        assert await rpc.block_number() == 16
        assert await rpc.block_number() == 16
        assert rpc.stats.errors == {}
    assert server.connections == 2 and delays == [] and len(server.requests) == 3


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{"])
async def test_a_new_connection_closed_or_an_answer_cut_short_is_not_sent_again(serve, answer: bytes) -> None:
    """Only a reused connection that answered nothing is retried here: a new one closed without an
    answer, or a reused one that answered part, is the caller's error to retry (RpcClient's)."""

    def reply(n: int, _: bytes) -> bytes:
        if n == 1:
            return ok(b"[]")
        if answer:
            return answer
        raise ConnectionResetError  # closes without answering

    server = await serve(reply, close_after=bool(answer))
    async with lean() as client:
        assert (await post(client, server.url)).json() == []
        if answer:
            await asyncio.sleep(0.05)  # the first connection's close reaches the client: a new one
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, server.url)
    # closed unanswered: once on the reused connection, once (and no more) on a new one; cut short: once
    assert len(server.requests) == (2 if answer else 3)


@pytest.mark.parametrize("size", [b"0x2", b"+2", b"0_2", b"-2", b""])
async def test_a_chunk_size_that_is_not_plain_hex_is_refused(serve, size: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n{}\r\n0\r\n\r\n"
    server = await serve(lambda n, _: raw, close_after=True)
    async with lean() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, server.url)


async def test_a_streamed_request_body_is_sent_by_length_only(serve) -> None:
    """httpx frames a generator's body as chunked; read whole here, it goes by Content-Length alone (both
    fields with an unchunked body would make a server read it as chunks: garbage or a desync)."""

    async def parts() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b"1}"

    server = await serve(lambda n, _: ok(b"[]"))
    async with lean() as client:
        response = await client.post(server.url, content=parts())
        assert response.json() == []
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert body == b'{"a":1}'
    assert b"\r\ntransfer-encoding:" not in head.lower()
    assert b"\r\ncontent-length: 7" in head.lower()


@pytest.mark.parametrize("value", ["k\r\nInjected: 1", "k\n", "k\x00"])
async def test_a_header_value_that_would_break_the_request_is_refused(serve, value: str) -> None:
    """As h11 refuses it (httpx's own transport): a key pasted with its newline must not become a
    second header line or a truncated request."""
    server = await serve(lambda n, _: ok(b"[]"))
    async with lean() as client:
        with pytest.raises(httpx.LocalProtocolError) as raised:
            await client.post(server.url, content=b"{}", headers={"x-api-key": value})
    assert server.requests == []
    assert "x-api-key" in str(raised.value) and "k" not in str(raised.value).replace("x-api-key", "")


def test_on_uvloop_an_idle_connection_whose_socket_just_closed_is_not_written_to() -> None:
    """A socket error closes the transport at once, ``connection_lost`` follows a loop turn later: a
    request taking the connection in between must take a new one (it failed: 'server disconnected',
    a retry with its backoff for a connection known dead)."""

    async def exchange() -> tuple[list[object], int]:
        scripted = Scripted(lambda n, _: ok(b'{"n":%d}' % n))
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        transport = Http11Transport()
        try:
            async with httpx.AsyncClient(transport=transport, timeout=5) as client:
                got = [(await post(client, url)).json()]
                for idle in transport._idle.values():
                    for conn in idle:
                        assert conn.transport is not None
                        conn.transport.close()  # as the loop does on a reset; the protocol not told yet
                got.append((await post(client, url)).json())
        finally:
            server.close()
        return got, scripted.connections

    assert uvloop.run(exchange()) == ([{"n": 1}, {"n": 2}], 2)


async def test_a_request_cancelled_mid_body_leaves_its_slot_and_no_connection_behind(serve) -> None:
    half = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"
    answered = asyncio.Event()

    def answer(n: int, _: bytes) -> bytes:
        answered.set()
        return half if n == 1 else ok(b'{"n":%d}' % n)

    server = await serve(answer)
    async with httpx.AsyncClient(transport=Http11Transport(max_connections=1), timeout=5) as client:
        task = asyncio.create_task(post(client, server.url))
        await answered.wait()
        await asyncio.sleep(0.05)  # the half body reaches the client
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the one slot is free again, and the half-read connection is not reused (its 5 bytes unread)
        assert (await post(client, server.url)).json() == {"n": 2}
    assert server.connections == 2


async def test_no_free_connection_in_time_is_a_pool_timeout(serve) -> None:
    asked = asyncio.Event()

    def stall(n: int, _: bytes) -> None:
        asked.set()

    server = await serve(stall)
    timeout = httpx.Timeout(5.0, pool=0.1)
    async with httpx.AsyncClient(transport=Http11Transport(max_connections=1), timeout=timeout) as client:
        stalled = asyncio.create_task(post(client, server.url))
        await asked.wait()
        with pytest.raises(httpx.PoolTimeout):
            await post(client, server.url)
        stalled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stalled


async def test_a_server_that_reads_nothing_is_a_write_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel accepts; nobody reads
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        timeout = httpx.Timeout(5.0, write=0.2)
        async with httpx.AsyncClient(transport=Http11Transport(), timeout=timeout) as client:
            with pytest.raises(httpx.WriteTimeout):
                await client.post(url, content=b"x" * (64 * 1024 * 1024))


async def test_a_response_completed_after_aclose_does_not_park_its_connection() -> None:
    asked, release = asyncio.Event(), asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        asked.set()
        await release.wait()
        writer.write(ok(b"[]"))
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    transport = Http11Transport()
    try:
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            task = asyncio.create_task(client.get(url))
            await asked.wait()
            await transport.aclose()  # shutting down with a request in flight
            release.set()
            assert (await task).json() == []
            assert not any(transport._idle.values())  # closed, not left open in a closed pool
    finally:
        server.close()


async def test_rpc_client_honours_the_environment_proxy_as_before(serve, monkeypatch) -> None:
    """Without a transport given, httpx routed the node's requests through HTTP_PROXY/ALL_PROXY (minus
    NO_PROXY); an RpcClient over this transport must too (a node reachable only through a proxy)."""

    def answer(n: int, request: bytes) -> bytes:
        call = orjson.loads(request.partition(b"\r\n\r\n")[2])
        return ok(orjson.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x10"}))

    proxy = await serve(answer)
    monkeypatch.setenv("HTTP_PROXY", proxy.url.split("/rpc")[0])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with RpcClient("http://node.invalid:8545/v1/key", retry=RetryPolicy(attempts=1)) as rpc:
        assert await rpc.block_number() == 16
    assert proxy.requests[0].startswith(b"POST http://node.invalid:8545/v1/key HTTP/1.1\r\n")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # bypassed: straight to the node
    node = await serve(answer)
    async with RpcClient(node.url, retry=RetryPolicy(attempts=1)) as rpc:
        assert await rpc.block_number() == 16
    assert len(proxy.requests) == 1 and len(node.requests) == 1
