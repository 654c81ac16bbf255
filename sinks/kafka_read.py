"""Reading a dexnode topic back: messages as ``Received`` (record, key, block), and ``NetState``, the
rule every ``head.*`` consumer applies (the latest record per key, minus the keys a ``Revert`` of the
same block hash undid); on ``confirmed.*`` it only removes duplicates."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from core.errors import FatalError

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    partition: int
    offset: int
    key: str
    block_hash: str
    block_number: int
    value: bytes
    doc: dict[str, Any]

    @property
    def is_revert(self) -> bool:
        return self.doc.get("type") == "revert"

    def sort_key(self) -> tuple[int, int, int, str]:
        """Chain order: block, then log (or transaction) index, then transfer batch index."""
        data = self.doc.get("data") or {}
        position = data.get("log_index", data.get("transaction_index", -1))
        return (self.block_number, int(position), int(data.get("batch_index", -1)), self.key)

    def as_meta(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "block_hash": self.block_hash,
            "block_number": self.block_number,
            "record": self.doc,
        }


_NUMBER_FIELDS = ("block_number", "number", "created_block_number", "common_ancestor_number")


def received(msg: Message) -> Received:
    raw_headers: list[tuple[str, bytes | None]] = msg.headers() or []  # type: ignore[assignment]
    headers = {k: (v or b"").decode() for k, v in raw_headers}
    value = msg.value() or b""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        doc = {"type": "unreadable", "raw": value.decode(errors="replace")}
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    number = next((data[f] for f in _NUMBER_FIELDS if isinstance(data.get(f), int)), -1)
    return Received(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=(msg.key() or b"").decode(),
        block_hash=headers.get("block_hash", ""),
        block_number=number,
        value=value,
        doc=doc,
    )


class NetState:
    """The ``head.*`` consumer's rule: the latest record per (topic, key); a ``Revert`` removes its key
    when the stored record comes from the reverted block (same ``block_hash``)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Received] = {}
        self.reverted = 0

    def apply(self, message: Received) -> None:
        slot = (message.topic, message.key)
        if message.is_revert:
            current = self.records.get(slot)
            reverted_hash = (message.doc.get("data") or {}).get("block_hash", message.block_hash)
            if current is not None and current.block_hash == reverted_hash:
                del self.records[slot]
                self.reverted += 1
            return
        self.records[slot] = message

    def ordered(self) -> list[Received]:
        return sorted(self.records.values(), key=Received.sort_key)


def resolve_topic(name: str, prefix: str) -> str:
    """``head.blocks`` → ``<prefix>head.blocks``; any other name is taken as the full topic name."""
    if name.startswith(("head.", "confirmed.")) and not name.startswith(prefix):
        return prefix + name
    return name


def open_consumer(
    config: dict[str, Any], topic: str, *, group: str | None, from_beginning: bool
) -> tuple[Consumer, set[int]]:
    """A consumer on ``topic``: in ``group`` (committing offsets) or on every partition without a group.
    Returns it with the partitions assigned so far (the group's are filled in as they are assigned)."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    base = {
        **config,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
    }
    assigned: set[int] = set()
    if group is not None:
        consumer = Consumer({**base, "group.id": group, "enable.auto.commit": True})

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            assigned.update(p.partition for p in partitions)

        consumer.subscribe([topic], on_assign=on_assign)
        return consumer, assigned
    consumer = Consumer(
        {**base, "group.id": f"dexnode-consume-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        consumer.close()
        raise FatalError(f"no topic {topic} on the broker (it appears when the node first writes to it)")
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in meta.partitions])
    assigned.update(meta.partitions)
    return consumer, assigned


def read_topic(
    config: dict[str, Any],
    topic: str,
    *,
    group: str | None = None,
    from_beginning: bool = True,
    until_end: bool = True,
    idle_timeout: float = 30.0,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[Received]:
    """Messages of ``topic`` as they arrive; with ``until_end``, stop once every partition is at its end."""
    from confluent_kafka import KafkaError

    consumer, assigned = open_consumer(config, topic, group=group, from_beginning=from_beginning)
    at_end: set[int] = set()
    idle = 0.0
    try:
        while not stop():
            msg = consumer.poll(0.5)
            if msg is None:
                idle += 0.5
                if until_end and idle >= idle_timeout:
                    raise FatalError(f"{topic}: no message and no end of partition for {idle_timeout:.0f}s")
                continue
            idle = 0.0
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                    if until_end and assigned and at_end >= assigned:
                        return
                    continue
                if error.fatal():
                    raise FatalError(f"Kafka consumer: {error.str()}")
                continue
            at_end.discard(msg.partition() or 0)
            yield received(msg)
    finally:
        consumer.close()
