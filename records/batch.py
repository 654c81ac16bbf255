"""The batch every sink receives: a container of records.

A batch is one block (live) or a range of confirmed blocks (backfill), with everything derived
from them. When ``reorg`` is set, the batch replaces every block above the common ancestor: a sink
applies the rollback and the new branch together (one Postgres transaction; revert messages then
records on Kafka).

Records are held per kind (``records.kinds.BATCH_KINDS``), so a new kind needs no change here:
``batch.of(DexTrade)`` is typed by the class asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from records.chain import Block, Reorg
from records.codec import Record
from records.kinds import BATCH_KINDS

R = TypeVar("R", bound=Record)

_KINDS_BESIDE_BLOCKS = frozenset(k.record for k in BATCH_KINDS if k.record is not Block)

Parts = Mapping[type[Record], Sequence[Record]]


@dataclass(frozen=True, slots=True, init=False)
class Batch:
    stream: str  # the cursor this batch advances: "follow", "backfill", ...
    blocks: Sequence[Block]  # the spine: what the batch is the range of
    records: Parts  # every other kind's records, by record class
    reorg: Reorg | None
    skipped: dict[str, int]  # counted bad input, by reason

    def __init__(
        self,
        stream: str,
        blocks: Sequence[Block],
        records: Parts | None = None,
        *,
        reorg: Reorg | None = None,
        skipped: dict[str, int] | None = None,
    ) -> None:
        records = dict(records or {})
        unknown = [cls.__name__ for cls in records if cls not in _KINDS_BESIDE_BLOCKS]
        if unknown:  # a typo'd class would otherwise be dropped by every sink without a word
            raise TypeError(f"not a batch record kind (records.kinds.BATCH_KINDS): {', '.join(unknown)}")
        object.__setattr__(self, "stream", stream)
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "records", records)
        object.__setattr__(self, "reorg", reorg)
        object.__setattr__(self, "skipped", {} if skipped is None else skipped)

    def of(self, cls: type[R]) -> Sequence[R]:
        """The batch's records of the kind ``cls`` (empty if none)."""
        if cls is Block:
            return cast(Sequence[R], self.blocks)
        return cast(Sequence[R], self.records.get(cls, ()))

    def replacing(self, records: Parts, *, skipped: dict[str, int] | None = None) -> Batch:
        """The same batch with the given kinds' records replaced (others kept)."""
        return Batch(
            self.stream,
            self.blocks,
            {**self.records, **records},
            reorg=self.reorg,
            skipped=self.skipped if skipped is None else skipped,
        )

    def count(self) -> int:
        """Records of every kind, blocks included."""
        return len(self.blocks) + sum(len(rows) for rows in self.records.values())

    @property
    def tip(self) -> Block | None:
        return self.blocks[-1] if self.blocks else None

    @property
    def first_number(self) -> int | None:
        return self.blocks[0].number if self.blocks else None
