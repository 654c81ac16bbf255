"""The one Kafka producer of a node: produce a list of messages and wait until every one is delivered.

``send(messages)`` returns only when the broker acknowledged every message (``acks=all``, idempotent
producer: no duplicates or reordering from librdkafka's own retries); any failed delivery raises
``KafkaUnavailable`` (a ``RetryableError``), so the caller writes the batch again. A message that
timed out may still have reached the broker (it was in flight when the broker stopped answering), so
a retry can duplicate messages: same key, same content. Consumers dedupe by key.

librdkafka calls are blocking; the flush waits in a worker thread in short slices, so cancelling
the command (SIGTERM) is not held up by an unreachable broker.

Two paths to the same librdkafka (the one confluent-kafka's wheel bundles): ``sinks._rdkafka`` (C,
optional, built by ``make install``) produces a list of messages per call, with the GIL released while
librdkafka queues them (it points into the values, which the send keeps until they are reported), and
counts each send's delivery reports in C (a failure is kept with its error, so nothing is lost
silently); without it, confluent-kafka's ``Producer``, one Python call and one delivery report callback
per message. Same settings, same guarantees; ``bench/kafka.py`` measures both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.errors import FatalError, RetryableError
from sinks.kafka_keys import Headers, OutMessage, Segment

try:
    from sinks import _rdkafka
except ImportError:  # not built: confluent-kafka's Producer does it all
    _rdkafka = None  # type: ignore[assignment]

log = logging.getLogger("dexnode.sink.kafka")

# settings an admin client or consumer shares with the producer (connection and security)
_SHARED_PREFIXES = ("bootstrap.", "security.", "sasl.", "ssl.", "client.", "socket.", "broker.", "api.")

_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}


async def _nothing_to_wait_for() -> None:
    return None


class KafkaUnavailable(RetryableError, ConnectionError):
    """A delivery failed or timed out. Retryable; also a ``ConnectionError``, so a retry loop that
    waits out lost connections (``indexer.pipeline.pipeline.write_with_retry``) waits this one out too."""


def shared_config(config: dict[str, Any]) -> dict[str, Any]:
    """The connection and security part of a producer config, for an admin client or a consumer."""
    return {k: v for k, v in config.items() if k.startswith(_SHARED_PREFIXES) or k == "logger"}


class _Deliveries:
    """Delivery reports of one ``send`` through confluent-kafka (one callback per message)."""

    __slots__ = ("delivered", "failed", "first_error")

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error: KafkaError | None = None

    @property
    def reported(self) -> int:
        return self.delivered + self.failed

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = err


class _Tracker(Protocol):
    """A send's delivery reports, as counted by the client that produced it."""

    @property
    def reported(self) -> int: ...

    @property
    def failed(self) -> int: ...


class _Client(Protocol):
    """One librdkafka producer: ``_Confluent`` (confluent-kafka's) or ``_Native`` (``sinks._rdkafka``)."""

    def tracker(self) -> _Tracker: ...

    def produce(self, segment: Segment, start: int, tracker: Any) -> int:
        """Produce the segment's messages from ``start`` in order: the index of the first one not
        produced (all of them, or less when the local queue is full); raises ``KafkaException``."""
        ...

    def poll(self, timeout: float) -> None: ...

    def flush(self, timeout: float) -> int:
        """Serve delivery reports until none is outstanding or ``timeout``: how many are left."""
        ...

    def first_error(self, tracker: Any) -> KafkaError | None: ...

    def close(self) -> None: ...


class _Confluent:
    """Through ``confluent_kafka.Producer``: a Python call and a delivery report callback per message."""

    def __init__(self, config: dict[str, Any], on_error: Callable[[KafkaError], None]) -> None:
        self.producer = Producer({**config, "error_cb": on_error})

    def tracker(self) -> _Deliveries:
        return _Deliveries()

    def produce(self, segment: Segment, start: int, tracker: Any) -> int:
        produce = self.producer.produce
        last: object = None
        given: Headers | dict[str, str | bytes | None] = []
        messages, topics = segment
        for at in range(start, len(messages)):
            if topics is None:
                topic, key, value, headers, partition = messages[at]
            else:
                kind, key, value, headers = messages[at]
                topic, partition = topics[kind], -1
            if headers is not last:  # one list per block (kafka_keys.encode_batch): converted once
                # confluent-kafka turns a dict into librdkafka headers faster than a list of pairs
                # (the same header on the wire): 7% less CPU in this loop, 348k messages measured
                last, given = headers, dict(headers) if len(headers) == 1 else headers
            try:
                # positional (topic, value, key, partition, on_delivery, callback, timestamp, headers):
                # 12% less CPU per call than the keyword, measured
                produce(topic, value, key, partition, tracker, None, 0, given)
            except BufferError:
                return at
        return len(messages)

    def poll(self, timeout: float) -> None:
        self.producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)

    def first_error(self, tracker: Any) -> KafkaError | None:
        assert isinstance(tracker, _Deliveries)
        return tracker.first_error

    def close(self) -> None:
        return None  # destroyed with its last reference


# librdkafka's syslog levels -> logging's, as confluent-kafka maps them
_LOG_LEVELS = (
    logging.CRITICAL, logging.CRITICAL, logging.CRITICAL, logging.ERROR,
    logging.WARNING, logging.INFO, logging.INFO, logging.DEBUG,
)  # fmt: skip


def _setting(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Native:
    """Through ``sinks._rdkafka``: librdkafka called from C, a list of messages per call; delivery
    reports counted in C without the GIL; errors and logs handed over after each poll or flush."""

    def __init__(self, config: dict[str, Any], on_error: Callable[[KafkaError], None]) -> None:
        assert _rdkafka is not None
        settings = dict(config)
        logger = settings.pop("logger", None)
        self.logger: logging.Logger = logger if isinstance(logger, logging.Logger) else log
        self.on_error = on_error
        try:
            self.producer = _rdkafka.Producer([(name, _setting(v)) for name, v in settings.items()])
        except ValueError as exc:  # a bad setting, as confluent-kafka reports it
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, str(exc))) from None

    def tracker(self) -> _rdkafka.Tracker:
        assert _rdkafka is not None
        return _rdkafka.Tracker()

    def produce(self, segment: Segment, start: int, tracker: Any) -> int:
        assert _rdkafka is not None
        try:
            return int(self.producer.produce(segment[0], start, tracker, segment[1]))
        except _rdkafka.ProduceError as exc:
            code, text = exc.args
            raise KafkaException(KafkaError(code, text)) from None

    def poll(self, timeout: float) -> None:
        self.producer.poll(timeout)
        self._events()

    def flush(self, timeout: float) -> int:
        try:
            left = int(self.producer.flush(timeout))
        except RuntimeError:  # closed (shutdown) with reports a send still waits for, lost with the handle
            raise KafkaUnavailable(
                "the Kafka producer was closed before every message was reported"
            ) from None
        self._events()
        return left

    def _events(self) -> None:
        for kind, code, raw in self.producer.events():
            text = raw.decode(errors="replace")
            if kind == "log":
                self.logger.log(_LOG_LEVELS[min(max(code, 0), 7)], "%s", text)
            elif kind == "error":
                fatal = code == KafkaError._FATAL
                found = self.producer.fatal_error() if fatal else None
                if found is not None:
                    code, text = found
                self.on_error(KafkaError(code, text, fatal=fatal))
            else:
                log.warning("%d librdkafka errors and log lines dropped (too many at once)", code)

    def first_error(self, tracker: Any) -> KafkaError | None:
        found = tracker.first_error
        if found is None:
            return None
        code, text = found
        return KafkaError(code, text, fatal=code == KafkaError._FATAL)

    def close(self) -> None:
        with contextlib.suppress(
            RuntimeError
        ):  # flushing in another thread: destroyed with its last reference
            self.producer.close()


def _load_native() -> bool:
    """Whether ``sinks._rdkafka`` is built and the librdkafka of confluent-kafka's wheel opens."""
    if _rdkafka is None:
        return False
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        log.debug("no librdkafka in %s: producing through confluent-kafka", libs)
        return False
    try:
        _rdkafka.load(str(found[0]))
    except ImportError as exc:
        log.warning("%s: producing through confluent-kafka", exc)
        return False
    return True


# produce through sinks._rdkafka when it is built (tests set it False to check the other path)
NATIVE = _load_native()


# a send waits for a delivery report of each of its messages: with this set, delivered ones are never
# reported and the send would wait forever (a user can pass any librdkafka setting through)
_ONLY_ERROR_REPORTS = "delivery.report.only.error"


class KafkaProducer:
    def __init__(self, config: dict[str, Any]) -> None:
        if _ONLY_ERROR_REPORTS in config:
            if _setting(config[_ONLY_ERROR_REPORTS]).lower() not in ("false", "0"):
                log.warning(
                    "%s=%s ignored: a send waits for the report of every message",
                    _ONLY_ERROR_REPORTS,
                    config[_ONLY_ERROR_REPORTS],
                )
            config = {**config, _ONLY_ERROR_REPORTS: False}
        self.config = config
        self._client: _Client | None = None
        self._fatal: KafkaError | None = None
        self._thread: ThreadPoolExecutor | None = None  # start_send_later's, made at its first use

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
            log.error("Kafka producer fatal error (a new producer is created): %s", err)
        else:
            log.debug("Kafka client: %s", err)

    def _current(self) -> _Client:
        if self._client is not None and self._fatal is None:
            return self._client
        if self._client is not None:
            self._client.flush(0)
        self._fatal = None
        self._client = (
            _Native(self.config, self._on_error) if NATIVE else _Confluent(self.config, self._on_error)
        )
        return self._client

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """Produce ``messages`` in order and wait for every delivery report."""
        await (await self.start_send(messages))()

    async def start_send(self, messages: Sequence[OutMessage]) -> Callable[[], Awaitable[None]]:
        """Produce ``messages`` in order now; the returned waiter waits for their delivery reports
        (and raises if any failed), so the caller can do other work while they travel."""
        if not messages:
            return _nothing_to_wait_for
        return await self.start_send_segments(
            [(messages if isinstance(messages, list) else list(messages), None)]
        )

    async def start_send_segments(self, segments: list[Segment]) -> Callable[[], Awaitable[None]]:
        """``start_send`` for messages given as segments (``sinks.kafka_keys.Segment``), in order."""
        client = self._current()
        tracker = client.tracker()
        for segment in segments:
            at = self._produce(client, segment, 0, tracker)
            while at < len(segment[0]):  # the local queue is full
                await asyncio.to_thread(client.poll, 0.1)  # let deliveries drain it
                at = self._produce(client, segment, at, tracker)
        return self._waiter(client, tracker, sum(len(segment[0]) for segment in segments))

    def start_send_later(self, build: Callable[[], list[Segment]]) -> Callable[[], Awaitable[None]]:
        """``build`` the messages (as segments) and produce them in order in the producer's own thread,
        while the event loop goes on (a big batch's encoding and producing overlap its Postgres write);
        the returned waiter waits for that, then for every delivery report (and raises if any failed).

        One thread, so sends started this way are produced one after the other, in the order they
        were started."""
        client = self._current()
        tracker = client.tracker()

        def produce_all() -> int:
            segments = build()
            for segment in segments:
                at = self._produce(client, segment, 0, tracker)
                while at < len(segment[0]):
                    client.poll(0.1)  # the local queue is full: let deliveries drain it
                    at = self._produce(client, segment, at, tracker)
            return sum(len(segment[0]) for segment in segments)

        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="dexnode-kafka-produce")
        produced = asyncio.get_running_loop().run_in_executor(self._thread, produce_all)

        async def wait() -> None:
            await self._waiter(client, tracker, await produced)()

        return wait

    def _produce(self, client: _Client, segment: Segment, start: int, tracker: Any) -> int:
        """Produce from ``segment``'s message ``start`` until its end or the local queue is full: the
        index of the first message not produced, for the caller to go on from once deliveries drained it."""
        try:
            return client.produce(segment, start, tracker)
        except KafkaException as exc:
            raise self._error(exc.args[0]) from None

    def _waiter(self, client: _Client, tracker: _Tracker, total: int) -> Callable[[], Awaitable[None]]:
        async def wait() -> None:
            # wait for this send's reports only: flush sends at once (poll would wait for linger.ms)
            # and returns when the queue is empty; in short slices, as concurrent sends keep it busy
            while tracker.reported < total:
                await asyncio.to_thread(client.flush, 0.05)
            if tracker.failed:
                error = client.first_error(tracker)
                assert error is not None
                raise self._error(error, failed=tracker.failed, total=total)

        return wait

    def _error(self, err: KafkaError, *, failed: int = 1, total: int = 1) -> Exception:
        what = f"{failed} of {total} Kafka messages not delivered: {err.str()}"
        if err.fatal():
            self._fatal = err
        if err.code() in _PERMANENT:
            return FatalError(what)
        return KafkaUnavailable(what)

    def ensure_topics(
        self, topics: dict[str, int], sentinel: str, *, timeout: float = 10.0, create_timeout: float = 2.0
    ) -> None:
        """Create missing topics (name -> partitions, -1 = broker default); blocking, best effort.

        Only while ``sentinel`` does not exist: once it does, the topics were created at an earlier
        start or the broker creates them itself, and a start costs no admin round trip.

        A broker that cannot create topics through the admin API (librdkafka's mock cluster, or a
        managed cluster without the ACL) is not an error: topics are then auto-created on first
        produce, or must be created by the operator; a missing one shows as failed deliveries."""
        admin = AdminClient(shared_config(self.config))
        try:
            existing = set(admin.list_topics(timeout=timeout).topics)
        except KafkaException as exc:
            raise KafkaUnavailable(f"Kafka broker unreachable: {exc.args[0].str()}") from None
        missing = [
            NewTopic(name, num_partitions=parts, replication_factor=-1)
            for name, parts in topics.items()
            if name not in existing
        ]
        if not missing or sentinel in existing:
            return
        futures = admin.create_topics(
            missing, request_timeout=create_timeout, operation_timeout=create_timeout
        )
        unavailable = []
        for name, future in futures.items():
            try:
                future.result(timeout=create_timeout + 1)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    unavailable.append(f"{name}: {err.str()}")
            except Exception as exc:  # concurrent.futures.TimeoutError and the like
                unavailable.append(f"{name}: {exc!r}")
        if unavailable:
            log.info(
                "topic creation not available on this broker (%s); relying on auto-creation at first produce",
                unavailable[0],
            )

    async def close(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            await asyncio.to_thread(self._thread.shutdown)  # what it was producing is queued first
            self._thread = None
        client = self._client
        if client is None:
            return
        left = await asyncio.to_thread(client.flush, timeout)
        if left:
            log.warning("%d Kafka messages undelivered at shutdown (re-produced on restart)", left)
        self._client = None
        await asyncio.to_thread(client.close)
