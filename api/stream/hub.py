"""The live hub: every websocket client's subscriptions, and the fan-out of each block, reorg and
finality watermark to them.

The hub is a sink (``sinks.base.Sink`` shape: ``write(batch)``, ``close()``): in one process with the
follower it sits after the Postgres sink (it sees committed batches only); in a separate ``serve``
process ``api.stream.listener`` feeds it what Postgres ``NOTIFY`` announces. Fan-out never waits on a
client: each client has a bounded queue, and a client whose queue is full is disconnected with a reason
(``slow consumer``), so one slow reader cannot slow the node or the other clients.

Exchange data takes another way in, ``publish_cex(items)`` (``api.stream.cex``: live-only channels, the
books the hub holds, and the merged ``trades`` channel, which also gets the DEX trades of each new block).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from api.stream.cex import CexFanOut, CexItem, CexSubscription
from api.stream.events import BlockEvent, FinalizedEvent, Ref, StreamEvent, block_events, reorg_event
from api.stream.frames import Message, frame
from api.stream.protocol import Code, Subscribe, error, event
from api.stream.subscription import SlowClient, Store, Subscription
from records import Block, Record
from records.batch import Batch

log = logging.getLogger("dexnode.api.ws")

WINDOW_BLOCKS = 256  # recent canonical blocks kept in memory (confirmed subscribers are served from it)


@dataclass(frozen=True)
class Limits:
    queue_messages: int = 10_000  # a client further behind than this is disconnected
    buffer_events: int = 2_000  # live events held per subscription while it replays
    max_subscriptions: int = 20  # per connection
    heartbeat_seconds: float = 15.0


class Writer(Protocol):
    """Writes ready frames onto the connection (``api.ws_transport.FrameWriter``)."""

    @property
    def window_bits(self) -> int | None: ...

    async def ready(self) -> None: ...

    def can_write(self) -> bool: ...

    def write(self, frames: bytes) -> None: ...


class Client:
    """One websocket connection's outgoing side: a bounded queue drained by the endpoint's sender.

    Where the server can take ready frames (``writer``), a live fan-out skips the sender: what is offered
    to a client whose sender is idle on an empty queue is held in ``pending``, and the hub writes each
    such client's pending frames in one go after the fan-out (``Hub.flush``: one socket write per client
    per block, no task woken per client). Order holds: while anything is pending, everything offered or
    sent goes after it."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = name
        # control events as text, data messages as shared encoded halves (api.stream.frames)
        self.queue: asyncio.Queue[Message] = asyncio.Queue(hub.limits.queue_messages)
        self.pending: list[Message] = []
        self.writer: Writer | None = None
        self.idle = False  # the sender waits on an empty queue
        self.last_sent = 0.0  # loop.time() of the last write (the heartbeat's idle clock)
        self.subscriptions: dict[str, Subscription] = {}
        self.cex_subscriptions: dict[str, CexSubscription] = {}
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.next_id = 1

    def offer(self, message: Message) -> None:
        """Queue a message without waiting; a full queue disconnects the client."""
        if self.closed.is_set():
            return
        if self.pending or (self.idle and self.writer is not None and self.queue.empty()):
            if len(self.pending) >= self.hub.limits.queue_messages:
                self.kick(f"slow consumer: more than {self.hub.limits.queue_messages} messages unsent")
                return
            if not self.pending:
                self.hub.to_flush(self)
            self.pending.append(message)
            return
        self._put(message)

    def _put(self, message: Message) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.kick(f"slow consumer: more than {self.hub.limits.queue_messages} messages unsent")

    def unsent(self) -> int:
        return self.queue.qsize() + len(self.pending)

    def flush(self) -> None:
        """Write what is pending, in one write; if the socket is full, hand it to the sender instead
        (the queue is empty: nothing entered it while something was pending). A client kicked since
        still gets what the socket takes before its close frame, as a sender draining its queue would."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        writer = self.writer
        if writer is None:
            return
        if writer.can_write():
            bits = writer.window_bits
            writer.write(b"".join([frame(m, bits) for m in pending]))
            self.last_sent = asyncio.get_running_loop().time()
        elif not self.closed.is_set():
            for message in pending:
                self._put(message)

    async def send(self, message: Message) -> None:
        """Queue a message, waiting for room (replays: the client sets the pace)."""
        self.flush()  # what is pending goes first
        if not self.closed.is_set():
            put = asyncio.ensure_future(self.queue.put(message))
            closed = asyncio.ensure_future(self.closed.wait())
            try:
                await asyncio.wait((put, closed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                if not put.done():
                    put.cancel()

    def kick(self, reason: str) -> None:
        if self.closed.is_set():
            return
        log.warning("ws client %s disconnected: %s", self.name, reason)
        self.close_reason = reason
        self.closed.set()
        self.hub.disconnect(self)

    def subscribe(self, spec: Subscribe) -> None:
        self.next_id += 1
        if spec.id in self.subscriptions or spec.id in self.cex_subscriptions:
            self.offer(error(Code.DUPLICATE_ID, f"subscription id {spec.id!r} is in use", id=spec.id))
            return
        if len(self.subscriptions) + len(self.cex_subscriptions) >= self.hub.limits.max_subscriptions:
            self.offer(
                error(
                    Code.TOO_MANY_SUBSCRIPTIONS,
                    f"at most {self.hub.limits.max_subscriptions} subscriptions per connection",
                    id=spec.id,
                )
            )
            return
        if spec.channel.name == "cex_raw" and not self.hub.cex.raw.attached:
            self.offer(
                error(
                    Code.RAW_UNAVAILABLE,
                    "raw exchange frames are only available where the exchange feeds run (dexnode run),"
                    " or from the Kafka topic cex.<exchange>.raw (DEXNODE_CEX_RAW)",
                    id=spec.id,
                )
            )
            return
        if spec.channel.live_only:
            cex = CexSubscription(spec, self)
            self.cex_subscriptions[spec.id] = cex
            self.offer(event("subscribed", id=spec.id, channel=spec.channel.name, finality=spec.finality))
            self.hub.cex.add(cex)  # book snapshots, then live
            return
        sub = Subscription(spec, self, self.hub)
        self.subscriptions[spec.id] = sub
        self.offer(event("subscribed", id=spec.id, channel=spec.channel.name, finality=spec.finality))
        self.hub.subscriptions.add(sub)  # registered before the replay reads Postgres: no gap
        sub.start()
        if not sub.replaying:
            self.offer(event("live", id=spec.id))
            sub.live_sent = True

    def unsubscribe(self, sid: str) -> None:
        cex = self.cex_subscriptions.pop(sid, None)
        if cex is not None:
            self.hub.cex.drop(cex)
            self.offer(event("unsubscribed", id=sid))
            return
        sub = self.subscriptions.get(sid)
        if sub is None:
            self.offer(error(Code.UNKNOWN_SUBSCRIPTION, f"no subscription {sid!r}", id=sid))
            return
        self.hub.drop(sub)
        self.offer(event("unsubscribed", id=sid))


class Hub:
    def __init__(self, store: Store, *, confirmations: int, limits: Limits | None = None) -> None:
        self.store = store
        self.confirmations = confirmations
        self.limits = limits or Limits()
        self.subscriptions: set[Subscription] = set()
        self.clients: set[Client] = set()
        self.window: OrderedDict[int, BlockEvent] = OrderedDict()
        self.tip: Ref | None = None
        self.finalized: int | None = None
        self.published_at: float = 0.0  # perf_counter() of the last fan-out (for the benchmark)
        self.cex = CexFanOut()
        self._to_flush: list[Client] = []

    def to_flush(self, client: Client) -> None:
        """``client`` has pending frames: write them once this fan-out is over (the next loop turn,
        so a block and its finality watermark leave together)."""
        if not self._to_flush:
            asyncio.get_running_loop().call_soon(self.flush)
        self._to_flush.append(client)

    def flush(self) -> None:
        clients, self._to_flush = self._to_flush, []
        for client in clients:
            try:
                client.flush()
            except Exception as exc:  # one broken connection must not hold the others' frames back
                log.warning("ws client %s: write failed: %s", client.name, exc)
                client.kick("write failed")

    async def start(self) -> None:
        """Take the stored tip as the starting point (the watermark a confirmed subscriber starts at)."""
        tip = await self.store.tip()
        if tip is not None and self.tip is None:
            self.tip = tip
            self.advance_finalized(tip.number - self.confirmations)

    # -- clients -------------------------------------------------------------------------------

    def connect(self, name: str) -> Client:
        client = Client(self, name)
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        for sub in list(client.subscriptions.values()):
            self.drop(sub)
        for cex in client.cex_subscriptions.values():
            self.cex.drop(cex)
        client.cex_subscriptions.clear()
        self.clients.discard(client)

    def drop(self, sub: Subscription) -> None:
        sub.cancel()
        self.subscriptions.discard(sub)
        sub.client.subscriptions.pop(sub.spec.id, None)

    # -- the sink side -------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        """In process: a committed batch (after the Postgres sink in a ``CompositeSink``)."""
        reorg = batch.reorg
        records: dict[type[Record], list[Record]] = {cls: list(rs) for cls, rs in batch.records.items()}
        blocks = list(batch.blocks)
        if reorg is not None:
            tip = blocks[-1] if blocks else None
            ancestor = Ref(reorg.common_ancestor_number, reorg.common_ancestor_hash)
            new_head = Ref(tip.number, tip.hash) if tip is not None else ancestor
            self.publish_reorg(ancestor, reorg.orphaned_hashes, new_head)
        self.publish_blocks(blocks, records)

    def holds_book(self, exchange: str, symbol: str) -> bool:
        """Whether the hub has seen this book (its snapshots, deltas or resyncs)."""
        return (exchange, symbol) in self.cex.books

    def publish_cex(self, items: Sequence[CexItem]) -> None:
        """Exchange records and resyncs (a batch, in the feed's order) to the CEX channels' clients."""
        self.cex.publish(items)
        self.published_at = time.perf_counter()

    async def close(self) -> None:
        for client in list(self.clients):
            client.kick("server shutting down")

    def publish_reorg(
        self, ancestor: Ref, orphaned_hashes: tuple[str, ...] | list[str], new_head: Ref
    ) -> None:
        for n in [n for n in self.window if n > ancestor.number]:
            del self.window[n]
        self.tip = ancestor
        ev = reorg_event(ancestor, orphaned_hashes, new_head)
        self._fan_out(ev)
        self.cex.dex_reorg(ev)

    def publish_blocks(self, blocks: list[Block], records: dict[type[Record], list[Record]]) -> None:
        for ev in block_events(blocks, records):
            known = self.window.get(ev.number)
            if known is not None and known.hash == ev.hash:
                continue  # already published (a batch written again)
            self.window[ev.number] = ev
            self.window.move_to_end(ev.number)
            while len(self.window) > WINDOW_BLOCKS:
                self.window.popitem(last=False)
            self.tip = Ref(ev.number, ev.hash)
            self._fan_out(ev)
            self.cex.dex_block(ev)  # its DEX trades on the merged trades channel
            self.advance_finalized(ev.number - self.confirmations)

    def advance_finalized(self, number: int) -> None:
        """The finality watermark: only ever moves forward."""
        if number < 0 or (self.finalized is not None and number <= self.finalized):
            return
        self.finalized = number
        self._fan_out(FinalizedEvent(number))

    def _fan_out(self, ev: StreamEvent) -> None:
        for sub in list(self.subscriptions):
            try:
                sub.offer(ev)
            except SlowClient as exc:
                sub.client.kick(str(exc))
        self.published_at = time.perf_counter()
