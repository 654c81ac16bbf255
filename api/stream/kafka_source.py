"""Live events from Kafka: ``serve --live-source kafka`` feeds its hub from the node's ``head.*`` topics.

Each ``serve`` process reads every partition itself (``assign``, its own group id
``dexnode-serve-<host>-<pid>-<random>``, no commits): replicas do not share the stream, each needs all of
it. Offsets live in the process: at the first start it begins at the end of every topic and catches up
from Postgres (``api.stream.stored_feed``); after a broker or consumer failure it goes on from the offset
after the last message it read, so nothing is skipped while the broker keeps it; a topic that appears
later is read from its beginning.

``api.stream.kafka_batches`` turns the messages into whole batches (the in-flight journal names each
batch's keys before the batch is produced), released in the order the follower wrote them:

- a reorg batch: the ``reorg`` record from ``head.reorgs`` gives the hub's reorg event (ancestor,
  orphaned hashes; the new head is the batch's last block), sent before the new branch, as ``NOTIFY``
  gives it; the reverts on ``head.*`` only take back records held for a batch not released yet;
- blocks: the hub's block events with their logs, token transfers and DEX trades; ``finalized``
  watermarks follow from them in the hub (tip - confirmations), as with ``NOTIFY``;
- a batch that starts above the hub's tip: the blocks between are read from Postgres first (the follower
  commits in order, and journals a batch only after the previous one committed, so Postgres has them);
- a batch already published (a retried batch, or one made up from Postgres) is skipped;
- a batch still incomplete after ``stall_seconds`` (messages lost, unreadable, or produced before this
  consumer started): taken from Postgres if Postgres holds its blocks; dropped if it does not and a later
  batch was journaled (it never committed: the journal recovery reverted it).

Kafka carries a batch before Postgres commits it, so live events may reach clients a little earlier than
through ``NOTIFY``; a batch that then never commits (the node crashed in between) is replaced by the next
branch, announced as a reorg (``_publish``) or, where the hub cannot see the fork, mended by each
subscription from Postgres. The broker unreachable: logged, retried (``core.retry.RetryPolicy``), and
Postgres fills in meanwhile, every ``check_seconds``. Exchange channels stay on ``NOTIFY``
(``api.stream.listener`` with ``chain=False``): their topics carry no journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

import asyncpg
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from api.stream.events import Ref
from api.stream.hub import Hub
from api.stream.kafka_batches import HUB_KINDS, REORGS, BatchAssembler, Released
from api.stream.listener import FOLLOW_STREAM, NotifyListener
from api.stream.stored_feed import StoredFeed
from core.errors import ConfigError
from core.retry import RetryPolicy
from core.settings import Settings
from records import Block
from sinks.kafka import KafkaOptions
from sinks.kafka_journal import InFlight
from sinks.kafka_keys import HEAD, Topics

log = logging.getLogger("dexnode.api.kafka")

POLL_MESSAGES = 1000
POLL_SECONDS = 0.25
META_SECONDS = 10.0
ERROR_LOG_SECONDS = 60.0  # the same consumer error is logged once per this


def group_id() -> str:
    return f"dexnode-serve-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class KafkaSource:
    def __init__(
        self,
        pool: asyncpg.Pool,
        hub: Hub,
        options: KafkaOptions,
        *,
        stream: str = FOLLOW_STREAM,
        check_seconds: float = 5.0,
        stall_seconds: float = 5.0,
        retry: RetryPolicy | None = None,
        cex: bool = True,
    ) -> None:
        self.pool = pool
        self.hub = hub
        self.stored = StoredFeed(pool, hub)
        self.check_seconds = check_seconds
        self.stall_seconds = stall_seconds
        self.retry = retry or RetryPolicy(attempts=0, base_delay=0.5, max_delay=check_seconds)
        self.batches = BatchAssembler(stream)
        topics = Topics(options.topic_prefix)
        self.journal_topic = topics.journal(stream)
        # the head topics, then the journal: its end is taken last, so a batch journaled after it has
        # all its messages after the ends taken before
        self.kind_of = {topics.of(HEAD, kind): kind for kind in (*HUB_KINDS, REORGS)}
        self.topics = [*self.kind_of, self.journal_topic]
        self.group = group_id()
        self.config: dict[str, Any] = {
            **options.consumer_config(),
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "allow.auto.create.topics": False,
            "reconnect.backoff.ms": 500,  # a broker that is down is logged a few times, not hundreds
            "reconnect.backoff.max.ms": 10_000,
        }
        self.positions: dict[tuple[str, int], int] = {}  # the next offset to read, per partition
        self.opened = False  # a consumer was assigned once (later topics start at their beginning)
        self.assigned = asyncio.Event()
        self.cex = NotifyListener(pool, hub, stream=stream, chain=False) if cex else None
        self.task: asyncio.Task[None] | None = None
        self.kafka_blocks = 0  # blocks sent to the hub from Kafka messages
        self.unstuck_blocks = 0  # blocks of batches incomplete on Kafka, taken from Postgres
        self._waiting: tuple[str, float] | None = None  # (batch id, since) of the batch at the front
        self._errors: dict[int, float] = {}
        self._refresh = False  # look for new topics before the next check
        self.reorg_topic = topics.of(HEAD, REORGS)

    async def start(self, timeout: float = 5.0) -> None:
        """Start reading; returns once assigned, or after ``timeout`` (the broker unreachable: the
        source keeps trying, Postgres filling in meanwhile)."""
        await self.hub.start()
        if self.cex is not None:
            await self.cex.start()
        self.task = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(self.assigned.wait(), timeout)
        except TimeoutError:
            log.warning("live events: Kafka not reachable yet; Postgres fills in until it is")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.cex is not None:
            await self.cex.close()

    # -- the consumer ---------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            consumer: Consumer | None = None
            try:
                consumer = await asyncio.to_thread(Consumer, self.config)
                await self._assign_meanwhile(consumer)
                failures = 0
                self.assigned.set()
                await self.stored.catch_up()
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker unreachable, a fatal consumer error, Postgres away
                failures += 1
                delay = self.retry.delay(failures, None)
                log.warning("live events from Kafka: %s; again in %.1f s (Postgres fills in)", exc, delay)
                with contextlib.suppress(Exception):
                    await self.stored.catch_up()
                await asyncio.sleep(delay)
            finally:
                if consumer is not None:
                    await asyncio.shield(asyncio.to_thread(consumer.close))

    async def _assign_meanwhile(self, consumer: Consumer) -> None:
        """``_assign``, Postgres filling in every ``check_seconds`` while the broker does not answer."""
        assigning = asyncio.ensure_future(asyncio.to_thread(self._assign, consumer))
        try:
            while not assigning.done():
                await asyncio.wait([assigning], timeout=self.check_seconds)
                if not assigning.done():
                    await self.stored.catch_up()
        except asyncio.CancelledError:
            await asyncio.wait([assigning])  # never close the consumer under a running call
            raise
        assigning.result()

    def _assign(self, consumer: Consumer) -> bool:
        """Assign every partition of the topics at its position (blocking); True if that changed."""
        metadata = consumer.list_topics(timeout=META_SECONDS)
        wanted: list[TopicPartition] = []
        new = False
        for topic in self.topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue  # not created yet: the node has not written it
            for partition in sorted(meta.partitions):
                position = self.positions.get((topic, partition))
                if position is None:
                    new = True
                    log.info("live events from Kafka: reading %s [%d]", topic, partition)
                    if self.opened:
                        position = 0  # appeared after this process started: all of it is new
                    else:
                        _, position = consumer.get_watermark_offsets(
                            TopicPartition(topic, partition), timeout=META_SECONDS
                        )
                    self.positions[(topic, partition)] = position
                wanted.append(TopicPartition(topic, partition, position))
        if new or not self.opened or not consumer.assignment():
            consumer.assign(wanted)
        self.opened = True
        return new

    async def _consume(self, consumer: Consumer) -> None:
        next_check = time.monotonic() + self.check_seconds
        while True:
            polling = asyncio.ensure_future(asyncio.to_thread(consumer.consume, POLL_MESSAGES, POLL_SECONDS))
            try:
                messages = await asyncio.shield(polling)
            except asyncio.CancelledError:
                await asyncio.wait([polling])  # never close the consumer under a running poll
                raise
            for message in messages:
                self._take(message)
            await self._advance()
            if time.monotonic() >= next_check or self._refresh:
                self._refresh = False
                await self._check(consumer)
                next_check = time.monotonic() + self.check_seconds

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            now = time.monotonic()
            if now - self._errors.get(error.code(), -ERROR_LOG_SECONDS) >= ERROR_LOG_SECONDS:
                self._errors[error.code()] = now
                log.warning("live events from Kafka: %s (retrying)", error.str())
            return
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        self.positions[(topic, partition)] = offset + 1
        value = message.value() or b""
        if topic == self.journal_topic:
            self.batches.journal(value)
            return
        kind = self.kind_of.get(topic)
        if kind is None:
            return
        raw = dict(message.headers() or []).get("block_hash") or b""
        block_hash = raw.decode() if isinstance(raw, bytes) else raw
        self.batches.record(kind, (message.key() or b"").decode(), block_hash, value)

    async def _check(self, consumer: Consumer) -> None:
        """Every ``check_seconds``: new topics or partitions, a batch stuck at the front, and what
        Postgres has that Kafka did not bring (the broker away, or a batch before this consumer)."""
        if await asyncio.to_thread(self._assign, consumer):
            log.info("live events from Kafka: reading new topics or partitions")
        if self._waiting is not None and time.monotonic() - self._waiting[1] >= self.stall_seconds:
            await self._unstick()
        elif not self.batches.entries:
            await self.stored.catch_up()

    # -- batches to the hub ---------------------------------------------------------------------

    async def _advance(self) -> None:
        while self.batches.entries:
            entry = self.batches.entries[0]
            if self._already_published(entry):
                self.batches.drop_first()
                continue
            released = self.batches.release()
            if released is None:
                if self.batches.unreadable:
                    await self._unstick()
                    continue
                if self._waiting is None or self._waiting[0] != entry.batch_id:
                    self._waiting = (entry.batch_id, time.monotonic())
                    # the first reorg creates head.reorgs: read it now, not at the next check
                    self._refresh = entry.reorg is not None and not self._reading(self.reorg_topic)
                return
            self._waiting = None
            await self._publish(released)
            self.kafka_blocks += len(released.blocks)
        self._waiting = None

    @property
    def postgres_blocks(self) -> int:
        """Blocks sent to the hub from Postgres (caught up, or batches incomplete on Kafka)."""
        return self.stored.blocks + self.unstuck_blocks

    def _reading(self, topic: str) -> bool:
        return any(t == topic for t, _ in self.positions)

    def _already_published(self, entry: InFlight) -> bool:
        blocks = _chain_blocks(entry)
        window = self.hub.window
        return bool(blocks) and all(
            (known := window.get(b.number)) is not None and known.hash == b.hash for b in blocks
        )

    async def _publish(self, batch: Released) -> None:
        hub, blocks, entry = self.hub, batch.blocks, batch.entry
        if entry.reorg is not None:
            _, number, ancestor_hash = entry.reorg
            if hub.tip is not None and hub.tip.number < number:
                await self.stored.catch_up(upto=number)
            if batch.reorg is not None:
                orphaned = list(batch.reorg.orphaned_hashes)
            else:
                orphaned = list(
                    await self.pool.fetchval(
                        "SELECT orphaned_hashes FROM reorgs WHERE common_ancestor_hash = $1"
                        " ORDER BY id DESC LIMIT 1",
                        ancestor_hash,
                    )
                    or []
                )
            ancestor = Ref(number, ancestor_hash)
            new_head = Ref(blocks[-1].number, blocks[-1].hash) if blocks else ancestor
            hub.publish_reorg(ancestor, orphaned, new_head)
        elif blocks and hub.tip is not None:
            first = blocks[0]
            if first.number > hub.tip.number + 1:
                await self.stored.catch_up(upto=first.number - 1)
            self._fork(first, blocks[-1])
        hub.publish_blocks(blocks, batch.records)

    def _fork(self, first: Block, last: Block) -> None:
        """A batch that replaces blocks the hub sent, with no reorg record (the batch it replaces reached
        Kafka but was never committed, and the journal recovery took it back): the reorg, from the hub's
        own blocks, before the new branch."""
        window = self.hub.window
        known, parent = window.get(first.number), window.get(first.number - 1)
        if known is None or known.hash == first.hash or parent is None or parent.hash != first.parent_hash:
            return
        orphaned = [window[n].hash for n in sorted(window) if n >= first.number]
        log.warning("live events: block %d %s replaced without a reorg record", first.number, known.hash[:10])
        self.hub.publish_reorg(Ref(parent.number, parent.hash), orphaned, Ref(last.number, last.hash))

    async def _unstick(self) -> None:
        """The batch at the front is incomplete (or unreadable): from Postgres if it holds its blocks;
        dropped if not and a later batch exists (it never committed); else wait on."""
        entry = self.batches.entries[0]
        blocks = _chain_blocks(entry)
        numbers = [b.number for b in blocks]
        missing = self.batches.missing_by_kind(entry)
        log.info("live events: batch to block %s incomplete on Kafka (missing %s)", entry.after[0], missing)
        rows = await self.pool.fetch(
            "SELECT number, hash FROM blocks WHERE number = ANY($1::bigint[])", numbers
        )
        stored = {r["number"]: r["hash"] for r in rows}
        if not blocks:  # a reorg alone, its record lost: as NOTIFY does, its orphaned blocks from Postgres
            self.batches.drop_first()
            await self._publish(Released(entry, None, [], {}))
        elif all(stored.get(b.number) == b.hash for b in blocks):
            reorg = self.batches.reorg_of(entry.reorg[0]) if entry.reorg is not None else None
            self.batches.drop_first()
            chain, records = await self.stored.read(min(numbers), max(numbers))
            log.info("live events: batch to block %d taken from Postgres (incomplete on Kafka)", max(numbers))
            await self._publish(Released(entry, reorg, chain, records))
            self.unstuck_blocks += len(chain)
        elif len(self.batches.entries) > 1:
            self.batches.drop_first()
            log.warning("live events: batch to block %s never committed; dropped", entry.after[0])
        else:
            return
        self._waiting = None
        await self._advance()


def _chain_blocks(entry: InFlight) -> list[Any]:
    """The entry's blocks (not the older blocks its pools name): those with a block key."""
    return [b for b in entry.blocks if b.keys.get("blocks")]


def live_source(settings: Settings, pool: asyncpg.Pool, hub: Hub) -> NotifyListener | KafkaSource:
    """The hub's feed in a ``serve`` without the follower: ``DEXNODE_API_LIVE_SOURCE`` (``--live-source``)."""
    if settings.api_live_source == "notify":
        return NotifyListener(pool, hub)
    options = KafkaOptions.from_settings(settings)
    if options is None:
        raise ConfigError(
            "--live-source kafka (DEXNODE_API_LIVE_SOURCE=kafka) needs DEXNODE_KAFKA_BOOTSTRAP_SERVERS"
        )
    return KafkaSource(pool, hub, options)
