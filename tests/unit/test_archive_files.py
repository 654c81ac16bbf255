"""Parquet files of every record kind: written, read back and queried, exact to the digit.

The records are written by hand (``tests/every_kind.py``, plus CEX records here) with the values that
are hard to keep exact: U256 past 2^255, decimals with trailing zeros, nested withdrawals,
authorizations, liquidity amounts and book levels, nulls."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archive.layout import FileEntry, Stream, Target, file_path
from archive.query import connect
from archive.reader import ArchiveCorrupt, bucket_records, buckets, read_file, records_of
from archive.schema import kind_schema
from archive.source import Bucket
from archive.writer import write_bucket
from records import BookDelta, BookSnapshot, Candle, FundingRate, OpenInterest, Ticker, Trade, kinds, to_dict
from tests import every_kind

pytestmark = pytest.mark.unit

MINUTE = every_kind.BLOCK.timestamp // 60
CEX_MINUTE = 29_000_000
AT = CEX_MINUTE * 60_000_000 + 1_234_567  # µs inside the minute
CEX_RECORDS = [
    Trade("binance", "ETH-USDT", Decimal("2500.10"), Decimal("0.0500"), "buy", "77", None, None, 1, AT),
    BookDelta("binance", "ETH-USDT", "bid", Decimal("2500.00"), Decimal("0"), None, 9, None, AT + 1),
    BookSnapshot(
        "binance",
        "ETH-USDT",
        ((Decimal("2500.00"), Decimal("1.10")),),
        ((Decimal("2500.20"), Decimal("0.5")),),
        8,
        None,
        AT + 2,
    ),
    Ticker("binance", "ETH-USDT", Decimal("2500.0"), None, Decimal("2500.2"), Decimal("3"), None, AT + 3),
    Candle(
        "binance", "ETH-USDT", "1m", 1, 59_999, *(Decimal("2500.10"),) * 4, Decimal("0.0500"), 1, True, 5, AT
    ),
    FundingRate("binance", "ETH-USDT", Decimal("0.000100"), None, Decimal("2500.5"), 9, None, AT + 4),
    OpenInterest("binance", "ETH-USDT", Decimal("12345.678"), 7, AT + 5),
]


def _chain_bucket() -> Bucket:
    batch = every_kind.every_kind_batch()
    records = {k.record: list(batch.of(k.record)) for k in kinds.BATCH_KINDS}
    return Bucket(MINUTE, records, every_kind.NUMBER, every_kind.NUMBER)


def _cex_bucket() -> Bucket:
    return Bucket(CEX_MINUTE, {type(r): [r] for r in CEX_RECORDS})


def test_every_kind_has_a_schema_without_floats() -> None:
    def floats(t: pa.DataType) -> bool:
        if pa.types.is_floating(t):
            return True
        if pa.types.is_struct(t):
            return any(floats(t.field(i).type) for i in range(t.num_fields))
        if pa.types.is_list(t):
            return floats(t.value_type)
        return False

    for kind in (*kinds.BATCH_KINDS, *kinds.CEX):
        schema = kind_schema(kind.record)
        assert schema.names == ["type", "version", "data"]
        assert not floats(schema.field("data").type), kind.name


def test_files_read_back_equal_the_records_and_their_json(tmp_path: Path) -> None:
    target = Target(str(tmp_path))
    chain, cex = Stream("chain", "ethereum"), Stream("cex", "binance")
    write_bucket(target, chain, _chain_bucket())
    write_bucket(target, cex, _cex_bucket())
    expected = {**{r.TYPE: [r] for r in CEX_RECORDS}}
    for cls, records in _chain_bucket().records.items():
        if records:
            expected[cls.TYPE] = records
    fresh = Target(str(tmp_path))  # a reader that shares nothing with the writer
    got: dict[str, list[object]] = {}
    for bucket in buckets(fresh):
        for type_name, records in bucket_records(fresh, bucket).items():
            got.setdefault(type_name, []).extend(records)
    assert got == expected
    # the JSON document is what the file holds, field for field (U256 and decimals as exact strings)
    trade_file = next(f for f in fresh.last_bucket(chain).files if f.type == "dex_trade")  # type: ignore[union-attr]
    rows = read_file(fresh, trade_file).to_pylist()
    assert rows == [to_dict(every_kind.TRADE)]
    assert trade_file.path == file_path("dex_trade", "ethereum", MINUTE)
    meta = pq.read_metadata(tmp_path / trade_file.path)
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    target = Target(str(tmp_path))
    entry = write_bucket(target, Stream("cex", "binance"), _cex_bucket())
    f = next(f for f in entry.files if f.type == "trade")
    path = tmp_path / f.path
    data = bytearray(path.read_bytes())
    data[-20] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveCorrupt):
        read_file(target, f)


def test_only_manifest_buckets_are_read(tmp_path: Path) -> None:
    """A file written without its manifest entry (an archiver killed mid-bucket) is not read by the
    reader or by DuckDB, and the next write of that bucket replaces it."""
    target = Target(str(tmp_path))
    stream = Stream("cex", "binance")
    write_bucket(target, stream, _cex_bucket())
    later = CEX_MINUTE + 1
    stray = tmp_path / file_path("trade", "binance", later)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"partial")
    (tmp_path / (file_path("trade", "binance", later) + ".tmp")).write_bytes(b"partial")
    assert [b.entry.minute for b in buckets(target)] == [CEX_MINUTE]
    con = connect(Target(str(tmp_path)))
    assert con.execute("SELECT count(*) FROM trade").fetchone() == (1,)
    shifted = Trade(
        "binance", "ETH-USDT", Decimal("1"), Decimal("2"), "sell", "78", None, None, None, AT + 60_000_000
    )
    entry = write_bucket(target, stream, Bucket(later, {Trade: [shifted]}))
    assert records_of(read_file(target, entry.files[0])) == [shifted]
    assert [b.entry.minute for b in buckets(Target(str(tmp_path)))] == [CEX_MINUTE, later]


def test_query_views_flatten_records_with_partitions(tmp_path: Path) -> None:
    target = Target(str(tmp_path))
    write_bucket(target, Stream("chain", "ethereum"), _chain_bucket())
    write_bucket(target, Stream("cex", "binance"), _cex_bucket())
    con = connect(target)
    row = con.execute(
        "SELECT source, date, hour, pool_address, amount_bought_raw, amount_sold, version FROM dex_trade"
    ).fetchone()
    t = every_kind.TRADE
    when = datetime.fromtimestamp(every_kind.BLOCK.timestamp, UTC)
    assert row == (
        "ethereum",
        when.date(),
        when.hour,
        t.pool_address,
        str(t.amount_bought_raw),
        None if t.amount_sold is None else format(t.amount_sold, "f"),
        t.version,
    )
    assert con.execute("SELECT exchange, price, source FROM trade").fetchall() == [
        ("binance", "2500.10", "binance")
    ]
    # partition pruning: a date filter that no file matches scans none of them
    plan = con.execute("EXPLAIN SELECT * FROM trade WHERE date = DATE '1999-01-01'").fetchall()
    assert "Scanning Files: 0/1" in plan[0][1]


def test_manifest_entries_are_exact(tmp_path: Path) -> None:
    target = Target(str(tmp_path))
    entry = write_bucket(target, Stream("cex", "binance"), _cex_bucket())
    again = Target(str(tmp_path)).last_bucket(Stream("cex", "binance"))
    assert again == entry
    for f in entry.files:
        assert isinstance(f, FileEntry) and (tmp_path / f.path).stat().st_size == f.bytes
        assert pq.read_metadata(tmp_path / f.path).num_rows == f.rows == 1
