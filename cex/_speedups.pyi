"""Types of the C extension ``cex/_speedups.c`` (optional; ``cex.sync`` falls back to Python)."""

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

def bind(cls: type, /) -> None: ...
def decimal(text: str, /) -> Decimal: ...
def fast_decimals() -> bool: ...
def apply_side(
    keys: list[float | None],
    prices: list[Decimal],
    sizes: list[Decimal],
    texts: list[str | None],
    levels: Iterable[tuple[Decimal, Decimal]],
    level_keys: list[float | None] | None = ...,
    /,
) -> None: ...
def levels(
    rows: Iterable[Sequence[object]],
    cache: dict[str, Decimal] | None,
    keys: list[float | None] = ...,
    /,
) -> list[tuple[Decimal, Decimal]]: ...
def top_texts(
    prices: list[Decimal],
    sizes: list[Decimal],
    texts: list[str | None],
    n: int,
    best_last: bool,
    style: int,
    price_decimals: int | None,
    qty_decimals: int | None,
    make: Callable[[Decimal, Decimal], str],
    /,
) -> list[str]: ...
def pairs(items: list[Any], first: str, second: str, /) -> list[tuple[Any, Any]]: ...
def ordered_side(
    levels: Iterable[tuple[Decimal, Decimal]], /
) -> tuple[list[Decimal], list[Decimal]] | None: ...
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
def book_json(frame: str | bytes, price_key: str = ..., size_key: str = ..., /) -> dict[str, Any] | None: ...
