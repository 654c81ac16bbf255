"""Blob, set-code (EIP-7702) transactions and the Prague ``requests_hash`` in Postgres: the stored columns
hold the documented form (``authorization_list`` JSONB of the records' JSON objects), and the Kafka
``confirmed.*`` read-back (``StoredChain.batch_between``) gives back the very records that were written.
The input is the hand-written execution-apis-shaped block of ``tests/unit/test_extract_new_types.py``."""

from __future__ import annotations

import orjson
import pytest

from core.database import DatabaseInfo
from indexer.chain.extract import extract_block
from indexer.pipeline.pipeline import batch_of
from records import Transaction
from sinks.postgres import PostgresSink
from sinks.postgres_read import StoredChain
from tests.unit.test_extract_new_types import BLOCK_HASH, PRAGUE_BLOCK, PRAGUE_RECEIPTS, TX3, TX4

pytestmark = pytest.mark.integration


async def test_prague_fields_stored_and_read_back(clean_db: DatabaseInfo) -> None:
    extracted = extract_block(PRAGUE_BLOCK, PRAGUE_RECEIPTS)
    sink = await PostgresSink.connect(clean_db.dsn)
    try:
        await sink.write(batch_of("test", [extracted]))
        await sink.write(batch_of("test", [extracted]))  # replay: nothing twice
        async with sink.pool.acquire() as conn:
            block = await conn.fetchrow("SELECT requests_hash FROM blocks WHERE hash = $1", BLOCK_HASH)
            requests_hash = "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            assert block["requests_hash"] == requests_hash
            rows = await conn.fetch(
                "SELECT hash, type, authorization_list, jsonb_typeof(authorization_list) AS kind,"
                " max_fee_per_blob_gas::text AS mfpbg, blob_versioned_hashes, blob_gas_used,"
                " blob_gas_price::text AS bgp FROM transactions ORDER BY transaction_index"
            )
        assert [(r["hash"], r["type"]) for r in rows] == [(TX3, 3), (TX4, 4)]
        tx3, tx4 = rows
        assert (tx3["authorization_list"], tx3["kind"]) == (None, None)
        assert (tx3["mfpbg"], tx3["blob_gas_used"], tx3["bgp"]) == ("2000000000", 262144, "3")
        assert tx3["blob_versioned_hashes"] == [
            "0x01a7c4f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6e7",
            "0x0100000000000000000000000000000000000000000000000000000000000002",
        ]
        assert tx4["kind"] == "array"  # a JSON array, not a JSON string holding one
        assert orjson.loads(tx4["authorization_list"]) == [
            {
                "chain_id": "1",
                "address": "0x63c0c19a282a1b52b07dd5a65b58948a07dae32b",
                "nonce": 8,
                "y_parity": 1,
                "r": "0xc4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f",
                "s": "0x005e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",
            },
            {
                "chain_id": "0",
                "address": "0x0000000000000000000000000000000000000000",
                "nonce": 0,
                "y_parity": 0,
                "r": "0x0000000000000000000000000000000000000000000000000000000000000001",
                "s": "0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0",
            },
        ]
        back = await StoredChain(sink.pool).batch_between(23097274, 23097274)
        assert back.blocks == [extracted.block]
        assert back.of(Transaction) == list(extracted.transactions)
    finally:
        await sink.close()
