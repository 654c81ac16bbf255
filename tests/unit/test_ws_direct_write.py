"""The hub's direct fan-out (``Client.pending`` / ``Hub.flush``): what is offered to a client whose
sender idles is written by the hub in one write per client after the fan-out, frames read back by the
websockets library's parser; behind a full socket the same messages go to the sender's queue, in order;
the queue bound and the slow-consumer kick hold for pending messages too."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from api.stream.frames import text_of
from api.stream.hub import Client, Hub, Limits
from tests.unit.test_api_ws_hub import MemoryStore, block, publish, sub
from tests.unit.test_ws_frames import parse_all

pytestmark = pytest.mark.unit


class SocketWriter:
    """A connection's frame writer: records each write; ``open`` False is a socket over its high-water
    mark."""

    window_bits: int | None = None

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.open = True

    async def ready(self) -> None:
        return None

    def can_write(self) -> bool:
        return self.open

    def write(self, frames: bytes) -> None:
        self.writes.append(frames)


def connect(hub: Hub, name: str) -> tuple[Client, SocketWriter]:
    client = hub.connect(name)
    writer = SocketWriter()
    client.writer = writer
    client.idle = True  # its sender waits on an empty queue
    return client, writer


def written(writer: SocketWriter) -> list[list[dict[str, object]]]:
    """Each write's messages, decoded."""
    return [[orjson.loads(bytes(f.data)) for f in parse_all(w, None)] for w in writer.writes]


async def test_a_block_and_its_watermark_leave_in_one_write_per_client() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=1)
    clients = [connect(hub, str(i)) for i in range(3)]
    for client, _ in clients:
        client.subscribe(sub('{"op":"subscribe","channel":"blocks","id":"b"}'))
    await asyncio.sleep(0)  # the hub's flush: subscribed, live
    publish(hub, store, block(0))
    publish(hub, store, block(1))
    assert all(client.unsent() > 0 for client, _ in clients)  # held until the fan-out is over
    await asyncio.sleep(0)
    for client, writer in clients:
        assert client.unsent() == 0 and client.queue.empty()
        writes = written(writer)
        assert [[m.get("event") for m in w] for w in writes[:1]] == [["subscribed", "live"]]
        assert [[(m["type"], m["data"]["number"]) for m in w] for w in writes[1:]] == [
            [("block", 0), ("block", 1), ("finalized", 0)]
        ]


async def test_behind_a_full_socket_the_sender_gets_them_in_order() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=5)
    client, writer = connect(hub, "c")
    client.subscribe(sub('{"op":"subscribe","channel":"blocks","id":"b"}'))
    await asyncio.sleep(0)
    writer.open = False
    publish(hub, store, block(0))
    await asyncio.sleep(0)  # the flush finds the socket full: the queue takes them
    client.idle = False  # (the sender woke)
    publish(hub, store, block(1))  # behind what is queued
    queued = [orjson.loads(text_of(client.queue.get_nowait())) for _ in range(client.queue.qsize())]
    assert [m["data"]["number"] for m in queued] == [0, 1]
    assert len(writer.writes) == 1  # only the subscription's replies


async def test_pending_messages_count_against_the_queue_bound() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=100, limits=Limits(queue_messages=5))
    slow, slow_writer = connect(hub, "slow")
    slow.subscribe(sub('{"op":"subscribe","channel":"blocks","id":"b"}'))
    await asyncio.sleep(0)
    publish(hub, store, *[block(n) for n in range(6)])  # six messages in one fan-out, room for five
    assert slow.closed.is_set() and slow.close_reason == "slow consumer: more than 5 messages unsent"
    await asyncio.sleep(0)
    # what it had been offered before the kick still goes out ahead of the close frame
    assert [m["data"]["number"] for m in written(slow_writer)[-1]] == [0, 1, 2, 3, 4]


async def test_a_write_that_fails_drops_that_client_only() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=100)
    broken, broken_writer = connect(hub, "broken")
    fine, fine_writer = connect(hub, "fine")
    for client in (broken, fine):
        client.subscribe(sub('{"op":"subscribe","channel":"blocks","id":"b"}'))
    await asyncio.sleep(0)

    def fail(frames: bytes) -> None:
        raise ConnectionResetError("peer gone")

    broken_writer.write = fail  # type: ignore[method-assign]
    publish(hub, store, block(0))
    await asyncio.sleep(0)
    assert broken.closed.is_set() and broken.close_reason == "write failed"
    assert [m["data"]["number"] for m in written(fine_writer)[-1]] == [0]
    publish(hub, store, block(1))  # the hub goes on for the others
    await asyncio.sleep(0)
    assert [m["data"]["number"] for m in written(fine_writer)[-1]] == [1]
