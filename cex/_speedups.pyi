"""Types of the C extension ``cex/_speedups.c`` (optional; ``cex.sync`` falls back to Python)."""

from decimal import Decimal
from typing import Any

def bind(cls: type, /) -> None: ...
def deltas(
    exchange: str,
    symbol: str,
    bids: list[tuple[Decimal, Decimal]],
    asks: list[tuple[Decimal, Decimal]],
    sequence: int | None,
    event_timestamp: int | None,
    atom_timestamp: int,
    /,
) -> list[Any]: ...
