"""Per-pool trading volume from dexnode's ``head.dex_trades`` topic, exact across reorgs.

    python examples/pool_volume.py --bootstrap-servers 127.0.0.1:9092 [--topic ethereum.head.dex_trades]
                                   [--until-end] [--every 10]

``head.*`` topics carry records as soon as a block is indexed, so a reorg can take them back. The
node then sends, on the same topic and with the same key (so in the same partition, after the
trade), a ``revert`` message naming the orphaned block's hash. Two rules make a consumer exact:

1. Count a trade once per key (``block_hash:log_index``). After a node crash the same trade can
   arrive twice (same key, same content): the second is a duplicate, not a second trade.
2. On a ``revert``, subtract the trade with that key if the one counted comes from the reverted
   block (``data.block_hash``); a revert of something never counted is a no-op.

Amounts are the raw integers (``amount_bought_raw``, ``amount_sold_raw``: decimal strings, exact at
any size); a pool's volume in a token is the sum of that token's amounts over its trades, both sides.

This example keeps its state in memory and reads the topic from the beginning at each start. A
consumer that commits offsets must store its state with them (same transaction, or a snapshot at
the committed offsets), or it would count a trade twice or forget one after a restart. Consumers
that only want final data read ``confirmed.dex_trades`` instead: never reverted, later by
``DEXNODE_CONFIRMATIONS`` blocks.
"""

from __future__ import annotations

import argparse
import json
import signal
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


@dataclass(frozen=True)
class CountedTrade:
    block_hash: str
    pool: str
    legs: tuple[tuple[str, int], ...]  # (token, raw amount): bought and sold


class PoolVolumes:
    """The consumer's state: the trades counted, by key, and their sum per pool and token."""

    def __init__(self) -> None:
        self.trades: dict[str, CountedTrade] = {}
        self.volume: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.duplicates = 0
        self.reverted = 0

    def on_message(self, key: str, value: bytes) -> None:
        message = json.loads(value)
        data = message["data"]
        if message["type"] == "revert":
            counted = self.trades.get(data["key"])
            if counted is not None and counted.block_hash == data["block_hash"]:
                self._add(counted, -1)
                del self.trades[data["key"]]
                self.reverted += 1
            return
        if message["type"] != "dex_trade":
            return
        if key in self.trades:
            self.duplicates += 1
            return
        trade = CountedTrade(
            block_hash=data["block_hash"],
            pool=data["pool_address"],
            legs=(
                (data["token_bought_address"], int(data["amount_bought_raw"])),
                (data["token_sold_address"], int(data["amount_sold_raw"])),
            ),
        )
        self.trades[key] = trade
        self._add(trade, +1)

    def _add(self, trade: CountedTrade, sign: int) -> None:
        pool = self.volume[trade.pool]
        for token, amount in trade.legs:
            pool[token] += sign * amount
            if pool[token] == 0:
                del pool[token]
        if not pool:
            del self.volume[trade.pool]

    def snapshot(self) -> dict[str, Any]:
        return {
            "pools": {
                pool: {token: str(v) for token, v in sorted(tokens.items())}
                for pool, tokens in sorted(self.volume.items())
            },
            "trades": len(self.trades),
            "duplicates_ignored": self.duplicates,
            "reverted": self.reverted,
        }


def run(
    bootstrap: str, topic: str, *, until_end: bool, every: float, stop: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"pool-volume-{uuid.uuid4().hex[:8]}",  # assigned below, never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    state = PoolVolumes()
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise SystemExit(f"{topic}: {meta.error.str()}")
        partitions = set(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        idle = 0.0
        while not stop():
            msg = consumer.poll(0.5)
            if msg is None:
                idle += 0.5
                if every and idle >= every:
                    print(json.dumps(state.snapshot()), flush=True)
                    idle = 0.0
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                    if until_end and at_end >= partitions:
                        break
                continue
            at_end.discard(msg.partition() or 0)
            state.on_message((msg.key() or b"").decode(), msg.value() or b"{}")
    finally:
        consumer.close()
    return state.snapshot()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", default="ethereum.head.dex_trades")
    parser.add_argument("--until-end", action="store_true", help="stop at the end of every partition")
    parser.add_argument("--every", type=float, default=10.0, help="print the volumes when idle this long")
    args = parser.parse_args(argv)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        result = run(
            args.bootstrap_servers,
            args.topic,
            until_end=args.until_end,
            every=args.every,
            stop=lambda: bool(stopping),
        )
    except KeyboardInterrupt:
        return
    print(json.dumps(result))


if __name__ == "__main__":
    main()
