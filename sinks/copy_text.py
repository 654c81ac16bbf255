"""Rows of records as PostgreSQL ``COPY ... (FORMAT text)`` data, for the writer's hot path.

Why not asyncpg's binary COPY everywhere: it encodes every ``NUMERIC`` value through
``Decimal(value).as_tuple()``, about 2 µs a value, and a transaction carries six (value, fees, gas
prices). In text an int is ``str(int)`` in C and a row is one f-string generated per table from its
columns. Measured on the 2,011-block devnet (CPU-s, binary → text): 20,844 transactions 0.25–0.27 →
0.15–0.20, 43,352 token transfers 0.17–0.19 → 0.10–0.12; but 85,929 logs (no NUMERIC, 43 MB of hex)
0.25 → 0.43, the per-value escaping check costing more than asyncpg's C: the writer uses text for
tables with NUMERIC columns only.

The text format (PostgreSQL docs, "COPY", File Formats): columns separated by a tab, rows ended by a
newline, null written ``\\N``, and a backslash, tab, newline or carriage return inside a value
escaped with a backslash. Hex strings (hashes, addresses, data) are alphanumeric, so ``isalnum()``
(one C scan) decides whether a string needs the escaping pass at all. Numbers print exactly:
``str(Decimal)`` may use exponent notation (``1E+5``, ``0E-18``), which ``numeric_in`` reads as the
same value and scale as the binary form would carry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def escape(value: str) -> str:
    """A string value, escaped for the text format."""
    return value.translate(_ESCAPE)


def text_array(values: Sequence[str] | None) -> str:
    """A ``text[]`` literal (``{a,b}``), every element quoted unless alphanumeric, then escaped."""
    if values is None:
        return NULL
    parts = (v if v.isalnum() else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return escape("{" + ",".join(parts) + "}")


def _expression(name: str, column: sa.Column[Any], converted: bool) -> str:
    """The f-string field that prints ``column`` of a record ``r`` (``_c_<name>(r)`` when converted).

    Inlined, not a function per value: this runs for every column of every row. A None in a NOT
    NULL column still fails the COPY as in binary (``None.isalnum()`` raises; ``None`` is no number)."""
    value = f"_c_{name}(r)" if converted else f"r.{name}"
    kind = column.type
    if isinstance(kind, sa.ARRAY):
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


def record_encoder(
    table: sa.Table, columns: Sequence[str], converters: Mapping[str, Callable[[Any], str | None]]
) -> Callable[[Sequence[Any]], bytes]:
    """``encode(records)``: the COPY text data of ``records``, one row each, ``columns`` read as the
    records' attributes of the same names, or through ``converters`` (to JSON text) when given."""
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
