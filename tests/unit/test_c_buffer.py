"""records/_buffer.h, the growable byte buffer of records/_codec.c, api/_pagejson.c and sinks/_copy.c: the
bytes each extension writes across the buffer's growth points (the codec's 2 kB inline start moved to the
heap, the first 4 kB allocation, doublings, one value larger than the doubled capacity) are byte for byte
those of its Python path."""

from __future__ import annotations

import itertools
from decimal import Decimal

import orjson
import pytest

from records import Log, to_json
from records.codec import _NativeEncoder, to_json_python
from sinks import copy_text
from tests.unit.test_copy_text import _COLUMNS, _TABLE, _Row

pytestmark = pytest.mark.unit

# around 2 kB (the codec's inline start), 4 kB (the first heap allocation), the doublings after it, and
# well past them in one value
SIZES = [0, 1, 1000, 2000, 2040, 2047, 2048, 2049, 2100, 4090, 4096, 4097, 8200, 70_000]


_SERIAL = itertools.count(1)


def _log(data_bytes: int, topic: str | None = None) -> Log:
    # every record's leading bytes differ from the last one's: memory the allocator hands back holding a
    # previous record's bytes cannot pass for a copy of the inline start
    n = next(_SERIAL)
    return Log(n, f"0x{n:064x}", "0x" + "cd" * 32, 0, 3, "0x" + "ef" * 20, "0x" + "5a" * data_bytes,
               "0x" + "12" * 32, topic, None, None)  # fmt: skip


def test_the_codec_is_the_c_extension() -> None:
    assert _NativeEncoder is not None, "records/_codec.c is not built (make install)"
    assert _NativeEncoder.__module__ == "records._codec"


@pytest.mark.parametrize("size", SIZES)
def test_codec_across_the_inline_start_and_growth(size: int) -> None:
    # half the hex digits: the JSON is ~size*2 bytes after the fixed fields; a topic with an escape sends
    # the last field through orjson (put_dumped) after the data has grown the buffer
    for record in (_log(size // 2), _log(size // 2, "\n" + "x" * size), _log(size)):
        assert to_json(record) == to_json_python(record)


@pytest.mark.parametrize("size", SIZES)
def test_pagejson_across_growth(size: int) -> None:
    pagejson = pytest.importorskip("api._pagejson", reason="make install builds the optional C extension")
    names = ("a", "b", "c")
    keys = tuple(("{" if i == 0 else ",").encode() + orjson.dumps(n) + b":" for i, n in enumerate(names))
    # a first allocation of 2 + rows*1024: a value of `size` bytes (escaped six-fold in the worst case)
    # passes it in one row, many short rows pass it by doublings
    for rows in (
        [("x" * size, size, None)],
        [("\x01" * size, -size, True)],
        [(str(i) * (size // 50 + 1), i, False) for i in range(60)],
    ):
        expected = orjson.dumps([dict(zip(names, row, strict=True)) for row in rows])
        assert pagejson.objects(keys, rows, 3) == expected


@pytest.mark.skipif(copy_text._copy is None, reason="sinks/_copy.c not built")
@pytest.mark.parametrize("size", SIZES)
def test_copy_text_across_growth(size: int) -> None:
    converters = {"extra": lambda r: r.name}  # JSON text through the CONVERT column
    c = copy_text.record_encoder(_TABLE, _COLUMNS, converters)
    python = copy_text.record_encoder(_TABLE, _COLUMNS, converters, python=True)
    for rows in (
        [_Row("h" * size, None, 2**200, None, None)],
        # every byte escaped: twice the size
        [_Row("\t" * size, "\\" * size, Decimal("-1.5"), Decimal("1E+3"), ("a\tb",) * (size // 10))],
        [_Row(str(i) * (size // 50 + 1), "", i, i, ()) for i in range(60)],
        [],
    ):
        assert c(rows) == python(rows)
