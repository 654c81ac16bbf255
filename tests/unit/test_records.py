"""Records: JSON round trips (property-based, every record type) and the JSON form's exactness rules."""

from __future__ import annotations

import dataclasses
import types
import typing
from decimal import Decimal
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import records
from records.codec import Record, _U256Marker, to_dict_reference

pytestmark = pytest.mark.unit

MAX_U256 = 2**256 - 1
hexes = st.binary(min_size=0, max_size=40).map(lambda b: "0x" + b.hex())
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None)


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    origin = get_origin(hint)
    if origin is Annotated:
        base, *extras = get_args(hint)
        if any(isinstance(e, _U256Marker) for e in extras):
            # bias towards the top of the range, where float-based JSON would break
            return st.one_of(st.integers(0, MAX_U256), st.integers(2**255, MAX_U256))
        return strategy_for(base)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return st.none() | strategy_for(args[0])
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
        return st.tuples(*(strategy_for(a) for a in args))
    if isinstance(hint, type) and issubclass(hint, Record):
        return record_strategy(hint)
    if hint is int:
        return st.integers(-(2**63), 2**63 - 1)
    if hint is str:
        return st.one_of(hexes, st.text(max_size=12))
    if hint is bool:
        return st.booleans()
    if hint is Decimal:
        return decimals
    raise TypeError(hint)


def record_strategy(cls: type[Record]) -> st.SearchStrategy[Record]:
    hints = get_type_hints(cls, include_extras=True)
    return st.builds(cls, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)})


ALL_TYPES = sorted(records.record_types().items())


@pytest.mark.parametrize(("type_name", "cls"), ALL_TYPES, ids=[t for t, _ in ALL_TYPES])
def test_every_record_round_trips_through_json(type_name: str, cls: type[Record]) -> None:
    @settings(max_examples=60, deadline=None)
    @given(record_strategy(cls))
    def check(record: Record) -> None:
        data = records.to_json(record)
        doc = orjson.loads(data)
        assert doc["type"] == type_name
        assert doc["version"] == cls.VERSION
        assert set(doc["data"]) == {f.name for f in dataclasses.fields(cls)}
        # the generated per-class encoder equals the generic per-field codec, byte for byte
        assert orjson.dumps(to_dict_reference(record)) == data
        back = records.from_json(data)
        assert back == record
        # Decimal equality ignores the exponent; the JSON form must keep it too
        assert records.to_json(back) == data

    check()


def test_registry_covers_every_record_in_the_design() -> None:
    expected = {
        "block", "transaction", "log", "token_transfer", "token", "pool", "dex_trade", "dex_liquidity",
        "reorg", "revert", "trade", "book_delta", "book_snapshot", "ticker", "candle", "funding_rate",
        "open_interest",
    }  # fmt: skip
    assert set(records.record_types()) == expected


def test_big_integers_are_decimal_strings_at_and_above_2_255() -> None:
    for value in (2**255, 2**255 + 1, MAX_U256):
        t = records.TokenTransfer(
            token_address="0x" + "aa" * 20,
            from_address="0x" + "00" * 20,
            to_address="0x" + "bb" * 20,
            value=value,
            token_id=value - 1,
            standard="erc1155",
            operator="0x" + "cc" * 20,
            block_number=21925176,
            block_hash="0x" + "11" * 32,
            transaction_hash="0x" + "22" * 32,
            transaction_index=3,
            log_index=7,
            batch_index=1,
        )
        doc = orjson.loads(records.to_json(t))["data"]
        assert doc["value"] == str(value)
        assert doc["token_id"] == str(value - 1)
        assert doc["block_number"] == 21925176  # small ints stay JSON numbers
        assert records.from_json(records.to_json(t)).value == value


def test_decimal_keeps_its_exact_text() -> None:
    trade = records.Trade(
        exchange="coinbase",
        symbol="BTC-USD",
        price=Decimal("43210.10"),
        size=Decimal("0.000000000000000001"),
        taker_side="buy",
        trade_id="1",
        maker_order_id=None,
        taker_order_id=None,
        event_timestamp=1704412800123,
        atom_timestamp=1704412800123456,
    )
    doc = orjson.loads(records.to_json(trade))["data"]
    assert doc["price"] == "43210.10"
    assert doc["size"] == "0.000000000000000001"  # fixed point, never exponent notation
    big = records.to_dict(dataclasses.replace(trade, price=Decimal("1.000000000000000000000000000E+9")))
    assert big["data"]["price"] == "1000000000.000000000000000000"  # what Postgres NUMERIC gives back


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"type": "nope", "version": 1}', "unknown record type"),
        (b'{"type": "open_interest", "version": 99}', "unsupported version"),
        (b'{"type": "open_interest", "version": 1, "data": {"exchange": "x"}}', "missing field"),
        (b'{"type": "open_interest", "version": 1}', "expected an object"),
        (
            b'{"type":"open_interest","version":1,"data":{"exchange":"x","symbol":"y","open_interest":1.5,'
            b'"event_timestamp":null,"atom_timestamp":1}}',
            "expected a decimal string",
        ),
    ],
)
def test_bad_json_gives_a_clear_error(payload: bytes, message: str) -> None:
    with pytest.raises(records.RecordDecodeError, match=message):
        records.from_json(payload)


def test_records_are_immutable() -> None:
    oi = records.OpenInterest(
        exchange="bybit", symbol="BTCUSDT", open_interest=Decimal(5), event_timestamp=None, atom_timestamp=1
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        oi.exchange = "x"  # type: ignore[misc]
