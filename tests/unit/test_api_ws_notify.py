"""The NOTIFY the Postgres writer sends inside each batch's transaction (what API replicas listen to):
its fields, nothing for an empty batch, and a deep reorg's hashes left out rather than a payload
Postgres would refuse (8000 bytes)."""

from __future__ import annotations

import orjson
import pytest

from records import Block, Reorg
from records.batch import Batch
from sinks.postgres import notify_payload

pytestmark = pytest.mark.unit


def block(number: int) -> Block:
    none = (None,) * 11
    return Block(number, "0x" + f"{number:064x}", "0x" + f"{number - 1:064x}", *none, 30_000_000, 0, None,
                 1_700_000_000 + number, 0)  # fmt: skip


def reorg(depth: int) -> Reorg:
    orphaned = tuple("0x" + f"{0xDEAD0000 + i:064x}" for i in range(depth))
    new = tuple("0x" + f"{n:064x}" for n in range(11, 11 + depth))
    return Reorg(10, "0x" + f"{10:064x}", depth, orphaned, new, 1)


def test_a_block_and_a_reorg_are_announced_with_what_a_listener_needs() -> None:
    doc = orjson.loads(notify_payload(Batch("follow", [block(11), block(12)], reorg=reorg(2))) or "")
    assert doc == {
        "stream": "follow",
        "first": 11,
        "last": 12,
        "hash": "0x" + f"{12:064x}",
        "reorg": {"number": 10, "hash": "0x" + f"{10:064x}", "orphaned": list(reorg(2).orphaned_hashes)},
    }
    plain = orjson.loads(notify_payload(Batch("backfill", [block(5)])) or "")
    assert (plain["stream"], plain["first"], plain["last"], plain["reorg"]) == ("backfill", 5, 5, None)


def test_nothing_to_announce_for_an_empty_batch() -> None:
    assert notify_payload(Batch("follow", [])) is None


def test_a_deep_reorg_leaves_its_hashes_out_to_fit_postgres_limit() -> None:
    payload = notify_payload(Batch("follow", [block(11)], reorg=reorg(200)))
    assert payload is not None and len(payload.encode()) < 8000
    assert orjson.loads(payload)["reorg"] == {"number": 10, "hash": "0x" + f"{10:064x}", "orphaned": None}
