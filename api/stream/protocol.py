"""The ``/ws`` protocol: client messages parsed and validated, error codes, cursors, server messages.

Client → server (one JSON object per text frame)::

    {"op": "subscribe", "channel": "dex_trades", "pool": "0x..", "token": "0x..",
     "from": "<cursor>" | "from_block": 123, "finality": "head" | "confirmed", "id": "my-id"}
    {"op": "unsubscribe", "id": "my-id"}
    {"op": "ping"}

Server → client: ``{"event": "subscribed", "id": ..}``, ``{"event": "unsubscribed", "id": ..}``,
``{"event": "error", "code": N, "message": ..}``, ``{"event": "live", "id": ..}``, ``{"event": "pong"}``,
``{"event": "heartbeat", ..}``; data ``{"id", "channel", "type", "version", "cursor", "data"}``; and
``{"id", "channel", "type": "reorg" | "finalized", "data": {..}}``.

A cursor is opaque to clients but sorts in chain order: block number, block hash, then the record's
position in the block (log index, batch index). ``docs/api-websocket.md`` is the reference.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

import orjson


class Code(IntEnum):
    """Error codes of ``{"event": "error"}`` (documented in docs/api-websocket.md)."""

    MALFORMED_JSON = 4000
    BAD_MESSAGE = 4001  # not an object, or a field of the wrong type
    UNKNOWN_OP = 4002
    UNKNOWN_CHANNEL = 4003
    BAD_FILTER = 4004  # unknown filter, malformed address or topic
    BAD_CURSOR = 4005  # malformed cursor or from_block
    UNKNOWN_SUBSCRIPTION = 4006
    DUPLICATE_ID = 4007
    MESSAGE_TOO_LARGE = 4013
    TOO_MANY_SUBSCRIPTIONS = 4029
    CURSOR_NOT_FOUND = 4040  # a well-formed cursor naming a block this node never indexed
    RAW_UNAVAILABLE = 4041  # cex_raw in a process that runs no exchange feed (a separate serve)
    REORG_BELOW_FINALITY = 4090  # a reorg deeper than the confirmations: confirmed data was wrong
    REPLAY_FAILED = 4500  # the database could not be read; subscribe again


class ProtocolError(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


MAX_MESSAGE_BYTES = 16 * 1024
MAX_FILTER_VALUES = 100
MAX_ID_LENGTH = 64
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TOPIC = re.compile(r"^0x[0-9a-fA-F]{64}$")
_HASH = re.compile(r"^0x[0-9a-f]{64}$")

Finality = Literal["head", "confirmed"]


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    name: str
    record_type: str | None  # the records' JSON type (None: the blocks channel sends blocks)
    # filter name -> record fields it matches (any of them)
    filters: Mapping[str, tuple[str, ...]]
    topics: bool = False  # filter values are 32-byte topics, not addresses
    live_only: bool = False  # CEX channels and the merged trades: no from / from_block / finality


CHANNELS: dict[str, ChannelSpec] = {
    "blocks": ChannelSpec("blocks", "block", {}),
    "dex_trades": ChannelSpec(
        "dex_trades",
        "dex_trade",
        {
            "pool": ("pool_address",),
            "token": ("token_bought_address", "token_sold_address"),
            "taker": ("taker",),
        },
    ),
    "token_transfers": ChannelSpec(
        "token_transfers",
        "token_transfer",
        {"token": ("token_address",), "address": ("from_address", "to_address")},
    ),
    "logs": ChannelSpec(
        "logs",
        "log",
        {
            "address": ("address",),
            "topic0": ("topic0",),
            "topic1": ("topic1",),
            "topic2": ("topic2",),
            "topic3": ("topic3",),
        },
    ),
}
_TOPIC_FILTERS = frozenset({"topic0", "topic1", "topic2", "topic3"})
_SUBSCRIBE_FIELDS = frozenset({"op", "channel", "id", "from", "from_block", "finality"})

# exchange data (api.stream.cex): filters by exchange and symbol; the merged trades by venue, symbol, pool
_CEX_FILTERS = {"exchange": ("exchange",), "symbol": ("symbol",)}
CEX_CHANNELS: dict[str, ChannelSpec] = {
    name: ChannelSpec(name, kind, _CEX_FILTERS, live_only=True)
    for name, kind in (
        ("cex_trades", "trade"),
        ("cex_book", None),
        ("cex_ticker", "ticker"),
        ("cex_candles", "candle"),
        ("cex_funding", "funding_rate"),
        ("cex_open_interest", "open_interest"),
    )
}
# every frame as an exchange sent it, where the feeds run in this process: by exchange only (a frame is the
# exchange's text, which may name several symbols or none)
CEX_CHANNELS["cex_raw"] = ChannelSpec("cex_raw", "raw", {"exchange": ("exchange",)}, live_only=True)
CEX_CHANNELS["trades"] = ChannelSpec(
    "trades", "merged_trade", {"venue": ("venue",), "symbol": ("symbol",), "pool": ("pool",)}, live_only=True
)
ALL_CHANNELS: dict[str, ChannelSpec] = {**CHANNELS, **CEX_CHANNELS}
# the seed's form {"op": "subscribe", "exchange": "binance", "feed": "trades"}: feed -> channel
SEED_FEEDS: dict[str, str] = {
    "trades": "cex_trades",
    "lob": "cex_book",
    "ticker": "cex_ticker",
    "ohlcv-m1": "cex_candles",
    # the seed names no feed for these (its schemas are funding_rate and open_interest): dexnode's names
    "funding": "cex_funding",
    "open_interest": "cex_open_interest",
    "raw": "cex_raw",  # live only, where the feeds run (dexnode run); elsewhere error RAW_UNAVAILABLE
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # exchange / venue names, lower-case
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._/-]{0,79}$")  # BASE-QUOTE[-PERP], upper-case


# -- cursors --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in chain order: after the record at (number, index, sub_index) of block ``hash``.
    Blocks have index -1 (a block comes before its records)."""

    number: int
    index: int
    sub_index: int
    hash: str = field(compare=False)

    def encode(self) -> str:
        raw = f"{self.number}:{self.hash}:{self.index}:{self.sub_index}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: Any) -> Cursor:
        if not isinstance(text, str) or not 0 < len(text) <= 200:
            raise ProtocolError(Code.BAD_CURSOR, "cursor must be a string from a data message's 'cursor'")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            number, block_hash, index, sub_index = raw.split(":")
            cursor = cls(int(number), int(index), int(sub_index), block_hash)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise ProtocolError(Code.BAD_CURSOR, "malformed cursor (not one this server issued)") from None
        if cursor.number < 0 or cursor.index < -1 or cursor.sub_index < 0 or not _HASH.match(block_hash):
            raise ProtocolError(Code.BAD_CURSOR, "malformed cursor (not one this server issued)")
        return cursor


def block_cursor(number: int, block_hash: str) -> Cursor:
    return Cursor(number, -1, 0, block_hash)


# -- client messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: str
    channel: ChannelSpec
    filters: Mapping[str, frozenset[str]]  # filter name -> accepted lower-case values
    finality: Finality = "head"
    start: Cursor | None = None  # replay what follows this position
    from_block: int | None = None  # replay from this block


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: str


@dataclass(frozen=True, slots=True)
class Ping:
    pass


ClientMessage = Subscribe | Unsubscribe | Ping


def parse(text: str | bytes, next_id: int) -> ClientMessage:
    """One client frame → a message; anything wrong → ``ProtocolError`` with a code a client can act on.
    ``next_id`` names a subscription that does not bring its own ``id``."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError(Code.MESSAGE_TOO_LARGE, f"message longer than {MAX_MESSAGE_BYTES} bytes")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(Code.MALFORMED_JSON, f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(Code.BAD_MESSAGE, "a message must be a JSON object with an 'op'")
    op = doc.get("op")
    if op == "subscribe":
        return _subscribe(doc, next_id)
    if op == "unsubscribe":
        if set(doc) - {"op", "id"}:
            raise ProtocolError(Code.BAD_MESSAGE, "unsubscribe takes only 'id'")
        return Unsubscribe(_id(doc.get("id"), required=True) or "")
    if op == "ping":
        return Ping()
    if op is None:
        raise ProtocolError(Code.BAD_MESSAGE, "missing 'op' (subscribe, unsubscribe or ping)")
    raise ProtocolError(Code.UNKNOWN_OP, f"unknown op {str(op)[:40]!r} (subscribe, unsubscribe or ping)")


def _id(value: Any, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise ProtocolError(Code.BAD_MESSAGE, "missing 'id'")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ProtocolError(Code.BAD_MESSAGE, "'id' must be a string or an integer")
    text = str(value)
    if not 0 < len(text) <= MAX_ID_LENGTH:
        raise ProtocolError(Code.BAD_MESSAGE, f"'id' must be 1 to {MAX_ID_LENGTH} characters")
    return text


def seed_form(doc: dict[str, Any]) -> dict[str, Any]:
    """The seed's ``{"exchange": .., "feed": ..}`` as a ``channel`` subscription filtered by exchange."""
    if "channel" in doc:
        raise ProtocolError(Code.BAD_MESSAGE, "give 'channel' or 'feed' (the seed's form), not both")
    feed = doc["feed"]
    if not isinstance(feed, str) or feed not in SEED_FEEDS:
        raise ProtocolError(
            Code.UNKNOWN_CHANNEL, f"unknown feed {str(feed)[:40]!r} (one of {', '.join(SEED_FEEDS)})"
        )
    channel = SEED_FEEDS[feed]
    if doc.get("exchange") is None:
        raise ProtocolError(Code.BAD_MESSAGE, "the seed's form needs 'exchange' with 'feed'")
    rest = {k: v for k, v in doc.items() if k != "feed"}
    return {**rest, "channel": channel}


def _subscribe(doc: dict[str, Any], next_id: int) -> Subscribe:
    if "feed" in doc:
        doc = seed_form(doc)
    name = doc.get("channel")
    channel = ALL_CHANNELS.get(name) if isinstance(name, str) else None
    if channel is None:
        raise ProtocolError(
            Code.UNKNOWN_CHANNEL, f"unknown channel {str(name)[:40]!r} (one of {', '.join(ALL_CHANNELS)})"
        )
    unknown = set(doc) - _SUBSCRIBE_FIELDS - set(channel.filters)
    if unknown:
        accepted = ", ".join(channel.filters) or "none"
        raise ProtocolError(
            Code.BAD_FILTER,
            f"unknown field(s) {', '.join(sorted(unknown))[:80]} for channel {channel.name}"
            f" (filters: {accepted})",
        )
    filters = {f: _filter_values(f, doc[f]) for f in channel.filters if f in doc and doc[f] is not None}
    if channel.live_only:
        given = [f for f in ("from", "from_block", "finality") if doc.get(f) is not None]
        if given:
            raise ProtocolError(
                Code.BAD_CURSOR,
                f"channel {channel.name} is live only: {', '.join(given)} not accepted (no replay)",
            )
    finality = doc.get("finality", "head")
    if finality not in ("head", "confirmed"):
        raise ProtocolError(Code.BAD_MESSAGE, "'finality' must be 'head' or 'confirmed'")
    if "from" in doc and "from_block" in doc:
        raise ProtocolError(Code.BAD_CURSOR, "give 'from' or 'from_block', not both")
    start = Cursor.decode(doc["from"]) if doc.get("from") is not None else None
    from_block = doc.get("from_block")
    if from_block is not None and (
        isinstance(from_block, bool) or not isinstance(from_block, int) or not 0 <= from_block < 2**63
    ):
        raise ProtocolError(Code.BAD_CURSOR, "'from_block' must be a block number (an integer >= 0)")
    sid = _id(doc.get("id"), required=False) or str(next_id)
    return Subscribe(sid, channel, filters, finality, start, from_block)


def _filter_values(name: str, value: Any) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > MAX_FILTER_VALUES:
        raise ProtocolError(Code.BAD_FILTER, f"'{name}' takes 1 to {MAX_FILTER_VALUES} values")
    if name in ("exchange", "venue", "symbol"):
        upper = name == "symbol"
        check, what = (_SYMBOL, "a symbol (BASE-QUOTE)") if upper else (_NAME, "a lower-case name")
        out = []
        for v in values:
            text = (v.upper() if upper else v.lower()) if isinstance(v, str) else None
            if text is None or not check.match(text):
                raise ProtocolError(Code.BAD_FILTER, f"'{name}' must be {what} (got {str(v)[:70]!r})")
            out.append(text)
        return frozenset(out)
    pattern, what = (_TOPIC, "a 32-byte 0x topic") if name in _TOPIC_FILTERS else (_ADDRESS, "a 0x address")
    for v in values:
        if not isinstance(v, str) or not pattern.match(v):
            raise ProtocolError(Code.BAD_FILTER, f"'{name}' must be {what} (got {str(v)[:70]!r})")
    return frozenset(v.lower() for v in values)


def matches(sub: Subscribe, fields: Mapping[str, Any]) -> bool:
    """Whether a record (its JSON ``data``) passes the subscription's filters (all must match; a
    filter matches when any of its fields holds one of its values)."""
    for name, accepted in sub.filters.items():
        if not any(fields.get(f) in accepted for f in sub.channel.filters[name]):
            return False
    return True


# -- server messages ------------------------------------------------------------------------------


def event(name: str, **fields: Any) -> str:
    return orjson.dumps({"event": name, **fields}).decode()


def error(code: Code, message: str, **fields: Any) -> str:
    return event("error", code=int(code), message=message, **fields)
