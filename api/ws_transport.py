"""The websocket transport ``serve`` runs under uvicorn: uvicorn's own sans-I/O websockets protocol, plus
a way for ``/ws`` to write frames it built once for many clients (``api.stream.frames``).

ASGI can only send a message as text, which the server then encodes, frames and (with permessage-deflate)
compresses per connection: for one block sent to 500 subscribers, 500 times the same work. This protocol
adds the ASGI scope extension ``dexnode.ws.frames`` (``{"writer": FrameWriter}``): it writes ready
frames to the connection's transport, behind the same flow control (the transport's write buffer) and
state checks as uvicorn's ``websocket.send``. The handshake, pings, pongs and the close stay uvicorn's.

permessage-deflate is negotiated with ``server_no_context_takeover``: each server message is compressed
on its own, so one compressed payload is valid on every connection (RFC 7692 lets a server impose it; a
client must accept it), and frames written here interleave with the library's control frames.
"""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

FRAMES_EXTENSION = "dexnode.ws.frames"
_WINDOW_BITS = 12  # uvicorn's own choice (server and client): 4 kB windows, a block message fits


class FrameWriter:
    """Ready websocket frames onto one connection. ``window_bits`` is the negotiated LZ77 window of the
    server's compression (None: permessage-deflate not negotiated, frames go uncompressed)."""

    __slots__ = ("_protocol", "window_bits")

    def __init__(self, protocol: FrameProtocol, window_bits: int | None) -> None:
        self._protocol = protocol
        self.window_bits = window_bits

    async def ready(self) -> None:
        """Wait until the transport takes more (its buffer under the high-water mark); raise when the
        connection is closing or gone, as starlette does for uvicorn's own send."""
        protocol = self._protocol
        await protocol.writable.wait()
        if protocol.disconnected or protocol.close_sent or protocol.conn.state is not State.OPEN:
            raise WebSocketDisconnect(code=1006)

    def can_write(self) -> bool:
        """Whether ``write`` may go now, without waiting (the hub's direct fan-out)."""
        protocol = self._protocol
        return (
            protocol.writable.is_set()
            and not (protocol.disconnected or protocol.close_sent)
            and protocol.conn.state is State.OPEN
            and not protocol.transport.is_closing()
        )

    def write(self, frames: bytes) -> None:
        """Write whole frames (after ``ready``, with no await between)."""
        self._protocol.transport.write(frames)


class FrameProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:  # uvicorn's settings, plus no context takeover
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_no_context_takeover=True,
                        server_max_window_bits=_WINDOW_BITS,
                        client_max_window_bits=_WINDOW_BITS,
                        compress_settings={"memLevel": 5},
                    )
                ],
                max_size=self.config.ws_max_size,
                logger=self.conn.logger,
            )

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code != 101:
            return
        window_bits: int | None = None
        for extension in self.conn.extensions:
            if isinstance(extension, PerMessageDeflate):
                if not extension.local_no_context_takeover:
                    return  # (not negotiated by this factory) shared frames would break the stream
                window_bits = extension.local_max_window_bits
            else:
                return  # an extension this writer does not know how to frame for
        extensions = self.scope.setdefault("extensions", {})
        extensions[FRAMES_EXTENSION] = {"writer": FrameWriter(self, window_bits)}


def uvicorn_options(*, compression: bool) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments of the API's websocket transport."""
    return {"ws": FrameProtocol, "ws_per_message_deflate": compression}


def frame_writer(scope: Any) -> FrameWriter | None:
    """The connection's frame writer, if the server runs this transport (not under a test client)."""
    writer = ((scope.get("extensions") or {}).get(FRAMES_EXTENSION) or {}).get("writer")
    return writer if isinstance(writer, FrameWriter) else None
