"""``sinks.kafka_producer.KafkaProducer`` on both of its paths, ``sinks._rdkafka`` (librdkafka called from C,
delivery reports counted in C) and confluent-kafka's ``Producer``, against librdkafka's mock cluster (its
own process). The truth is the list of messages the test made: every key, value, header and partition is
read back with a plain confluent-kafka consumer; a frozen or stopped broker and a message the client
refuses must fail the send, never lose a message silently."""

from __future__ import annotations

import asyncio
import ctypes.util
import gc
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

import sinks.kafka_producer as kafka_producer
from core.errors import FatalError
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.kafka_keys import Headers, OutMessage, Segment
from sinks.kafka_producer import KafkaProducer, KafkaUnavailable

pytestmark = pytest.mark.integration

PATHS = ["native", "confluent"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "native" and not kafka_producer.NATIVE:
        pytest.fail("sinks._rdkafka is not built or librdkafka did not load (make install builds it)")
    monkeypatch.setattr(kafka_producer, "NATIVE", request.param == "native")
    return str(request.param)


@pytest.fixture
def broker() -> Iterator[KafkaDev]:
    with start_kafka_dev() as kafka:
        yield kafka


def config(broker: KafkaDev, **extra: object) -> dict[str, object]:
    return {
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "partitioner": "murmur2_random",
        "logger": logging.getLogger("dexnode.librdkafka"),
        **extra,
    }


def read_back(broker: KafkaDev, topic: str, count: int) -> list[tuple[bytes, bytes, Any, int]]:
    """(key, value, headers, partition) of the first ``count`` messages of ``topic``, by partition."""
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        got: list[tuple[bytes, bytes, Any, int]] = []
        empty_polls = 0
        while len(got) < count and empty_polls < 40:
            message = consumer.poll(0.5)
            if message is None:
                empty_polls += 1
                continue
            assert message.error() is None, message.error()
            key, value = message.key(), message.value()
            assert isinstance(key, bytes) and isinstance(value, bytes)
            got.append((key, value, message.headers(), int(message.partition() or 0)))
        return got
    finally:
        consumer.close()


def messages(topic: str, count: int, *, partition: int = -1) -> list[OutMessage]:
    """Keyed messages with one header each, the header list shared by ten messages as a block's is."""
    shared: list[Headers] = [[("block_hash", f"0x{b:064x}".encode())] for b in range(count // 10 + 1)]
    return [
        (
            topic,
            f"0x{i:064x}:{i}".encode(),
            f'{{"n":{i},"pad":"{"x" * (i % 300)}"}}'.encode(),
            shared[i // 10],
            partition,
        )
        for i in range(count)
    ]


async def test_every_message_is_delivered_as_given_in_order_per_key(path: str, broker: KafkaDev) -> None:
    """5,000 keyed messages through a local queue of 300 (the produce loop waits for room and goes on
    where it stopped), plus messages without headers on partition 0: all read back, byte for byte, each
    key on one partition, and the messages of a partition in the order they were given."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    keyed = messages(topic, 5000)
    plain: list[OutMessage] = [(topic, b"", f"journal {i}".encode(), [], 0) for i in range(20)]
    producer = KafkaProducer(config(broker, **{"queue.buffering.max.messages": 300}))
    try:
        await producer.send(keyed[:2500])
        await producer.send(plain)
        wait = producer.start_send_later(lambda: [(keyed[2500:], None)])  # its own thread, as a backfill's
        await wait()
    finally:
        await producer.close()
    got = read_back(broker, topic, len(keyed) + len(plain))
    assert len(got) == len(keyed) + len(plain)
    want = {key: (value, headers) for _, key, value, headers, _ in keyed}
    seen_partition: dict[bytes, int] = {}
    by_partition: dict[int, list[bytes]] = {}
    journal = []
    for key, value, headers, part in got:
        if key == b"":
            assert part == 0 and headers is None
            journal.append(value)
            by_partition.setdefault(part, []).append(value)
            continue
        want_value, want_headers = want.pop(key)
        assert value == want_value
        assert headers == want_headers
        assert seen_partition.setdefault(key, part) == part
        by_partition.setdefault(part, []).append(key)
    assert want == {}
    assert journal == [m[2] for m in plain]
    order = {key: i for i, (_, key, _, _, _) in enumerate(keyed)}
    for values in by_partition.values():
        keys = [order[k] for k in values if k in order]
        assert keys == sorted(keys)


async def test_a_frozen_broker_fails_the_send_then_the_retry_delivers(path: str, broker: KafkaDev) -> None:
    """Frozen (nothing answered): every message times out, the send raises ``KafkaUnavailable`` naming
    how many of how many; once it answers again, the same messages sent again all arrive."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    batch = messages(topic, 200)
    producer = KafkaProducer(config(broker, **{"message.timeout.ms": 2000}))
    try:
        await producer.send(batch[:1])  # connected, topic known
        broker.pause()  # returns once every broker thread is seen stopped
        try:
            failure: KafkaUnavailable | None = None
            try:
                await producer.send(batch)
            except KafkaUnavailable as exc:
                failure = exc
            # said apart: a broker thawed by something outside the test is not the producer's fault
            assert failure is not None, f"delivered to a broker frozen: {broker.frozen()}"
            assert str(failure).startswith("200 of 200 Kafka messages not delivered"), failure
        finally:
            broker.resume()
        for attempt in range(5):  # as the pipeline retries: a loaded machine may need more than one
            try:
                await producer.send(batch)
                break
            except KafkaUnavailable:
                if attempt == 4:
                    raise
    finally:
        await producer.close()
    got = read_back(broker, topic, 1000)
    keys = [key for key, _, _, _ in got]
    assert set(keys) == {m[1] for m in batch}
    assert keys.count(batch[0][1]) >= 2  # sent first alone, then in the retried batch (maybe three times)


async def test_a_message_the_client_refuses_is_a_fatal_error(path: str, broker: KafkaDev) -> None:
    """A value over ``message.max.bytes`` is refused when produced: ``FatalError`` (retrying cannot help)."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(config(broker, **{"message.max.bytes": 10_000}))
    try:
        with pytest.raises(FatalError, match="not delivered"):
            await producer.send([(topic, b"k", b"x" * 20_000, [], -1)])
        await producer.send(messages(topic, 3))  # the producer goes on
    finally:
        await producer.close()
    assert len(read_back(broker, topic, 3)) == 3


async def test_a_bad_setting_is_refused(path: str, broker: KafkaDev) -> None:
    producer = KafkaProducer(config(broker, **{"linger.ms": "soon"}))  # alias of queue.buffering.max.ms
    with pytest.raises(
        KafkaException, match=r"Invalid value for configuration property .queue\.buffering\.max\.ms"
    ):
        await producer.send(messages("t", 1))


async def test_librdkafka_logs_reach_the_logger(
    path: str, broker: KafkaDev, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker gone: librdkafka's connection failures are logged at ``dexnode.librdkafka`` (served with
    the delivery reports), and the send fails."""
    producer = KafkaProducer(config(broker, **{"message.timeout.ms": 1500}))
    broker.stop()
    with caplog.at_level(logging.INFO, logger="dexnode.librdkafka"):
        with pytest.raises(KafkaUnavailable):
            await producer.send(messages("gone", 5))
        await producer.close(timeout=1)
    lines = [r for r in caplog.records if r.name == "dexnode.librdkafka"]
    assert any(broker.bootstrap.rsplit(":", 1)[1] in r.getMessage() for r in lines), lines[:3]


async def test_encoded_records_go_to_their_kinds_topic(path: str, broker: KafkaDev) -> None:
    """A send in segments, as the head sink makes one: message tuples, then the same encoded records
    (kind, key, value, headers) on two flavours, each to ``topics[kind]``: every record on its kind's
    topic of both flavours, after the plain messages of its partition."""
    prefix = f"s{uuid.uuid4().hex[:6]}"
    kinds = ("blocks", "logs")
    encoded = [
        (
            kinds[i % 2],
            f"key-{i}".encode(),
            f"value {i}".encode(),
            [("block_hash", f"0x{i // 4:02x}".encode())],
        )
        for i in range(400)
    ]
    plain: list[OutMessage] = [(f"{prefix}.head.blocks", b"revert", b"undo", [("block_hash", b"0xff")], 0)]
    segments: list[Segment] = [
        (plain, None),
        *(
            (encoded, {kind: f"{prefix}.{flavour}.{kind}" for kind in kinds})
            for flavour in ("head", "confirmed")
        ),
    ]
    producer = KafkaProducer(config(broker))
    try:
        await (await producer.start_send_segments(segments))()
    finally:
        await producer.close()
    for flavour in ("head", "confirmed"):
        for kind in kinds:
            topic = f"{prefix}.{flavour}.{kind}"
            want = {(key, value, tuple(headers)) for k, key, value, headers in encoded if k == kind}
            extra = {(b"revert", b"undo", (("block_hash", b"0xff"),))} if topic == plain[0][0] else set()
            got = read_back(broker, topic, len(want) + len(extra))
            assert {(key, value, tuple(headers or ())) for key, value, headers, _ in got} == want | extra
            if extra:  # the revert went first on its partition
                first = next(g for g in got if g[3] == 0)
                assert first[0] == b"revert"


async def test_messages_outlive_a_send_nobody_waits_for(path: str, broker: KafkaDev) -> None:
    """``sinks._rdkafka`` does not copy keys and values: librdkafka points into the bytes until each
    message is reported. A send whose waiter is dropped while the broker is frozen, its list emptied and
    its bytes unreferenced (then collected), still delivers exactly what was given once the broker answers."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(config(broker, **{"request.timeout.ms": 1000}))
    try:
        await producer.send(messages(f"{topic}-warm", 1))  # connected; the topic itself not known yet,
        broker.pause()  # so its messages wait unserialized for its metadata, pointing into their bytes
        try:
            batch = messages(topic, 2000)
            want = {(bytes(bytearray(m[1])), bytes(bytearray(m[2]))) for m in batch}  # copies
            wait = await producer.start_send(batch)
            del wait
            batch.clear()
            gc.collect()
            garbage = [bytes(bytearray(b"x" * 800)) for _ in range(20_000)]  # reuses whatever was freed
            await asyncio.sleep(2)  # past request.timeout.ms: what was sent is sent again from the bytes
            del garbage
        finally:
            broker.resume()
        await producer.send(messages(f"{topic}-after", 10))  # serves the dropped send's reports too
    finally:
        await producer.close()
    got = read_back(broker, topic, 4000)
    assert {(key, value) for key, value, _, _ in got} == want


class _EmptyingKind(str):
    """A kind whose first hash (the topic lookup while its message is produced) empties the message
    list and fills the freed memory: produce must point only into messages it holds itself."""

    __slots__ = ("victim",)
    victim: list[Any]

    def __hash__(self) -> int:
        if self.victim:
            self.victim.clear()
            _ = [bytes(bytearray(b"z" * 700)) for _ in range(5_000)]  # reuses whatever was freed
        return str.__hash__(self)


async def test_a_list_emptied_while_it_is_produced_delivers_what_it_held(broker: KafkaDev) -> None:
    """``sinks._rdkafka`` collects a chunk's pointers with the GIL held, calling back into Python (a kind's
    hash, a partition's ``__index__``): one emptying the list mid-chunk must not leave librdkafka pointing
    into freed messages. Every message of the chunk is delivered exactly as given."""
    if not kafka_producer.NATIVE:
        pytest.fail("sinks._rdkafka is not built or librdkafka did not load (make install builds it)")
    topic = f"t-{uuid.uuid4().hex[:8]}"
    trigger = _EmptyingKind("blocks")
    records: list[Any] = [
        (
            trigger if i == 150 else "blocks",
            f"key-{i}".encode(),
            f"{i:>600}".encode(),
            [("n", str(i).encode())],
        )
        for i in range(300)
    ]
    trigger.victim = records
    want = {(bytes(bytearray(r[1])), bytes(bytearray(r[2]))) for r in records}  # copies
    producer = KafkaProducer(config(broker))
    try:
        await (await producer.start_send_segments([(records, {"blocks": topic})]))()
    finally:
        await producer.close()
    got = read_back(broker, topic, 300)
    assert {(key, value) for key, value, _, _ in got} == want


async def test_delivery_reports_of_errors_only_cannot_hang_a_send(path: str, broker: KafkaDev) -> None:
    """A send waits for a report of every message: with ``delivery.report.only.error`` (a librdkafka
    setting a user can pass through) delivered messages would never be reported and the send would wait
    forever. It is overridden (with a warning): the send returns once all are delivered."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    batch = messages(topic, 50)
    producer = KafkaProducer(config(broker, **{"delivery.report.only.error": "true"}))
    try:
        await asyncio.wait_for(producer.send(batch), 30)
    finally:
        await producer.close()
    assert {key for key, _, _, _ in read_back(broker, topic, 50)} == {m[1] for m in batch}


def _run(code: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]  # the checkout: `sinks` importable
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=root
    )


def test_without_the_extension_it_produces_through_confluent_kafka(broker: KafkaDev) -> None:
    """``sinks._rdkafka`` not built (its import fails): ``NATIVE`` is False and a send goes through
    confluent-kafka, every message delivered."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    done = _run(
        "import asyncio, sys\n"
        "sys.modules['sinks._rdkafka'] = None  # import fails as when not built\n"
        "import sinks.kafka_producer as k\n"
        "assert not k.NATIVE\n"
        f"p = k.KafkaProducer({{'bootstrap.servers': {broker.bootstrap!r}}})\n"
        "async def main():\n"
        f"    await p.send([({topic!r}, b'k%d' % i, b'v%d' % i, [], -1) for i in range(3)])\n"
        "    await p.close()\n"
        "asyncio.run(main())\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert {(key, value) for key, value, _, _ in read_back(broker, topic, 3)} == {
        (b"k%d" % i, b"v%d" % i) for i in range(3)
    }


def test_a_library_without_a_function_is_refused_before_use() -> None:
    """A library that lacks one of librdkafka's functions (here libc): ``load`` raises ``ImportError``
    naming it, which ``sinks.kafka_producer`` takes as "produce through confluent-kafka", and no
    producer can be made from the half-filled table."""
    libc = ctypes.util.find_library("c")
    assert libc is not None
    done = _run(
        "from sinks import _rdkafka\n"
        "try:\n"
        f"    _rdkafka.load({libc!r})\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "try:\n"
        "    _rdkafka.Producer([])\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "librdkafka has no rd_kafka_conf_new",
        "librdkafka is not loaded (sinks._rdkafka.load)",
    ]
