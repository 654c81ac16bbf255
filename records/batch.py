"""The batch every sink receives: a container of records.

A batch is one block (live) or a range of confirmed blocks (backfill), with everything derived
from them. When ``reorg`` is set, the batch replaces every block above the common ancestor: a sink
applies the rollback and the new branch together (one Postgres transaction; revert messages then
records on Kafka).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from records.chain import Block, DexLiquidity, DexTrade, Log, Pool, Reorg, Token, TokenTransfer, Transaction


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
