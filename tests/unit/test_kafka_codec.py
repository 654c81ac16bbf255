"""The Kafka message value, ``records.to_json``: the C encoder (``records/_codec.c``) writes exactly the bytes
of the record's dict through orjson (``to_json_python``), whatever the field values, odd ones included.
``tests/unit/test_records.py`` checks every record kind on generated records against the generic codec."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from records import (
    Block,
    DexLiquidity,
    DexTrade,
    Log,
    Pool,
    Token,
    TokenTransfer,
    Transaction,
    kinds,
    to_json,
)
from records.batch import Batch
from records.chain import TokenAmount, Withdrawal
from records.codec import _NativeEncoder, to_dict_reference, to_json_python
from sinks import kafka_keys

pytestmark = pytest.mark.unit

LOG = Log(
    1, "0x" + "ab" * 32, "0x" + "cd" * 32, 0, 3, "0x" + "ef" * 20, "0x", "0x" + "12" * 32, None, None, None
)
TRADE = DexTrade(
    **{
        "block_number": 7,
        "block_time": 1_700_000_000,
        "block_hash": "0x" + "01" * 32,
        "transaction_hash": "0x" + "02" * 32,
        "transaction_index": 1,
        "log_index": 2,
        "protocol": "uniswap",
        "version": "2",
        "exchange": "uniswap-v2",
        "pool_address": "0x" + "03" * 20,
        "taker": "0x" + "04" * 20,
        "maker": None,
        "token_bought_address": "0x" + "05" * 20,
        "token_sold_address": "0x" + "06" * 20,
        "token_bought_symbol": "WETH",
        "token_sold_symbol": None,
        "amount_bought_raw": 2**200,
        "amount_sold_raw": 5,
        "amount_bought": Decimal("1.50"),
        "amount_sold": None,
        "price": Decimal("-0.000001"),
        "tx_from": "0x" + "07" * 20,
        "tx_to": None,
    }
)


BLOCK = Block(1, "0x" + "aa" * 32, "0x" + "bb" * 32, None, None, "0x" + "00" * 256, None, None, None, None,
              None, None, None, None, 30_000_000, 21_000, 7, 1_700_000_000, 1)  # fmt: skip
TRANSACTION = Transaction("0x" + "cc" * 32, 1, "0x" + "aa" * 32, 1_700_000_000, 0, 0, "0x" + "dd" * 20,
                          None, 10**20, 21_000, None, "0x", 2 * 10**10, 10**9, None, None, 2, 1, None, 21_000,
                          21_000, 10**9, None)  # fmt: skip


def same(record: Any) -> None:
    """The C encoder's bytes are the dict + orjson bytes, or both raise the same kind of error."""
    try:
        expected: bytes | type[Exception] = to_json_python(record)
    except Exception as exc:
        expected = type(exc)
    if isinstance(expected, bytes):
        assert to_json(record) == expected
        assert orjson.dumps(to_dict_reference(record)) == expected
    else:
        with pytest.raises(expected):
            to_json(record)


def test_the_c_encoder_is_built_and_used() -> None:
    assert _NativeEncoder is not None, "records/_codec.c is not built (make install)"
    to_json(LOG)
    from records.codec import _JSON

    assert type(_JSON[Log]) is _NativeEncoder


ODD_TEXT = [
    "",
    'a"b',
    "back\\slash",
    "tab\tnew\nline\r\x00\x1f\x7f",
    "caf\u00e9",
    "\U0001f600",
    "0x" + "f" * 300,  # past the 8-byte steps
    "1234567\\",  # the escape in the tail after the 8-byte steps
    '12345678"',
]


@pytest.mark.parametrize("text", ODD_TEXT)
def test_strings_escaped_as_orjson_does(text: str) -> None:
    same(dataclasses.replace(LOG, address=text, topic1=text))
    same(dataclasses.replace(TRADE, token_sold_symbol=text))


class Text(str):
    pass


class Number(int):
    pass


class Amount(Decimal):
    pass


ODD_INTS = [0, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1, True, False, Number(5)]


@pytest.mark.parametrize("value", ODD_INTS, ids=repr)
def test_ints_as_orjson_writes_them_or_refuses_them(value: int) -> None:
    same(dataclasses.replace(LOG, log_index=value))  # a plain int: a JSON number (orjson: 64 bits at most)
    same(dataclasses.replace(TRADE, amount_sold_raw=value))  # U256: its decimal text, any size


ODD_DECIMALS = [
    "0",
    "-0",
    "1.50",
    "1E+2",
    "1.0E-7",
    "0.0000001",
    "-12345678901234567890.123456789012345678",
    "NaN",
    "-Infinity",
    "1E-30",
]


@pytest.mark.parametrize("text", ODD_DECIMALS)
def test_decimals_as_format_f(text: str) -> None:
    same(dataclasses.replace(TRADE, amount_bought=Decimal(text), price=Amount(text)))


@given(st.decimals(allow_nan=True, allow_infinity=True, places=None))
@settings(max_examples=300, deadline=None)
def test_any_decimal_as_format_f(value: Decimal) -> None:
    same(dataclasses.replace(TRADE, amount_bought=value))


@pytest.mark.parametrize(
    "changes",
    [
        {"amount_bought_raw": None},  # not optional: the Python encoder writes "None"
        {"amount_sold_raw": "12"},  # a str where an int belongs
        {"token_bought_symbol": 1.5},  # a float: orjson writes it
        {"taker": Text("0xab")},  # a str subclass
        {"amount_bought": 3},  # an int where a Decimal belongs
        {"block_number": [1, 2]},  # a list: orjson writes it
        {"maker": object()},  # orjson refuses it
    ],
    ids=str,
)
def test_wrong_types_as_the_python_encoder(changes: dict[str, Any]) -> None:
    same(dataclasses.replace(TRADE, **changes))


def test_tuples_and_nested_records() -> None:
    liquidity = DexLiquidity(
        **{
            **{f.name: getattr(TRADE, f.name) for f in dataclasses.fields(DexTrade) if f.name in _LIQUIDITY},
            "event": "mint",
            "event_type": "add",
            "token0": "0x" + "05" * 20,
            "token1": "0x" + "06" * 20,
            "amount0_raw": 1,
            "amount1_raw": 2,
            "amount0": Decimal("0.1"),
            "amount1": None,
            "owner": None,
            "sender": None,
            "liquidity": 2**100,
            "tick_lower": -887220,
            "tick_upper": None,
        }
    )
    same(liquidity)
    same(dataclasses.replace(liquidity, amounts=(TokenAmount("0x" + "05" * 20, 2**255, Decimal("2.5")),)))
    same(dataclasses.replace(liquidity, amounts=[]))  # a list, not the tuple the hint says
    same(dataclasses.replace(TRANSACTION, blob_versioned_hashes=("0x01", "0x02")))
    same(dataclasses.replace(TRANSACTION, blob_versioned_hashes=()))
    same(dataclasses.replace(BLOCK, withdrawals=(Withdrawal(0, 1, "0x" + "aa" * 20, 2**70),)))
    same(dataclasses.replace(BLOCK, withdrawals=()))


_LIQUIDITY = {f.name for f in dataclasses.fields(DexLiquidity)}


def test_unset_slot_and_wrong_class() -> None:
    broken = object.__new__(Pool)
    with pytest.raises(AttributeError):
        to_json(broken)
    if _NativeEncoder is not None:
        from records.codec import _JSON

        to_json(TRADE)
        with pytest.raises(TypeError):
            _JSON[DexTrade](LOG)


def test_plain_records() -> None:
    transfer = TokenTransfer("0x" + "01" * 20, "0x" + "02" * 20, "0x" + "03" * 20, 2**256 - 1, None, "erc20",
                             None, 1, "0x" + "aa" * 32, "0x" + "cc" * 32, 0, 4)  # fmt: skip
    for record in (BLOCK, TRANSACTION, LOG, TRADE, transfer):
        same(record)


# ---- a batch's Kafka messages: encode_batch's C loop (records/_codec.c) against its Python loop


def python_loop(monkeypatch: pytest.MonkeyPatch, batch: Batch) -> list[Any] | type[Exception]:
    """``encode_batch`` through its Python loop (the C one switched off), or the error it raises."""
    with monkeypatch.context() as patch:
        patch.setattr(kafka_keys, "_NATIVE", tuple((None, key) for _, key in kafka_keys._NATIVE))
        try:
            return kafka_keys.encode_batch(batch)
        except Exception as exc:
            return type(exc)


def same_messages(monkeypatch: pytest.MonkeyPatch, batch: Batch) -> list[Any]:
    """The C loop's messages equal the Python loop's (key, value, headers, one headers list per block), or
    both raise the same kind of error."""
    expected = python_loop(monkeypatch, batch)
    if not isinstance(expected, list):
        with pytest.raises(expected):
            kafka_keys.encode_batch(batch)
        return []
    got = kafka_keys.encode_batch(batch)
    assert got == expected
    assert [m[3] is got[0][3] for m in got] == [m[3] is expected[0][3] for m in expected]
    return got


H = "0x" + "aa" * 32
TRANSFER = TokenTransfer("0x" + "01" * 20, "0x" + "02" * 20, "0x" + "03" * 20, 2**256 - 1, None, "erc20",
                         None, 1, H, "0x" + "cc" * 32, 0, 4, 2)  # fmt: skip
TOKEN = Token("0x" + "05" * 20, "WETH", "Wrapped Ether", 18, None)
POOL = Pool("0x" + "03" * 20, "uniswap", "2", "uniswap-v2", None, "0x" + "05" * 20, "0x" + "06" * 20, 3000,
            None, 1, H, None, None)  # fmt: skip
UNCREATED = dataclasses.replace(
    POOL, address="0x" + "09" * 20, created_block_number=None, created_block_hash=None
)


def every_kind(**changes: Any) -> Batch:
    """A batch with a record of every kind (two blocks, a pool no indexed block created, a token),
    ``changes`` applied to its log."""
    other = dataclasses.replace(BLOCK, number=2, hash="0x" + "bb" * 32)
    return Batch(
        "backfill",
        [BLOCK, other],
        {
            Transaction: [TRANSACTION, dataclasses.replace(TRANSACTION, block_hash=other.hash)],
            Log: [
                dataclasses.replace(LOG, **{"block_hash": H, **changes}),
                dataclasses.replace(LOG, block_hash=other.hash),
            ],
            TokenTransfer: [TRANSFER],
            Token: [TOKEN],
            Pool: [POOL, UNCREATED],
            DexTrade: [dataclasses.replace(TRADE, block_hash=H)],
            DexLiquidity: [],
        },
    )


def test_the_c_loop_is_built_and_gives_the_python_loops_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(native is not None for native, _ in kafka_keys._NATIVE), "records/_codec.c is not built"
    messages = same_messages(monkeypatch, every_kind())
    by_kind = {kind: (key, headers) for kind, key, _, headers in messages}
    # the independent truth: the registry's key fields joined by ":", the block the record belongs to
    assert by_kind["token_transfers"] == (f"{H}:4:2".encode(), [("block_hash", H.encode())])
    assert by_kind["tokens"][1] == [("block_hash", ("0x" + "bb" * 32).encode())]  # the batch's tip
    pools = [(key, headers) for kind, key, _, headers in messages if kind == "pools"]
    assert pools == [(POOL.address.encode(), [("block_hash", H.encode())]),
                     (UNCREATED.address.encode(), [("block_hash", ("0x" + "bb" * 32).encode())])]  # fmt: skip
    assert [m[2] for m in messages] == [to_json_python(r) for kind in kinds.BATCH_KINDS for r in
                                        every_kind().of(kind.record)]  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [
        {"log_index": 2**70},  # past 64 bits
        {"log_index": -3},
        {"log_index": True},  # an int subclass: format() writes "True", as the f-string
        {"log_index": None},
        {"log_index": Decimal("1.5")},
        {"block_hash": "0xcaf\u00e9"},  # non-ASCII: UTF-8
        {"block_hash": "\ud800"},  # a lone surrogate: both refuse to encode it
        {"block_hash": ""},  # empty: the batch's tip, as a missing hash
        {"block_hash": None},
        {"block_hash": 7},  # not a str: both fail (int has no encode)
        {"block_hash": ["unhashable"]},
    ],
)
def test_odd_keys_and_block_hashes_as_the_python_loop(
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any]
) -> None:
    same_messages(monkeypatch, every_kind(**changes))


def test_a_wrong_record_or_unset_slot_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # a record of another class among a kind's rows: the C loop refuses it (the Python loop would send a
    # transaction's JSON on the logs topic when its key fields happened to exist)
    with pytest.raises(TypeError, match="an encoder of Log records, given Transaction"):
        kafka_keys.encode_batch(Batch("backfill", [BLOCK], {Log: [TRANSACTION]}))  # type: ignore[list-item]
    same_messages(monkeypatch, Batch("backfill", [BLOCK], {Pool: [object.__new__(Pool)]}))


class _DropsTheRows(int):
    """A key field's value whose format() drops the last reference to its record (the rows list was
    the only one): the C loop must hold the record itself, as the Python loop's variable does."""

    rows: list[Any]

    def __format__(self, spec: str) -> str:
        self.rows.clear()
        return str(int(self))


def test_a_record_dropped_by_its_own_key_while_encoded_is_still_whole() -> None:
    rows: list[Any] = []
    index = _DropsTheRows(7)
    index.rows = rows
    record = dataclasses.replace(LOG, block_hash=H, log_index=index)
    expected = to_json_python(record)
    rows.append(record)
    del record  # the rows list holds the only reference
    messages = kafka_keys.encode_batch(Batch("backfill", [BLOCK], {Log: rows}))
    [(kind, key, value, headers)] = [m for m in messages if m[0] == "logs"]
    # the independent truth: the key fields joined by ":", the JSON of the record as it was
    assert (kind, key, value, headers) == ("logs", f"{H}:7".encode(), expected, [("block_hash", H.encode())])
