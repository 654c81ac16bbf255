"""``api.stream.kafka_batches``: whole batches out of ``head.*`` messages and journal entries in any order,
encoded by the real head sink's encoders from the hand-written records of ``tests/every_kind.py``; what
comes out is compared with those records, not with the code's own output."""

from __future__ import annotations

import random

import pytest

from api.stream.kafka_batches import BatchAssembler
from records import DexTrade, Log, TokenTransfer
from records.batch import Batch
from sinks import kafka_journal
from sinks.kafka_journal import InFlight, encode
from sinks.kafka_keys import REORGS, Encoded, encode_batch, encode_record, keys_of_batch, reorg_key
from tests.every_kind import BLOCK, LOG, REORG, TRADE, TRANSFER, every_kind_batch

pytestmark = pytest.mark.unit


def _batch(stream: str = "follow", *, reorg: bool = False) -> Batch:
    batch = every_kind_batch(stream)
    return Batch(stream, batch.blocks, dict(batch.records), reorg=REORG if reorg else None)


def _journal(batch: Batch, *, orphaned: Batch | None = None) -> list[bytes]:
    reorg = batch.reorg
    entry = InFlight(
        stream=batch.stream,
        after=(BLOCK.number, BLOCK.hash),
        blocks=keys_of_batch(batch),
        orphaned=keys_of_batch(orphaned) if orphaned is not None else [],
        reorg=None
        if reorg is None
        else (reorg_key(reorg), reorg.common_ancestor_number, reorg.common_ancestor_hash),
    )
    return encode(entry)


def _messages(batch: Batch) -> list[Encoded]:
    out = list(encode_batch(batch))
    if batch.reorg is not None:
        out.append(encode_record(REORGS, batch.reorg, (0, "")))
    return out


def _feed(assembler: BatchAssembler, message: Encoded) -> None:
    kind, key, value, headers = message
    block_hash = dict(headers).get("block_hash") or b""
    assert isinstance(block_hash, bytes)
    assembler.record(kind, key.decode(), block_hash.decode(), value)


def test_a_batch_is_released_once_every_key_its_journal_names_arrived_in_any_order() -> None:
    batch = _batch(reorg=True)
    messages = _messages(batch)
    random.Random(7).shuffle(messages)
    trade = next(m for m in messages if m[0] == "dex_trades")
    assembler = BatchAssembler("follow")
    for message in messages:  # all but the trade, before the journal entry
        if message is not trade:
            _feed(assembler, message)
    assert assembler.release() is None  # no entry yet
    for part in _journal(batch):
        assembler.journal(part)
    assert assembler.missing_by_kind(assembler.entries[0]) == {"dex_trades": 1}
    assert assembler.release() is None
    _feed(assembler, trade)
    released = assembler.release()
    assert released is not None
    assert released.reorg == REORG
    assert released.blocks == [BLOCK]
    assert released.records == {Log: [LOG], TokenTransfer: [TRANSFER], DexTrade: [TRADE]}
    assert not assembler.entries and assembler.buffered["blocks"] == 0


def test_a_reorg_batch_waits_for_its_reorg_record() -> None:
    batch = _batch(reorg=True)
    assembler = BatchAssembler("follow")
    for part in _journal(batch):
        assembler.journal(part)
    for message in _messages(batch):
        if message[0] != REORGS:
            _feed(assembler, message)
    assert assembler.missing_by_kind(assembler.entries[0]) == {REORGS: 1}
    assert assembler.release() is None


def test_an_entry_in_several_parts_counts_once_all_parts_are_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_journal, "PART_BYTES", 100)  # one block's keys per part at most
    batch = _batch()
    parts = _journal(batch, orphaned=_batch("other"))  # the orphaned block's keys in a part of their own
    assert len(parts) > 1
    assembler = BatchAssembler("follow")
    for part in reversed(parts[1:]):
        assembler.journal(part)
    assert not assembler.entries
    assembler.journal(parts[0])
    assert len(assembler.entries) == 1
    for message in _messages(batch):
        _feed(assembler, message)
    released = assembler.release()
    assert released is not None and released.blocks == [BLOCK]


def test_reverts_do_not_take_back_what_is_held_and_other_streams_are_not_live() -> None:
    batch = _batch()
    assembler = BatchAssembler("follow")
    for message in _messages(batch):
        _feed(assembler, message)
    # the reorg's reverts can be read before the journal entry of the block they undo
    for kind, revert in keys_of_batch(batch)[0].reverts():
        _feed(assembler, encode_record(kind, revert, (BLOCK.number, BLOCK.hash)))
    assert assembler.reverted > 0
    for part in _journal(_batch("backfill")):
        assembler.journal(part)
    assert not assembler.entries
    for part in _journal(batch):
        assembler.journal(part)
    released = assembler.release()
    assert released is not None and released.records[DexTrade] == [TRADE]


def test_an_unreadable_message_keeps_the_batch_back_and_says_so() -> None:
    batch = _batch()
    assembler = BatchAssembler("follow")
    for part in _journal(batch):
        assembler.journal(part)
    assembler.journal(b"{not json")
    for kind, key, value, headers in _messages(batch):
        garbled = value.replace(b'"version":1', b'"version":99') if kind == "logs" else value
        _feed(assembler, (kind, key, garbled, headers))
    assert assembler.release() is None
    assert assembler.unreadable and assembler.skipped == 2  # the journal message and the log
    assembler.drop_first()
    assert not assembler.unreadable and not assembler.entries
