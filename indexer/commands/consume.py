"""``dexnode consume TOPIC``: a topic as JSON lines; ``--apply-reverts``: what a consumer keeps after reverts.

Without ``--apply-reverts`` every message is printed as it arrives (records and ``revert`` messages
alike), until interrupted (or ``--until-end``). With it, the topic is read to its end and the records
that survive are printed, in chain order: the latest record per key, minus every key whose record a
``Revert`` with the same block hash undid. That is the rule every ``head.*`` consumer applies
(``NetState``); on ``confirmed.*`` it only removes duplicates.

Also ``dexnode kafka-dev``: librdkafka's mock cluster in the foreground, for trying this out.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from indexer.errors import ConfigError, FatalError
from indexer.settings import Settings, build_settings

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


def _settings(ctx: typer.Context, bootstrap_servers: str | None) -> Settings:
    base = ctx.obj if isinstance(ctx.obj, Settings) else build_settings()
    return base.with_overrides(kafka_bootstrap_servers=bootstrap_servers)


def consume_command(
    ctx: typer.Context,
    topic: Annotated[
        str,
        typer.Argument(
            help="head.<kind> or confirmed.<kind> (the chain prefix is added), or a full topic name"
        ),
    ],
    from_beginning: Annotated[
        bool,
        typer.Option("--from-beginning", help="start at the oldest message (a group: if it has no offset)"),
    ] = False,
    group: Annotated[
        str | None, typer.Option("--group", "-g", help="consumer group: commits offsets, shares partitions")
    ] = None,
    apply_reverts: Annotated[
        bool,
        typer.Option("--apply-reverts", help="read to the end, print the records that survive the reverts"),
    ] = False,
    until_end: Annotated[
        bool, typer.Option("--until-end", help="stop at the end of every partition")
    ] = False,
    max_messages: Annotated[int | None, typer.Option("--max-messages", min=1, help="stop after N")] = None,
    meta: Annotated[
        bool, typer.Option("--meta", help="wrap each record with topic, offset, key, headers")
    ] = False,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option("--bootstrap-servers", help="Kafka brokers [env DEXNODE_KAFKA_BOOTSTRAP_SERVERS]"),
    ] = None,
) -> None:
    """Print a Kafka topic as JSON lines (one record per line)."""
    from sinks.kafka import KafkaOptions

    settings = _settings(ctx, bootstrap_servers)
    options = KafkaOptions.from_settings(settings, os.environ)
    if options is None:
        raise ConfigError("no Kafka broker: set DEXNODE_KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers")
    name = resolve_topic(topic, options.topic_prefix)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    out = sys.stdout.buffer

    def emit(message: Received) -> None:
        out.write(orjson.dumps(message.as_meta()) if meta else message.value)
        out.write(b"\n")

    messages = read_topic(
        options.consumer_config(),
        name,
        group=group,
        from_beginning=from_beginning or apply_reverts,
        until_end=until_end or apply_reverts,
        stop=lambda: stopping,
    )
    count = 0
    if apply_reverts:
        state = NetState()
        for message in messages:
            state.apply(message)
        for message in state.ordered():
            emit(message)
            count += 1
            if max_messages is not None and count >= max_messages:
                break
    else:
        for message in messages:
            emit(message)
            out.flush()
            count += 1
            if max_messages is not None and count >= max_messages:
                break
    out.flush()


def kafka_dev_command(
    brokers: Annotated[int, typer.Option("--brokers", min=1, max=5, help="mock brokers")] = 1,
) -> None:
    """Run librdkafka's mock Kafka cluster (a Kafka-protocol broker, in memory) until Ctrl-C / SIGTERM."""
    from sinks.kafka_dev import serve

    serve(brokers, announce=lambda address: typer.echo(
        f"mock Kafka cluster at {address} (in memory; stops with Ctrl-C)\n"
        f"  export DEXNODE_KAFKA_BOOTSTRAP_SERVERS={address}"
    ))  # fmt: skip
