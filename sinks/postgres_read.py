"""Reading the canonical chain back from Postgres, as records.

Used where Postgres is the truth to publish or compare: the Kafka ``confirmed.*`` publisher (a block
range as a ``Batch``), the revert messages of a reorg (the keys of every record above the common
ancestor, read before the Postgres sink deletes them), tests and benchmarks.

Rows become records through the records' own JSON decoding (``records.from_dict``): every column is
a record field of the same name; ``NUMERIC`` is read as text, the exact decimal string the JSON form
uses (an integer for ``U256`` fields, an exact decimal otherwise).
"""

from __future__ import annotations

from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import asyncpg
import orjson
import sqlalchemy as sa

from records import (
    Block,
    DexLiquidity,
    DexTrade,
    Log,
    Pool,
    Record,
    Token,
    TokenTransfer,
    Transaction,
    from_dict,
)
from records.batch import Batch
from sinks import schema
from sinks.kafka_keys import BlockKeys
from sinks.postgres import BlockRef

# batch attribute -> (table, record class, ORDER BY)
_SOURCES: dict[str, tuple[sa.Table, type[Record], str]] = {
    "blocks": (schema.blocks, Block, "number"),
    "transactions": (schema.transactions, Transaction, "block_number, transaction_index"),
    "logs": (schema.logs, Log, "block_number, log_index"),
    "token_transfers": (schema.token_transfers, TokenTransfer, "block_number, log_index, batch_index"),
    "dex_trades": (schema.dex_trades, DexTrade, "block_number, log_index"),
    "dex_liquidity": (schema.dex_liquidity, DexLiquidity, "block_number, log_index"),
    "pools": (schema.pools, Pool, "address"),
    "tokens": (schema.tokens, Token, "address"),
}


def _columns(table: sa.Table) -> str:
    """The record's columns; NUMERIC as Postgres's own text (``1000000000``, never ``1.0E+9``)."""
    return ", ".join(
        f'"{c.name}"::text AS "{c.name}"' if isinstance(c.type, sa.Numeric) else f'"{c.name}"'
        for c in table.columns
        if c.server_default is None and not isinstance(c.default, sa.Identity)
    )


def _numeric_ints(table: sa.Table, cls: type[Record]) -> frozenset[str]:
    """NUMERIC columns whose field is a plain ``int`` (a nonce): the JSON form has them as numbers."""
    hints = get_type_hints(cls, include_extras=True)
    plain = set()
    for name, hint in hints.items():
        args = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
        if [a for a in args if a is not type(None)] == [int]:
            plain.add(name)
    return frozenset(c.name for c in table.columns if isinstance(c.type, sa.Numeric) and c.name in plain)


_NUMERIC_INTS = {cls: _numeric_ints(table, cls) for table, cls, _ in _SOURCES.values()}


def record_of(cls: type[Record], row: asyncpg.Record) -> Record:
    data = dict(row.items())
    for name in _NUMERIC_INTS[cls]:
        if data[name] is not None:
            data[name] = int(data[name])
    if cls is Block and isinstance(data.get("withdrawals"), str):
        data["withdrawals"] = orjson.loads(data["withdrawals"])
    if cls is Transaction and isinstance(data.get("authorization_list"), str):
        data["authorization_list"] = orjson.loads(data["authorization_list"])
    return from_dict({"type": cls.TYPE, "version": cls.VERSION, "data": data})


_RANGE_SQL = {
    kind: f'SELECT {_columns(table)} FROM "{table.name}" WHERE '
    + ("number" if kind == "blocks" else "block_number")
    + f" BETWEEN $1 AND $2 ORDER BY {order}"
    for kind, (table, _, order) in _SOURCES.items()
    if kind not in ("pools", "tokens")
}
# pools created in the range, or (created before the indexed chain) first traded in it
_POOLS_SQL = (
    f"SELECT {_columns(schema.pools)} FROM pools WHERE created_block_number BETWEEN $1 AND $2"
    " OR address IN (SELECT pool_address FROM dex_trades WHERE block_number BETWEEN $1 AND $2"
    " UNION SELECT pool_address FROM dex_liquidity WHERE block_number BETWEEN $1 AND $2) ORDER BY address"
)
# tokens the range's records refer to
_TOKENS_SQL = (
    f"SELECT {_columns(schema.tokens)} FROM tokens WHERE address IN ("
    " SELECT token_address FROM token_transfers WHERE block_number BETWEEN $1 AND $2"
    " UNION SELECT token_bought_address FROM dex_trades WHERE block_number BETWEEN $1 AND $2"
    " UNION SELECT token_sold_address FROM dex_trades WHERE block_number BETWEEN $1 AND $2"
    " UNION SELECT token0 FROM dex_liquidity WHERE block_number BETWEEN $1 AND $2"
    " UNION SELECT token1 FROM dex_liquidity WHERE block_number BETWEEN $1 AND $2"
    " UNION SELECT token0 FROM pools WHERE created_block_number BETWEEN $1 AND $2"
    " UNION SELECT token1 FROM pools WHERE created_block_number BETWEEN $1 AND $2) ORDER BY address"
)

# kind -> SQL giving (block_number, block_hash, key) of every revertible row above $1
_KEYS_SQL: dict[str, str] = {
    "blocks": "SELECT number, hash, number::text FROM blocks WHERE number > $1",
    "transactions": "SELECT block_number, block_hash, hash FROM transactions WHERE block_number > $1",
    "logs": "SELECT block_number, block_hash, block_hash || ':' || log_index FROM logs"
    " WHERE block_number > $1",
    "token_transfers": "SELECT block_number, block_hash, block_hash || ':' || log_index || ':' || batch_index"
    " FROM token_transfers WHERE block_number > $1",
    "pools": "SELECT created_block_number, created_block_hash, address FROM pools"
    " WHERE created_block_number > $1 AND created_block_hash IS NOT NULL",
    "dex_trades": "SELECT block_number, block_hash, block_hash || ':' || log_index FROM dex_trades"
    " WHERE block_number > $1",
    "dex_liquidity": "SELECT block_number, block_hash, block_hash || ':' || log_index FROM dex_liquidity"
    " WHERE block_number > $1",
}


class StoredChain:
    """Read-only questions to the database the Postgres sink writes."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def batch_between(self, first: int, last: int, *, stream: str = "") -> Batch:
        """Blocks ``first..last`` (those stored) with every record derived from them, in chain order."""
        parts: dict[str, list[Any]] = {}
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            for kind, sql in _RANGE_SQL.items():
                cls = _SOURCES[kind][1]
                parts[kind] = [record_of(cls, r) for r in await conn.fetch(sql, first, last)]
            parts["pools"] = [record_of(Pool, r) for r in await conn.fetch(_POOLS_SQL, first, last)]
            parts["tokens"] = [record_of(Token, r) for r in await conn.fetch(_TOKENS_SQL, first, last)]
        return Batch(
            stream=stream,
            blocks=parts["blocks"],
            transactions=parts["transactions"],
            logs=parts["logs"],
            token_transfers=parts["token_transfers"],
            dex_trades=parts["dex_trades"],
            dex_liquidity=parts["dex_liquidity"],
            pools=parts["pools"],
            tokens=parts["tokens"],
        )

    async def keys_above(self, number: int) -> list[BlockKeys]:
        """The keys of every revertible record in blocks numbered above ``number``, per block."""
        by_hash: dict[str, BlockKeys] = {}
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            for kind, sql in _KEYS_SQL.items():
                for block_number, block_hash, key in await conn.fetch(sql, number):
                    entry = by_hash.get(block_hash)
                    if entry is None:
                        entry = by_hash[block_hash] = BlockKeys(block_number, block_hash)
                    entry.add(kind, key)
        return sorted(by_hash.values(), key=lambda b: b.number)

    async def cursor(self, stream: str) -> BlockRef | None:
        row = await self.pool.fetchrow(
            "SELECT block_number, block_hash FROM cursors WHERE stream = $1", stream
        )
        return None if row is None else BlockRef(row["block_number"], row["block_hash"], "")

    async def move_cursor_forward(self, stream: str, number: int, block_hash: str) -> None:
        """Set ``stream``'s cursor, unless it already stands further (two publishers never move it back)."""
        await self.pool.execute(
            "INSERT INTO cursors (stream, block_number, block_hash, updated_at) VALUES ($1, $2, $3, now())"
            " ON CONFLICT (stream) DO UPDATE SET block_number = excluded.block_number,"
            " block_hash = excluded.block_hash, updated_at = excluded.updated_at"
            " WHERE cursors.block_number < excluded.block_number",
            stream,
            number,
            block_hash,
        )

    async def set_cursor(self, stream: str, number: int, block_hash: str) -> None:
        await self.pool.execute(
            "INSERT INTO cursors (stream, block_number, block_hash, updated_at) VALUES ($1, $2, $3, now())"
            " ON CONFLICT (stream) DO UPDATE SET block_number = excluded.block_number,"
            " block_hash = excluded.block_hash, updated_at = excluded.updated_at",
            stream,
            number,
            block_hash,
        )

    async def delete_cursor(self, stream: str) -> None:
        await self.pool.execute("DELETE FROM cursors WHERE stream = $1", stream)

    async def block_range(self) -> tuple[int, int] | None:
        row = await self.pool.fetchrow("SELECT min(number), max(number) FROM blocks")
        if row is None or row[0] is None:
            return None
        return int(row[0]), int(row[1])

    async def hash_at(self, number: int) -> str | None:
        value = await self.pool.fetchval("SELECT hash FROM blocks WHERE number = $1", number)
        return None if value is None else str(value)

    async def contiguous_up_to(self, first: int, last: int) -> BlockRef | None:
        """The last block of the gap-free stored run starting at ``first`` (at most ``last``)."""
        row = await self.pool.fetchrow(
            "SELECT number, hash, parent_hash FROM (SELECT number, hash, parent_hash,"
            " number - row_number() OVER (ORDER BY number) AS run"
            " FROM blocks WHERE number BETWEEN $1 AND $2) s"
            " WHERE run = $1 - 1 ORDER BY number DESC LIMIT 1",
            first,
            last,
        )
        return None if row is None else BlockRef(row["number"], row["hash"], row["parent_hash"])
