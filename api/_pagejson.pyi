"""Types of the C extension ``api/_pagejson.c`` (optional; ``api.query`` falls back to dict + orjson)."""

from collections.abc import Sequence
from typing import Any

def objects(keys: tuple[bytes, ...], rows: list[Sequence[Any]], count: int, /) -> bytes: ...
