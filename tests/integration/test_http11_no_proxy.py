"""``NO_PROXY`` in ``RpcClient``'s transport, the same for ``http://`` and ``https://`` node URLs: a node on
loopback and a proxy on loopback, ``HTTP_PROXY`` and ``HTTPS_PROXY`` pointing at the proxy, and for each
``NO_PROXY`` the server the client's connection reached. Networks (``127.0.0.0/8``) hold their addresses, as
curl and Go read them; before, a network entry was matched as a name (urllib) and bypassed nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest

from indexer.chain.rpc import RetryPolicy, RpcClient, RpcRetryableError
from tests.loopback_http import content_length

pytestmark = pytest.mark.integration


@dataclass
class Listener:
    """A server that records the first line (or TLS record type) of each connection; to a plain HTTP
    request it answers the JSON-RPC result ``0x10``, a CONNECT or a TLS hello it closes."""

    port: int = 0
    first: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            start = await reader.read(1)
            if start == b"\x16":  # a TLS handshake record: an https:// client that came straight here
                self.first.append(b"TLS")
                return
            head = start + await reader.readuntil(b"\r\n\r\n")
            self.first.append(head.split(b"\r\n")[0])
            if head.startswith(b"CONNECT"):
                return
            call = orjson.loads(await reader.readexactly(content_length(head)))
            body = orjson.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x10"})
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def listeners() -> AsyncIterator[tuple[Listener, Listener]]:
    node, proxy = Listener(), Listener()
    servers = [await asyncio.start_server(x.handle, "127.0.0.1", 0) for x in (node, proxy)]
    node.port, proxy.port = (s.sockets[0].getsockname()[1] for s in servers)
    yield node, proxy
    for server in servers:
        server.close()


async def _reached(scheme: str, node: Listener, proxy: Listener, host: str = "127.0.0.1") -> str:
    """Which server one call to the node (at ``host``, an address or name in its URL) reached: 'node' or
    'proxy'."""
    before = len(node.first), len(proxy.first)
    async with RpcClient(f"{scheme}://{host}:{node.port}/", retry=RetryPolicy(attempts=1), timeout=5) as rpc:
        try:
            assert await rpc.block_number() == 16
        except RpcRetryableError:
            assert scheme == "https"  # neither listener speaks TLS: a direct call, or a refused CONNECT
    reached = {"node": node.first[before[0] :], "proxy": proxy.first[before[1] :]}
    assert sum(len(firsts) for firsts in reached.values()) == 1, reached
    name = next(n for n, firsts in reached.items() if firsts)
    if scheme == "https":  # through the proxy: a tunnel asked for; straight: the TLS hello itself
        assert reached[name][0] == (
            # httpcore 1.0.9 writes an IPv6 address unbracketed ('CONNECT ::1:8545')
            b"CONNECT %s:%d HTTP/1.1" % (host.strip("[]").encode(), node.port) if name == "proxy" else b"TLS"
        )
    return name


@pytest.mark.parametrize(
    ("no_proxy", "expected"),
    [
        ("127.0.0.0/8", "node"),  # a network that holds the node's address (before: through the proxy)
        ("10.0.0.0/8, 192.168.0.0/16", "proxy"),  # networks that do not
        ("127.0.0.1/32", "node"),
        ("127.0.0.1", "node"),  # an address
        ("127.0.0.2", "proxy"),
        ("example.org,*", "node"),  # * anywhere in the list (before: only alone)
        ("fd00::/8,[::1]", "proxy"),  # IPv6 entries do not hold an IPv4 address
        ("localhost", "proxy"),  # a name is not resolved: 127.0.0.1 is no name
        ("", "proxy"),
    ],
)
async def test_http_and_https_urls_take_the_same_route_for_each_no_proxy(
    listeners: tuple[Listener, Listener], monkeypatch: pytest.MonkeyPatch, no_proxy: str, expected: str
) -> None:
    node, proxy = listeners
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert await _reached("http", node, proxy) == expected
    assert await _reached("https", node, proxy) == expected


@pytest.mark.parametrize(
    ("host", "no_proxy", "expected"),
    [
        ("127.0.0.1", "127.0.0.1:{port}", "node"),  # an address and the node's port (before: proxy)
        ("127.0.0.1", "127.0.0.1:1", "proxy"),  # another port
        ("127.0.0.1", "127.0.0.0/8, 10.0.0.0/8:{port}", "node"),
        ("[::1]", "[::1]:{port}", "node"),  # an IPv6 address in brackets with a port (before: proxy)
        ("[::1]", " [::1]:1 ", "proxy"),
        ("[::1]", "[::1]", "node"),
        ("[::1]", "[::]/0", "node"),  # a network in brackets (before: proxy)
        ("localhost", "LOCALHOST:{port}", "node"),  # a name and the node's port (before: proxy)
        ("localhost", ".localhost:{port}", "node"),
        ("localhost", "localhost:1", "proxy"),
        ("localhost", "localhost", "node"),
    ],
)
async def test_an_entry_with_a_port_holds_that_port_only(
    monkeypatch: pytest.MonkeyPatch, host: str, no_proxy: str, expected: str
) -> None:
    """An entry's port (``node:8545``, ``10.0.0.1:8545``, ``[::1]:8545``) limits it to that port, as
    urllib (given a URL's port), httpx's own reading and Go take it; before, the host was matched without
    its port, so such an entry bypassed nothing."""
    node, proxy = Listener(), Listener()
    address = host.strip("[]") if host.startswith("[") else "127.0.0.1"
    servers = [await asyncio.start_server(x.handle, address, 0) for x in (node, proxy)]
    node.port, proxy.port = (s.sockets[0].getsockname()[1] for s in servers)
    try:
        for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        proxy_url = f"http://{address if ':' not in address else '[' + address + ']'}:{proxy.port}"
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        monkeypatch.setenv("NO_PROXY", no_proxy.format(port=node.port))
        assert await _reached("http", node, proxy, host) == expected
        assert await _reached("https", node, proxy, host) == expected
    finally:
        for server in servers:
            server.close()
