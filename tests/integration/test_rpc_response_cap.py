"""The response size limit (``Settings.rpc_max_response_mb``), against a real server socket on loopback
that sends more than the limit: a huge Content-Length, a chunked body and a body to the close that run on
(far past the limit, as long as the client reads), and a small gzip body that inflates past it. Over the
lean transport for ``http://`` (``Http11Transport``) and over httpx's own (the ``https://`` path, here
without TLS): the client stops reading as the limit is passed (the server sees its connection closed
before it sent everything), the connection is never reused, and ``RpcClient`` retries it as a fault."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from indexer.chain.http11 import Http11Transport, ResponseTooLarge
from indexer.chain.rpc import RetryPolicy, RpcClient, RpcRetryableError
from tests.loopback_http import read_request

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024
RUN_ON = 64 * LIMIT  # what an "endless" body sends at most: enough to tell a stop from a read to the end
PIECE = 16 * 1024


@dataclass
class Node:
    """A JSON-RPC node on loopback whose n-th answer (1-based) is written by ``answers[n]`` (default: the
    JSON-RPC result ``0x10``); it counts connections, and bytes of each answer sent before the peer left."""

    answers: dict[int, Callable[[asyncio.StreamWriter, int], Awaitable[None]]] = field(default_factory=dict)
    url: str = ""
    requests: int = 0
    connections: int = 0
    sent: dict[int, int] = field(default_factory=dict)  # answer number -> bytes written
    cut_off: set[int] = field(default_factory=set)  # answers the client closed before their end

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                call = orjson.loads((await read_request(reader))[1])
                self.requests += 1
                n = self.requests
                try:
                    await self.answers.get(n, _result)(writer, call["id"])
                except ConnectionError:
                    self.cut_off.add(n)
                    return
                finally:
                    self.sent[n] = writer.transport.get_write_buffer_size()  # left unsent
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def _result(writer: asyncio.StreamWriter, call_id: int) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "id": call_id, "result": "0x10"})
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()


async def _run_on(writer: asyncio.StreamWriter, frame: Callable[[bytes], bytes], end: bytes) -> None:
    """``RUN_ON`` bytes of JSON-looking filler, each piece framed by ``frame``, then ``end``."""
    piece = b" " * PIECE
    for _ in range(RUN_ON // PIECE):
        writer.write(frame(piece))
        await writer.drain()
    writer.write(end)
    await writer.drain()


async def huge_length(writer: asyncio.StreamWriter, call_id: int) -> None:
    """Content-Length of 1 TiB, then a trickle of bytes for up to 30 s: refused on the head, or not at all."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n[" % (1 << 40))
    for _ in range(600):
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b" ")


async def chunked_run_on(writer: asyncio.StreamWriter, call_id: int) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    await _run_on(writer, lambda piece: b"%x\r\n%s\r\n" % (len(piece), piece), b"0\r\n\r\n")


async def to_close_run_on(writer: asyncio.StreamWriter, call_id: int) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    await _run_on(writer, lambda piece: piece, b"")
    raise ConnectionError("the body ends at the close")  # not a keep-alive answer


async def gzip_bomb(writer: asyncio.StreamWriter, call_id: int) -> None:
    body = gzip.compress(b" " * RUN_ON)  # ~16 KB that inflates to RUN_ON bytes
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
    writer.write(head + body)
    await writer.drain()


async def result_then_chatter(writer: asyncio.StreamWriter, call_id: int) -> None:
    """A whole answer, then bytes nobody asked for on the idle keep-alive connection, until it is closed."""
    await _result(writer, call_id)
    await _run_on(writer, lambda piece: piece, b"")


@pytest.fixture
async def node() -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    servers: list[asyncio.Server] = []

    async def start(**answers: Callable[[asyncio.StreamWriter, int], Awaitable[None]]) -> Node:
        state = Node({int(k.removeprefix("n")): v for k, v in answers.items()})
        server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        return state

    yield start
    for server in servers:
        server.close()


TRANSPORTS = {
    "lean": lambda: Http11Transport(max_response_bytes=LIMIT),
    "httpx": lambda: httpx.AsyncHTTPTransport(),  # the https:// path: counted by RpcClient as it streams
}


async def _no_wait(_: float) -> None:
    return None


def _client(url: str, transport: str, attempts: int = 1) -> RpcClient:
    return RpcClient(url, transport=TRANSPORTS[transport](), max_response_bytes=LIMIT, timeout=10,
                     retry=RetryPolicy(attempts=attempts), sleep=_no_wait)  # fmt: skip


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("answer", [huge_length, chunked_run_on, to_close_run_on, gzip_bomb])
async def test_an_answer_over_the_limit_is_dropped_as_it_arrives_and_the_connection_closed(
    node: Callable[..., Awaitable[Node]],
    transport: str,
    answer: Callable[[asyncio.StreamWriter, int], Awaitable[None]],
) -> None:
    server = await node(n1=answer)
    async with _client(server.url, transport) as rpc:
        with pytest.raises(RpcRetryableError, match="response over the limit of 262,144 bytes") as raised:
            await rpc.block_number()
        assert isinstance(raised.value.__cause__, ResponseTooLarge)
        assert "DEXNODE_RPC_MAX_RESPONSE_MB" in str(raised.value)
        assert rpc.stats.errors == {"response_too_large": 1}
        for _ in range(200):  # the server notices the close
            if 1 in server.sent:
                break
            await asyncio.sleep(0.05)
        if answer is not gzip_bomb and answer is not huge_length:
            assert 1 in server.cut_off, "the client read the whole answer"
        # the next call works, on a new connection: the one of the refused answer was closed (except
        # where the lean transport had read a gzip answer whole, its framing intact, before it was inflated)
        assert await rpc.block_number() == 16
        reused = answer is gzip_bomb and transport == "lean"
        assert server.connections == (1 if reused else 2) and server.requests == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_retried_with_backoff_and_answered_by_the_next_try(
    node: Callable[..., Awaitable[Node]], transport: str
) -> None:
    server = await node(n1=chunked_run_on)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with RpcClient(server.url, transport=TRANSPORTS[transport](), max_response_bytes=LIMIT,
                         retry=RetryPolicy(attempts=3), sleep=sleep) as rpc:  # fmt: skip
        assert await rpc.block_number() == 16
        assert rpc.stats.errors == {"response_too_large": 1} and rpc.stats.retries == 1
    assert len(slept) == 1 and slept[0] > 0
    assert server.requests == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_answer_within_the_limit_is_whole_in_each_framing(
    node: Callable[..., Awaitable[Node]], transport: str
) -> None:
    payload = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": ["0x" + "ab" * 1000] * 100})
    assert LIMIT // 2 < len(payload) < LIMIT - 1024

    async def by_length(writer: asyncio.StreamWriter, call_id: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)

    async def chunked(writer: asyncio.StreamWriter, call_id: int) -> None:
        chunks = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n")

    async def to_close(writer: asyncio.StreamWriter, call_id: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload)
        await writer.drain()
        raise ConnectionError("the body ends at the close")

    async def gzipped(writer: asyncio.StreamWriter, call_id: int) -> None:
        body = gzip.compress(payload)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body)  # fmt: skip

    server = await node(n1=by_length, n2=chunked, n3=to_close, n4=gzipped)
    async with _client(server.url, transport) as rpc:
        for _ in range(4):
            assert await rpc.call("eth_x") == ["0x" + "ab" * 1000] * 100
        assert not rpc.stats.errors


async def test_an_idle_connection_that_receives_bytes_is_closed_at_once(
    node: Callable[..., Awaitable[Node]],
) -> None:
    """The lean transport parks a connection between requests; bytes arriving then are no answer to
    anything. Kept, they grew without end while it sat idle (asyncio reads whatever comes)."""
    server = await node(n1=result_then_chatter)
    async with _client(server.url, "lean") as rpc:
        assert await rpc.block_number() == 16
        for _ in range(200):
            if 1 in server.cut_off:
                break
            await asyncio.sleep(0.05)
        assert 1 in server.cut_off, "the idle connection kept reading what the server sent"
        assert await rpc.block_number() == 16
    assert server.connections == 2


async def corrupt_gzip(writer: asyncio.StreamWriter, call_id: int) -> None:
    """Content-Encoding: gzip over bytes that are no gzip stream (a proxy that garbles, a cut body)."""
    body = b"\x1f\x8b not a gzip stream"
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
    writer.write(head + body)
    await writer.drain()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_body_that_cannot_be_decoded_is_retried_not_raised(
    node: Callable[..., Awaitable[Node]], transport: str
) -> None:
    """httpx raises ``DecodingError`` for it, which is no ``TransportError``: it went out of ``RpcClient``
    past the retry loop, and so out of the follower and the backfill."""
    server = await node(n1=corrupt_gzip)
    async with _client(server.url, transport, attempts=2) as rpc:
        assert await rpc.block_number() == 16
        assert rpc.stats.errors == {"undecodable_body": 1} and rpc.stats.retries == 1
    assert server.requests == 2


def _gzip_twice(size: int) -> bytes:
    """``size`` spaces gzipped, and that gzipped again: ~200 bytes per 64 MiB, as each layer of deflate
    inflates at most ~1,000-fold but the first layer's output is itself a run of repeats."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    mib = b" " * (1 << 20)
    layer = b"".join(inner.compress(mib) for _ in range(size >> 20)) + inner.flush()
    return gzip.compress(layer, 9)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stacked_gzip_is_refused_before_it_inflates(
    node: Callable[..., Awaitable[Node]], transport: str
) -> None:
    """``Content-Encoding: gzip, gzip``: httpx decodes the layers of each piece in one go, each layer
    unbounded, so a 1 KB answer became 64 MiB in memory before the limit was checked (2.2 GB peak for a
    1,828-byte answer of 1 GiB). No node stacks codings: refused as a fault of that backend."""
    body = _gzip_twice(64 << 20)
    assert len(body) < 1024

    async def stacked(writer: asyncio.StreamWriter, call_id: int) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
        writer.write(head + body)
        await writer.drain()

    server = await node(n1=stacked)
    async with _client(server.url, transport) as rpc:
        tracemalloc.start()
        try:
            with pytest.raises(RpcRetryableError) as raised:
                await rpc.block_number()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 * LIMIT, f"{peak:,} bytes allocated at the peak"
        assert "stacked Content-Encoding 'gzip, gzip'" in str(raised.value)
        assert rpc.stats.errors == {"undecodable_body": 1}
        assert await rpc.block_number() == 16
