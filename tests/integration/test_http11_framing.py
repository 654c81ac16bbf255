"""Framing corners of the lean transport (``Http11Transport``) against a real socket server on loopback:
a body that runs to the close but is cut by a reset, and transfer codings other than ``chunked``. Each
must be an ``httpx.TransportError`` (``RpcClient`` retries it), never a body handed on as the answer."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from indexer.chain.http11 import Http11Transport

pytestmark = pytest.mark.integration


@pytest.fixture
async def answer_once() -> AsyncIterator[Callable[[bytes, bool], Awaitable[str]]]:
    """A server that answers the first request with raw bytes and then resets the connection (RST, as a
    crashed proxy or a middlebox does) or closes it (FIN); → its URL."""
    servers: list[asyncio.Server] = []

    async def start(raw: bytes, reset: bool) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(raw)
            await writer.drain()
            await asyncio.sleep(0.1)  # the client has the bytes before the end comes
            if reset:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    yield start
    for server in servers:
        server.close()


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=Http11Transport(max_response_bytes=1 << 20), timeout=5) as client:
        return await client.get(url)


async def test_a_body_to_the_close_cut_by_a_reset_is_a_read_error(
    answer_once: Callable[[bytes, bool], Awaitable[str]],
) -> None:
    """Such a body ends at the close; a reset is no end but a cut (the peer dropped the connection with
    bytes unsent): before, '[1,2,3' came back as a whole 200 answer."""
    url = await answer_once(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n[1,2,3", True)
    with pytest.raises(httpx.ReadError):
        await _get(url)


async def test_a_body_to_the_close_ended_by_the_close_is_whole(
    answer_once: Callable[[bytes, bool], Awaitable[str]],
) -> None:
    url = await answer_once(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n[1,2,3]", False)
    response = await _get(url)
    assert response.status_code == 200 and response.content == b"[1,2,3]"


@pytest.mark.parametrize(
    "codings",
    [
        b"Transfer-Encoding: gzip, chunked",  # before: the chunks' gzip bytes handed on as the body
        b"Transfer-Encoding: identity",  # before: read to the close as if there were none
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
        b"Transfer-Encoding: xchunked",
    ],
)
async def test_a_transfer_coding_other_than_chunked_is_refused(
    answer_once: Callable[[bytes, bool], Awaitable[str]], codings: bytes
) -> None:
    """As h11 (httpx's own transport) refuses it: the body would be bytes of a coding nobody decodes."""
    url = await answer_once(b"HTTP/1.1 200 OK\r\n" + codings + b"\r\n\r\n2\r\nok\r\n0\r\n\r\n", False)
    with pytest.raises(httpx.RemoteProtocolError, match="Transfer-Encoding"):
        await _get(url)


@pytest.mark.parametrize("codings", [b"Transfer-Encoding: chunked", b"transfer-encoding:  Chunked "])
async def test_chunked_alone_is_read(
    answer_once: Callable[[bytes, bool], Awaitable[str]], codings: bytes
) -> None:
    url = await answer_once(b"HTTP/1.1 200 OK\r\n" + codings + b"\r\n\r\n2\r\nok\r\n0\r\n\r\n", False)
    assert (await _get(url)).content == b"ok"
