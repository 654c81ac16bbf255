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

from tests.cex_servers import recording

_ASSET = {"XBT": "BTC", "XDG": "DOGE"}


def v2_symbol(v1_pair: str) -> str:
    base, quote = v1_pair.split("/")
    return f"{_ASSET.get(base, base)}/{_ASSET.get(quote, quote)}"


def _iso(seconds: str) -> str:
    whole, _, frac = seconds.partition(".")
    moment = datetime.fromtimestamp(int(whole), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + (frac + "000000")[:6] + "Z"


def _levels(rows: list[list[str]]) -> str:
    # the recorded text goes in verbatim as JSON numbers: 0.043130 keeps its digits
    return "[" + ",".join(f'{{"price":{row[0]},"qty":{row[1]}}}' for row in rows) + "]"


def _decimals(text: str) -> int:
    return len(text.partition(".")[2])


@dataclass
class KrakenV2Recording:
    frames: list[str] = field(default_factory=list)  # book frames, in recorded order
    symbols: list[str] = field(default_factory=list)  # ours: BTC-CHF
    precision: dict[str, tuple[int, int]] = field(default_factory=dict)  # v2 symbol -> (price, qty)
    checksums: int = 0  # update frames carrying a recorded checksum

    def instrument_frame(self) -> str:
        pairs = [
            {"symbol": s, "price_precision": p, "qty_precision": q, "status": "online"}
            for s, (p, q) in self.precision.items()
        ]
        return json.dumps(
            {"channel": "instrument", "type": "snapshot", "data": {"assets": [], "pairs": pairs}}
        )


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
        checksum = None
        for part in msg[1:-2]:
            for key, value in part.items():
                if key == "c":
                    checksum = int(value)
                else:
                    sides[key] = value
        snapshot = "as" in sides or "bs" in sides
        bids = sides.get("bs" if snapshot else "b", [])
        asks = sides.get("as" if snapshot else "a", [])
        rows = bids + asks
        if snapshot:
            out.symbols.append(symbol.replace("/", "-"))
            out.precision[symbol] = (_decimals(rows[0][0]), _decimals(rows[0][1]))
            # v2 snapshots carry a checksum too; v1's did not, so none is claimed here (0 = not sent)
            checksum = 0
        else:
            out.checksums += 1
        stamp = max(row[2] for row in rows)
        kind = "snapshot" if snapshot else "update"
        out.frames.append(
            f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}","bids":{_levels(bids)},'
            f'"asks":{_levels(asks)},"checksum":{checksum or 0},"timestamp":"{_iso(stamp)}"}}]}}'
        )
    return out
