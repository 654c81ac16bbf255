"""One subscription of one websocket client: what it has been sent (its view of the chain), and the
replay that brings it up to date before it joins the live stream.

The view is the chain as this client knows it: the hash of every block it has been sent (a block with no
matching record still counts). Every event, live or replayed, goes through it:
- a block already in the view is a duplicate and is dropped (replay and live overlap at the seam);
- a block that extends the view (its parent is the view's tip) is sent;
- a reorg whose orphaned blocks are in the view is sent (``type: reorg``) and the view is cut back to the
  common ancestor; one the client never saw a block of is dropped;
- anything else (a gap, a parent that is not the tip) is a seam between what the client has and what is
  stored: the subscription catches up from Postgres, which first finds the last block of the view that
  is still canonical (sending a reorg for the rest), then reads forward.
While catching up, live events are buffered (bounded) and applied after it, through the same view.
``finality: confirmed`` subscriptions only ever get blocks at or below the finalized watermark, so
they never see a reorg.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import orjson

from api.stream.events import BlockEvent, FinalizedEvent, Ref, ReorgEvent, StreamEvent
from api.stream.frames import Data, Message, prefix
from api.stream.protocol import Code, Cursor, Subscribe, error, event, matches

log = logging.getLogger("dexnode.api.ws")

REPLAY_CHUNK_BLOCKS = 100
VIEW_BLOCKS = 512  # blocks of the view kept (deeper than any reorg the follower accepts)


class Store(Protocol):
    """What a subscription reads from Postgres (``api.stream.replay.PostgresStore``)."""

    async def tip(self) -> Ref | None: ...

    async def read(self, first: int, last: int, channel: str) -> list[BlockEvent]: ...

    async def canonical(self, numbers: list[int]) -> dict[int, str]: ...

    async def rejoin(self, cursor: Cursor) -> ReorgEvent | None: ...


class Client(Protocol):
    """What a subscription needs of its connection (``api.stream.hub.Client``)."""

    @property
    def subscriptions(self) -> dict[str, Subscription]: ...

    def offer(self, message: Message) -> None: ...

    async def send(self, message: Message) -> None: ...

    def kick(self, reason: str) -> None: ...


class Limits(Protocol):
    @property
    def buffer_events(self) -> int: ...


class Hub(Protocol):
    """What a subscription needs of the hub (``api.stream.hub.Hub``), which imports this module."""

    @property
    def store(self) -> Store: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def window(self) -> Mapping[int, BlockEvent]: ...

    @property
    def finalized(self) -> int | None: ...

    def drop(self, sub: Subscription) -> None: ...


class SlowClient(Exception):
    pass


class Subscription:
    def __init__(self, spec: Subscribe, client: Client, hub: Hub) -> None:
        self.spec = spec
        self.client = client
        self.hub = hub
        self.prefix = prefix(spec.id)  # encoded once: every data message starts with it
        self.view: dict[int, str] = {}
        self.view_tip: int | None = None
        self.after: Cursor | None = spec.start  # items at or before it are not sent
        self.min_block = spec.from_block if spec.from_block is not None else 0
        self.finalized_sent = -1
        self.replaying = spec.start is not None or spec.from_block is not None
        self.buffer: deque[StreamEvent] = deque()
        self.task: asyncio.Task[None] | None = None
        self.live_sent = False

    @property
    def confirmed(self) -> bool:
        return self.spec.finality == "confirmed"

    # -- entry points --------------------------------------------------------------------------

    def start(self) -> None:
        """Called once registered with the hub (so no live event can fall between replay and live)."""
        if self.replaying:
            self.task = asyncio.create_task(self._catch_up(first=True))
        elif self.confirmed:
            # live from the current watermark: nothing below it is sent
            self._set_view(self.hub.finalized, None)

    def offer(self, ev: StreamEvent) -> None:
        """A live event from the hub: applied now, or buffered while catching up."""
        if self.replaying:
            if len(self.buffer) >= self.hub.limits.buffer_events:
                raise SlowClient(
                    f"more than {self.hub.limits.buffer_events} live events behind while replaying"
                )
            self.buffer.append(ev)
            return
        if not self._apply(ev, self.client.offer):
            self.replaying = True
            self.buffer.append(ev)
            self.task = asyncio.create_task(self._catch_up(first=False))

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    # -- the view ------------------------------------------------------------------------------

    def _set_view(self, number: int | None, block_hash: str | None) -> None:
        if number is None or number < 0:
            return
        if block_hash is not None:
            self.view[number] = block_hash
        self.view_tip = number
        if len(self.view) > VIEW_BLOCKS:
            for n in sorted(self.view)[: len(self.view) - VIEW_BLOCKS]:
                del self.view[n]

    def _cut(self, number: int) -> None:
        for n in [n for n in self.view if n > number]:
            del self.view[n]
        self.view_tip = number if self.view_tip is not None and self.view_tip > number else self.view_tip

    def _apply(self, ev: StreamEvent, send: Callable[[Message], None]) -> bool:
        """Apply one event; False when it does not fit the view (catch up from Postgres first)."""
        if isinstance(ev, FinalizedEvent):
            return self._finalized(ev, send)
        if isinstance(ev, ReorgEvent):
            return self._reorg(ev, send)
        if self.confirmed:
            return True  # confirmed blocks come with the watermark
        return self._block(ev, send)

    def _block(self, ev: BlockEvent, send: Callable[[Message], None]) -> bool:
        if ev.number < self.min_block or self.view.get(ev.number) == ev.hash:
            return True
        if self.view_tip is not None:
            if ev.number > self.view_tip + 1:
                return False  # a gap
            if ev.number <= self.view_tip or self.view.get(self.view_tip) not in (None, ev.parent_hash):
                return False  # another branch than the client's
        self._send_block(ev, send)
        return True

    def _send_block(self, ev: BlockEvent, send: Callable[[Message], None]) -> None:
        after = self.after
        for item in ev.items(self.spec.channel.name):
            if after is not None and item.cursor <= after:
                continue
            if matches(self.spec, item.fields):
                send(Data(self.prefix, item.body))
        if after is not None and ev.number > after.number:
            self.after = None
        self._set_view(ev.number, ev.hash)

    def _reorg(self, ev: ReorgEvent, send: Callable[[Message], None]) -> bool:
        orphaned = {r.number: r.hash for r in ev.orphaned}
        seen = [Ref(n, h) for n, h in sorted(self.view.items()) if orphaned.get(n) == h]
        if not seen:
            return True  # the client never got any orphaned block
        if self.confirmed:
            send(
                error(
                    Code.REORG_BELOW_FINALITY,
                    f"a reorg above block {ev.ancestor.number} replaced confirmed blocks (deeper than the"
                    " confirmations)",
                    id=self.spec.id,
                )
            )
        else:
            self._send_reorg(ev.ancestor, seen, ev.new_head, send)
        return True

    def _send_reorg(
        self, ancestor: Ref, orphaned: list[Ref], new_head: Ref, send: Callable[[Message], None]
    ) -> None:
        data = {
            "common_ancestor": ancestor.json(),
            "orphaned": [r.json() for r in orphaned],
            "new_head": new_head.json(),
        }
        body = orjson.dumps({"channel": self.spec.channel.name, "type": "reorg", "data": data}).decode()
        send(self.prefix.text + body[1:])
        self._cut(ancestor.number)
        self.view_tip = ancestor.number
        if self.after is not None and self.after.number > ancestor.number:
            self.after = None

    def _finalized(self, ev: FinalizedEvent, send: Callable[[Message], None]) -> bool:
        if ev.number <= self.finalized_sent:
            return True
        if self.confirmed:
            first = (self.view_tip + 1) if self.view_tip is not None else max(self.min_block, ev.number)
            for n in range(first, ev.number + 1):
                block = self.hub.window.get(n)
                if block is None:
                    return False  # not in memory: read from Postgres
                self._send_block(block, send)
        send(Data(self.prefix, ev.body(self.spec.channel.name)))
        self.finalized_sent = ev.number
        return True

    # -- catching up from Postgres -------------------------------------------------------------

    async def _catch_up(self, *, first: bool) -> None:
        try:
            if first and self.spec.start is not None and not await self._resume_at_cursor():
                return
            while True:
                await self._replay()
                while self.buffer:
                    out: list[Message] = []
                    if not self._apply(self.buffer[0], out.append):
                        break  # another seam: replay again (the event stays buffered)
                    self.buffer.popleft()
                    for m in out:
                        await self.client.send(m)
                else:
                    break
            self.replaying = False
            if not self.live_sent:
                self.live_sent = True
                self.client.offer(event("live", id=self.spec.id))
        except asyncio.CancelledError:
            raise
        except SlowClient as exc:
            self.client.kick(str(exc))
        except Exception as exc:  # the database went away: tell the client, drop this subscription
            log.warning("ws replay of subscription %s failed: %s", self.spec.id, exc)
            self.hub.drop(self)
            self.client.offer(error(Code.REPLAY_FAILED, "replay failed; subscribe again", id=self.spec.id))

    async def _resume_at_cursor(self) -> bool:
        cursor = self.spec.start
        assert cursor is not None
        hashes = await self.hub.store.canonical([cursor.number])
        if hashes.get(cursor.number) == cursor.hash:
            self._set_view(cursor.number - 1, None)
            return True
        rejoin = await self.hub.store.rejoin(cursor)
        if rejoin is None:
            self.hub.drop(self)
            await self.client.send(
                error(Code.CURSOR_NOT_FOUND, "cursor names a block this node never indexed", id=self.spec.id)
            )
            return False
        # the cursor's block was orphaned: tell the client what to undo, then go on from the ancestor
        await self._put_reorg(rejoin.ancestor, list(rejoin.orphaned), rejoin.new_head)
        self.after = None
        return True

    async def _put_reorg(self, ancestor: Ref, orphaned: list[Ref], new_head: Ref) -> None:
        out: list[Message] = []
        self._send_reorg(ancestor, orphaned, new_head, out.append)
        for m in out:
            await self.client.send(m)

    async def _target(self) -> int | None:
        if self.confirmed:
            return self.hub.finalized
        tip = await self.hub.store.tip()
        return None if tip is None else tip.number

    async def _replay(self) -> None:
        """Read Postgres forward from the view's tip to the stored tip (the watermark for confirmed)."""
        store = self.hub.store
        stalled = 0
        while True:
            target = await self._target()
            if target is None:
                return
            if self.view_tip is not None and not self.confirmed:
                await self._reconcile()
            first = self.min_block if self.view_tip is None else max(self.min_block, self.view_tip + 1)
            if first > target:
                return
            events = await store.read(
                first, min(first + REPLAY_CHUNK_BLOCKS - 1, target), self.spec.channel.name
            )
            if not events:
                return
            if events[0].number > first:  # nothing stored there (history not backfilled): skip the hole
                self.view_tip = events[0].number - 1
            tip_before = self.view_tip
            for ev in events:
                if not self.confirmed and not self._block_fits(ev):
                    break  # the chain moved between chunks: reconcile, then read again
                out: list[Message] = []
                self._send_block(ev, out.append)
                for m in out:
                    await self.client.send(m)
            stalled = stalled + 1 if self.view_tip == tip_before else 0
            if stalled > 10:
                raise RuntimeError(f"replay makes no progress at block {first}")

    def _block_fits(self, ev: BlockEvent) -> bool:
        tip = self.view_tip
        return tip is None or (ev.number == tip + 1 and self.view.get(tip) in (None, ev.parent_hash))

    async def _reconcile(self) -> None:
        """Cut the view back to its newest block that is still canonical, sending a reorg for the rest."""
        numbers = sorted(self.view, reverse=True)
        if not numbers:
            return
        canonical = await self.hub.store.canonical(numbers)
        orphaned = [Ref(n, self.view[n]) for n in sorted(numbers) if canonical.get(n) != self.view[n]]
        if not orphaned:
            return
        keep = [n for n in numbers if canonical.get(n) == self.view[n] and n < orphaned[0].number]
        ancestor_number = keep[0] if keep else orphaned[0].number - 1
        if ancestor_number not in canonical:
            canonical.update(await self.hub.store.canonical([ancestor_number]))
        tip = await self.hub.store.tip()
        ancestor = Ref(ancestor_number, canonical.get(ancestor_number, ""))
        new_head = tip if tip is not None else ancestor
        await self._put_reorg(ancestor, [r for r in orphaned if r.number > ancestor_number], new_head)


Sender = Callable[[Message], Awaitable[None]]
