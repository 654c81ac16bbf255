"""Each record kind's Parquet schema, derived from the record class (``records.kinds``), and its rows.

A row is the record's JSON document (``records.codec``): ``type`` and ``version`` columns and a
``data`` struct holding the fields under their JSON names. The fields sit in a struct for the same
reason the JSON puts them under ``data``: a record's own ``type``/``version`` fields (a transaction's
type, a DEX trade's protocol version) would collide with the envelope. ``dexnode query`` flattens
``data`` into one view per kind.

Types follow the JSON form, so every value is exact and the same reader code serves every kind:

- ``int`` → int64 (block numbers, indexes, timestamps, gas: all fit), except where the kind's table
  stores the int as ``NUMERIC(20, 0)`` (a transaction's nonce: a uint64 by EIP-2681) → uint64;
- ``U256`` → string (decimal digits). decimal256 tops out at 76 digits and 2^256-1 has 78, so a
  decimal256(76,0) column would refuse real values (a max-uint approval); ``bench/archive.py`` measures
  what the strings cost;
- ``Decimal`` → string (fixed point, as Postgres's NUMERIC text): exact amounts are raw / 10^decimals
  with a per-token scale (0..255), which no single decimal128/256 scale holds for every token;
- ``str`` → string, ``bool`` → bool, ``tuple[X, ...]`` → list<X>, a nested record → struct.

Never a float.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from decimal import Decimal
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import pyarrow as pa
import sqlalchemy as sa

from records import Record, kinds, to_dict
from sinks import schema as tables


def _arrow_type(hint: Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) of one field's type hint."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {hint!r}")
        return _arrow_type(args[0])[0], True
    if origin is Annotated:  # U256: a decimal string (see the module docstring)
        base = get_args(hint)[0]
        return (pa.string() if base is int else _arrow_type(base)[0]), False
    if origin is tuple:
        items = {a for a in get_args(hint) if a is not Ellipsis}
        if len(items) != 1:
            raise TypeError(f"unsupported tuple {hint!r}: only tuples of one item type")
        return pa.list_(_arrow_type(items.pop())[0]), False
    if isinstance(hint, type) and issubclass(hint, Record):
        return record_struct(hint), False
    simple = {int: pa.int64(), str: pa.string(), bool: pa.bool_(), Decimal: pa.string()}
    if hint in simple:
        return simple[hint], False
    raise TypeError(f"unsupported field type {hint!r}")


def _unsigned_64(cls: type[Record]) -> frozenset[str]:
    """Plain-int fields its table stores as ``NUMERIC(<=20, 0)``: values up to 2^64-1 (a nonce)."""
    kind = kinds.BY_RECORD.get(cls)
    if kind is None:
        return frozenset()
    table = tables.metadata.tables[kind.table]
    hints = get_type_hints(cls, include_extras=True)
    found = set()
    for column in table.columns:
        hint = hints.get(column.name)
        plain = hint is int or (
            get_origin(hint) in (typing.Union, types.UnionType) and set(get_args(hint)) == {int, type(None)}
        )
        if plain and isinstance(column.type, sa.Numeric):
            if column.type.scale != 0 or (column.type.precision or 99) > 20:
                raise TypeError(f"{cls.__name__}.{column.name}: an int in {column.type}, wider than uint64")
            found.add(column.name)
    return frozenset(found)


_STRUCTS: dict[type[Record], pa.StructType] = {}
_SCHEMAS: dict[type[Record], pa.Schema] = {}


def record_struct(cls: type[Record]) -> pa.StructType:
    """The struct of a record class's fields under their JSON names, in declaration order."""
    if cls in _STRUCTS:
        return _STRUCTS[cls]
    hints = get_type_hints(cls, include_extras=True)
    unsigned = _unsigned_64(cls)
    fields = []
    for field in dataclasses.fields(cls):
        arrow, nullable = _arrow_type(hints[field.name])
        if field.name in unsigned:
            arrow = pa.uint64()
        fields.append(pa.field(field.name, arrow, nullable=nullable))
    struct = _STRUCTS[cls] = pa.struct(fields)
    return struct


def kind_schema(cls: type[Record]) -> pa.Schema:
    """The Parquet schema of a kind's files: ``type``, ``version``, ``data``."""
    if cls in _SCHEMAS:
        return _SCHEMAS[cls]
    schema = _SCHEMAS[cls] = pa.schema(
        [
            pa.field("type", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("data", record_struct(cls), nullable=False),
        ],
        metadata={"dexnode.type": cls.TYPE, "dexnode.version": str(cls.VERSION)},
    )
    return schema


def stats_columns(cls: type[Record]) -> list[str]:
    """The columns whose min/max a file's footer keeps: the record's integers (block numbers, times,
    indexes), which let a reader skip a file for a range. Not the hashes and hex blobs: their min/max
    are long strings that would triple a small file's size and prune nothing."""
    data = record_struct(cls)
    return [f"data.{f.name}" for f in data if pa.types.is_integer(f.type)]


def to_table(cls: type[Record], records: typing.Sequence[Record]) -> pa.Table:
    """Records of one class as an Arrow table of their JSON documents (exact: strings, never floats)."""
    return pa.Table.from_pylist([to_dict(r) for r in records], schema=kind_schema(cls))
