"""Types of the C extension ``cex/_speedups.c`` (optional; ``cex.sync`` falls back to Python)."""

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

def bind(cls: type, /) -> None: ...
def apply_side(
    prices: list[Decimal],
    sizes: list[Decimal],
    texts: list[str | None],
    levels: Iterable[tuple[Decimal, Decimal]],
    /,
) -> None: ...
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
