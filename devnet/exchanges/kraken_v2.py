"""Kraken v2 frames built from the recorded v1 frames (2021-04-17, ``KRAKEN.ws.50.0.first500lines``).

Constructed, from recorded data: the levels (price and volume text, digit for digit), their order and the
checksums are the recorded v1 ones; the envelope is v2's as documented (``{"channel":"book","type":
"snapshot"|"update","data":[{symbol, bids, asks, checksum, timestamp}]}``, numbers as JSON numbers). v1 and v2
compute the checksum by the same rule over the same digits, so each recorded ``"c"`` is the v2 checksum of the
same book. The ``instrument`` frame gives each pair the precisions its recorded text carries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from devnet.exchanges import recording

_ASSET = {"XBT": "BTC", "XDG": "DOGE"}


def v2_symbol(v1_pair: str) -> str:
    base, quote = v1_pair.split("/")
    return f"{_ASSET.get(base, base)}/{_ASSET.get(quote, quote)}"


def iso(seconds: str) -> str:
    whole, _, frac = seconds.partition(".")
    moment = datetime.fromtimestamp(int(whole), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + (frac + "000000")[:6] + "Z"


def _levels(rows: list[tuple[str, str]]) -> str:
    # the recorded text goes in verbatim as JSON numbers: 0.043130 keeps its digits
    return "[" + ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in rows) + "]"


Rows = list[tuple[str, str]]


def book_frame(kind: str, symbol: str, bids: Rows, asks: Rows, checksum: int, timestamp: str) -> str:
    return (
        f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}","bids":{_levels(bids)},'
        f'"asks":{_levels(asks)},"checksum":{checksum},"timestamp":"{timestamp}"}}]}}'
    )


def _decimals(text: str) -> int:
    return len(text.partition(".")[2])


@dataclass
class BookFrame:
    symbol: str  # v2: BTC/CHF
    snapshot: bool
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    checksum: int  # the recorded one (0 on snapshots: v1 sent none there)
    timestamp: str

    def text(self) -> str:
        kind = "snapshot" if self.snapshot else "update"
        return book_frame(kind, self.symbol, self.bids, self.asks, self.checksum, self.timestamp)


@dataclass
class KrakenV2Recording:
    books: list[BookFrame] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)  # ours: BTC-CHF
    precision: dict[str, tuple[int, int]] = field(default_factory=dict)  # v2 symbol -> (price, qty)
    checksums: int = 0  # update frames carrying a recorded checksum

    @property
    def frames(self) -> list[str]:
        return [b.text() for b in self.books]

    def instrument_frame(self) -> str:
        pairs = [
            {"symbol": s, "price_precision": p, "qty_precision": q, "status": "online"}
            for s, (p, q) in self.precision.items()
        ]
        data = {"assets": [], "pairs": pairs}
        return json.dumps({"channel": "instrument", "type": "snapshot", "data": data})


def from_v1(path: Path) -> KrakenV2Recording:
    out = KrakenV2Recording()
    pairs: dict[int, str] = {}
    for payload in recording.received(path):
        msg = json.loads(payload)
        if isinstance(msg, dict):
            if msg.get("event") == "subscriptionStatus":
                pairs[msg["channelID"]] = v2_symbol(msg["pair"])
            continue
        symbol = pairs[msg[0]]
        sides: dict[str, list[list[str]]] = {}
        checksum = 0
        for part in msg[1:-2]:
            for key, value in part.items():
                if key == "c":
                    checksum = int(value)
                else:
                    sides[key] = value
        snapshot = "as" in sides or "bs" in sides
        bids = [(r[0], r[1]) for r in sides.get("bs" if snapshot else "b", [])]
        asks = [(r[0], r[1]) for r in sides.get("as" if snapshot else "a", [])]
        rows = sides.get("bs" if snapshot else "b", []) + sides.get("as" if snapshot else "a", [])
        if snapshot:
            out.symbols.append(symbol.replace("/", "-"))
            out.precision[symbol] = (_decimals(rows[0][0]), _decimals(rows[0][1]))
        else:
            out.checksums += 1
        stamp = iso(max(row[2] for row in rows))
        out.books.append(BookFrame(symbol, snapshot, bids, asks, checksum, stamp))
    return out
