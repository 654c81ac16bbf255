"""Bybit v5 ``seq`` and ``cts`` kept on every book record (``engine_sequence``, ``engine_timestamp``).

Data: the recorded v2 ``orderBookL2_25`` frames (``bybit/BYBIT.ws.26.0``, 2021-04-17) in v5 envelopes as the
local server builds them (constructed: ``u``; ``seq`` is v2's ``cross_seq``, ``cts`` its ``timestamp_e6`` in
ms). Truth: ``cross_seq`` and ``timestamp_e6`` read straight from the recording's JSON.
"""

from __future__ import annotations

import json

import pytest

from cex.exchanges.bybit import Bybit
from cex.sync import BookSync, _deltas, _deltas_python
from devnet.exchanges import recording
from devnet.exchanges.bybit import BybitServer
from records import from_dict, to_json
from records.cex import BookDelta, BookSnapshot

pytestmark = pytest.mark.unit


def recorded_book_frames() -> list[dict[str, object]]:
    out = []
    for payload in recording.received(recording.FIXTURES / "bybit" / "BYBIT.ws.26.0"):
        msg = json.loads(payload)
        if str(msg.get("topic", "")).startswith("orderBookL2_25.BTCUSD"):
            out.append(msg)
    return out


def test_every_book_record_carries_the_recorded_cross_seq_and_time() -> None:
    exchange = Bybit()
    exchange.to_exchange_symbol("BTC-USD-PERP")
    sync = BookSync("bybit", "BTC-USD-PERP", "prev", depth=50)
    frames = recorded_book_frames()
    assert len(frames) > 400
    checked = 0
    for u, msg in enumerate(frames, start=1):
        data = msg["data"]
        if msg["type"] == "snapshot":
            bids = [(str(r["price"]), str(r["size"])) for r in data if r["side"] == "Buy"]  # type: ignore[union-attr,index]
            asks = [(str(r["price"]), str(r["size"])) for r in data if r["side"] == "Sell"]  # type: ignore[union-attr,index]
        else:
            rows = {k: data[k] for k in ("delete", "update", "insert")}  # type: ignore[index]
            bids = [(str(r["price"]), "0" if k == "delete" else str(r["size"]))
                    for k, rs in rows.items() for r in rs if r["side"] == "Buy"]  # fmt: skip
            asks = [(str(r["price"]), "0" if k == "delete" else str(r["size"]))
                    for k, rs in rows.items() for r in rs if r["side"] == "Sell"]  # fmt: skip
        cross_seq, time_ms = msg["cross_seq"], int(msg["timestamp_e6"]) // 1000  # type: ignore[call-overload]
        kind = "snapshot" if msg["type"] == "snapshot" else "delta"
        frame = BybitServer._book_frame(kind, "BTCUSD", bids, asks, u, cross_seq, time_ms)  # type: ignore[arg-type]
        (book,) = exchange.parse(frame, 1).books
        for record in sync.on_message(book):
            assert isinstance(record, BookDelta | BookSnapshot)
            assert (record.engine_sequence, record.engine_timestamp) == (cross_seq, time_ms)
            # and through the records' JSON (Kafka, the API)
            assert from_dict(json.loads(to_json(record))) == record
            checked += 1
    assert sync.book.valid and sync.counters.resyncs == 0
    assert checked > 900


def test_other_exchanges_records_have_no_engine_fields() -> None:
    from decimal import Decimal

    levels = [(Decimal("1.5"), Decimal("2"))]
    for maker in (_deltas, _deltas_python):  # the C maker (when built) and the Python one agree
        (delta,) = maker("okx", "BTC-USDT", levels, [], 7, 8, 9)
        assert (delta.engine_sequence, delta.engine_timestamp) == (None, None)
        assert delta == BookDelta("okx", "BTC-USDT", "bid", Decimal("1.5"), Decimal("2"), None, 7, 8, 9)
