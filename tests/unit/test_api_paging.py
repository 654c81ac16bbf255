"""The API's pure parts: cursors, parameter parsing, the SQL a list builds, the candles' time window."""

from __future__ import annotations

import base64
import json

import orjson
import pytest

from api.candles import trade_window
from api.cursor import Cursor, decode, fingerprint
from api.errors import ApiError
from api.params import block_ref, check_range, parse_time
from api.query import Query
from records import kinds

pytestmark = pytest.mark.unit

HASH = "0x" + "ab" * 32


def test_a_cursor_round_trips_and_is_bound_to_its_query() -> None:
    fp = fingerprint("dex/trades", "asc", {"pool": "0xaa", "to_block": 9, "token": None})
    assert fp == fingerprint("dex/trades", "asc", {"to_block": 9, "pool": "0xaa"})  # order, None: same query
    assert fp != fingerprint("dex/trades", "desc", {"pool": "0xaa", "to_block": 9})
    assert fp != fingerprint("logs", "asc", {"pool": "0xaa", "to_block": 9})
    text = Cursor(120, HASH, (118, 7), fp).encode()
    assert decode(text, (int, int), fp) == Cursor(120, HASH, (118, 7), fp)
    with pytest.raises(ApiError, match="another query"):
        decode(text, (int, int), fingerprint("dex/trades", "desc", {}))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage!",
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(orjson.dumps({"v": 2, "h": [1, HASH], "k": [1, 2], "f": "x"})).decode(),
        base64.urlsafe_b64encode(orjson.dumps({"v": 1, "h": [1, HASH], "k": [1], "f": "x"})).decode(),
        base64.urlsafe_b64encode(orjson.dumps({"v": 1, "h": [1, HASH], "k": ["1", 2], "f": "x"})).decode(),
        base64.urlsafe_b64encode(orjson.dumps({"v": 1, "h": [True, HASH], "k": [1, 2], "f": "x"})).decode(),
        base64.urlsafe_b64encode(
            json.dumps({"v": 1, "h": [1, HASH], "k": [2**64, 2], "f": "x"}).encode()
        ).decode(),
        "A" * 5000,
    ],
)
def test_a_garbled_cursor_is_a_400(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode(text, (int, int), "x")
    assert caught.value.status == 400 and "bad cursor" in caught.value.detail


def test_times_are_unix_seconds_or_iso_8601() -> None:
    assert parse_time("t", "1700000000") == 1700000000
    assert parse_time("t", "2023-11-14T22:13:20Z") == 1700000000
    assert parse_time("t", "2023-11-14T22:13:20") == 1700000000  # naive: UTC
    assert parse_time("t", "2023-11-15T00:13:20+02:00") == 1700000000
    assert parse_time("t", None) is None
    for bad in ("yesterday", "-5", "1e9", "2023-13-01"):
        with pytest.raises(ApiError, match="t: "):
            parse_time("t", bad)


def test_blocks_by_number_or_hash_and_ranges() -> None:
    assert block_ref("0") == 0 and block_ref("12345") == 12345
    assert block_ref(HASH.upper().replace("0X", "0x")) == HASH
    for bad in ("-1", "0x12", "1.5", "99999999999999999999", HASH + "0"):
        with pytest.raises(ApiError, match="neither a block number"):
            block_ref(bad)
    check_range("a", 1, "b", 1)
    with pytest.raises(ApiError, match="range is empty"):
        check_range("from_block", 2, "to_block", 1)


def test_a_list_query_passes_every_value_as_a_parameter() -> None:
    query = Query(kinds.DEX_TRADES, kinds.DEX_TRADES.order, descending=True)
    query.compare("pool_address", "=", "0xaa'; DROP TABLE blocks; --")
    query.any_column(("token_bought_address", "token_sold_address"), "0xbb")
    sql = query.sql(head=100, after=(99, 3), limit=11)
    assert "DROP" not in sql and "0xbb" not in sql
    assert (
        '"pool_address" = $1' in sql and '("token_bought_address" = $2 OR "token_sold_address" = $2)' in sql
    )
    assert '"block_number" <= $3' in sql and '("block_number", "log_index") < ($4, $5)' in sql
    # the page size is the one literal: an int, so the prepared statement's generic plan can be used
    assert sql.endswith('ORDER BY "block_number" DESC, "log_index" DESC LIMIT 11')
    assert query.params == ["0xaa'; DROP TABLE blocks; --", "0xbb", 100, 99, 3]
    for bad in ("11; DROP TABLE blocks", 1.5, True, -1):
        with pytest.raises(ValueError, match="not a row count"):
            query.sql(head=100, after=None, limit=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no column"):
        query.compare("pool_address; --", "=", 1)
    with pytest.raises(ValueError):
        query.compare("pool_address", "LIKE", 1)


def test_a_pinned_page_statement_built_once_per_shape_gets_each_query_s_values() -> None:
    """``Query.pinned_sql`` keeps its text per query shape: a second query of the same shape gets the
    same text and its own parameters, in the order the text numbers them; another shape, its own text."""
    pool = "0x" + "aa" * 20

    def query(value: str, desc: bool = False) -> Query:
        q = Query(kinds.DEX_TRADES, kinds.DEX_TRADES.order, descending=desc)
        q.compare("pool_address", "=", value)
        return q

    cursor = Cursor(120, HASH, (118, 7), "fp")
    first, again = query(pool), query("0xbb")
    text = first.pinned_sql(cursor=cursor, limit=101, offset=5)
    assert again.pinned_sql(cursor=Cursor(9, "0xcc", (8, 1), "fp"), limit=101, offset=3) == text
    assert first.params == [pool, 120, HASH, 118, 7, 5] and again.params == ["0xbb", 9, "0xcc", 8, 1, 3]
    assert "WHERE number = $2 AND hash = $3" in text and '("block_number", "log_index") > ($4, $5)' in text
    assert text.endswith("LIMIT 101 OFFSET $6")
    first_page = query(pool)
    assert first_page.pinned_sql(cursor=None, limit=101) != text and first_page.params == [pool]
    descending = query(pool, desc=True)
    assert "DESC" in descending.pinned_sql(cursor=cursor, limit=101) and descending.params == [
        pool,
        120,
        HASH,
        118,
        7,
    ]
    other_limit = query(pool)
    assert (
        other_limit.pinned_sql(cursor=cursor, limit=11).endswith("LIMIT 11") and other_limit.params[-1] == 7
    )
    for bad in (True, 1.5):
        with pytest.raises(ValueError, match="not a row count"):
            query(pool).pinned_sql(cursor=None, limit=bad)  # type: ignore[arg-type]


def test_pools_created_before_the_chain_stay_in_a_pinned_list() -> None:
    query = Query(kinds.POOLS, kinds.POOLS.order)
    sql = query.sql(head=5, after=None, limit=3)
    assert '("created_block_number" IS NULL OR "created_block_number" <= $1)' in sql


def test_candle_windows_are_whole_buckets_past_the_cursor() -> None:
    assert trade_window(60, 125, 250, None, False) == trade_window(60, 120, 299, None, False)
    window = trade_window(60, 125, 250, None, False)
    assert (window.first, window.stop) == (120, 300)  # candles starting 120, 180, 240
    assert trade_window(60, 125, 250, 180, False).first == 240  # ascending: after the cursor's candle
    assert trade_window(60, 125, 250, 180, True).stop == 180  # descending: before it
    assert trade_window(3600, None, None, None, False).first == 0
