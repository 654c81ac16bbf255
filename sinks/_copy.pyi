"""Types of the C extension ``sinks/_copy.c`` (optional; ``sinks.copy_text`` falls back to Python)."""

from collections.abc import Callable, Sequence
from typing import Any

STR: int
NUM: int
ARRAY: int
CONVERT: int
NULLABLE: int

class Encoder:
    def __init__(
        self, columns: tuple[tuple[str, int, Callable[[Any], Any] | None], ...], cls: type | None = None
    ) -> None: ...
    def encode(self, records: Sequence[Any], /) -> bytes: ...
