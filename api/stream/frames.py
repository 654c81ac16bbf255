"""Websocket data messages encoded once and shared by every client that gets them.

A data message is ``{"id":<subscription id>,`` (the subscription's prefix, the same for all its
messages) followed by the body (``"channel":..,"cursor":..,"data":{..}}``, the same for every subscriber
of the channel). Both halves are encoded once — UTF-8, and per LZ77 window size their raw-deflate form —
so sending a message to a client is a frame header and a join, not a JSON encoding, a frame built by the
websockets library and a compression per client.

The compressed form is valid for every client because ``serve`` negotiates permessage-deflate with
``server_no_context_takeover`` (``api.ws_transport``): each message is compressed on its own, with no
history shared with earlier messages of the connection. The two halves are compressed apart, each
ending with a sync flush (byte-aligned, non-final deflate blocks), so their concatenation is one valid
deflate stream: the body's back-references never reach into the prefix (RFC 7692 section 7.2.1 strips
the final ``00 00 ff ff``, which the client appends back).
"""

from __future__ import annotations

import struct
import zlib

import orjson

_TEXT = 0x81  # FIN + opcode 1 (text)
_TEXT_COMPRESSED = 0xC1  # FIN + RSV1 (permessage-deflate) + opcode 1
_SYNC_TAIL = b"\x00\x00\xff\xff"
# uvicorn's own permessage-deflate settings (level 6, memLevel 5): the same output size per message
_MEM_LEVEL = 5


class Encoded:
    """A piece of a message's text, encoded on first use and cached: UTF-8, and raw deflate per window
    size (``final``: the message's last piece, whose sync-flush tail is stripped)."""

    __slots__ = ("_deflated", "final", "text", "utf8")

    def __init__(self, text: str, *, final: bool) -> None:
        self.text = text
        self.utf8 = text.encode()
        self.final = final
        self._deflated: dict[int, bytes] = {}

    def deflated(self, window_bits: int) -> bytes:
        out = self._deflated.get(window_bits)
        if out is None:
            encoder = zlib.compressobj(-1, zlib.DEFLATED, -window_bits, _MEM_LEVEL)
            out = encoder.compress(self.utf8) + encoder.flush(zlib.Z_SYNC_FLUSH)
            if self.final:
                out = out[: -len(_SYNC_TAIL)]
            self._deflated[window_bits] = out
        return out


def prefix(subscription_id: str) -> Encoded:
    """``{"id":"<id>",`` — the start of every data message of one subscription."""
    return Encoded('{"id":' + orjson.dumps(subscription_id).decode() + ",", final=False)


def body(text: str) -> Encoded:
    """The rest of a data message after its prefix (``"channel":...}``)."""
    return Encoded(text, final=True)


def _header(first: int, length: int) -> bytes:
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


class Data:
    """One data message for one subscription: its prefix and a shared body, joined when sent."""

    __slots__ = ("body", "prefix")

    def __init__(self, prefix: Encoded, body: Encoded) -> None:
        self.prefix = prefix
        self.body = body

    def text(self) -> str:
        return self.prefix.text + self.body.text


def _frame(head: Encoded | None, tail: Encoded, window_bits: int | None) -> bytes:
    size = len(tail.utf8) + (0 if head is None else len(head.utf8))
    if window_bits is not None:
        packed_tail = tail.deflated(window_bits)
        packed_head = b"" if head is None else head.deflated(window_bits)
        packed = len(packed_head) + len(packed_tail)
        if packed < size:
            return b"".join((_header(_TEXT_COMPRESSED, packed), packed_head, packed_tail))
    return b"".join((_header(_TEXT, size), b"" if head is None else head.utf8, tail.utf8))


Message = str | Data  # what a client's queue holds: control events as text, data messages as Data


def text_of(message: Message) -> str:
    return message if isinstance(message, str) else message.text()


def frame(message: Message, window_bits: int | None) -> bytes:
    """One message as a whole websocket frame, server to client: unmasked, FIN set, text.

    ``window_bits``: the connection's negotiated ``server_max_window_bits`` when permessage-deflate is
    on (with no context takeover), else None. A message that deflate does not shrink goes out
    uncompressed (RSV1 clear), which RFC 7692 allows per message. A control event (text) is encoded
    here, for its one client."""
    if isinstance(message, str):
        return _frame(None, Encoded(message, final=True), window_bits)
    return _frame(message.prefix, message.body, window_bits)
