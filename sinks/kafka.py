"""The Kafka sinks: ``head.*`` topics as blocks are indexed (with reverts), ``confirmed.*`` once deep.

Topics, for ``prefix`` = ``DEXNODE_KAFKA_TOPIC_PREFIX`` (default ``<chain>.``) and each chain kind's name in
``records.kinds`` (``blocks``, ``transactions``, ..., ``dex_liquidity``, ``reorgs``):

- ``<prefix>head.<kind>``: records as soon as they are indexed. On a reorg, first a ``Revert``
  for every orphaned record (same topic, same key, so same partition, after the record; and for
  the pools without a creation block and the tokens that only the orphaned blocks needed, which
  Postgres deletes with them), then the ``Reorg`` record on ``head.reorgs``, then the new branch.
- ``<prefix>confirmed.<kind>``: blocks deeper than ``DEXNODE_CONFIRMATIONS`` (the follower's
  ``Finalize``), from the batches in memory (3. below), never reverted. No ``confirmed.reorgs``:
  nothing there is undone.
- ``<merged prefix>trades``: each confirmed DEX trade once more, in the shape the CEX trades share
  there (``sinks.merged_trades``; ``cex.kafka``), keyed by pool address, published with
  ``confirmed.*`` (from the confirmed publisher, or with a backfill's batch): a reorg never touches it,
  and it has no reverts. Its prefix is the CEX side's: ``DEXNODE_KAFKA_TOPIC_PREFIX`` if set, else none.

Messages: value = ``records.to_json(record)`` (``type``, ``version``, ``data``); key = the natural
key (``sinks.kafka_keys``); a ``block_hash`` header on every message.

The split, and why the order is what it is (``with_kafka`` builds it):

    KafkaPostgresSink([KafkaHeadSink, PostgresSink, ConfirmedPublisher])

1. ``KafkaHeadSink`` produces a batch *before* Postgres commits it. Its reverts need the orphaned
   records' keys, which only Postgres has, and only until it commits the reorg. The deliveries
   travel while Postgres writes the batch (a batch of ``THREADED_RECORDS`` or more, as a backfill's,
   is even encoded and produced meanwhile, in the producer's thread), and the COMMIT waits for
   every delivery report; a
   failure raises ``KafkaUnavailable`` (retryable), which rolls the transaction back, so Postgres
   does not commit, the cursor does not move, and the whole batch is written again: Kafka can hold a batch
   Postgres does not have yet, never the reverse. "Never lost" costs possible duplicates: same
   key, same content; consumers dedupe by key.
2. A crash after Kafka, before Postgres: the follower resumes from Postgres and produces the batch
   again. If a reorg replaced it meanwhile, or the batch was a reorg the chain then undid, Postgres
   never knew it: the in-flight journal (``sinks.kafka_journal``) remembers its keys and the keys
   its reverts undid, and at start the head sink reverts the first and produces the second again
   from Postgres.
3. ``ConfirmedPublisher`` remembers each batch after the Postgres commit. When the follower says a
   block is final (``Finalize``, ``tip - confirmations``), it publishes every block from its own
   cursor (``cursors`` row ``kafka.confirmed``) up to it, from memory (from Postgres only what this
   process never held: blocks stored before it started), advancing the cursor after each batch:
   a restart continues without a gap (and may
   repeat the last chunk). A failed delivery there does not fail the batch (Postgres has
   committed); the next batch retries from the cursor. A Postgres failure there does: the batch is
   written again after its commit, like one whose COMMIT acknowledgement was lost.
4. A stream that writes only confirmed blocks (``backfill``, ``journal=False``) needs no
   waiting: the head sink writes its batches to ``head.*`` and ``confirmed.*`` at once,
   before Postgres (one encoding, same guarantee), and the publisher's cursor just moves over them.
   Its chunks may be written concurrently and out of order; each is on both flavours regardless.
   Where a chunk replaces blocks stored at its heights that a reorg since orphaned (the follower's:
   ``indexer.backfill.store.replace_orphans`` deletes them in the chunk's transaction), a ``Revert``
   of every record of those blocks goes first on ``head.*``, before the chunk's records, as a
   reorg's reverts do (no ``Reorg`` record: Postgres records none either). A crash before Postgres
   commits leaves them reverted on Kafka while Postgres still holds them; the rerun of the chunk
   reverts them again and writes the chunk.
5. A batch written again after its commit is a replay: for a reorg batch whose reorg Postgres
   already applied (``sinks.postgres.reorg_is_applied``), neither Postgres nor ``head.*`` undoes
   anything again; ``head.*`` only gets the new branch's records again (duplicates).

Consumers of ``head.*``: keep the latest record per key; on a ``Revert``, drop the key if its stored
record has the revert's ``block_hash`` (``dexnode consume --apply-reverts``, ``examples/pool_volume.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException

from core.settings import Settings
from records import Reorg, Revert
from records.batch import Batch
from sinks.base import CompositeSink, Sink
from sinks.kafka_confirmed import CONFIRMED_STREAMS, ConfirmedPublisher
from sinks.kafka_journal import InFlight, encode, read_last_entry
from sinks.kafka_keys import (
    CONFIRMED,
    HEAD,
    KINDS,
    RECORD_TYPE,
    REORGS,
    BlockKeys,
    EncodedCache,
    OutMessage,
    Segment,
    Topics,
    encode_batch,
    encode_record,
    keys_of_batch,
    merged_trade_messages,
    out_message,
    reorg_key,
    restore_messages,
    revert_messages,
)
from sinks.kafka_producer import KafkaProducer, KafkaUnavailable, shared_config
from sinks.kafka_reverts import blockless_reverts, replaced_keys
from sinks.postgres import BlockRef, PostgresSink, reorg_is_applied
from sinks.postgres_read import StoredChain

log = logging.getLogger("dexnode.sink.kafka")

# a batch with this many records is encoded and produced in the producer's thread (a live block's few
# hundred cost less there than the hand-over)
THREADED_RECORDS = 2_000

_ENFORCED = {"enable.idempotence": True, "acks": "all"}
PRODUCER_DEFAULTS: dict[str, Any] = {
    # lz4: 348k bench messages (266 MB of JSON) are 65-67 MB on the wire for 0.51-0.58 CPU-s of librdkafka's
    # threads; zstd 32 MB for 0.76-0.93, none 321 MB for 0.24-0.32 (and 2-3x the broker's CPU): docs/kafka.md
    "compression.type": "lz4",
    "linger.ms": 5,
    "partitioner": "murmur2_random",  # the Java client's partitioner: the same key, the same partition
    "message.timeout.ms": 30_000,  # a delivery not acknowledged by then fails the batch, which is retried
    "queue.buffering.max.messages": 1_000_000,
    "client.id": "dexnode",
}


@dataclass(frozen=True)
class KafkaOptions:
    bootstrap_servers: str
    topic_prefix: str
    confirmations: int
    extra: dict[str, str] = field(default_factory=dict)  # librdkafka settings (Settings.librdkafka)
    # the merged trades topic's prefix: the CEX side's (cli.cex: no chain prefix unless one is set), so
    # DEX and CEX trades meet on one topic; None: topic_prefix
    merged_prefix: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaOptions | None:
        """None when Kafka is off (``DEXNODE_KAFKA_BOOTSTRAP_SERVERS`` unset)."""
        if not settings.kafka_bootstrap_servers:
            return None
        prefix = settings.kafka_topic_prefix
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topic_prefix=f"{settings.chain}." if prefix is None else prefix,
            confirmations=settings.confirmations,
            extra=dict(settings.librdkafka),
            merged_prefix=prefix or "",
        )

    def producer_config(self) -> dict[str, Any]:
        extra = dict(self.extra)
        for name, value in _ENFORCED.items():
            given = extra.pop(name, None)
            if given is not None and given.lower() != str(value).lower():
                log.warning("%s=%s ignored: dexnode's Kafka guarantees need %s", name, given, value)
        return {
            **PRODUCER_DEFAULTS,
            **extra,
            **_ENFORCED,
            "bootstrap.servers": self.bootstrap_servers,
            "logger": logging.getLogger("dexnode.librdkafka"),
        }

    def consumer_config(self) -> dict[str, Any]:
        return shared_config(self.producer_config())


class KafkaHeadSink:
    """``head.*``: each batch as it is indexed, reverts first on a reorg. Goes before Postgres."""

    def __init__(
        self,
        producer: KafkaProducer,
        topics: Topics,
        stored: StoredChain,
        *,
        reader_config: dict[str, Any],
        journal: bool = True,
        cache: EncodedCache | None = None,
        confirmed_streams: frozenset[str] = CONFIRMED_STREAMS,
        history_on_head: bool = True,
        threaded_records: int = THREADED_RECORDS,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.stored = stored
        self.reader_config = reader_config
        self.journal = journal
        self.cache = cache or EncodedCache()
        self.confirmed_streams = confirmed_streams  # their batches go to confirmed.* here, not after
        self.history_on_head = history_on_head  # and to head.* too (False: confirmed.* only)
        self.threaded_records = threaded_records  # batches this big: encoded and produced in a thread
        self._started: set[str] = set()

    async def start(self, stream: str) -> None:
        """Topics (best effort), then the revert of a batch a crash left on Kafka but not in Postgres."""
        if not self._started:
            streams = [stream] if self.journal else []
            topics = self.topics.all(streams)
            await asyncio.to_thread(self.producer.ensure_topics, topics, self.topics.of(HEAD, "blocks"))
        if self.journal:
            await self._recover(stream)
        self._started.add(stream)

    async def _recover(self, stream: str) -> None:
        topic = self.topics.journal(stream)
        try:
            entry = await asyncio.to_thread(read_last_entry, self.reader_config, topic)
        except KafkaException as exc:  # the broker is not answering
            raise KafkaUnavailable(f"reading the in-flight journal {topic}: {exc}") from None
        if entry is None:
            return
        cursor = await self.stored.cursor(stream)
        if cursor is not None and (cursor.number, cursor.hash) == entry.after:
            return  # the last batch Kafka saw was committed
        keys = sum(len(v) for b in entry.blocks for v in b.keys.values())
        log.warning(
            "the last %s batch (to block %d %s) reached Kafka but not Postgres: reverting its %d records"
            " on head topics before going on",
            stream,
            entry.after[0],
            entry.after[1][:10],
            keys,
        )
        messages = list(revert_messages(self.topics, entry.blocks))
        if entry.reorg is not None:
            key, number, block_hash = entry.reorg
            revert = Revert(number, block_hash, RECORD_TYPE[REORGS], key)
            _, k, value, headers = encode_record(REORGS, revert, (number, block_hash))
            messages.append(out_message(self.topics.of(HEAD, REORGS), k, value, headers))
        if entry.orphaned:  # its reverts may have reached Kafka: Postgres still holds that branch
            restored = await self._restore(entry.orphaned)
            log.warning("and producing again the %d records its reorg had reverted", len(restored))
            messages.extend(restored)
        await self.producer.send(messages)

    async def _restore(self, reverted: Sequence[BlockKeys]) -> list[OutMessage]:
        stored = await self.stored.batch_between(
            min(b.number for b in reverted), max(b.number for b in reverted)
        )
        return restore_messages(self.topics, stored, reverted)

    async def write(self, batch: Batch) -> None:
        await (await self.produce(batch))()

    async def produce(self, batch: Batch) -> Callable[[], Awaitable[None]]:
        """Journal the batch (waited for), produce its messages, and return the waiter for their
        deliveries: the caller finishes its Postgres transaction meanwhile and commits only after."""
        if not batch.blocks and batch.reorg is None:
            return _delivered
        if batch.stream not in self._started:
            await self.start(batch.stream)
        messages: list[OutMessage] = []
        reorg = batch.reorg
        orphaned: list[BlockKeys] = []
        if reorg is not None and await reorg_is_applied(self.stored.pool, batch):
            # written again after Postgres committed it, so after Kafka had all of it: the orphaned
            # records are reverted already, and what is above the ancestor now is the new branch
            reorg = None
        if reorg is not None:
            orphaned = await self.stored.keys_above(reorg.common_ancestor_number)
            messages.extend(revert_messages(self.topics, orphaned))
            messages.extend(await blockless_reverts(self.topics, self.stored.pool, reorg, orphaned))
            _, key, value, headers = encode_record(REORGS, reorg, (0, ""))
            messages.append(out_message(self.topics.of(HEAD, REORGS), key, value, headers))
        confirmed_only = batch.stream in self.confirmed_streams and batch.reorg is None  # by construction
        if confirmed_only:
            # the confirmed chain replaces blocks stored at its heights that a reorg since orphaned (the
            # follower's): their records are reverted first, as a reorg reverts them
            replaced = await replaced_keys(self.stored.pool, batch)
            if replaced:
                log.warning(
                    "%s: reverting on head topics the %d stored block(s) the confirmed chain replaces: %s",
                    batch.stream,
                    len(replaced),
                    ", ".join(f"{b.number} {b.hash[:10]}" for b in replaced),
                )
                messages.extend(revert_messages(self.topics, replaced))
        if self.journal:
            await self._journal(batch, reorg, orphaned)
        flavours = [HEAD] if not confirmed_only or self.history_on_head else []
        if confirmed_only:
            flavours.append(CONFIRMED)

        def build() -> list[Segment]:
            # a confirmed stream's batch is on confirmed.* from here on, never encoded again: it skips the
            # cache, which would hold a backfill's last 32 batches' messages (~200 MB of bytes for 100-block
            # batches) for nothing; the heap growing for them cost page faults in every big batch's encoding
            encoded = encode_batch(batch) if confirmed_only else self.cache.encode(batch)
            # each flavour's records straight from the encoding: no message tuple per record
            by_kind = [
                (encoded, {kind: self.topics.of(flavour, kind) for kind in KINDS}) for flavour in flavours
            ]
            segments: list[Segment] = [(messages, None), *by_kind]
            if confirmed_only:  # and its DEX trades on the merged trades topic (confirmed only: no reverts)
                segments.append((merged_trade_messages(batch, self.topics.merged_trades()), None))
            return segments

        if batch.count() < self.threaded_records:
            return await self.producer.start_send_segments(build())
        # encoded and produced in the producer's thread while Postgres writes the batch: the waiter,
        # which the COMMIT waits for, waits for that too
        return self.producer.start_send_later(build)

    async def _journal(self, batch: Batch, reorg: Reorg | None, orphaned: list[BlockKeys]) -> None:
        """``reorg``: the reorg record this batch produces (None on a replay), ``orphaned``: the keys
        its reverts undo. Both go in the entry, so a restart can put ``head.*`` back either way."""
        tip = batch.tip
        if tip is not None:
            after = (tip.number, tip.hash)
        else:
            assert batch.reorg is not None
            after = (batch.reorg.common_ancestor_number, batch.reorg.common_ancestor_hash)
        entry = InFlight(
            stream=batch.stream,
            after=after,
            blocks=keys_of_batch(batch),
            reorg=None
            if reorg is None
            else (reorg_key(reorg), reorg.common_ancestor_number, reorg.common_ancestor_hash),
            orphaned=orphaned,
        )
        topic = self.topics.journal(batch.stream)
        await self.producer.send([out_message(topic, b"", value, [], 0) for value in encode(entry)])

    async def close(self) -> None:
        await self.producer.close()


def with_kafka(
    settings: Settings,
    postgres: PostgresSink,
    *,
    journal: bool = True,
    history_on_head: bool = True,
) -> Sink:
    """The Postgres sink alone when Kafka is off; else ``[KafkaHeadSink, postgres, ConfirmedPublisher]``.

    ``journal=False`` only for streams that write confirmed blocks (backfill): they cannot be orphaned.
    ``history_on_head=False``: such a stream's batches go to ``confirmed.*`` only, not to ``head.*``
    too (half the messages; ``head.*`` then starts where the follower started)."""
    options = KafkaOptions.from_settings(settings)
    if options is None:
        return postgres
    return kafka_composite(options, postgres, journal=journal, history_on_head=history_on_head)


async def _delivered() -> None:
    return None


class KafkaPostgresSink(CompositeSink):
    """``[KafkaHeadSink, PostgresSink, ConfirmedPublisher]`` with Kafka's delivery overlapping the
    Postgres transaction: the head messages are produced first, Postgres writes the batch, and its
    COMMIT waits until every message is acknowledged. A failed delivery rolls the transaction back
    (the batch is retried whole), so Postgres still never holds a batch Kafka lacks."""

    def __init__(self, head: KafkaHeadSink, postgres: PostgresSink, confirmed: ConfirmedPublisher) -> None:
        super().__init__([head, postgres, confirmed])
        self.head, self.postgres, self.confirmed = head, postgres, confirmed

    async def finalize(self, block: BlockRef) -> None:
        """The follower's ``Finalize``: ``confirmed.*`` up to ``block``, from the batches in memory."""
        await self.confirmed.finalize(block)

    async def write(self, batch: Batch) -> None:
        delivered = await self.head.produce(batch)
        try:
            await self.postgres.write(batch, before_commit=delivered)
        except Exception:
            with contextlib.suppress(Exception):
                await delivered()  # do not leave reports behind for the retry to trip over
            raise
        await self.confirmed.write(batch)


def kafka_composite(
    options: KafkaOptions,
    postgres: PostgresSink,
    *,
    journal: bool = True,
    history_on_head: bool = True,
    threaded_records: int = THREADED_RECORDS,
) -> KafkaPostgresSink:
    producer = KafkaProducer(options.producer_config())
    topics = Topics(options.topic_prefix, options.merged_prefix)
    stored = StoredChain(postgres.pool)
    cache = EncodedCache()
    head = KafkaHeadSink(
        producer,
        topics,
        stored,
        reader_config=options.consumer_config(),
        journal=journal,
        cache=cache,
        history_on_head=history_on_head,
        threaded_records=threaded_records,
    )
    confirmed = ConfirmedPublisher(producer, topics, stored, options.confirmations, cache=cache)
    return KafkaPostgresSink(head, postgres, confirmed)
