"""Query and path parameters every list shares, validated at the edge: an address or hash is ``0x`` hex
of the right length (answered lower-case), block numbers are 0..2^63-1, times are Unix seconds or
ISO-8601, ranges are not inverted, ``limit`` is 1..1000; anything else is a 400 naming the parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Query

from api.cursor import MAX_CURSOR_CHARS, Cursor, decode, fingerprint
from api.errors import bad_request
from api.query import Query as RecordQuery

MAX_BLOCK = 2**63 - 1
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
HASH_PATTERN = r"^0x[0-9a-fA-F]{64}$"
_HASH = re.compile(HASH_PATTERN)
_ADDRESS = re.compile(ADDRESS_PATTERN)
_DIGITS = re.compile(r"^[0-9]{1,19}$")

Address = Annotated[str | None, Query(pattern=ADDRESS_PATTERN, description="0x + 40 hex digits (any case)")]
Hash32 = Annotated[str | None, Query(pattern=HASH_PATTERN, description="0x + 64 hex digits (any case)")]
BlockNumber = Annotated[int | None, Query(ge=0, le=MAX_BLOCK, description="block number, inclusive")]
Time = Annotated[
    str | None,
    Query(
        max_length=40,
        description="Unix seconds, or ISO-8601 (2026-01-31T12:00:00Z; no offset means UTC), inclusive",
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page (1..1000)")]
Order = Annotated[Literal["asc", "desc"], Query(description="chain order (asc) or newest first (desc)")]
CursorText = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_CHARS, description="next_cursor of the previous page (opaque)"),
]


def lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


def iso_time(name: str, value: str, text: str) -> datetime:
    """``text`` (``value`` stripped) as an aware ISO-8601 time, a naive one taken as UTC; a 400 naming
    ``name`` when it is neither that nor Unix seconds (the callers try seconds first)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise bad_request(
            f"{name}: {value!r} is neither Unix seconds nor an ISO-8601 time (2026-01-31T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_time(name: str, value: str | None) -> int | None:
    """Unix seconds from ``value`` (digits, or ISO-8601; a naive time is UTC)."""
    if value is None:
        return None
    text = value.strip()
    seconds = int(text) if _DIGITS.match(text) else int(iso_time(name, value, text).timestamp())
    if not 0 <= seconds <= MAX_BLOCK:
        raise bad_request(f"{name}: {value!r} is out of range")
    return seconds


def check_range(low_name: str, low: int | None, high_name: str, high: int | None) -> None:
    if low is not None and high is not None and low > high:
        raise bad_request(f"{low_name} ({low}) is after {high_name} ({high}): the range is empty")


def block_ref(value: str) -> int | str:
    """A block given by number (digits) or hash (0x + 64 hex)."""
    if _DIGITS.match(value):
        number = int(value)
        if number <= MAX_BLOCK:
            return number
    if _HASH.match(value):
        return value.lower()
    raise bad_request(
        f"block: {value!r} is neither a block number (0..2^63-1) nor a block hash (0x + 64 hex)"
    )


def address_path(name: str, value: str) -> str:
    if not _ADDRESS.match(value):
        raise bad_request(f"{name}: {value!r} is not an address (0x + 40 hex digits)")
    return value.lower()


def hash_path(name: str, value: str) -> str:
    if not _HASH.match(value):
        raise bad_request(f"{name}: {value!r} is not a hash (0x + 64 hex digits)")
    return value.lower()


@dataclass
class ListArgs:
    """What every list takes besides its filters."""

    limit: int
    order: str
    cursor: str | None

    def start(self, query: RecordQuery, resource: str, filters: dict[str, Any]) -> tuple[Cursor | None, str]:
        """The decoded cursor (None on a first page) and the query's fingerprint."""
        fp = fingerprint(resource, self.order, filters)
        if self.cursor is None:
            return None, fp
        return decode(self.cursor, query.key_types(), fp), fp


async def list_args(
    limit: Limit = DEFAULT_LIMIT, order: Order = "asc", cursor: CursorText = None
) -> ListArgs:
    return ListArgs(limit, order, cursor)


def between(
    query: RecordQuery, column: str, names: tuple[str, str], low: int | None, high: int | None
) -> None:
    """``low <= column <= high`` (either end optional), refusing an inverted range."""
    check_range(names[0], low, names[1], high)
    if low is not None:
        query.compare(column, ">=", low)
    if high is not None:
        query.compare(column, "<=", high)
