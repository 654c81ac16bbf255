"""Shared websocket frames (api.stream.frames) read back by the websockets library's own frame parser and
permessage-deflate decoder, as a client reads them: every message's text, in order, compressed or not."""

from __future__ import annotations

import zlib

import orjson
import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from api.stream.events import Item, block_events
from api.stream.frames import Data, Encoded, body, frame, prefix
from api.stream.protocol import Cursor
from records import Block

pytestmark = pytest.mark.unit


def parse_all(data: bytes, decoder: PerMessageDeflate | None) -> list[Frame]:
    """Every frame in ``data``, decoded the way a websockets client decodes what a server sends."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while True:
        at_eof = reader.at_eof()
        try:
            next(at_eof)
        except StopIteration as done:
            if done.value:
                return frames
        parser = Frame.parse(reader.read_exact, mask=False, extensions=[decoder] if decoder else [])
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("a truncated frame")


def client_decoder(window_bits: int, *, reset: bool) -> PerMessageDeflate:
    """A client's side of permessage-deflate: ``reset`` honours server_no_context_takeover (a fresh
    inflater per message); without it the client keeps one inflater for the whole connection."""
    # (remote_no_context_takeover, local_no_context_takeover, remote_max_window_bits, local_max_window_bits)
    return PerMessageDeflate(reset, False, window_bits if reset else 15, 15)


def block(number: int) -> Block:
    return Block(number, "0x" + f"{number:064x}", "0x" + f"{max(number - 1, 0):064x}", None, None,
                 "0x" + "00" * 256, None, None, None, "0x" + "11" * 20, 0, None, "0x", 1000, 30_000_000,
                 12_000_000, 10**9, 1_700_000_000 + number, 150)  # fmt: skip


def messages() -> list[Data | str]:
    """Data messages of two subscriptions sharing block bodies, a finality watermark, and control text."""
    items: list[Item] = [ev.items("blocks")[0] for ev in block_events([block(n) for n in range(3)], {})]
    first, second = prefix("1"), prefix('sub-\u00e9"x')  # an id that JSON escapes, non-ASCII
    out: list[Data | str] = ['{"event":"subscribed","id":"1"}']
    for item in items:
        out += [Data(first, item.body), Data(second, item.body)]
    out.append(Data(first, body('"channel":"blocks","type":"finalized","data":{"number":1}}')))
    out.append('{"event":"heartbeat","head":2,"finalized":1}')
    return out


def text(message: Data | str) -> str:
    return message if isinstance(message, str) else message.text()


@pytest.mark.parametrize("window_bits", [None, 9, 12, 15])
@pytest.mark.parametrize("reset", [True, False])
def test_frames_decode_to_each_message_in_order(window_bits: int | None, reset: bool) -> None:
    sent = messages()
    wire = b"".join(frame(m, window_bits) for m in sent)
    decoder = None if window_bits is None else client_decoder(window_bits, reset=reset)
    frames = parse_all(wire, decoder)
    assert [f.opcode for f in frames] == [Opcode.TEXT] * len(sent)
    assert all(f.fin for f in frames)
    got = [bytes(f.data).decode() for f in frames]
    assert got == [text(m) for m in sent]
    docs = [orjson.loads(g) for g in got]
    assert docs[1]["id"] == "1" and docs[2]["id"] == 'sub-\u00e9"x' and docs[1]["data"] == docs[2]["data"]
    assert docs[1]["cursor"] == Cursor(0, -1, 0, "0x" + "00" * 32).encode()


def test_compressed_only_when_it_shrinks() -> None:
    """RSV1 marks a compressed message; a short one that deflate would grow goes out as it is."""
    long = Data(prefix("1"), body('"data":"' + "ab" * 200 + '"}'))
    short = '{"event":"pong"}'
    assert frame(long, 12)[0] == 0xC1 and frame(long, None)[0] == 0x81
    assert frame(short, 12)[0] == 0x81  # deflate of 16 bytes is longer
    assert len(frame(long, 12)) < len(frame(long, None))


def test_shared_halves_are_compressed_once_per_window() -> None:
    shared = Encoded('"channel":"blocks","data":{"x":"' + "y" * 500 + '"}}', final=True)
    assert shared.deflated(12) is shared.deflated(12)
    # the halves concatenate into one raw-deflate stream (the client appends the stripped tail)
    head = prefix("7")
    inflated = zlib.decompressobj(-15).decompress(
        head.deflated(12) + shared.deflated(12) + b"\x00\x00\xff\xff"
    )
    assert inflated == (head.text + shared.text).encode()


@pytest.mark.parametrize("length", [125, 126, 65535, 65536])
def test_frame_lengths(length: int) -> None:
    """The three payload length encodings of RFC 6455 5.2, at their edges."""
    message = "x" * length
    [parsed] = parse_all(frame(message, None), None)
    assert bytes(parsed.data) == message.encode()
