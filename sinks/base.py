"""The one sink interface, and the batch every sink receives.

A batch is one block (live) or a range of confirmed blocks (backfill), with everything derived
from them. When ``reorg`` is set, the batch replaces every block above the common ancestor: a sink
applies the rollback and the new branch together (one Postgres transaction; revert messages then
records on Kafka).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from records import Block, DexLiquidity, DexTrade, Log, Pool, Reorg, Token, TokenTransfer, Transaction


@dataclass(frozen=True, slots=True)
class Batch:
    stream: str  # the cursor this batch advances: "follow", "backfill", ...
    blocks: Sequence[Block]
    transactions: Sequence[Transaction] = ()
    logs: Sequence[Log] = ()
    token_transfers: Sequence[TokenTransfer] = ()
    dex_trades: Sequence[DexTrade] = ()
    dex_liquidity: Sequence[DexLiquidity] = ()
    pools: Sequence[Pool] = ()
    tokens: Sequence[Token] = ()
    reorg: Reorg | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # counted bad input, by reason

    @property
    def tip(self) -> Block | None:
        return self.blocks[-1] if self.blocks else None

    @property
    def first_number(self) -> int | None:
        return self.blocks[0].number if self.blocks else None


class Sink(Protocol):
    async def write(self, batch: Batch) -> None:
        """Make the batch durable (and the reorg in it, if any). Raises on failure; nothing half-done."""

    async def revert(self, from_block: int) -> None:
        """Remove everything derived from blocks numbered ``from_block`` and above."""

    async def close(self) -> None: ...


class CompositeSink:
    """Sinks in order: the first (Postgres) commits before the next sees the batch."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    async def write(self, batch: Batch) -> None:
        for sink in self.sinks:
            await sink.write(batch)

    async def revert(self, from_block: int) -> None:
        for sink in self.sinks:
            await sink.revert(from_block)

    async def close(self) -> None:
        for sink in reversed(self.sinks):
            await sink.close()
