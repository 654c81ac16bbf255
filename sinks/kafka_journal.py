"""The in-flight journal: which batch reached Kafka but maybe not Postgres, with the keys to revert it.

The Kafka head sink writes a batch before Postgres commits it. If the node dies between the two, the
batch's records are on ``head.*`` but not in Postgres, and on restart the follower resumes from
Postgres. Usually the node still has those blocks and they are produced again (duplicates, same
key and content). But if a reorg replaced them meanwhile, nothing in Postgres remembers them, and
without this journal their records would stay on ``head.*`` for ever, never reverted.

So before producing a batch, the sink appends one entry to ``<prefix>_dexnode.inflight.<stream>``
(a one-partition topic; several messages when the keys are many) and waits for its delivery. The
entry names the batch's revertible keys per block, the cursor Postgres will hold once the batch
is committed, and for a reorg batch its ``reorg`` record's key and the keys its reverts undo (the
orphaned blocks' records, read from Postgres, which still holds them until the batch commits).

At start, the sink reads the last complete entry. If the stream's Postgres cursor is that cursor,
the batch committed: nothing to do. Otherwise Postgres is as before the batch, and ``head.*`` may
hold any prefix of it; the sink puts ``head.*`` back where Postgres is, in this order:
1. every key of the batch is reverted (and its ``reorg`` record);
2. the orphaned records the batch reverted are produced again, read back from Postgres (those it
   still holds, by block hash), after their reverts in the same partitions.
Then the follower goes on from Postgres: if the node is still on the batch's branch, it sees the
reorg again and writes it anew; if the chain flipped back, ``head.*`` already holds the old branch.
Undoing a batch that is still canonical is harmless: the follower produces it again right after,
in the same partitions, after the reverts.

At most one batch per stream is in flight: the pipeline writes the next batch only after the
previous one committed, and a retried batch is journaled again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from sinks.kafka_keys import BlockKeys

log = logging.getLogger("dexnode.sink.kafka")

PART_BYTES = 400_000  # one journal message stays well under the broker's 1 MB default


@dataclass(frozen=True, slots=True)
class InFlight:
    stream: str
    after: tuple[int, str]  # the stream's Postgres cursor once the batch is committed
    blocks: Sequence[BlockKeys]
    reorg: tuple[str, int, str] | None = None  # (key, common ancestor number, hash) of its reorg record
    batch_id: str = ""
    orphaned: Sequence[BlockKeys] = field(default_factory=list)  # what its reverts undo, per block


def encode(entry: InFlight) -> list[bytes]:
    """The entry as journal messages, each under ``PART_BYTES``, all naming the batch and their count."""
    batch_id = entry.batch_id or uuid.uuid4().hex
    chunks: list[dict[str, list[dict[str, Any]]]] = [{"orphaned": [], "blocks": []}]
    size = 0
    items = [("orphaned", b) for b in entry.orphaned] + [("blocks", b) for b in entry.blocks]
    for field_name, block in items:
        weight = 80 + sum(len(k) + 3 for keys in block.keys.values() for k in keys)
        if size and size + weight > PART_BYTES:
            chunks.append({"orphaned": [], "blocks": []})
            size = 0
        chunks[-1][field_name].append(block.to_json())
        size += weight
    head = {"stream": entry.stream, "after": list(entry.after), "reorg": entry.reorg, "batch": batch_id}
    return [
        orjson.dumps({**head, "part": i, "parts": len(chunks), **lists}) for i, lists in enumerate(chunks)
    ]


def last_complete(values: Sequence[bytes]) -> InFlight | None:
    """The last entry whose every part is in ``values`` (journal messages in offset order)."""
    docs = []
    for value in values:
        try:
            docs.append(orjson.loads(value))
        except orjson.JSONDecodeError:
            log.warning("unreadable in-flight journal message skipped")
    end = len(docs)
    while end > 0:
        last = docs[end - 1]
        parts = int(last.get("parts", 0))
        start = end - parts
        group = docs[max(start, 0) : end]
        if (
            start >= 0
            and parts > 0
            and [d.get("part") for d in group] == list(range(parts))
            and all(d.get("batch") == last.get("batch") for d in group)
        ):
            reorg = last.get("reorg")
            return InFlight(
                stream=str(last["stream"]),
                after=(int(last["after"][0]), str(last["after"][1])),
                blocks=[BlockKeys.from_json(b) for d in group for b in d["blocks"]],
                reorg=(str(reorg[0]), int(reorg[1]), str(reorg[2])) if reorg else None,
                batch_id=str(last.get("batch", "")),
                orphaned=[BlockKeys.from_json(b) for d in group for b in d.get("orphaned", ())],
            )
        end -= 1  # an incomplete entry (the node stopped while writing it): look further back
    return None


def read_tail(config: dict[str, Any], topic: str, *, timeout: float = 10.0, window: int = 64) -> list[bytes]:
    """The last ``window`` messages of partition 0 of ``topic`` (blocking; [] when there is none)."""
    consumer = Consumer(
        {
            **config,
            "group.id": "dexnode-journal-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "allow.auto.create.topics": False,
        }
    )
    try:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
                              KafkaError._UNKNOWN_TOPIC):  # fmt: skip
                return []
            raise
        if high <= low:
            return []
        start = max(low, high - window)
        consumer.assign([TopicPartition(topic, 0, start if start > 0 else OFFSET_BEGINNING)])
        values: list[bytes] = []
        while True:
            msg = consumer.poll(timeout)
            if msg is None:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {topic} timed out"))
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return values
                raise KafkaException(error)
            values.append(msg.value() or b"")
            offset = msg.offset()
            if offset is not None and offset >= high - 1:
                return values
    finally:
        consumer.close()


def read_last_entry(config: dict[str, Any], topic: str, *, timeout: float = 10.0) -> InFlight | None:
    window = 16
    while True:
        values = read_tail(config, topic, timeout=timeout, window=window)
        entry = last_complete(values)
        if entry is not None or len(values) < window:
            return entry
        window *= 4
