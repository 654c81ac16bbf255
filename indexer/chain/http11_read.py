"""One keep-alive connection of the lean HTTP/1.1 transport (``indexer.chain.http11``) and the reading of
a response from it: the head, then the body framed by Content-Length, chunked, or running to the close.

An ``asyncio.Protocol`` keeps what arrives as a list of pieces and wakes the reader only when the bytes it
needs are there (the head, then the whole body by Content-Length): one wake-up and one join per response in
the common case. Malformed answers raise ``httpx.RemoteProtocolError``, timeouts ``httpx.ReadTimeout`` /
``httpx.WriteTimeout``, as httpx's own transport does.

A response is read whole into memory, so its size is bounded (``limit``): by its Content-Length before a
byte of the body is read, and as the bytes arrive for a chunked body (its framing and trailers counted)
or one that runs to the close; heads (1xx answers too) count. Over it, ``ResponseTooLarge``, and the caller
closes the connection. A connection parked between requests that receives anything is closed at once:
bytes nobody will read are not kept.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

_HEAD_END = b"\r\n\r\n"
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_MAX_HEAD = 64 * 1024  # bytes of status line + headers before the answer is refused
_TINY_CHUNKS = 1024  # chunks of a chunked body, joined into one when they hold less than _TINY_BYTES
_TINY_BYTES = 1 << 20


class ResponseTooLarge(httpx.RemoteProtocolError):
    """A response longer than the reader's limit: a node or proxy sending an endless or huge answer, or
    a batch whose answer outgrew the limit. Not data: its connection is closed and never reused."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response over the limit of {limit:,} bytes")
        self.limit = limit


class _Budget:
    """Bytes of one response read so far, against ``limit`` (None: no limit)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.limit is not None and self.used > self.limit:
            raise ResponseTooLarge(self.limit)


class Connection(asyncio.Protocol):
    """One socket: what arrived (``pieces``, ``size`` bytes), and a waiter woken when ``need`` bytes are
    there."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.start = 0  # bytes of pieces[0] already taken
        self.size = 0  # bytes not yet taken
        self.need = 0  # wake the waiter once size >= need
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.answered = False  # any byte received since the request was sent
        self.parked = False  # idle between requests: whatever arrives now is no answer
        self._can_write: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if self.parked:  # an idle connection answers nothing: kept, such bytes could grow without end
            self.close()
            return
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
        """The first piece, made to hold at least ``n`` bytes past ``start`` (or all there is) by joining
        only as many pieces as that takes."""
        pieces = self.pieces
        if not pieces:
            return b""
        if len(pieces[0]) - self.start < n and len(pieces) > 1:
            if self.start:  # what was taken is not copied again
                pieces[0], self.start = pieces[0][self.start :], 0
            total = k = 0
            while k < len(pieces) and total < n:
                total += len(pieces[k])
                k += 1
            pieces[:k] = [b"".join(pieces[:k])]
        return pieces[0]

    def find(self, separator: bytes) -> int:
        """Where ``separator`` starts within the first ``_MAX_HEAD`` bytes or so, or -1."""
        span = min(self.size, _MAX_HEAD + len(separator))
        at = self.front(span).find(separator, self.start, self.start + span)
        return at - self.start if at >= 0 else -1

    def take(self, length: int) -> bytes:
        """The first ``length`` bytes (or all there is), removed. The first piece is not cut (a copy of
        all it still holds, per line and chunk of a chunked body): ``start`` moves past what was taken."""
        if length <= 0 or not self.pieces:  # an empty body: nothing to remove (and no piece to drop)
            return b""
        data, start = self.front(length), self.start
        if len(data) - start <= length:
            del self.pieces[0]
            self.start = 0
            self.size -= len(data) - start
            return data[start:] if start else data
        self.start = start + length
        self.size -= length
        return data[start : start + length]

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def read_response(
    conn: Connection, timeout: float | None, head_request: bool = False, limit: int | None = None
) -> tuple[int, bytes, list[Any], bytes, bool]:
    """(status, reason, headers, body, reusable) of the next response on ``conn`` (1xx skipped); the
    answer to a HEAD request (``head_request``) has no body, whatever its Content-Length says. More than
    ``limit`` bytes (heads and body as sent): ``ResponseTooLarge``."""
    budget = _Budget(limit)
    while True:
        end = conn.find(_HEAD_END)
        while end < 0:
            if conn.size > _MAX_HEAD:
                raise httpx.RemoteProtocolError("response head too large")
            if not await conn.fill_more(timeout):
                raise httpx.RemoteProtocolError("server disconnected without sending a response")
            end = conn.find(_HEAD_END)
        head = conn.take(end + 4)[:-4]
        budget.spend(len(head) + 4)
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
    if _chunked(headers):
        body = await _read_chunked(conn, timeout, budget)
        # Transfer-Encoding framed the body, but a Content-Length beside it means a server (or something
        # between) that frames answers two ways: RFC 9112 6.3 has the connection closed after the answer
        keep = keep and b"content-length" not in fields
    elif b"content-length" in fields:
        length = _content_length(headers)
        budget.spend(length)  # refused before it is read
        if not await conn.fill(length, timeout):
            raise httpx.RemoteProtocolError(f"server disconnected after {conn.size} of {length} body bytes")
        body = conn.take(length)
    else:  # the body runs to the close
        budget.spend(conn.size)
        while True:
            before = conn.size
            more = await conn.fill_more(timeout)
            budget.spend(conn.size - before)
            if not more:
                break
        if conn.error is not None:  # a reset, not the close that ends such a body: it was cut short
            raise httpx.ReadError(f"connection reset after {conn.size} body bytes: {conn.error!r}")
        body, keep = conn.take(conn.size), False
    return status, reason, headers, body, keep and not conn.closed


def _chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body is chunked. Any other transfer coding (``gzip, chunked``, ``identity``) is
    refused, as h11 refuses it: its bytes would be handed on undecoded, or framed by a guess."""
    codings = [
        c.strip().lower()
        for name, value in headers
        if name.lower() == b"transfer-encoding"
        for c in value.split(b",")
    ]
    if codings and codings != [b"chunked"]:
        raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {b', '.join(codings)[:60]!r}")
    return bool(codings)


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


async def _read_chunked(conn: Connection, timeout: float | None, budget: _Budget) -> bytes:
    out: list[bytes] = []
    tiny_from = tiny_bytes = 0  # the pieces since the last check for tiny chunks, and their bytes
    while True:
        line = await _line(conn, timeout, "bad or incomplete chunk size line")
        budget.spend(len(line) + 2)
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(_HEX_DIGITS) or len(size_text) > 16:
            # int(x, 16) alone also takes '0x', '+', '-' and '_' (a negative size unsettled the buffer)
            raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:40]!r}")
        size = int(size_text, 16)
        if size == 0:  # trailers, then an empty line
            while trailer := await _line(conn, timeout, "incomplete chunked trailer"):
                budget.spend(len(trailer) + 2)
            budget.spend(2)
            return b"".join(out)
        budget.spend(size + 2)  # refused before it is read
        if not await conn.fill(size + 2, timeout):
            raise httpx.RemoteProtocolError("server disconnected inside a chunk")
        chunk = conn.take(size + 2)
        if chunk[size:] != b"\r\n":
            raise httpx.RemoteProtocolError("chunk not followed by CRLF")
        out.append(chunk[:size])
        tiny_bytes += size
        if len(out) - tiny_from >= _TINY_CHUNKS:
            if tiny_bytes < _TINY_BYTES:  # one object, not a thousand objects' overhead (~40 bytes each)
                out[tiny_from:] = [b"".join(out[tiny_from:])]
            tiny_from, tiny_bytes = len(out), 0


async def _line(conn: Connection, timeout: float | None, error: str) -> bytes:
    """The next CRLF-ended line, without its CRLF."""
    end = conn.find(b"\r\n")
    while end < 0:
        if conn.size > _MAX_HEAD or not await conn.fill_more(timeout):
            raise httpx.RemoteProtocolError(error)
        end = conn.find(b"\r\n")
    return conn.take(end + 2)[:-2]
