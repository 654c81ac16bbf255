"""GraphQL types derived from the records and the kinds registry (no second list of fields).

Per record kind: an object type with the record's fields in camelCase (``blockNumber``), a
``<Type>_filter`` input in The Graph's conventions (``field``, ``field_in``, ``field_gt``, ``_gte``,
``_lt``, ``_lte``), a ``<Type>_orderBy`` enum of its non-null scalar fields, and relations from the
registry's ``refers`` (``pool_address`` → ``pool: Pool``, a pool's ``token0`` → ``token0: Token``).

Scalars: ``U256`` amounts and NUMERIC integers are ``BigInt`` and exact amounts ``BigDecimal``, both
as decimal strings (as The Graph). Integers stored as ``BIGINT`` — block numbers, timestamps, gas,
nonces, sizes, a withdrawal's gwei — are ``Int64``: a JSON number like ``Int`` (so a client reads
``number`` as before) but not capped at 2^31 - 1, which GraphQL's ``Int`` is (a 32-bit ``Int`` fails
the whole answer on a timestamp after 2038-01-19 or on a withdrawal of more than 2.1 ETH in gwei).
Values up to 2^63 - 1, the column's range; JavaScript clients read them exactly up to 2^53. Other
integers (indexes, type, status, decimals) stay ``Int``.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NewType, Optional, get_args, get_origin, get_type_hints

import sqlalchemy as sa
import strawberry
from strawberry.types import Info
from strawberry.types.scalar import ScalarDefinition

from records import Record
from records.codec import U256
from records.kinds import Kind
from sinks import schema


def _parse_big(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"BigInt: expected a decimal string, got {value!r}")
    text = str(value).strip()
    if not text.lstrip("-").isdigit() or len(text) > 80:
        raise ValueError(f"BigInt: {value!r} is not an integer")
    return int(text)


def _parse_decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"BigDecimal: expected a decimal string, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"BigDecimal: {value!r} is not a decimal number") from None
    if not number.is_finite() or len(str(value)) > 200:
        raise ValueError(f"BigDecimal: {value!r} is not a finite decimal number")
    return number


INT64_MAX = 2**63 - 1


def _parse_int64(value: Any) -> int:
    """An ``Int64`` argument: a JSON number or a decimal string, within the BIGINT range."""
    number = _parse_big(value)
    if not -INT64_MAX - 1 <= number <= INT64_MAX:
        raise ValueError(f"Int64: {value!r} is outside -2^63 .. 2^63-1")
    return number


def _serialize_int64(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Int64: not an integer: {value!r}")
    return value


BigInt = NewType("BigInt", int)
BigDecimal = NewType("BigDecimal", Decimal)
Int64 = NewType("Int64", int)
SCALARS: dict[object, ScalarDefinition] = {
    BigInt: strawberry.scalar(
        name="BigInt", serialize=str, parse_value=_parse_big, description="an integer as a decimal string"
    ),
    BigDecimal: strawberry.scalar(
        name="BigDecimal",
        serialize=lambda v: format(v, "f"),
        parse_value=_parse_decimal,
        description="an exact decimal as a string",
    ),
    Int64: strawberry.scalar(
        name="Int64",
        serialize=_serialize_int64,
        parse_value=_parse_int64,
        description="a 64-bit integer as a JSON number (block numbers, timestamps, gas): Int without"
        " its 32-bit cap; also accepted as a decimal string",
    ),
}


@strawberry.enum
class OrderDirection(enum.Enum):
    asc = "asc"
    desc = "desc"


@strawberry.input(name="Block_height")
class BlockHeight:
    number: int


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _is_big(hint: Any) -> bool:
    return get_origin(hint) is typing.Annotated and hint == U256


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


_NESTED: dict[type, Any] = {}


def scalar_of(hint: Any, column: sa.Column[Any] | None) -> Any:
    """The GraphQL type of a record field's (non-optional) Python type."""
    if _is_big(hint):
        return BigInt
    if hint is int:
        if column is None:  # a nested record's field (a withdrawal's gwei, an authorization's nonce)
            return Int64
        if isinstance(column.type, sa.Numeric):
            return BigInt
        return Int64 if isinstance(column.type, sa.BigInteger) else int
    if hint is Decimal:
        return BigDecimal
    if hint in (str, bool):
        return hint
    if get_origin(hint) is tuple:
        return list[scalar_of(get_args(hint)[0], None)]  # type: ignore[misc]
    if isinstance(hint, type) and issubclass(hint, Record):
        return nested_type(hint)
    raise TypeError(f"no GraphQL type for {hint!r}")


def nested_type(cls: type[Record]) -> Any:
    """A nested record (a withdrawal, an authorization) as its own object type."""
    if cls not in _NESTED:
        hints = get_type_hints(cls, include_extras=True)
        ns: dict[str, Any] = {"__annotations__": {}}
        for f in dataclasses.fields(cls):
            base, optional = _strip_optional(hints[f.name])
            gql = scalar_of(base, None)
            ns["__annotations__"][f.name] = Optional[gql] if optional else gql  # noqa: UP045
        _NESTED[cls] = strawberry.type(type(cls.__name__, (), ns))
    return _NESTED[cls]


@dataclass
class Entity:
    """What the schema needs to know of one kind."""

    kind: Kind[Any]
    name: str  # GraphQL type name: Block, DexTrade
    object_type: Any = None
    filter_type: Any = None
    order_enum: Any = None
    where_ops: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # attr -> (column, op)
    # GraphQL relation field (``pool``) -> (the record's key field, ``pool_address``; the target entity)
    relations: dict[str, tuple[str, Entity]] = dataclasses.field(default_factory=dict)

    @property
    def table(self) -> sa.Table:
        return schema.metadata.tables[self.kind.table]


_OPS = (("", "="), ("_in", "in"), ("_gt", ">"), ("_gte", ">="), ("_lt", "<"), ("_lte", "<="))


def relation_name(field: str) -> str:
    return field.removesuffix("_address")


def build_entity(kind: Kind[Any], name: str, targets: dict[str, Entity], loader_of: Any) -> Entity:
    """The object type, filter input and orderBy enum of ``kind``; ``targets`` holds the entities
    its relations point at (already built); ``loader_of(info, kind_name)`` gives a request's loader."""
    entity = Entity(kind, name)
    table = entity.table
    hints = get_type_hints(kind.record, include_extras=True)
    out: dict[str, Any] = {"__annotations__": {}}
    filters: dict[str, Any] = {"__annotations__": {}}
    orderable: list[str] = []
    for f in dataclasses.fields(kind.record):
        base, optional = _strip_optional(hints[f.name])
        column = table.c.get(f.name)
        gql = scalar_of(base, column)
        target = kind.refers.get(f.name)
        if target is None or relation_name(f.name) != f.name:
            out["__annotations__"][f.name] = Optional[gql] if optional else gql  # noqa: UP045
        if target is not None:
            rel = relation_name(f.name)
            out[rel] = strawberry.field(
                resolver=_relation(f.name, targets[target], loader_of), name=camel(rel)
            )
            entity.relations[camel(rel)] = (f.name, targets[target])
        if column is None or get_origin(base) is tuple or base is bool:
            continue
        if not optional:
            orderable.append(f.name)
        for suffix, op in _OPS:
            attr = f.name + suffix
            value_type = list[gql] if op == "in" else gql  # type: ignore[valid-type]
            filters["__annotations__"][attr] = Optional[value_type]  # noqa: UP045
            filters[attr] = strawberry.field(name=camel(f.name) + suffix, default=None)
            entity.where_ops[attr] = (f.name, op)
    entity.object_type = strawberry.type(type(name, (), out), name=name)
    entity.filter_type = strawberry.input(type(f"{name}Filter", (), filters), name=f"{name}_filter")
    order = enum.Enum(f"{name}OrderBy", {camel(c): c for c in orderable})  # type: ignore[misc]
    entity.order_enum = strawberry.enum(order, name=f"{name}_orderBy")
    return entity


def _relation(field: str, target: Entity, loader_of: Any) -> Any:
    """The related record by the request's loader. Not a coroutine: a record the loader already holds
    (a list primes its page's relations, ``api.graph.resolve.prime``) is answered at once, so a page of
    trades does not await a pool per row; otherwise the loader's future (one batched query)."""

    def resolve(root: Any, info: Info) -> Any:
        value = getattr(root, field)
        if value is None:
            return None
        loader = loader_of(info, target.kind.name)
        known = loader.cache_map.get(value)
        if known is not None and known.done() and not known.cancelled() and known.exception() is None:
            return known.result()
        return loader.load(value)

    resolve.__annotations__ = {"root": Any, "info": Info, "return": Optional[target.object_type]}  # noqa: UP045
    return resolve
