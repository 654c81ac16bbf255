"""Opaque list cursors: the pinned head, the last row's sort key, and a fingerprint of the query.

A cursor is URL-safe base64 of a small JSON document. It is opaque to clients (its layout may change
with ``v``), validated strictly when it comes back: a garbled cursor, or one from a different query
(other filters, order or resource), is a 400, never a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from api.errors import bad_request

VERSION = 1
MAX_CURSOR_CHARS = 2000


@dataclass(frozen=True)
class Cursor:
    head_number: int  # the indexed head the first page was pinned to
    head_hash: str
    key: tuple[Any, ...]  # the sort key of the last row returned
    fingerprint: str  # which query it belongs to

    def encode(self) -> str:
        doc = {
            "v": VERSION,
            "h": [self.head_number, self.head_hash],
            "k": list(self.key),
            "f": self.fingerprint,
        }
        return base64.urlsafe_b64encode(orjson.dumps(doc)).decode().rstrip("=")


def fingerprint(resource: str, order: str, filters: dict[str, Any]) -> str:
    """The same filters (in any parameter order), order and resource give the same fingerprint."""
    doc = orjson.dumps([resource, order, sorted((k, str(v)) for k, v in filters.items() if v is not None)])
    return hashlib.sha256(doc).hexdigest()[:16]


def _bad(why: str) -> Exception:
    return bad_request(f"bad cursor: {why}; pass back the next_cursor of the previous page unchanged")


def decode(text: str, key_types: tuple[type, ...], expected_fingerprint: str) -> Cursor:
    """The cursor in ``text``; its key must have ``key_types`` (int or str, per sort column)."""
    if len(text) > MAX_CURSOR_CHARS:
        raise _bad("too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise _bad("not a cursor") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise _bad("not a cursor of this API version")
    head, key, fp = doc.get("h"), doc.get("k"), doc.get("f")
    if not (isinstance(head, list) and len(head) == 2 and _is_int(head[0]) and isinstance(head[1], str)):
        raise _bad("no pinned head")
    if not isinstance(key, list) or len(key) != len(key_types):
        raise _bad("wrong key")
    for value, kind in zip(key, key_types, strict=True):
        if (kind is int and not _is_int(value)) or (kind is str and not isinstance(value, str)):
            raise _bad("wrong key")
    if fp != expected_fingerprint:
        raise bad_request(
            "bad cursor: it belongs to another query (other filters, order or resource); a cursor"
            " continues the query that returned it"
        )
    return Cursor(int(head[0]), head[1], tuple(key), fp)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
