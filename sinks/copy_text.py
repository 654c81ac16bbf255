"""Rows of records as PostgreSQL ``COPY ... (FORMAT text)`` data, for the writer's hot path.

Why not asyncpg's binary COPY everywhere: it encodes every ``NUMERIC`` value through
``Decimal(value).as_tuple()``, about 2 µs a value, and a transaction carries six (value, fees, gas
prices). In text an int is ``str(int)`` in C and a row is one f-string generated per table from its
columns. Measured on the 2,011-block devnet (CPU-s, binary → text): 20,844 transactions 0.25–0.27 →
0.15–0.20, 43,352 token transfers 0.17–0.19 → 0.10–0.12; but 85,929 logs (no NUMERIC, 43 MB of hex)
0.25 → 0.43, the per-value escaping check costing more than asyncpg's C. With ``sinks/_copy.c`` built
(one C loop over records and columns) the text encoding costs less than either: transactions and token
transfers 0.31 → 0.08 CPU-s, logs 0.11–0.13 against binary's 0.19–0.23 (load ~4), so the writer uses
text for every table it can print; without it, for tables with NUMERIC columns only.

The text format (PostgreSQL docs, "COPY", File Formats): columns separated by a tab, rows ended by a
newline, null written ``\\N``, and a backslash, tab, newline or carriage return inside a value
escaped with a backslash. Hex strings (hashes, addresses, data) are alphanumeric, so ``isalnum()``
(one C scan) decides whether a string needs the escaping pass at all. Numbers print exactly:
``str(Decimal)`` may use exponent notation (``1E+5``, ``0E-18``), which ``numeric_in`` reads as the
same value and scale as the binary form would carry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

try:  # optional C extension (make install builds it); the generated Python encoder when it is missing
    import sinks._copy as _copy  # not `from sinks import`: a missing module is ModuleNotFoundError
except ImportError as error:
    _copy = None  # type: ignore[assignment]
    if not isinstance(error, ModuleNotFoundError):  # built, but not loadable here (another Python, say)
        logging.getLogger(__name__).warning("sinks._copy not loaded, COPY text in Python: %s", error)

C_ENCODER = _copy is not None  # record_encoder encodes in C (sinks/_copy.c)

_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def escape(value: str) -> str:
    """A string value, escaped for the text format."""
    return value.translate(_ESCAPE)


def text_array(values: Sequence[str] | None) -> str:
    """A ``text[]`` literal (``{a,b}``), every element quoted unless alphanumeric, then escaped.

    ``NULL`` unquoted (any case) is a null element to ``array_in``, so that word is quoted too."""
    if values is None:
        return NULL
    parts = (
        v if v.isalnum() and v.upper() != "NULL" else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values
    )
    return escape("{" + ",".join(parts) + "}")


def _expression(name: str, column: sa.Column[Any], converted: bool) -> str:
    """The f-string field that prints ``column`` of a record ``r`` (``_c_<name>(r)`` when converted).

    Inlined, not a function per value: this runs for every column of every row. A None in a NOT
    NULL column still fails the COPY as in binary (``None.isalnum()`` raises; ``None`` is no number)."""
    value = f"_c_{name}(r)" if converted else f"r.{name}"
    kind = column.type
    if isinstance(kind, sa.ARRAY):
        if not isinstance(kind.item_type, sa.String | sa.Text):
            raise TypeError(f"no COPY text encoding for column {column.name} of type {kind!r}")
        return f"{{_array({value})}}"  # prints its own null
    text = converted or isinstance(kind, sa.String | sa.Text)
    if not text and not isinstance(kind, sa.Integer | sa.Numeric):
        raise TypeError(f"no COPY text encoding for column {column.name} of type {kind!r}")
    # ints and Decimals print as exact decimal text; strings are hex but for a few (checked in C)
    printed = "v if v.isalnum() else _escape(v)" if text else "v"
    if column.nullable or converted:
        return f"{{_NULL if (v := {value}) is None else ({printed})}}"
    if text:
        return f"{{v if (v := {value}).isalnum() else _escape(v)}}"
    return f"{{{value}}}"


def _python_encoder(
    table: sa.Table, columns: Sequence[str], converters: Mapping[str, Callable[[Any], str | None]]
) -> Callable[[Sequence[Any]], bytes]:
    fields = "\\t".join(_expression(name, table.c[name], name in converters) for name in columns)
    source = f'def encode(records):\n    return "".join([f"{fields}\\n" for r in records]).encode()\n'
    namespace: dict[str, Any] = {
        "_escape": escape,
        "_array": text_array,
        "_str": str,
        "_NULL": NULL,
        **{f"_c_{name}": f for name, f in converters.items()},
    }
    exec(source, namespace)  # generated from the table's own column names and types only
    encode: Callable[[Sequence[Any]], bytes] = namespace["encode"]
    return encode


def _c_encoder(
    table: sa.Table,
    columns: Sequence[str],
    converters: Mapping[str, Callable[[Any], str | None]],
    record: type | None,
) -> Callable[[Sequence[Any]], bytes]:
    """The same encoding by ``sinks/_copy.c``: one C loop over records and columns (see its comment)."""
    assert _copy is not None
    specs: list[tuple[str, int, Callable[[Any], Any] | None]] = []
    for name in columns:
        column = table.c[name]
        _expression(name, column, name in converters)  # the same type checks as the Python encoder
        nullable = _copy.NULLABLE if column.nullable else 0
        if name in converters:
            specs.append((name, _copy.CONVERT, converters[name]))
        elif isinstance(column.type, sa.ARRAY):
            specs.append((name, _copy.ARRAY, text_array))
        elif isinstance(column.type, sa.String | sa.Text):
            specs.append((name, _copy.STR | nullable, None))
        else:
            specs.append((name, _copy.NUM | nullable, None))
    return _copy.Encoder(tuple(specs), record).encode


def record_encoder(
    table: sa.Table,
    columns: Sequence[str],
    converters: Mapping[str, Callable[[Any], str | None]],
    *,
    record: type | None = None,
    python: bool = False,
) -> Callable[[Sequence[Any]], bytes]:
    """``encode(records)``: the COPY text data of ``records``, one row each, ``columns`` read as the
    records' attributes of the same names, or through ``converters`` (to JSON text) when given.

    In C (``sinks/_copy.c``) when it is built, else (or with ``python``) a generated f-string per table:
    the same bytes (``tests/unit/test_copy_text.py``). ``record``: the records' class, whose slots the C
    encoder then reads directly (records of another type are read by attribute name)."""
    if _copy is None or python:
        return _python_encoder(table, columns, converters)
    return _c_encoder(table, columns, converters, record)
