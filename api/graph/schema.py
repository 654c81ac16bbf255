"""The GraphQL schema at ``/graphql``, in The Graph's conventions.

Plural fields (``blocks``, ``dexTrades``, ...) take ``first`` (≤ 1000, default 100), ``skip``
(≤ 5000), ``where``, ``orderBy``, ``orderDirection``, ``block: {number: N}`` (rows as of that block)
and ``after`` (a cursor); ``<plural>Page`` returns the same rows with ``pageInfo { hasNextPage
endCursor }``. Singular fields take the natural key. Depth, alias and cost limits refuse expensive
documents before they run (``api/graph/limits.py``).
"""

from __future__ import annotations

from typing import Any, Optional

import strawberry
from fastapi import Request
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.fastapi import GraphQLRouter
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info
from strawberry.types.nodes import SelectedField

from api.deps import get_pool
from api.graph import candles as graph_candles
from api.graph.limits import cost_limit
from api.graph.resolve import Context, list_page, loader_of, one, prime
from api.graph.types import SCALARS, BlockHeight, Entity, Int64, OrderDirection, PageInfo, build_entity
from records import kinds

MAX_DEPTH = 6
MAX_ALIASES = 20
QUERY_CACHE = 256  # distinct query texts whose parse and validation are kept (LRU)

# kind, GraphQL type name, plural field; targets of relations first
_ENTITIES = (
    (kinds.TOKENS, "Token", "tokens"),
    (kinds.POOLS, "Pool", "pools"),
    (kinds.BLOCKS, "Block", "blocks"),
    (kinds.TRANSACTIONS, "Transaction", "transactions"),
    (kinds.LOGS, "Log", "logs"),
    (kinds.TOKEN_TRANSFERS, "TokenTransfer", "tokenTransfers"),
    (kinds.DEX_TRADES, "DexTrade", "dexTrades"),
    (kinds.DEX_LIQUIDITY, "DexLiquidity", "dexLiquidity"),
)
# singular fields: name, kind name, key column (GraphQL argument = the column in camelCase)
_SINGULAR = (
    ("token", "tokens", "address"),
    ("pool", "pools", "address"),
    ("block", "blocks", "number"),
    ("blockByHash", "blocks", "hash"),
    ("transaction", "transactions", "hash"),
)


def _entities() -> dict[str, Entity]:
    built: dict[str, Entity] = {}
    for kind, name, _ in _ENTITIES:
        built[kind.name] = build_entity(kind, name, built, loader_of)
    return built


def _page_type(entity: Entity) -> Any:
    ns = {"__annotations__": {"nodes": list[entity.object_type], "page_info": PageInfo}}  # type: ignore[name-defined]
    return strawberry.type(type(f"{entity.name}Page", (), ns), name=f"{entity.name}Page")


def _list_resolver(entity: Entity, page_type: Any | None) -> Any:
    async def resolve(
        info: Info,
        first: int = 100,
        skip: int = 0,
        where: Any = None,
        order_by: Any = None,
        order_direction: Any = None,
        block: Any = None,
        after: str | None = None,
    ) -> Any:
        page = await list_page(
            info,
            entity,
            first=first,
            skip=skip,
            where=where,
            order_by=order_by,
            order_direction=order_direction,
            block=block,
            after=after,
        )
        selections = info.selected_fields[0].selections
        if page_type is not None:  # the records are under nodes
            nodes = [s for s in selections if isinstance(s, SelectedField) and s.name == "nodes"]
            selections = [c for s in nodes for c in s.selections]
        await prime(info, entity, page.nodes, selections)
        if page_type is None:
            return page.nodes
        return page_type(
            nodes=page.nodes, page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor)
        )

    resolve.__annotations__ = {
        "info": Info,
        "first": int,
        "skip": int,
        "where": Optional[entity.filter_type],  # noqa: UP045
        "order_by": Optional[entity.order_enum],  # noqa: UP045
        "order_direction": Optional[OrderDirection],  # noqa: UP045
        "block": Optional[BlockHeight],  # noqa: UP045
        "after": Optional[str],  # noqa: UP045
        "return": list[entity.object_type] if page_type is None else page_type,  # type: ignore[name-defined]
    }
    return resolve


def _singular_resolver(entity: Entity, column: str) -> Any:
    """``token(address:)``, ``block(number:)``, ``transaction(hash:)``: the argument is the key column."""
    returns = Optional[entity.object_type]  # type: ignore[name-defined]  # noqa: UP045
    if column == "number":

        async def by_number(info: Info, number: int) -> Any:
            return await one(info, entity.kind, column, number)

        # Int64: a block number is a BIGINT (``block: {number}`` stays The Graph's ``Int``)
        by_number.__annotations__ = {"info": Info, "number": Int64, "return": returns}
        return by_number
    if column == "hash":

        async def by_hash(info: Info, hash: str) -> Any:
            return await one(info, entity.kind, column, hash)

        by_hash.__annotations__ = {"info": Info, "hash": str, "return": returns}
        return by_hash

    async def by_address(info: Info, address: str) -> Any:
        return await one(info, entity.kind, column, address)

    by_address.__annotations__ = {"info": Info, "address": str, "return": returns}
    return by_address


def build_schema() -> strawberry.Schema:
    entities = _entities()
    fields: dict[str, Any] = {}
    for kind, _, plural in _ENTITIES:
        entity = entities[kind.name]
        fields[plural] = strawberry.field(resolver=_list_resolver(entity, None), name=plural)
        page_field = plural + "Page"
        fields[page_field] = strawberry.field(
            resolver=_list_resolver(entity, _page_type(entity)), name=page_field
        )
    for name, kind_name, column in _SINGULAR:
        fields[name] = strawberry.field(resolver=_singular_resolver(entities[kind_name], column), name=name)
    fields["candles"] = strawberry.field(resolver=graph_candles.resolver(), name="candles")
    query = strawberry.type(type("Query", (), fields), name="Query")
    list_fields = {plural for _, _, plural in _ENTITIES} | {p + "Page" for _, _, p in _ENTITIES} | {"candles"}
    # The limits' rule classes made once (each limiter makes a new class per instance), so a query
    # text seen before is neither parsed nor validated again: the cache keys on the rules too, and
    # validating a page's query was an eighth of its CPU.
    rules = [
        *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
        *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
        *cost_limit(list_fields).validation_rules,
    ]
    return strawberry.Schema(
        query=query,
        config=StrawberryConfig(scalar_map=SCALARS),
        extensions=[
            lambda: AddValidationRules(rules),
            lambda: ParserCache(maxsize=QUERY_CACHE),
            lambda: ValidationCache(maxsize=QUERY_CACHE),
        ],
    )


def graphql_router() -> GraphQLRouter[Context, None]:
    async def context(request: Request) -> Context:
        return Context(pool=get_pool(request))

    return GraphQLRouter(build_schema(), context_getter=context, graphql_ide="graphiql")
