"""The registry of record kinds (``records.kinds``) against what it names: the record classes' fields and
``sinks.schema``'s tables, and the wire format docs/kafka.md documents."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from records import Block, DexTrade, Log, Pool, Revert, Token, record_types
from records.batch import Batch
from records.kinds import BATCH_KINDS, CEX, CHAIN, Kind
from sinks import schema
from sinks.kafka_keys import KINDS, REVERTIBLE, Topics, encode_batch, keys_of_batch
from tests.every_kind import (
    BLOCK_HASH,
    EXPECTED_KEYS,
    EXPECTED_REVERT_KEYS,
    LOG,
    NUMBER,
    TOKENS,
    every_kind_batch,
)

pytestmark = pytest.mark.unit

# docs/kafka.md: the topics (in production order), the JSON ``type`` on each, which a reorg reverts
DOCUMENTED = [
    ("blocks", "block", True),
    ("transactions", "transaction", True),
    ("logs", "log", True),
    ("token_transfers", "token_transfer", True),
    ("tokens", "token", False),
    ("pools", "pool", True),
    ("dex_trades", "dex_trade", True),
    ("dex_liquidity", "dex_liquidity", True),
    ("reorgs", "reorg", False),
]


def _fields(kind: Kind[object]) -> set[str]:
    return {f.name for f in dataclasses.fields(kind.record)}  # type: ignore[arg-type]


def _stored_columns(table: sa.Table) -> set[str]:
    """Columns a writer fills (not an identity, not a server default such as ``detected_at``)."""
    return {
        c.name for c in table.columns if c.server_default is None and not isinstance(c.default, sa.Identity)
    }


def test_the_chain_kinds_are_the_documented_topics_types_and_reverts() -> None:
    assert [(k.name, k.record.TYPE, k.revertible) for k in CHAIN] == DOCUMENTED
    assert tuple(name for name, _, _ in DOCUMENTED[:-1]) == KINDS
    assert tuple(name for name, _, revertible in DOCUMENTED if revertible) == REVERTIBLE


def test_every_record_type_is_a_kind_once() -> None:
    """A record class added without a registry entry would be written nowhere, silently."""
    declared = [k.record.TYPE for k in (*CHAIN, *CEX)]
    assert len(declared) == len(set(declared))
    assert set(record_types()) - {Revert.TYPE} == set(declared)  # a revert is an envelope, not a kind


@pytest.mark.parametrize("kind", [*CHAIN, *CEX], ids=lambda k: k.name)
def test_every_named_field_is_on_the_record_and_a_column_of_the_table(kind: Kind[object]) -> None:
    table = schema.metadata.tables[kind.table]
    named = {*kind.key, *kind.order, *kind.refers, kind.block, kind.block_hash} - {None}
    assert named <= _fields(kind), f"{kind.name}: not fields of {kind.record.__name__}"
    assert named <= set(table.c.keys()), f"{kind.name}: not columns of {kind.table}"
    assert set(kind.refers.values()) <= {k.name for k in CHAIN}
    assert (kind.block is None) == (kind.block_hash is None)


@pytest.mark.parametrize("kind", BATCH_KINDS, ids=lambda k: k.name)
def test_a_chain_kinds_key_is_unique_in_its_table_and_its_fields_its_columns(kind: Kind[object]) -> None:
    table = schema.metadata.tables[kind.table]
    unique = [tuple(c.name for c in table.primary_key.columns)]
    unique += [tuple(c.name for c in i.columns) for i in table.indexes if i.unique]
    unique += [(c.name,) for c in table.columns if c.unique]
    assert kind.key in unique  # blocks: the number (one canonical chain), not the hash the rows are keyed by
    assert _fields(kind) == _stored_columns(table)  # the writer and the reader map one to one


def test_reorgs_are_stored_field_for_field() -> None:
    (reorgs,) = [k for k in CHAIN if k.name == "reorgs"]
    assert _fields(reorgs) - {"detected_at"} == _stored_columns(schema.reorgs)  # stored as the row's time


@pytest.mark.parametrize("kind", CEX, ids=lambda k: k.name)
def test_cex_kinds_are_keyed_by_exchange_symbol_and_time_not_by_block(kind: Kind[object]) -> None:
    assert kind.block is None and not kind.revertible
    assert kind.key[:2] == ("exchange", "symbol")
    assert kind.key[2] in ("atom_timestamp", "trade_id", "interval")


def test_block_tables_are_the_kinds_whose_every_row_belongs_to_a_block() -> None:
    names = [t.name for t in schema.BLOCK_TABLES]
    assert names == ["blocks", "transactions", "logs", "token_transfers", "dex_trades", "dex_liquidity"]


def test_a_batch_of_every_kind_encodes_to_the_documented_keys_and_headers() -> None:
    encoded = encode_batch(every_kind_batch())
    got: dict[str, list[str]] = {}
    for kind, key, _, headers in encoded:
        got.setdefault(kind, []).append(key.decode())
        assert headers == [("block_hash", BLOCK_HASH.encode())]  # tokens, old pools: the tip's block
    assert got == EXPECTED_KEYS
    # production order, the documented one: a block before what it contains
    assert list(got) == [name for name, _, _ in DOCUMENTED if name in got]
    assert Topics("eth.").of("head", "dex_trades") == "eth.head.dex_trades"


def test_the_revert_keys_of_a_batch_are_its_revertible_records_keys() -> None:
    (keys,) = keys_of_batch(every_kind_batch())
    assert (keys.number, keys.hash) == (NUMBER, BLOCK_HASH)
    assert keys.keys == EXPECTED_REVERT_KEYS


def test_a_batch_gives_each_kind_typed_and_rejects_what_is_not_a_kind() -> None:
    batch = every_kind_batch()
    assert batch.of(Log) == [LOG] and batch.of(Token) == list(TOKENS) and batch.of(Block)[0].number == NUMBER
    assert Batch("x", []).of(DexTrade) == ()
    replaced = batch.replacing({Pool: []}, skipped={"x": 1})
    assert replaced.of(Pool) == [] and replaced.of(Log) == [LOG] and replaced.skipped == {"x": 1}
    assert batch.count() == 1 + 1 + 1 + 1 + 8 + 3 + 1 + 1
    with pytest.raises(TypeError, match="Revert"):
        Batch("x", [], {Revert: []})
    with pytest.raises(TypeError, match="Block"):  # blocks are the batch's spine, never among its records
        Batch("x", [], {Block: []})
