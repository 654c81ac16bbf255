"""``api/_pagejson.c``: a page of rows written as JSON in C must be, byte for byte, what orjson writes
for the same rows as dicts (the API's answer before it), whatever the values; anything it does not
write is refused, so the caller's orjson path answers it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pagejson = pytest.importorskip("api._pagejson", reason="make install builds the optional C extension")

pytestmark = pytest.mark.unit

NAMES = ("block_hash", "log_index", "token_bought_symbol", "amount_sold", "flag", "tx_to")


def keys(names: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(("{" if i == 0 else ",").encode() + orjson.dumps(n) + b":" for i, n in enumerate(names))


def orjson_page(names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> bytes:
    return orjson.dumps([dict(zip(names, row, strict=False)) for row in rows])


def test_every_character_that_json_escapes_and_the_int_limits() -> None:
    every_control = "".join(chr(c) for c in range(0x20))
    rows = [
        ("0x" + "ab" * 32, 0, every_control, '"quoted" \\ back/slash', True, None),
        ("\x7f é ü 中文 😀 \u2028\u2029", 2**64 - 1, "", "-1.5", False, "x" * 1000),
        ('a"b', -(2**63), "\\", "\n\r\t", True, 'ends with "'),
        ("", 2**63 - 1, "plain", "0", False, "\x00"),
    ]
    assert pagejson.objects(keys(NAMES), rows, len(NAMES)) == orjson_page(NAMES, rows)


def test_extra_columns_after_count_are_not_written_and_an_empty_page_is_an_empty_list() -> None:
    rows = [("0xab", 1, "S", "1.0", True, None, 99, "0xhead")]  # a one-statement page's head columns
    assert pagejson.objects(keys(NAMES), rows, len(NAMES)) == orjson_page(NAMES, rows)
    assert pagejson.objects(keys(NAMES), [], len(NAMES)) == b"[]"


@pytest.mark.parametrize(
    "value",
    [1.5, 2**64, -(2**63) - 1, [1, 2], {"a": 1}, b"bytes", type("Text", (str,), {})("subclass")],
)
def test_a_value_it_does_not_write_is_refused_for_orjson_to_answer(value: Any) -> None:
    with pytest.raises(TypeError):
        pagejson.objects(keys(("a", "b")), [("ok", 1), ("ok", value)], 2)


def test_a_lone_surrogate_is_an_error_as_in_orjson() -> None:
    with pytest.raises(UnicodeEncodeError):
        pagejson.objects(keys(("a",)), [("\ud800",)], 1)
    with pytest.raises(orjson.JSONEncodeError):
        orjson_page(("a",), [("\ud800",)])


def test_malformed_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        pagejson.objects(keys(("a", "b")), [("x", 1)], 3)  # count is not the number of keys
    with pytest.raises(TypeError):
        pagejson.objects(("a", "b"), [("x", 1)], 2)  # keys are not bytes
    with pytest.raises(TypeError):
        pagejson.objects(keys(("a",)), (("x",),), 1)  # rows not a list
    with pytest.raises(IndexError):
        pagejson.objects(keys(("a", "b")), [("x",)], 2)  # a row shorter than count


values = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.none(),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(values, values, values, values, values, values), max_size=12))
def test_generated_pages_are_orjsons_bytes(rows: list[tuple[Any, ...]]) -> None:
    assert pagejson.objects(keys(NAMES), rows, len(NAMES)) == orjson_page(NAMES, rows)
