"""The websocket protocol parser: every malformed or unknown message is a ``ProtocolError`` with its
documented code, filters are normalised to lower case, cursors round-trip and sort in chain order."""

from __future__ import annotations

import base64

import pytest

from api.stream.protocol import (
    CHANNELS,
    Code,
    Cursor,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    matches,
    parse,
)

pytestmark = pytest.mark.unit

ADDR = "0x" + "Ab" * 20
TOPIC = "0x" + "cD" * 32
HASH = "0x" + "12" * 32


def code_of(text: str) -> Code:
    with pytest.raises(ProtocolError) as err:
        parse(text, 1)
    assert err.value.message
    return err.value.code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", Code.MALFORMED_JSON),
        ("", Code.MALFORMED_JSON),
        ("null", Code.BAD_MESSAGE),
        ('"subscribe"', Code.BAD_MESSAGE),
        ("[]", Code.BAD_MESSAGE),
        ("{}", Code.BAD_MESSAGE),
        ('{"op": 5}', Code.UNKNOWN_OP),
        ('{"op": "subscribe"}', Code.UNKNOWN_CHANNEL),
        ('{"op": "subscribe", "channel": ["blocks"]}', Code.UNKNOWN_CHANNEL),
        ('{"op": "subscribe", "channel": "blocks", "pool": "' + ADDR + '"}', Code.BAD_FILTER),
        ('{"op": "subscribe", "channel": "logs", "address": "0x1234"}', Code.BAD_FILTER),
        ('{"op": "subscribe", "channel": "logs", "address": []}', Code.BAD_FILTER),
        (
            '{"op": "subscribe", "channel": "logs", "address": [' + ",".join([f'"{ADDR}"'] * 101) + "]}",
            Code.BAD_FILTER,
        ),
        ('{"op": "subscribe", "channel": "logs", "topic1": "' + ADDR + '"}', Code.BAD_FILTER),
        ('{"op": "subscribe", "channel": "logs", "address": 7}', Code.BAD_FILTER),
        ('{"op": "subscribe", "channel": "blocks", "from": 12}', Code.BAD_CURSOR),
        ('{"op": "subscribe", "channel": "blocks", "from": "%%%"}', Code.BAD_CURSOR),
        ('{"op": "subscribe", "channel": "blocks", "from_block": "12"}', Code.BAD_CURSOR),
        ('{"op": "subscribe", "channel": "blocks", "from_block": true}', Code.BAD_CURSOR),
        ('{"op": "subscribe", "channel": "blocks", "from_block": 1, "from": "x"}', Code.BAD_CURSOR),
        ('{"op": "subscribe", "channel": "blocks", "finality": "final"}', Code.BAD_MESSAGE),
        ('{"op": "subscribe", "channel": "blocks", "id": {}}', Code.BAD_MESSAGE),
        ('{"op": "subscribe", "channel": "blocks", "id": ""}', Code.BAD_MESSAGE),
        ('{"op": "subscribe", "channel": "blocks", "id": "' + "i" * 65 + '"}', Code.BAD_MESSAGE),
        ('{"op": "unsubscribe"}', Code.BAD_MESSAGE),
        ('{"op": "unsubscribe", "id": "a", "channel": "blocks"}', Code.BAD_MESSAGE),
        ('{"op": "subscribe", "channel": "blocks", "pad": "' + "x" * 17_000 + '"}', Code.MESSAGE_TOO_LARGE),
    ],
)
def test_bad_messages_have_their_codes(text: str, code: Code) -> None:
    assert code_of(text) == code


def test_subscribe_normalises_filters_and_names_the_subscription() -> None:
    msg = parse(
        '{"op": "subscribe", "channel": "logs", "address": ["' + ADDR + '"], "topic0": "' + TOPIC + '",'
        ' "from_block": 12, "finality": "confirmed"}',
        7,
    )
    assert isinstance(msg, Subscribe)
    assert msg.id == "7" and msg.channel is CHANNELS["logs"]
    assert msg.filters == {"address": frozenset({ADDR.lower()}), "topic0": frozenset({TOPIC.lower()})}
    assert (msg.from_block, msg.start, msg.finality) == (12, None, "confirmed")
    assert parse('{"op": "subscribe", "channel": "blocks", "id": 3}', 1).id == "3"  # type: ignore[union-attr]
    assert parse('{"op": "unsubscribe", "id": "x"}', 1) == Unsubscribe("x")
    assert parse('{"op": "ping"}', 1) == Ping()


def test_filters_match_any_listed_field_and_all_filters() -> None:
    msg = parse(
        '{"op": "subscribe", "channel": "dex_trades", "token": "'
        + ADDR
        + '", "pool": "0x'
        + "11" * 20
        + '"}',
        1,
    )
    assert isinstance(msg, Subscribe)
    pool, token, other = "0x" + "11" * 20, ADDR.lower(), "0x" + "22" * 20
    trade = {"pool_address": pool, "token_bought_address": other, "token_sold_address": token}
    assert matches(msg, trade)
    assert not matches(msg, {**trade, "token_sold_address": other})
    assert not matches(msg, {**trade, "pool_address": other})


def test_cursor_round_trips_and_sorts_in_chain_order() -> None:
    cursors = [Cursor(9, 3, 0, HASH), Cursor(10, -1, 0, HASH), Cursor(10, 0, 0, HASH), Cursor(10, 0, 1, HASH)]
    assert sorted(reversed(cursors)) == cursors
    for c in cursors:
        assert Cursor.decode(c.encode()) == c and Cursor.decode(c.encode()).hash == HASH


@pytest.mark.parametrize(
    "raw",
    [
        "1:0x12:0:0",
        f"-1:{HASH}:0:0",
        f"1:{HASH}:-2:0",
        f"1:{HASH}:0",
        f"x:{HASH}:0:0",
        f"1:{HASH.upper()}:0:0",
    ],
)
def test_cursors_this_server_never_issued_are_refused(raw: str) -> None:
    text = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    with pytest.raises(ProtocolError) as err:
        Cursor.decode(text)
    assert err.value.code == Code.BAD_CURSOR
