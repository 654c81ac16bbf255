"""The hub and its subscriptions, on an in-memory chain standing in for Postgres: fan-out with filters,
the replay/live seam (no gap, no duplicate, with a reorg on either side of it), confirmed finality,
and slow clients disconnected without holding up the others."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from api.stream.events import BlockEvent, Ref, ReorgEvent, block_events, reorg_event
from api.stream.frames import text_of
from api.stream.hub import Client, Hub, Limits
from api.stream.protocol import Cursor, Subscribe, parse
from records import Block, Log, Record, Reorg
from records.batch import Batch

pytestmark = pytest.mark.unit

POOL = "0x" + "aa" * 20
OTHER = "0x" + "bb" * 20


def h(number: int, branch: str = "a") -> str:
    return "0x" + f"{branch}{number:063x}"[-64:]


def block(number: int, branch: str = "a", parent_branch: str | None = None) -> Block:
    parent = h(number - 1, parent_branch or branch) if number else "0x" + "00" * 32
    return Block(number, h(number, branch), parent, None, None, None, None, None, None, None, None, None,
                 None, None, 30_000_000, 21_000, None, 1_700_000_000 + number, 1)  # fmt: skip


def log(b: Block, index: int, address: str) -> Log:
    return Log(
        b.number, b.hash, "0x" + "cc" * 32, 0, index, address, "0x", "0x" + "dd" * 32, None, None, None
    )


class MemoryStore:
    """What Postgres would answer: the canonical chain, with an optional gate that holds reads."""

    def __init__(self) -> None:
        self.blocks: dict[int, Block] = {}
        self.logs: dict[int, list[Log]] = {}
        self.reorgs: list[ReorgEvent] = []
        self.gate: asyncio.Event | None = None
        self.stale: list[BlockEvent] | None = None  # what the next read returns (a snapshot taken earlier)

    def put(self, b: Block, logs: list[Log] | None = None) -> None:
        self.blocks[b.number] = b
        self.logs[b.number] = logs or []
        for n in [n for n in self.blocks if n > b.number]:
            del self.blocks[n]

    async def tip(self) -> Ref | None:
        if not self.blocks:
            return None
        n = max(self.blocks)
        return Ref(n, self.blocks[n].hash)

    async def read(self, first: int, last: int, channel: str) -> list[BlockEvent]:
        if self.gate is not None:
            await self.gate.wait()
        if self.stale is not None:
            stale, self.stale = self.stale, None
            return [e for e in stale if first <= e.number <= last]
        blocks = [self.blocks[n] for n in sorted(self.blocks) if first <= n <= last]
        records: dict[type[Record], list[Record]] = {Log: [lg for b in blocks for lg in self.logs[b.number]]}
        return block_events(blocks, records)

    async def canonical(self, numbers: list[int]) -> dict[int, str]:
        return {n: self.blocks[n].hash for n in numbers if n in self.blocks}

    async def rejoin(self, cursor: Cursor) -> ReorgEvent | None:
        for r in self.reorgs:
            if any(o.hash == cursor.hash for o in r.orphaned):
                return r
        return None


def publish(hub: Hub, store: MemoryStore, *blocks: Block, logs: dict[int, list[Log]] | None = None) -> None:
    """Commit to the store, then tell the hub (what the writer and NOTIFY do, in that order)."""
    for b in blocks:
        store.put(b, (logs or {}).get(b.number))
    records: dict[type[Record], list[Record]] = {
        Log: [lg for b in blocks for lg in (logs or {}).get(b.number, [])]
    }
    hub.publish_blocks(list(blocks), records)


def reorg(hub: Hub, store: MemoryStore, ancestor: int, old: list[Block], new: list[Block]) -> None:
    for b in new:
        store.put(b)
    head = Ref(new[-1].number, new[-1].hash)
    store.reorgs.append(reorg_event(Ref(ancestor, h(ancestor)), [b.hash for b in old], head))
    hub.publish_reorg(Ref(ancestor, h(ancestor)), [b.hash for b in old], head)
    hub.publish_blocks(new, {})


def drain(client: Client) -> list[dict[str, Any]]:
    out = []
    while not client.queue.empty():
        out.append(orjson.loads(text_of(client.queue.get_nowait())))
    return out


def sub(text: str) -> Subscribe:
    msg = parse(text, 1)
    assert isinstance(msg, Subscribe)
    return msg


def blocks_of(msgs: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(m["data"]["number"], m["data"]["hash"]) for m in msgs if m.get("type") == "block"]


async def settle() -> None:
    """Let the replay tasks run until they wait on something."""
    for _ in range(200):
        await asyncio.sleep(0)


async def test_fan_out_applies_each_subscriptions_filter() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=2)
    client = hub.connect("c")
    client.subscribe(sub('{"op":"subscribe","channel":"logs","address":"' + POOL + '","id":"p"}'))
    client.subscribe(sub('{"op":"subscribe","channel":"blocks","id":"b"}'))
    b0, b1 = block(0), block(1)
    publish(hub, store, b0, b1, logs={1: [log(b1, 0, POOL), log(b1, 1, OTHER), log(b1, 2, POOL)]})
    msgs = drain(client)
    assert [m.get("event") for m in msgs[:4]] == ["subscribed", "live", "subscribed", "live"]
    pool_logs = [m for m in msgs if m.get("id") == "p" and m.get("type") == "log"]
    assert [m["data"]["log_index"] for m in pool_logs] == [0, 2]
    assert blocks_of([m for m in msgs if m.get("id") == "b"]) == [(0, h(0)), (1, h(1))]
    assert Cursor.decode(pool_logs[1]["cursor"]) == Cursor(1, 2, 0, h(1))


async def test_replay_and_live_meet_without_gap_or_duplicate() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=2)
    publish(hub, store, *[block(n) for n in range(6)])
    store.gate = asyncio.Event()  # the replay's read waits while blocks 5 (again) and 6, 7 arrive live
    client = hub.connect("c")
    client.subscribe(sub('{"op":"subscribe","channel":"blocks","from_block":2}'))
    await settle()
    publish(hub, store, block(6), block(7))
    store.gate.set()
    await settle()
    publish(hub, store, block(8))
    msgs = drain(client)
    assert blocks_of(msgs) == [(n, h(n)) for n in range(2, 9)]
    live = [i for i, m in enumerate(msgs) if m.get("event") == "live"]
    assert len(live) == 1 and msgs[live[0] + 1]["data"]["number"] == 8


async def test_a_reorg_while_replaying_is_sent_once_when_the_client_saw_orphaned_blocks() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=2)
    old = [block(n) for n in range(6)]
    publish(hub, store, *old)
    store.gate = asyncio.Event()
    client = hub.connect("c")
    client.subscribe(sub('{"op":"subscribe","channel":"blocks","from_block":0}'))
    await settle()
    # the replay read the old branch (its snapshot), then the reorg commits and arrives live
    store.stale = block_events(old, {})
    new = [block(4, "b", "a"), block(5, "b")]
    reorg(hub, store, 3, old[4:], new)
    store.gate.set()
    await settle()
    msgs = drain(client)
    kinds = [m.get("type") or m.get("event") for m in msgs]
    at = kinds.index("reorg")
    assert blocks_of(msgs[:at]) == [(n, h(n)) for n in range(6)]
    assert msgs[at]["data"] == {
        "common_ancestor": {"number": 3, "hash": h(3)},
        "orphaned": [{"number": 4, "hash": h(4)}, {"number": 5, "hash": h(5)}],
        "new_head": {"number": 5, "hash": h(5, "b")},
    }
    assert blocks_of(msgs[at:]) == [(4, h(4, "b")), (5, h(5, "b"))]


async def test_a_reorg_the_replay_already_read_past_is_not_sent() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=2)
    old = [block(n) for n in range(6)]
    publish(hub, store, *old)
    store.gate = asyncio.Event()
    client = hub.connect("c")
    client.subscribe(sub('{"op":"subscribe","channel":"blocks","from_block":0}'))
    await settle()
    reorg(hub, store, 3, old[4:], [block(4, "b", "a"), block(5, "b")])  # committed before the read
    store.gate.set()
    await settle()
    msgs = drain(client)
    assert not [m for m in msgs if m.get("type") == "reorg"]
    assert blocks_of(msgs) == [(0, h(0)), (1, h(1)), (2, h(2)), (3, h(3)), (4, h(4, "b")), (5, h(5, "b"))]


async def test_resuming_from_an_orphaned_cursor_sends_the_reorg_then_the_new_branch() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=2)
    old = [block(n) for n in range(6)]
    publish(hub, store, *old)
    reorg(hub, store, 3, old[4:], [block(4, "b", "a"), block(5, "b"), block(6, "b")])
    client = hub.connect("c")
    client.subscribe(
        sub('{"op":"subscribe","channel":"blocks","from":"' + Cursor(5, -1, 0, h(5)).encode() + '"}')
    )
    await settle()
    msgs = drain(client)
    data = [m for m in msgs if "type" in m]
    assert data[0]["type"] == "reorg" and data[0]["data"]["common_ancestor"] == {"number": 3, "hash": h(3)}
    assert blocks_of(data) == [(4, h(4, "b")), (5, h(5, "b")), (6, h(6, "b"))]


async def test_confirmed_gets_final_blocks_only_and_never_a_reorg() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=2)
    client = hub.connect("c")
    client.subscribe(sub('{"op":"subscribe","channel":"blocks","finality":"confirmed","from_block":0}'))
    await settle()
    old = [block(n) for n in range(6)]
    publish(hub, store, *old)
    reorg(hub, store, 4, old[5:], [block(5, "b", "a"), block(6, "b"), block(7, "b")])
    await settle()
    msgs = drain(client)
    assert not [m for m in msgs if m.get("type") == "reorg" or m.get("event") == "error"]
    assert blocks_of(msgs) == [*[(n, h(n)) for n in range(5)], (5, h(5, "b"))]
    assert [m["data"]["number"] for m in msgs if m.get("type") == "finalized"] == [0, 1, 2, 3, 4, 5]


async def test_a_slow_client_is_disconnected_and_the_others_still_get_everything() -> None:
    store = MemoryStore()
    hub = Hub(store, confirmations=2, limits=Limits(queue_messages=10))
    slow, fast = hub.connect("slow"), hub.connect("fast")
    for c in (slow, fast):
        c.subscribe(sub('{"op":"subscribe","channel":"blocks"}'))
    got: list[dict[str, Any]] = []
    for n in range(30):
        publish(hub, store, block(n))
        got += drain(fast)
    assert slow.closed.is_set() and slow.close_reason is not None
    assert slow.close_reason.startswith("slow consumer")
    assert slow not in hub.clients and not slow.subscriptions
    assert blocks_of(got) == [(n, h(n)) for n in range(30)]


async def test_subscription_cap_and_duplicate_ids() -> None:
    hub = Hub(MemoryStore(), confirmations=2, limits=Limits(max_subscriptions=2))
    client = hub.connect("c")
    for sid in ("a", "a", "b", "c"):
        client.subscribe(sub('{"op":"subscribe","channel":"blocks","id":"' + sid + '"}'))
    errors = [(m["id"], m["code"]) for m in drain(client) if m.get("event") == "error"]
    assert errors == [("a", 4007), ("c", 4029)]
    client.unsubscribe("a")
    client.unsubscribe("a")
    assert [m.get("event") for m in drain(client)] == ["unsubscribed", "error"]


async def test_the_hub_is_a_sink_a_batch_with_a_reorg_reaches_clients_reorg_first() -> None:
    """In process, the hub sits after the Postgres sink: ``write(batch)`` with the batch's reorg."""
    store = MemoryStore()
    hub = Hub(store, confirmations=2)
    client = hub.connect("c")
    client.subscribe(sub('{"op":"subscribe","channel":"logs","address":"' + POOL + '"}'))
    old = [block(n) for n in range(4)]
    for b in old:
        store.put(b)
    await hub.write(Batch("follow", old, {Log: [log(old[3], 0, POOL)]}))
    new = [block(3, "b", "a"), block(4, "b")]
    for b in new:
        store.put(b)
    reorg_record = Reorg(2, h(2), 1, (h(3),), (h(3, "b"),), 0)
    await hub.write(
        Batch("follow", new, {Log: [log(new[0], 1, POOL), log(new[1], 0, OTHER)]}, reorg=reorg_record)
    )
    await hub.close()
    msgs = [m for m in drain(client) if "type" in m and m["type"] != "finalized"]
    assert [(m["type"], m["data"].get("block_hash")) for m in msgs] == [
        ("log", h(3)),
        ("reorg", None),
        ("log", h(3, "b")),
    ]
    assert msgs[1]["data"]["orphaned"] == [{"number": 3, "hash": h(3)}]
    assert msgs[1]["data"]["new_head"] == {"number": 4, "hash": h(4, "b")}
    assert client.closed.is_set() and client.close_reason == "server shutting down"
