"""The peer side of bench/cex.py: cryptofeed's own message handlers on the same recorded frames.

Runs inside the peer venv (cryptofeed installed there by bench/cex.py), imports nothing of dexnode.
Symbols are registered offline (the recordings keep no instrument lists), and Binance's REST snapshot is
answered from the recorded one. Prints one JSON line per exchange: frames, book levels, seconds.

    <peer-venv>/bin/python bench/cex_cryptofeed.py FIXTURES_DIR ROUNDS CHECKSUMS(0|1)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from cryptofeed.defines import L2_BOOK, TICKER, TRADES
from cryptofeed.exchanges import OKX, Binance, Kraken
from cryptofeed.symbols import Symbols


def received(path: Path) -> list[tuple[float, str]]:
    out = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith(("wss://", "https://", "configuration:")):
            continue
        ts, _, payload = line.partition(": ")
        out.append((float(ts), payload))
    return out


class Conn:
    uuid = "bench"
    conn_id = "bench"


async def _noop(*args: object, **kwargs: object) -> None:
    return None


def levels(frames: list[tuple[float, str]]) -> int:
    n = 0
    for _, payload in frames:
        msg = json.loads(payload)
        if isinstance(msg, dict) and "data" in msg:
            data = msg["data"]
            if isinstance(data, list):  # okx
                n += sum(len(d.get("bids", [])) + len(d.get("asks", [])) for d in data if "asks" in d)
            elif data.get("e") == "depthUpdate":
                n += len(data["b"]) + len(data["a"])
        elif isinstance(msg, list):  # kraken v1
            for part in msg[1:-2]:
                n += sum(len(v) for k, v in part.items() if k != "c")
    return n


async def run_okx(frames: list[tuple[float, str]], checksums: bool) -> None:
    Symbols.set(
        "OKX",
        {"BTC-USDT": "BTC-USDT", "UNI-USD-PERP": "UNI-USD-SWAP", "BTC-USD-22M27": "BTC-USD-220527"},
        {"instrument_type": {}, "tick_size": {}},
    )
    feed = OKX(
        symbols=["BTC-USDT", "UNI-USD-PERP", "BTC-USD-22M27"],
        channels=[L2_BOOK, TRADES, TICKER],
        callbacks={L2_BOOK: _noop, TRADES: _noop, TICKER: _noop},
        checksum_validation=checksums,
    )
    conn = Conn()
    for ts, payload in frames:
        await feed.message_handler(payload, conn, ts)


KRAKEN_PAIRS = [
    "WAVES/EUR",
    "XMR/USD",
    "KSM/XBT",
    "GRT/ETH",
    "SC/EUR",
    "ETH/CHF",
    "OCEAN/XBT",
    "OMG/USD",
    "XBT/CHF",
    "ADA/XBT",
]


async def run_kraken(frames: list[tuple[float, str]], checksums: bool) -> None:
    mapping = {p.replace("XBT", "BTC").replace("/", "-"): p for p in KRAKEN_PAIRS}
    Symbols.set("KRAKEN", mapping, {"instrument_type": {}, "tick_size": {}})
    feed = Kraken(
        symbols=list(mapping),
        channels=[L2_BOOK],
        callbacks={L2_BOOK: _noop},
        max_depth=1000,
        checksum_validation=checksums,
    )
    conn = Conn()
    for ts, payload in frames:
        await feed.message_handler(payload, conn, ts)


async def run_binance(frames: list[tuple[float, str]], snapshots: dict[str, str]) -> None:
    mapping = {"NKN-USDT": "NKNUSDT", "BLZ-ETH": "BLZETH", "LRC-BTC": "LRCBTC", "RUNE-EUR": "RUNEEUR"}
    Symbols.set("BINANCE", mapping, {"instrument_type": {}, "tick_size": {}})
    feed = Binance(
        symbols=list(mapping),
        channels=[L2_BOOK, TRADES, TICKER],
        callbacks={L2_BOOK: _noop, TRADES: _noop, TICKER: _noop},
    )

    class Http:
        async def read(self, url: str, **kwargs: object) -> str:
            symbol = url.split("symbol=")[1].split("&")[0]
            return snapshots[symbol]

    feed.http_conn = Http()
    conn = Conn()
    for ts, payload in frames:
        await feed.message_handler(payload, conn, ts)


def main() -> None:
    fixtures, rounds, checksums = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    okx = received(fixtures / "okx" / "OKX.ws.1.0")
    kraken = received(fixtures / "kraken" / "KRAKEN.ws.50.0.first500lines")
    binance = received(fixtures / "binance" / "BINANCE.ws.1.0")
    snapshots = {}
    for line in (fixtures / "binance" / "BINANCE.http.0.0").read_text().splitlines():
        url, _, rest = line.partition(" -> ")
        if "symbol=" not in url:
            continue
        snapshots[url.split("symbol=")[1].split("&")[0]] = rest.partition(": ")[2]
    cases = [
        ("okx", okx, lambda: run_okx(okx, checksums)),
        ("kraken", kraken, lambda: run_kraken(kraken, checksums)),
        ("binance", binance, lambda: run_binance(binance, snapshots)),
    ]
    for name, frames, make in cases:
        asyncio.run(make())  # warm-up, and proof it runs
        start = time.process_time()
        for _ in range(rounds):
            asyncio.run(make())
        seconds = time.process_time() - start
        print(
            json.dumps(
                {
                    "exchange": name,
                    "frames": len(frames) * rounds,
                    "levels": levels(frames) * rounds,
                    "seconds": seconds,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
