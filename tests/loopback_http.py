"""Reading a request in the tests' loopback HTTP/1.1 servers (a node, a proxy): the head, then the body its
Content-Length gives (the JSON-RPC client always sends one)."""

from __future__ import annotations

import asyncio


def content_length(head: bytes) -> int:
    """The Content-Length of a request head; 0 where it has none."""
    fields = head.lower().split(b"\r\n")
    return next((int(line.split(b":")[1]) for line in fields if line.startswith(b"content-length:")), 0)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head (through the blank line) and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    return head, await reader.readexactly(content_length(head))
