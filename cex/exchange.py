"""What an exchange module declares, and the pieces of parsing they share.

An exchange is a subclass of ``Exchange``: class attributes (name, endpoints, the book's sequence rule,
how a snapshot is obtained) and pure methods from symbols to subscribe frames and from one received frame
to records and ``BookMessage``s. ``cex.feed`` does all the I/O around them, once for every exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import Decimal, InvalidOperation
from typing import ClassVar, Literal

from cex.book import L2Book
from cex.sync import BookMessage, SequenceRule
from records.cex import Trade
from records.codec import Record

_decimal_of_text: Callable[[str], Decimal]
try:  # cex/_speedups.c: Decimal(text) made directly for a plain decimal (~0.04 µs instead of ~0.3)
    from cex._speedups import decimal as _decimal_of_text
except ImportError:
    _decimal_of_text = Decimal

Feed = Literal["trades", "book", "ticker", "funding", "open_interest"]
FEEDS: tuple[Feed, ...] = ("trades", "book", "ticker", "funding", "open_interest")


class MalformedMessage(ValueError):
    """A frame that does not have the shape its channel promises (counted and skipped by the feed)."""


@dataclass(slots=True)
class Parsed:
    """What one frame held: records to publish, book messages to check and apply, and control facts."""

    records: list[Record] = field(default_factory=list)
    books: list[BookMessage] = field(default_factory=list)
    control: bool = False  # subscribe acks, heartbeats, status: proof of life, nothing to publish
    sequence: int | None = None  # a per-connection message counter (Coinbase ``sequence_num``), if any


class Exchange:
    name: ClassVar[str]
    ws_url: ClassVar[str]
    rest_url: ClassVar[str | None] = None
    rule: ClassVar[SequenceRule]
    snapshot_by: ClassVar[Literal["ws", "rest"]] = "ws"  # rest: buffer updates, fetch, then continue
    book_depth: int | None = None  # levels the book keeps (the subscribed depth); None: all sent
    ping_frame: ClassVar[str | None] = None  # an application-level ping some exchanges want
    ping_interval: ClassVar[float] = 20.0
    max_connection_age: ClassVar[float | None] = None  # seconds the exchange keeps a connection open
    fallback_ws_urls: ClassVar[tuple[str, ...]] = ()  # tried in turn when the primary cannot be reached

    def __init__(
        self, ws_url: str | None = None, rest_url: str | None = None, fallbacks: Sequence[str] | None = None
    ) -> None:
        self.ws_url_in_use = ws_url or type(self).ws_url
        self.rest_url_in_use = rest_url or type(self).rest_url
        # an endpoint set by the user replaces the built-in fallbacks too, unless some are given with it
        default = () if ws_url else type(self).fallback_ws_urls
        self.fallbacks = list(default if fallbacks is None else fallbacks)
        # an exchange's number text -> its Decimal, for book levels (``cex.book.row_levels``)
        self.decimals: dict[str, Decimal] = {}

    # --- declarative mapping --------------------------------------------------------------------------
    def to_exchange_symbol(self, symbol: str) -> str:
        """``BTC-USD`` (ours) -> the exchange's spelling."""
        raise NotImplementedError

    def url(self, symbols: Sequence[str], feeds: Sequence[Feed], base: str | None = None) -> str:
        """The websocket URL from ``base`` (default: the primary endpoint); exchanges that take streams or
        a category in the URL override this."""
        return base or self.ws_url_in_use

    def urls(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        """The primary URL, then the fallbacks', in the order a failing connection tries them."""
        return [self.url(symbols, feeds), *(self.url(symbols, feeds, base) for base in self.fallbacks)]

    def subscribe(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        raise NotImplementedError

    def resubscribe_book(self, symbol: str) -> list[str]:
        """Frames that make the exchange send a fresh book snapshot (ws snapshots)."""
        raise NotImplementedError

    def snapshot_url(self, symbol: str) -> str:
        """The REST snapshot (rest snapshots)."""
        raise NotImplementedError

    def parse_snapshot(self, symbol: str, body: bytes, atom_timestamp: int) -> BookMessage:
        raise NotImplementedError

    def parse(self, frame: str | bytes, atom_timestamp: int) -> Parsed:
        raise NotImplementedError

    def verify(self, book: L2Book, msg: BookMessage) -> bool:
        """The exchange's checksum over the book after ``msg`` (only called when ``msg.checksum`` is set)."""
        return True


def dec(text: object) -> Decimal:
    """A price or size from the exchange's text; a non-numeric value is a malformed message."""
    if not isinstance(text, str | int | Decimal):
        raise MalformedMessage(f"not a decimal string: {text!r}")
    try:
        value = _decimal_of_text(text) if type(text) is str else Decimal(text)
    except InvalidOperation as exc:
        raise MalformedMessage(f"not a decimal: {text!r}") from exc
    if not value.is_finite():
        raise MalformedMessage(f"not a finite decimal: {text!r}")
    return value


def taker_side(text: str, buy: str = "buy", sell: str = "sell") -> str:
    if text == buy:
        return "buy"
    if text == sell:
        return "sell"
    raise MalformedMessage(f"unknown side {text!r}")


def trade(exchange: str, symbol: str, price: object, size: object, side: str, trade_id: object,
          event_timestamp: int | None, atom_timestamp: int) -> Trade:  # fmt: skip
    return Trade(
        exchange=exchange,
        symbol=symbol,
        price=dec(price),
        size=dec(size),
        taker_side=side,
        trade_id=None if trade_id is None else str(trade_id),
        maker_order_id=None,
        taker_order_id=None,
        event_timestamp=event_timestamp,
        atom_timestamp=atom_timestamp,
    )


def refuse_nul(frame: str | bytes, parsed: object) -> None:
    """Raise ``MalformedMessage`` when what was parsed from ``frame`` holds a string with a NUL character.

    Postgres ``text`` cannot store ``\\x00``: one trade id or order id with it fails the COPY of the whole
    batch it is in, every other record of the batch with it. So such a message is refused at parse time (the
    feed counts it as malformed and logs it), never sanitised into another id. JSON can only carry a NUL
    escaped (``\\u0000``; a raw control character is not JSON, which the decoders refuse), so only a frame
    holding that escape (or a raw NUL) is walked: two substring searches per frame otherwise."""
    escape, nul = (b"\\u0000", b"\x00") if isinstance(frame, bytes | bytearray) else ("\\u0000", "\x00")
    if escape not in frame and nul not in frame:  # type: ignore[operator]  # bytes in bytes, str in str
        return
    if _holds_nul(parsed):
        raise MalformedMessage("a string holds a NUL character (\\u0000), which Postgres text cannot store")


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if is_dataclass(value) and not isinstance(value, type):
        return any(_holds_nul(getattr(value, f.name, None)) for f in fields(value))
    return False
