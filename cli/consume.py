"""``dexnode consume TOPIC``: a topic as JSON lines; ``--apply-reverts``: what a consumer keeps after reverts.

Without ``--apply-reverts`` every message is printed as it arrives (records and ``revert`` messages
alike), until interrupted (or ``--until-end``). With it, the topic is read to its end and the records
that survive are printed, in chain order: the latest record per key, minus every key whose record a
``Revert`` with the same block hash undid. That is the rule every ``head.*`` consumer applies
(``NetState``); on ``confirmed.*`` it only removes duplicates.

Also ``dexnode kafka-dev``: librdkafka's mock cluster in the foreground, for trying this out.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import orjson
import typer

from cli.common import ChainOpt, KafkaBootstrapOpt, KafkaOptionOpt, KafkaTopicPrefixOpt, settings_of
from core.errors import ConfigError
from sinks.kafka_read import NetState, Received, read_topic, resolve_topic


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
    bootstrap_servers: KafkaBootstrapOpt = None,
    topic_prefix: KafkaTopicPrefixOpt = None,
    chain: ChainOpt = None,
    kafka_option: KafkaOptionOpt = None,
) -> None:
    """Print a Kafka topic as JSON lines (one record per line)."""
    from sinks.kafka import KafkaOptions

    settings = settings_of(
        ctx,
        kafka_bootstrap_servers=bootstrap_servers,
        kafka_topic_prefix=topic_prefix,
        chain=chain,
        kafka_option=kafka_option,
    )
    options = KafkaOptions.from_settings(settings)
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
