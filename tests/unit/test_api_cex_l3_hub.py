"""A late ``cex_book`` subscriber of an L3 book, joining between any two batches the hub fans out (a batch
can end between a snapshot and its orders): it must get exactly one snapshot, equal to the book at that
snapshot's sequence, then each of that snapshot's orders once, then every later delta (docs/api-websocket.md,
"cex_book rule for clients"). Truth: a small order-by-order market made here (plain dicts), by sequence;
the stream is what the feed publishes for it (snapshot, one delta per resting order at its sequence, then
one delta per change), with a periodic snapshot and a resync followed by a recovery snapshot."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import orjson
import pytest

from api.stream.cex import CexFanOut, CexSubscription
from api.stream.frames import Message, text_of
from api.stream.protocol import Subscribe, parse
from records.cex import BookDelta, BookSnapshot

pytestmark = pytest.mark.unit

Orders = dict[str, tuple[str, Decimal, Decimal]]
EX, SYM = "coinbase-l3", "BTC-USD"


class Resync:
    def __init__(self, sequence: int) -> None:
        self.exchange, self.symbol, self.reason, self.sequence = EX, SYM, "gap", sequence


def levels(orders: Orders) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    sums: dict[str, dict[Decimal, Decimal]] = {"bid": {}, "ask": {}}
    for side, price, size in orders.values():
        sums[side][price] = sums[side].get(price, Decimal(0)) + size
    return sorted(sums["bid"].items(), reverse=True), sorted(sums["ask"].items())


def snapshot_items(orders: Orders, seq: int) -> list[Any]:
    bids, asks = levels(orders)
    out: list[Any] = [BookSnapshot(EX, SYM, tuple(bids), tuple(asks), seq, None, seq)]
    out += [BookDelta(EX, SYM, s, p, q, i, seq, None, seq) for i, (s, p, q) in orders.items()]
    return out


def market() -> tuple[list[Any], dict[int, Orders]]:
    """The feed's stream and the market's orders after each sequence."""
    rng = random.Random(5)
    orders: Orders = {}
    history: dict[int, Orders] = {}
    stream: list[Any] = []
    for n in range(8):  # resting before the first snapshot
        orders[f"o{n}"] = (
            ("bid", "ask")[n % 2],
            Decimal(100 + (n % 2) * 2 + rng.randint(0, 2)),
            Decimal(n + 1),
        )
    seq = 10
    history[seq] = dict(orders)
    stream += snapshot_items(orders, seq)
    for step in range(30):
        seq += 1
        if step == 10:  # a periodic snapshot of the same book
            history[seq - 1] = dict(orders)
            seq -= 1
            stream += snapshot_items(orders, seq)
            continue
        if step == 20:  # a gap: resync, then a recovery snapshot at a later sequence
            stream.append(Resync(seq))
            seq += 3
            history[seq] = dict(orders)
            stream += snapshot_items(orders, seq)
            continue
        oid = f"o{rng.randint(0, 14)}"
        if oid in orders and rng.random() < 0.5:
            del orders[oid]
            stream.append(BookDelta(EX, SYM, "bid", Decimal(100), Decimal(0), oid, seq, None, seq))
        else:
            side = ("bid", "ask")[rng.randint(0, 1)]
            price, size = Decimal(100 + rng.randint(0, 4)), Decimal(rng.randint(1, 9)) / 4
            orders.pop(oid, None)
            orders[oid] = (side, price, size)
            stream.append(BookDelta(EX, SYM, side, price, size, oid, seq, None, seq))
        history[seq] = dict(orders)
    return stream, history


class Collect:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def offer(self, message: Message) -> None:
        self.messages.append(orjson.loads(text_of(message)))


def subscriber() -> CexSubscription:
    spec = parse(orjson.dumps({"op": "subscribe", "channel": "cex_book", "exchange": EX}), 1)
    assert isinstance(spec, Subscribe)
    return CexSubscription(spec, Collect())


def test_a_late_subscriber_between_any_two_batches_gets_one_whole_snapshot_then_every_delta() -> None:
    stream, history = market()
    final = history[max(history)]
    checked = 0
    for cut in range(1, len(stream)):
        hub = CexFanOut()
        hub.publish(stream[:cut])
        sub = subscriber()
        hub.add(sub)
        hub.publish(stream[cut:])
        assert isinstance(sub.client, Collect)
        got = [m for m in sub.client.messages if "type" in m]
        if got[0]["type"] == "resync":  # joined while the book was invalid: a snapshot comes later
            assert got[1]["type"] == "book_snapshot", cut
            got = got[1:]
        first = got[0]
        assert first["type"] == "book_snapshot", cut
        seq = first["data"]["sequence"]
        truth = history[seq]
        bids, asks = levels(truth)
        assert [(Decimal(p), Decimal(q)) for p, q in first["data"]["bids"]] == bids, cut
        assert [(Decimal(p), Decimal(q)) for p, q in first["data"]["asks"]] == asks, cut
        # then the snapshot's orders, each once, exactly the market's at that sequence
        at_seq = []
        for m in got[1:]:
            if m["type"] != "book_delta" or m["data"]["sequence"] != seq:
                break
            at_seq.append(m["data"])
        ids = [d["order_id"] for d in at_seq]
        assert len(ids) == len(set(ids)), ("an order sent twice", cut)
        assert {d["order_id"]: (d["side"], Decimal(d["price"]), Decimal(d["size"])) for d in at_seq} == truth
        # and the client's book, by the documented rule, ends as the market's
        orders: Orders = {}
        for m in got:
            if m["type"] == "book_snapshot":
                orders = {}
            elif m["type"] == "book_delta":
                d = m["data"]
                orders.pop(d["order_id"], None)
                if Decimal(d["size"]):
                    orders[d["order_id"]] = (d["side"], Decimal(d["price"]), Decimal(d["size"]))
        assert orders == final, cut
        checked += 1
    assert checked == len(stream) - 1


def test_deltas_of_a_book_the_hub_has_no_snapshot_of_are_not_sent() -> None:
    """A ``serve`` whose listener met a book mid-snapshot (stored snapshot, part of its orders: not valid
    from storage) gets the rest of the orders without a snapshot: a client could only apply them to
    nothing. The subscriber gets ``resync`` (the book is being rebuilt), then the next snapshot and after."""
    stream, _ = market()
    snap_at = next(i for i, item in enumerate(stream) if i and isinstance(item, BookSnapshot))
    hub = CexFanOut()
    sub = subscriber()
    hub.add(sub)
    late = subscriber()
    hub.publish(stream[3:5])  # two of the first snapshot's orders, its snapshot never seen
    hub.add(late)
    hub.publish(stream[5:])
    kind = {BookSnapshot: "book_snapshot", BookDelta: "book_delta", Resync: "resync"}
    expected = [(kind[type(x)], x.sequence, getattr(x, "order_id", None)) for x in stream[snap_at:]]
    for s, before in ((sub, []), (late, ["resync"])):
        assert isinstance(s.client, Collect)
        got = [
            (m["type"], m["data"]["sequence"], m["data"].get("order_id"))
            for m in s.client.messages
            if "type" in m
        ]
        assert [k for k, _, _ in got[: len(before)]] == before
        assert got[len(before) :] == expected
